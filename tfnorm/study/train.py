"""Training one configuration with one seed: :func:`train_run` and its :class:`RunResult`.

What a run depends on (:class:`TrainSettings`, the optimizers), the cache that reuses one
compiled model across seeds (:class:`CompiledModels`) and training under a
``tf.distribute`` strategy; the progress line is :mod:`tfnorm.study.progress`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Dict, List, Optional

from tfnorm.study.data import StudyData
from tfnorm.study.models import Config, build_model
from tfnorm.study.progress import Progress, format_duration  # noqa: F401  (importable here)

#: ``--optimizer`` names -> keras.optimizers class names.
OPTIMIZERS = {
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "momentum": "SGD",  # SGD with Nesterov momentum 0.9
    "rmsprop": "RMSprop",
    "nadam": "Nadam",
    "adagrad": "Adagrad",
}


@dataclasses.dataclass
class TrainSettings:
    """Everything but the normalization that a run depends on."""

    model: str = "mlp"
    depth: int = 8
    width: int = 128
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    strategy: str = "default"  # a tfnorm.distribute.make_strategy name (--strategy)
    residual: bool = False  # identity skip connections (see build_model)


def check_optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
    return name


def make_optimizer(name: str, lr: float):
    import keras

    check_optimizer(name)
    cls = getattr(keras.optimizers, OPTIMIZERS[name])
    if name == "momentum":
        return cls(learning_rate=lr, momentum=0.9, nesterov=True)
    return cls(learning_rate=lr)


@dataclasses.dataclass
class RunResult:
    """One configuration, one seed: per-epoch history and the final test numbers."""

    config: Config
    seed: int
    params: int
    epochs: List[Dict[str, float]]  # epoch, loss, accuracy, test_loss, test_accuracy, seconds
    model: Any = dataclasses.field(default=None, repr=False, compare=False)  # the trained model

    @property
    def test_accuracy(self) -> float:
        return self.epochs[-1]["test_accuracy"]

    @property
    def test_loss(self) -> float:
        return self.epochs[-1]["test_loss"]

    @property
    def final_train_loss(self) -> float:
        return self.epochs[-1]["loss"]

    @property
    def seconds_per_epoch(self) -> float:
        """Median training seconds of the epochs after the first (which also compiles)."""
        secs = [e["seconds"] for e in self.epochs]
        secs = secs[1:] if len(secs) > 1 else secs
        secs = sorted(secs)
        mid = len(secs) // 2
        return secs[mid] if len(secs) % 2 else 0.5 * (secs[mid - 1] + secs[mid])

    def to_dict(self) -> Dict:
        return {
            "config": self.config.label,
            "norm": self.config.norm,
            "placement": self.config.placement,
            "seed": self.seed,
            "params": self.params,
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "final_train_loss": self.final_train_loss,
            "seconds_per_epoch": self.seconds_per_epoch,
            "epochs": self.epochs,
        }


def _callback(progress: Optional[Progress], prefix: str, epochs: int, steps: int, record: List):
    import keras

    class _Recorder(keras.callbacks.Callback):
        """Times the training part of each epoch and feeds the progress line."""

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1
            self._t0 = time.perf_counter()
            self._train_s = None

        def on_train_batch_end(self, batch, logs=None):
            if progress is not None:
                progress.update(prefix, self._epoch, epochs, (batch + 1) / steps, logs or {})

        def on_test_begin(self, logs=None):
            if self._train_s is None:
                self._train_s = time.perf_counter() - self._t0

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            secs = self._train_s if self._train_s is not None else time.perf_counter() - self._t0
            record.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(logs.get("loss", float("nan"))),
                    "accuracy": float(logs.get("accuracy", float("nan"))),
                    "test_loss": float(logs.get("val_loss", float("nan"))),
                    "test_accuracy": float(logs.get("val_accuracy", float("nan"))),
                    "seconds": float(secs),
                }
            )

    return _Recorder()


_STRATEGIES: Dict[str, Any] = {}


def strategy_for(name: str):
    """The ``tf.distribute`` strategy of ``--strategy name``, created once per process
    (``mirrored`` without a GPU: two logical CPU devices)."""
    from tfnorm import distribute

    if name not in _STRATEGIES:
        _STRATEGIES[name] = distribute.make_strategy(name, cpu_replicas=2)
    return _STRATEGIES[name]


def _train_distributed(
    data: StudyData,
    config: Config,
    seed: int,
    settings: TrainSettings,
    progress: Optional[Progress],
    label: Optional[str] = None,
    cost: float = 1.0,
) -> RunResult:
    """:func:`train_run` under ``settings.strategy``, with :func:`tfnorm.distribute.train`
    (Keras' fit() does not run under MultiWorkerMirroredStrategy, keras-team/keras#20585)."""
    import keras

    from tfnorm import distribute

    strategy = strategy_for(settings.strategy)
    with strategy.scope():
        model = build_model(
            config,
            settings.model,
            data.input_shape,
            data.num_classes,
            settings.depth,
            settings.width,
            settings.residual,
        )
        optimizer = make_optimizer(settings.optimizer, settings.lr)
    prefix = progress.start(config, seed, label) if progress is not None else ""
    record: List[Dict[str, float]] = []

    def on_epoch_end(epoch, logs):
        record.append(
            {
                "epoch": epoch + 1,
                "loss": logs["loss"],
                "accuracy": logs["accuracy"],
                "test_loss": logs["val_loss"],
                "test_accuracy": logs["val_accuracy"],
                "seconds": logs["seconds"],
            }
        )
        if progress is not None:
            progress.update(prefix, epoch + 1, settings.epochs, 1.0, logs)

    distribute.train(
        model,
        data.x_train,
        data.y_train,
        strategy=strategy,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=optimizer,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        shuffle=True,
        seed=seed,
        validation_data=(data.x_test, data.y_test),
        on_epoch_end=on_epoch_end,
        verbose=0,
    )
    result = RunResult(config, seed, int(model.count_params()), record, model=model)
    if progress is not None:
        progress.finish(prefix, result, cost)
    return result


class _NoRetracingWarning(logging.Filter):
    """Each run builds a fresh model, so TensorFlow's "N calls triggered tf.function
    retracing" warning fires by design in a study; it says nothing about the runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _quiet_retracing() -> None:
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NoRetracingWarning) for f in logger.filters):
        logger.addFilter(_NoRetracingWarning())


def steps_per_execution(batch_size: int) -> int:
    """Train steps per compiled call: small batches pay Python overhead per call, so
    several steps run in one call (each is still its own optimizer step)."""
    return max(1, min(64, 256 // max(batch_size, 1)))


class CompiledModels:
    """Reuses one compiled model across the seeds of a configuration.

    Tracing Keras' train and test functions costs seconds per model, about as much as
    the few epochs the study trains, so :func:`run_study` trains every seed of a
    configuration in one compiled model: before each seed, the weights are set to
    those of a freshly built model (same initialization as without the cache) and the
    optimizer's state to its initial values, and the global seed is set again right
    before ``fit``, so a seed gives the same run whether or not it reused a model.
    Holds one model at a time (the last configuration).
    """

    def __init__(self):
        self.key = None
        self.model = None
        self.optimizer_state = None

    def clear(self) -> None:
        self.key = self.model = self.optimizer_state = None


def _compile(model, settings: TrainSettings) -> None:
    import keras

    model.compile(
        optimizer=make_optimizer(settings.optimizer, settings.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution(settings.batch_size),
    )


def train_run(
    data: StudyData,
    config: Config,
    seed: int,
    settings: TrainSettings,
    progress: Optional[Progress] = None,
    cache: Optional[CompiledModels] = None,
    label: Optional[str] = None,
    cost: float = 1.0,
) -> RunResult:
    """Builds, trains and evaluates ``config`` with ``seed``; returns its history.

    The seed fixes the initial weights and the order of the batches
    (``keras.utils.set_random_seed``); the test set is evaluated after every epoch.

    Args:
      data, config, seed, settings: what to train.
      progress: a :class:`Progress` line for this run (None: silent).
      cache: a :class:`CompiledModels` to reuse a compiled model across seeds. The
        result's ``model`` is then None: the model keeps training with the next seed
        (``cache.model`` holds it until the next call).
      label: what the progress line calls this run (default: the configuration's label).
      cost: this run's share of the work, for the progress line's time estimate.
    """
    import keras

    _quiet_retracing()
    if settings.strategy != "default":
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        return _train_distributed(data, config, seed, settings, progress, label, cost)
    key = (
        config,
        settings.model,
        settings.depth,
        settings.width,
        settings.residual,
        data.name,
        data.input_shape,
        data.num_classes,
        settings.optimizer,
        settings.lr,
        settings.batch_size,
    )
    if cache is None or cache.key != key:
        if cache is not None:
            cache.clear()
        keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    fresh = build_model(
        config,
        settings.model,
        data.input_shape,
        data.num_classes,
        settings.depth,
        settings.width,
        settings.residual,
    )
    if cache is None:
        model = fresh
        _compile(model, settings)
    elif cache.model is None:
        model = fresh
        _compile(model, settings)
        model.optimizer.build(model.trainable_variables)
        cache.key, cache.model = key, model
        cache.optimizer_state = [v.numpy() for v in model.optimizer.variables]
    else:
        model = cache.model
        model.set_weights(fresh.get_weights())
        for var, value in zip(model.optimizer.variables, cache.optimizer_state):
            var.assign(value)
    keras.utils.set_random_seed(seed)  # the batch order does not depend on the path above
    prefix = progress.start(config, seed, label) if progress is not None else ""
    steps = max(1, math.ceil(len(data.x_train) / settings.batch_size))
    record: List[Dict[str, float]] = []
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        validation_data=(data.x_test, data.y_test),
        validation_batch_size=max(settings.batch_size, 256),
        shuffle=True,
        verbose=0,
        callbacks=[_callback(progress, prefix, settings.epochs, steps, record)],
    )
    result = RunResult(
        config, seed, int(model.count_params()), record, model=None if cache is not None else model
    )
    if progress is not None:
        progress.finish(prefix, result, cost)
    return result
