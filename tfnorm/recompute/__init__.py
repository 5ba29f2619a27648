"""Exact population statistics for moving averages: :func:`recompute_batch_statistics`.

Layers such as batch normalization keep moving averages of their training
batch statistics for inference. After training (or after averaging weights,
pruning, swapping layers, changing the data) those averages lag behind the
weights; :func:`recompute_batch_statistics` replaces them with the exact mean
and variance of the inputs each layer receives over a data set, layer by
layer, and updates the model in place.

The package keeps one idea per module: :mod:`~tfnorm.recompute.layers` (which
layers keep statistics, and capturing their inputs), :mod:`~tfnorm.recompute.data`
(``data`` as batches, the same on every pass), :mod:`~tfnorm.recompute.moments`
(the exact float64 moments, their merge and assignment) and
:mod:`~tfnorm.recompute.report` (what was done); this module checks the arguments and
runs the passes, one per layer.

Example:
  >>> import keras, numpy as np, tfnorm
  >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
  ...                           tfnorm.BatchNormalization()])
  >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
  >>> report = tfnorm.recompute_batch_statistics(model, x)
  >>> len(report), report[0].positions
  (1, 64)
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from tfnorm.recompute.data import (
    DEFAULT_BATCH_SIZE,  # noqa: F401  (public constant)
    batch_rows,
    batch_source,
    check_count,
    short_repr,
    to_tensors,
)
from tfnorm.recompute.layers import (
    STATISTICS_LAYERS,
    Capture,
    Entry,
    kind_of,
    make_forward,
    statistics_layers,
)
from tfnorm.recompute.moments import assign_statistics, merge_moments
from tfnorm.recompute.report import LayerStatistics, RecomputeReport

__all__ = ["LayerStatistics", "RecomputeReport", "STATISTICS_LAYERS", "recompute_batch_statistics"]


def recompute_batch_statistics(model, data, *, batch_size=None, steps=None) -> RecomputeReport:
    """Sets the moving statistics of every layer that keeps them to exact population values.

    Batch-statistics layers normalize with moving averages at inference. This
    function replaces those averages by the exact mean and (biased, population)
    variance, per channel, of the inputs each layer receives over ``data``,
    **updating the model in place** (like PyTorch's
    ``torch.optim.swa_utils.update_bn`` or fvcore's PreciseBN, but exact rather
    than another moving average). Use it after weight averaging (SWA/EMA),
    after swapping or pruning layers, or when the moving averages are noisy.

    Layers handled (found recursively, nested models included; see
    :data:`STATISTICS_LAYERS`): :class:`tfnorm.BatchNormalization` in every mode
    (plain, ghost, synchronized, renorm: ``renorm_mean`` is set to the mean and
    ``renorm_stddev`` to ``sqrt(variance + epsilon)``),
    :class:`tfnorm.SwitchableNormalization` (its batch branch),
    :class:`tfnorm.EvoNormB0` (the batch variance) and
    ``keras.layers.BatchNormalization`` (with renorm also its ``moving_stddev``,
    ``renorm_mean`` and ``renorm_stddev``). Layers with ``trainable=False`` are
    updated too.

    Layer by layer: the layers are taken in the order the model calls them. For
    each, the model runs over all of ``data`` in inference mode
    (``training=False``), the earlier layers already holding their new
    statistics, and the inputs reaching the layer (every call, if shared) are
    reduced in float64 over every axis but the channels; the per-batch results
    are merged with Chan's pairwise algorithm, so a large common offset costs
    no precision. So there is one pass over ``data`` per layer. A layer called
    more than once per pass is placed at its first call. With a ``mask``
    (BatchNormalization layers), masked-out positions are left out, as they are
    from the training statistics. A channel that no position reaches, or whose
    statistic is not finite, keeps its old values (the report counts them).

    Nothing else changes: trainable weights, other variables and the optimizer
    are left as they are (any other variable that a forward pass would change is
    put back), and on an error the model is restored entirely. The forward
    passes run in a ``tf.function`` (eagerly when ``model.run_eagerly``).

    Args:
      model: a ``keras.Model`` (Sequential, functional or subclassed). A model
        with no such layer is left untouched and gives an empty report, without
        reading ``data``.
      data: the samples, in any of these forms (only ``x`` is used):

        * a ``tf.data.Dataset`` of batches ``x``, ``(x, y)`` or ``(x, y, w)``:
          read again on every pass, so it must give the same samples each time
          (shuffling is fine, random augmentation is not); an infinite one needs
          ``steps``;
        * an array (NumPy or tensor), a dict of arrays, or a tuple ``(x, y)`` /
          ``(x, y, w)`` of arrays (``x`` may be a dict or list of arrays for
          several inputs), split into batches of ``batch_size``;
        * a generator, iterator or other iterable (a list, say) of batches ``x``
          or ``(x, y)``: read once, into memory (``steps`` batches at most), and
          reused on every pass. An endless one needs ``steps``.

      batch_size: samples per batch for array data (only for arrays; a
        Dataset or generator gives its own batches). Each forward call then
        takes one batch. Default None: batches of 32 (what ``steps`` counts),
        several of which go through the model together, up to 1024 samples or
        4 MiB of input per call; inference, and so the result, does not depend
        on the batching.
      steps: read at most this many batches (per pass); default: all of ``data``.

    Returns:
      A :class:`RecomputeReport`: per layer (in the order they were recomputed) its
      path, class, samples and positions averaged, and how far the statistics
      moved; ``print(report)`` shows a table.

    Raises:
      TypeError: ``model`` is not a ``keras.Model``, or ``data`` is of no known kind.
      ValueError: a bad ``batch_size`` or ``steps``, empty ``data``, an infinite
        dataset without ``steps``, or data that changes between passes.

    Example:
      >>> import keras, numpy as np, tfnorm
      >>> model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3),
      ...                           tfnorm.BatchNormalization()])
      >>> x = np.random.default_rng(0).normal(2.0, 3.0, size=(256, 5)).astype("float32")
      >>> report = tfnorm.recompute_batch_statistics(model, x, batch_size=64)
      >>> bn = model.layers[-1]
      >>> pre = model.layers[0](x).numpy().astype("float64")
      >>> bool(np.allclose(bn.moving_mean.numpy(), pre.mean(0), rtol=1e-5, atol=1e-5))
      True
      >>> bool(np.allclose(bn.moving_variance.numpy(), pre.var(0), rtol=1e-5))
      True
      >>> report[0].samples, report.batches
      (256, 4)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "model must be a keras.Model (Sequential, functional or subclassed), received "
            f"model of type {type(model).__name__}: {short_repr(model)}; wrap a single layer "
            "in keras.Sequential([keras.Input(shape), layer])"
        )
    batch_size = check_count(
        "batch_size",
        batch_size,
        "pass the number of samples per batch, e.g. batch_size=32, or None",
    )
    steps = check_count(
        "steps", steps, "pass the number of batches to read, e.g. steps=100, or None for all"
    )
    source = batch_source(data, batch_size, steps)

    found = statistics_layers(model)
    if not found:
        return RecomputeReport(layers=())

    first = next(iter(source), None)
    if first is None:
        raise ValueError(f"data gave no batches (steps={steps}); pass at least one batch")
    first = to_tensors(first)
    batch_rows(first)  # a leading batch axis
    if not model.built or not all(layer.built for _, layer in found):
        model(first, training=False)  # build it eagerly, before tracing

    variables = list(model.variables)
    snapshot = [np.array(v.numpy(), copy=True) for v in variables]
    capture = None
    try:
        entries = [Entry(i, path, layer, kind_of(layer)) for i, (path, layer) in enumerate(found)]
        capture = Capture(entries, graph=not getattr(model, "run_eagerly", False))
        capture.install()
        forward = make_forward(model, capture)
        active = (lambda i: tf.constant(i, tf.int32)) if capture.graph else (lambda i: i)

        capture.order = []  # discovery: which layers run, and in which order
        if capture.graph:  # one trace, for batches of any size
            forward.get_concrete_function(
                tf.nest.map_structure(
                    lambda t: tf.TensorSpec([None] + t.shape.as_list()[1:], t.dtype), first
                ),
                tf.TensorSpec([], tf.int32),
            )
        else:
            forward(first, active(-1))
        order, capture.order = capture.order, None
        not_called = tuple(e.path for e in entries if e not in order)

        targets = {id(getattr(e.layer, attr)) for e in order for attr, _ in e.kind.targets(e.layer)}
        records = []
        rows_per_pass = None
        batches_per_pass = 0
        for entry in order:
            acc = None
            samples = 0.0
            rows = 0
            batches = 0
            for x in source:
                x = to_tensors(x)
                rows += batch_rows(x)
                batches += 1
                for out in forward(x, active(entry.index)).get(str(entry.index), ()):
                    r, count, mean, m2 = np.asarray(out)
                    samples += float(r.flat[0]) if r.size else 0.0
                    acc = (
                        (count, mean, m2) if acc is None else merge_moments(acc, (count, mean, m2))
                    )
            if rows_per_pass is None:
                rows_per_pass, batches_per_pass = rows, batches
            elif (rows, batches) != (rows_per_pass, batches_per_pass):
                raise ValueError(
                    f"data gave {rows_per_pass} samples in {batches_per_pass} batches on the "
                    f"first pass but {rows} samples in {batches} batches on the pass for layer "
                    f"{entry.path!r}; the data must give the same samples on every pass (one "
                    "per layer): use a deterministic tf.data pipeline, or steps="
                )
            if acc is None:
                raise ValueError(f"data gave no batches (steps={steps}); pass at least one batch")
            records.append(assign_statistics(entry, *acc, samples=samples))
    except BaseException:
        for v, value in zip(variables, snapshot):
            v.assign(value)
        raise
    finally:
        if capture is not None:
            capture.restore()

    moved = [
        v
        for v, value in zip(variables, snapshot)
        if id(v) not in targets and not np.array_equal(v.numpy(), value, equal_nan=True)
    ]
    if moved:
        for v, value in zip(variables, snapshot):
            if id(v) not in targets:
                v.assign(value)
        warnings.warn(
            "recompute_batch_statistics: the inference passes changed variable(s) "
            f"{[v.path for v in moved]}, which are not batch statistics; they were put back",
            RuntimeWarning,
            stacklevel=2,
        )
    if records:
        batches_per_pass = getattr(source, "nbatches", batches_per_pass)
    return RecomputeReport(
        layers=tuple(records),
        batches=batches_per_pass,
        samples=rows_per_pass or 0,
        not_called=not_called,
    )
