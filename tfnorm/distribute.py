"""Training under ``tf.distribute``: strategies, input sharding and a custom training loop.

Keras 3 ``Model.fit`` runs under ``MirroredStrategy`` but not under
``MultiWorkerMirroredStrategy`` (keras-team/keras#20585). :func:`train` is a
small training loop built on ``strategy.run`` that works under both, and under
the default (single-device) strategy, with the same numbers:

* every global batch of ``batch_size`` samples is cut into consecutive,
  equal per-replica slices, replica ``k`` (numbered across workers) taking
  slice ``k``, so a replica sees exactly the samples a single device would see
  at those positions of the same batch;
* the loss of a replica is the sum of its per-sample losses divided by the
  *global* batch size, and the optimizer sums the replicas' gradients, so one
  step is the step a single device takes on the whole batch;
* layers with ``synchronized=True`` (e.g. :class:`tfnorm.BatchNormalization`)
  all-reduce their batch statistics and so normalize with the statistics of
  the global batch; unsynchronized layers use their replica's slice, and
  their moving statistics (``aggregation="mean"``) become the mean of the
  replicas' updates. Streamed state follows the same rule: each replica of an
  :class:`tfnorm.OnlineNormalization` streams its own slice from the shared
  state, and the replicas' resulting states are averaged after the step.

Several workers: start one process per worker, each with the same program
and its own ``TF_CONFIG``, e.g. for worker 0 of two::

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                "task": {"type": "worker", "index": 0}}'

and create the strategy with ``make_strategy("multiworker")`` before any
other TensorFlow work.

Example (single device; the same call runs under any strategy):
  >>> import numpy as np, keras, tfnorm
  >>> from tfnorm import distribute
  >>> strategy = distribute.make_strategy("default")
  >>> with strategy.scope():
  ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
  ...                               tfnorm.BatchNormalization(synchronized=True),
  ...                               keras.layers.Dense(3)])
  >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
  >>> y = np.arange(32) % 3
  >>> history = distribute.train(model, x, y, strategy=strategy, batch_size=16, epochs=2,
  ...                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  ...                            optimizer="sgd", verbose=0)
  >>> len(history["loss"]), bool(np.isfinite(history["loss"]).all())
  (2, True)
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from tfnorm import _compat

__all__ = [
    "STRATEGIES",
    "as_numpy",
    "distribute_arrays",
    "evaluate",
    "logical_cpus",
    "make_strategy",
    "sample_order",
    "train",
]

#: Names understood by :func:`make_strategy` (and ``tfnorm study --strategy``).
STRATEGIES = ("default", "mirrored", "multiworker")


def logical_cpus(n: int = 2) -> List[str]:
    """Splits the host CPU into ``n`` logical devices and returns their names.

    Lets ``MirroredStrategy`` run several replicas on a machine without
    accelerators (useful for tests and for trying a distributed setup). It
    must run before TensorFlow initialises its devices, that is before the
    first TensorFlow operation of the program.

    Args:
      n: number of logical CPU devices, >= 1. Default 2.

    Returns:
      The device names, e.g. ``["/device:CPU:0", "/device:CPU:1"]``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"logical_cpus needs an integer n >= 1, received n={n!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as err:
        have = tf.config.list_logical_devices("CPU")
        if len(have) != n:
            raise RuntimeError(
                f"cannot split the CPU into n={n} logical devices: TensorFlow has already "
                f"initialised its {len(have)} CPU device(s). Call logical_cpus() at the start of "
                "the program, before any TensorFlow operation runs"
            ) from err
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(
    name: Optional[str] = "default",
    devices: Optional[Sequence[str]] = None,
    cpu_replicas: Optional[int] = None,
) -> tf.distribute.Strategy:
    """Creates a ``tf.distribute`` strategy by name.

    Args:
      name: ``"default"`` (or None): the current (by default single-device)
        strategy. ``"mirrored"``: ``MirroredStrategy`` over ``devices``, by
        default every GPU, or every logical CPU when there is no GPU (see
        :func:`logical_cpus`). ``"multiworker"``: ``MultiWorkerMirroredStrategy``
        configured from the ``TF_CONFIG`` environment variable (one process per
        worker; without ``TF_CONFIG`` it runs as a single worker). Create it at
        the start of the program, before other TensorFlow work.
      devices: device names for ``"mirrored"``. Default None.
      cpu_replicas: for ``"mirrored"`` on a machine without GPUs, first split
        the CPU into this many logical devices (:func:`logical_cpus`; before
        TensorFlow initialises its devices). Default None (use them as they are).

    Example:
      >>> make_strategy("default").num_replicas_in_sync
      1
    """
    key = "default" if name is None else str(name).strip().lower()
    if key not in STRATEGIES:
        raise ValueError(f"unknown strategy name={name!r}; valid names are {', '.join(STRATEGIES)}")
    if key == "default":
        return tf.distribute.get_strategy()
    if key == "mirrored":
        if devices is None and cpu_replicas and not tf.config.list_physical_devices("GPU"):
            logical_cpus(cpu_replicas)
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(list(devices))
    if devices is not None:
        raise ValueError(
            "devices is only used with name='mirrored'; MultiWorkerMirroredStrategy takes its "
            f"devices from TF_CONFIG and the local accelerators, received devices={devices!r}"
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def _worker_layout(strategy, input_context=None):
    """(pipeline id, number of pipelines, local replicas) for the input pipeline."""
    replicas = strategy.num_replicas_in_sync
    if input_context is None:
        return 0, 1, replicas
    pipelines = input_context.num_input_pipelines
    return input_context.input_pipeline_id, pipelines, replicas // pipelines


def sample_order(
    n: int,
    batch_size: int,
    *,
    epochs: int = 1,
    shuffle: bool = False,
    seed: int = 0,
    steps_per_epoch: Optional[int] = None,
) -> np.ndarray:
    """The sample indices, epoch after epoch, that :func:`distribute_arrays` batches.

    Each epoch is a permutation of ``range(n)`` (from ``numpy``'s generator
    seeded with ``(seed, epoch)``, so every worker computes the same one) or
    the identity, cut to ``steps_per_epoch`` full batches (default: all full
    batches; a trailing partial batch is dropped).
    """
    steps = (
        n // batch_size if steps_per_epoch is None else min(int(steps_per_epoch), n // batch_size)
    )
    parts = []
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        parts.append(order[: steps * batch_size])
    return np.concatenate(parts).astype(np.int64)


def distribute_arrays(
    strategy: tf.distribute.Strategy,
    x,
    y=None,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    epochs: int = 1,
    steps_per_epoch: Optional[int] = None,
):
    """A distributed dataset of global batches cut into consecutive per-replica slices.

    Every worker reads the same arrays, forms the same global batches of
    ``batch_size`` samples (in the order of :func:`sample_order`) and keeps
    its replicas' slices: replica ``k`` of ``R`` (numbered across workers)
    gets samples ``[k*b, (k+1)*b)`` of each global batch, ``b = batch_size / R``.

    Args:
      strategy: the strategy that will run the steps.
      x: input array (or a tuple of arrays) with the samples on axis 0.
      y: optional target array.
      batch_size: the global batch size; a multiple of the number of replicas.
      shuffle: a new permutation each epoch. Default False.
      seed: the shuffling seed, the same on every worker. Default 0.
      epochs: how many passes the dataset makes. Default 1.
      steps_per_epoch: full batches per epoch. Default None (all of them).

    Returns:
      A ``tf.distribute.DistributedDataset`` whose elements are ``x`` or
      ``(x, y)`` per replica.
    """
    replicas = strategy.num_replicas_in_sync
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"batch_size must be a positive integer, received batch_size={batch_size!r}"
        )
    if batch_size % replicas:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the {replicas} replicas in sync so "
            f"that every replica gets the same number of samples; try batch_size="
            f"{max(replicas, batch_size // replicas * replicas)}"
        )
    n = len(x[0] if isinstance(x, tuple) else x)
    if n < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {n} samples; a partial batch is dropped, "
            "so no step would run"
        )
    order = sample_order(
        n, batch_size, epochs=epochs, shuffle=shuffle, seed=seed, steps_per_epoch=steps_per_epoch
    )
    per_replica = batch_size // replicas
    arrays = tuple(x) if isinstance(x, tuple) else (x,)
    arrays = arrays + ((y,) if y is not None else ())

    def dataset_fn(input_context=None):
        pid, _, local = _worker_layout(strategy, input_context)
        start = pid * local * per_replica
        tensors = [tf.constant(np.asarray(a)) for a in arrays]

        def mine(idx):
            idx = tf.reshape(idx[start : start + local * per_replica], [local, per_replica])
            return tuple(tf.gather(t, idx) for t in tensors)

        ds = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)
        ds = ds.map(mine).unbatch()
        if not isinstance(x, tuple):
            ds = ds.map(lambda *t: t if y is not None else t[0])
        else:
            k = len(x)
            ds = ds.map(lambda *t: (t[:k], t[k]) if y is not None else t[:k])
        return ds.prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_fn)


def _loss_function(loss) -> Callable:
    """``(y_true, y_pred) -> per-sample losses``."""
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # unreduced
    if isinstance(loss, str):
        return keras.losses.get(loss)
    if callable(loss):
        return loss
    raise TypeError(
        f"loss must be a keras Loss, a loss name or a callable (y_true, y_pred) -> losses, "
        f"received loss={loss!r}"
    )


def _per_sample(values):
    values = tf.convert_to_tensor(values)
    if values.shape.rank and values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return tf.cast(values, tf.float32)


def _correct(y, pred):
    """Number of correct argmax predictions for integer labels (0 otherwise)."""
    if y is None or pred.shape.rank != 2 or not tf.as_dtype(y.dtype).is_integer:
        return tf.zeros([], tf.float32)
    hit = tf.equal(
        tf.argmax(pred, -1, output_type=tf.int64), tf.cast(tf.reshape(y, [-1]), tf.int64)
    )
    return tf.reduce_sum(tf.cast(hit, tf.float32))


def _check_in_scope(strategy, model):
    if not model.built:
        raise ValueError(
            f"the model {model.name!r} is not built; build it inside strategy.scope() (e.g. "
            "give it a keras.Input) before calling train()"
        )
    for v in model.weights:
        inner = getattr(v, "value", v)
        if not strategy.extended.variable_created_in_scope(inner):
            raise ValueError(
                f"the variable {v.path!r} of model {model.name!r} was not created under this "
                f"strategy's scope; create and build the model inside `with strategy.scope():`"
            )


def _optimizer_in_scope(strategy, optimizer):
    with strategy.scope():
        if isinstance(optimizer, (str, dict)):
            return keras.optimizers.get(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"optimizer must be a keras Optimizer, a name or a config dict, received "
            f"optimizer={optimizer!r}"
        )
    owner = _compat.optimizer_strategy(optimizer, default=strategy)
    if owner is not strategy:
        raise ValueError(
            f"the optimizer {type(optimizer).__name__} was created outside this strategy's scope; "
            "create it inside `with strategy.scope():` or pass its name (e.g. optimizer='adam')"
        )
    return optimizer


def train(
    model: keras.Model,
    x,
    y=None,
    *,
    loss,
    optimizer: Union[str, dict, keras.optimizers.Optimizer],
    strategy: Optional[tf.distribute.Strategy] = None,
    batch_size: int = 32,
    epochs: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    steps_per_epoch: Optional[int] = None,
    validation_data=None,
    on_epoch_end: Optional[Callable[[int, Dict[str, float]], None]] = None,
    verbose: int = 1,
) -> Dict[str, List[float]]:
    """Trains ``model`` with a custom loop on ``strategy.run`` (any tf.distribute strategy).

    The model (and an optimizer instance, if one is passed) must be created
    and built inside ``strategy.scope()``. Every worker of a multi-worker
    setup calls ``train`` with the same arguments and the same arrays.

    Per step and replica: ``loss = sum(per-sample losses) / batch_size +
    sum(model.losses) / num_replicas``; the optimizer all-reduces (sums) the
    gradients, so a step equals a single-device step on the global batch. A
    ``keras.optimizers.LossScaleOptimizer`` has its loss scaled.

    Args:
      model: a built Keras model created in ``strategy.scope()``.
      x: training inputs (array, or tuple of arrays), samples on axis 0.
      y: training targets, or None.
      loss: a ``keras.losses.Loss`` (its unreduced ``call`` is used), a loss
        name, or a callable ``(y_true, y_pred) -> per-sample losses``.
      optimizer: a Keras optimizer created in ``strategy.scope()``, or a name /
        config dict (then created in the scope here).
      strategy: the strategy; None means the current one. Default None.
      batch_size: the global batch size, a multiple of the replicas. Default 32.
      epochs: passes over the data. Default 1.
      shuffle: reshuffle each epoch (the same permutation on every worker).
        Default True.
      seed: the shuffling seed. Default 0.
      steps_per_epoch: stop an epoch after this many steps. Default None (all
        full batches).
      validation_data: optional ``(x_val, y_val)`` evaluated after each epoch
        with :func:`evaluate`.
      on_epoch_end: optional callable ``(epoch, logs)`` called after each epoch.
      verbose: 1 prints one line per epoch (on the chief only), 0 is silent.
        Default 1.

    Returns:
      A history dict of per-epoch lists: ``loss``, ``accuracy`` (integer
      labels with 2-D predictions; else 0), ``seconds`` and, with
      ``validation_data``, ``val_loss`` and ``val_accuracy``.
    """
    strategy = strategy or tf.distribute.get_strategy()
    _check_in_scope(strategy, model)
    optimizer = _optimizer_in_scope(strategy, optimizer)
    loss_fn = _loss_function(loss)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, received epochs={epochs!r}")
    with strategy.scope():
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
    replicas = strategy.num_replicas_in_sync
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    has_y = y is not None

    def replica_step(*batch):
        xb, yb = (batch[0], batch[1]) if has_y else (batch[0], None)
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            pred32 = tf.cast(pred, tf.float32)
            per_sample = _per_sample(loss_fn(yb, pred32))
            value = tf.reduce_sum(per_sample) / batch_size
            if model.losses:
                value += tf.add_n([tf.cast(r, tf.float32) for r in model.losses]) / replicas
            target = optimizer.scale_loss(value) if scaled else value
        variables = model.trainable_variables
        grads = tape.gradient(target, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return value, _correct(yb, pred32)

    @tf.function
    def step(batch):
        value, correct = strategy.run(replica_step, args=batch if has_y else (batch,))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
        )

    chief = _is_chief(strategy)
    history: Dict[str, List[float]] = {"loss": [], "accuracy": [], "seconds": []}
    data = distribute_arrays(
        strategy,
        x,
        y,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
    )
    iterator = iter(data)
    n = len(x[0] if isinstance(x, tuple) else x)
    steps = (
        n // batch_size if steps_per_epoch is None else min(int(steps_per_epoch), n // batch_size)
    )
    for epoch in range(epochs):
        t0 = time.perf_counter()
        total, hits = 0.0, 0.0
        for _ in range(steps):
            value, correct = step(next(iterator))
            total += float(value)
            hits += float(correct)
        logs = {
            "loss": total / steps,
            "accuracy": hits / (steps * batch_size),
            "seconds": time.perf_counter() - t0,
        }
        if validation_data is not None:
            val_loss, val_acc = evaluate(model, *validation_data, loss=loss, batch_size=batch_size)
            logs.update(val_loss=val_loss, val_accuracy=val_acc)
        for k, v in logs.items():
            history.setdefault(k, []).append(float(v))
        if verbose and chief:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "seconds")
            print(
                f"epoch {epoch + 1}/{epochs} - {logs['seconds']:.1f}s - {shown} "
                f"({replicas} replica{'s' if replicas > 1 else ''})",
                flush=True,
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, logs)
    return history


def evaluate(model: keras.Model, x, y, *, loss, batch_size: int = 256):
    """Mean loss and accuracy of ``model`` in inference mode, on this process.

    Runs outside any replica context (every worker of a multi-worker setup
    computes the same numbers from its copy of the weights).

    Returns:
      ``(loss, accuracy)``; accuracy is 0 when it is not defined (see :func:`train`).
    """
    loss_fn = _loss_function(loss)
    n = len(x[0] if isinstance(x, tuple) else x)
    total, hits = 0.0, 0.0
    for start in range(0, n, batch_size):
        xb = (
            tuple(t[start : start + batch_size] for t in x)
            if isinstance(x, tuple)
            else x[start : start + batch_size]
        )
        yb = tf.convert_to_tensor(y[start : start + batch_size])
        pred = tf.cast(model(xb, training=False), tf.float32)
        total += float(tf.reduce_sum(_per_sample(loss_fn(yb, pred))))
        hits += float(_correct(yb, pred))
    return total / n, hits / n


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and (resolver.task_id or 0) == 0


def as_numpy(per_replica, strategy) -> np.ndarray:
    """Concatenates this process's replicas' values of a per-replica tensor (axis 0)."""
    parts = strategy.experimental_local_results(per_replica)
    return np.concatenate([np.asarray(p) for p in parts], 0)
