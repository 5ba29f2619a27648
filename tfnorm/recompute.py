"""Exact population statistics for moving averages: :func:`recompute_batch_statistics`.

Layers such as batch normalization keep moving averages of their training
batch statistics for inference. After training (or after averaging weights,
pruning, swapping layers, changing the data) those averages lag behind the
weights; :func:`recompute_batch_statistics` replaces them with the exact mean
and variance of the inputs each layer receives over a data set, layer by
layer, and updates the model in place.

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

import dataclasses
import math
import numbers
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfnorm import _compat
from tfnorm.layers.batch import BatchNormalization
from tfnorm.layers.evonorm import EvoNormB0
from tfnorm.layers.switchable import SwitchableNormalization

__all__ = ["LayerStatistics", "RecomputeReport", "STATISTICS_LAYERS",
           "recompute_batch_statistics"]

#: Default number of samples per batch for array data (as in ``keras.Model.fit``).
DEFAULT_BATCH_SIZE = 32
# Without ``steps``, a generator or iterable is read into memory up to these sizes; one that
# gives more is taken for an endless one.
_MAX_UNBOUNDED_BATCHES = 100_000
_MAX_UNBOUNDED_BYTES = 4 * 2 ** 30
# Array data without batch_size: input rows per forward call (a few MiB, at most _MAX_CHUNK).
_CHUNK_BYTES = 4 * 2 ** 20
_MAX_CHUNK = 1024


# --------------------------------------------------------------------------------------
# Which layers keep statistics, and what they keep
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Kind:
    """What one class of layer keeps.

    Attributes:
      targets: layer -> ``((variable attribute, quantity), ...)`` where quantity is
        ``"mean"`` (the population mean), ``"variance"`` (the population variance) or
        ``"stddev"`` (``sqrt(variance + layer.epsilon)``).
      kept_axes: ``(layer, input rank) -> sorted non-negative axes`` that keep their own
        statistic (the channels); every other axis is averaged over.
      masked: whether the layer's ``mask`` call argument removes positions from its
        training statistics (and so from the recomputed ones).
    """

    targets: Callable[[keras.layers.Layer], Tuple[Tuple[str, str], ...]]
    kept_axes: Callable[[keras.layers.Layer, int], Tuple[int, ...]]
    masked: bool = False


def _built_axes(layer, rank):
    return tuple(sorted(int(a) % rank for a in layer._axes))


def _keras_axes(layer, rank):
    axis = layer.axis
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return tuple(sorted(int(a) % rank for a in axes))


_MEAN_VAR = (("moving_mean", "mean"), ("moving_variance", "variance"))


def _tfnorm_bn_targets(layer):
    if layer.renorm:
        return _MEAN_VAR + (("renorm_mean", "mean"), ("renorm_stddev", "stddev"))
    return _MEAN_VAR


def _keras_bn_targets(layer):
    if getattr(layer, "renorm", False):
        # Keras keeps moving_stddev next to moving_variance with renorm (and derives the
        # variance from it in training); both must describe the same statistic.
        return _MEAN_VAR + (("moving_stddev", "stddev"), ("renorm_mean", "mean"),
                            ("renorm_stddev", "stddev"))
    return _MEAN_VAR


#: The layer classes whose statistics :func:`recompute_batch_statistics` recomputes, in
#: the order they are matched (subclasses included), with what each keeps.
STATISTICS_LAYERS: Tuple[Tuple[type, _Kind], ...] = (
    (BatchNormalization, _Kind(_tfnorm_bn_targets, _built_axes, masked=True)),
    (SwitchableNormalization, _Kind(lambda layer: _MEAN_VAR, _built_axes)),
    (EvoNormB0, _Kind(lambda layer: (("moving_variance", "variance"),), _built_axes)),
    (keras.layers.BatchNormalization, _Kind(_keras_bn_targets, _keras_axes, masked=True)),
)


def _kind_of(layer) -> Optional[_Kind]:
    if isinstance(layer, keras.Model):
        return None
    for cls, kind in STATISTICS_LAYERS:
        if isinstance(layer, cls):
            return kind
    return None


def _class_label(cls) -> str:
    module = getattr(cls, "__module__", "")
    if module.startswith("tfnorm"):
        return f"tfnorm.{cls.__name__}"
    if module.startswith("keras") and getattr(keras.layers, cls.__name__, None) is cls:
        return f"keras.layers.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


def _statistics_layers(model) -> List[Tuple[str, keras.layers.Layer]]:
    """``(path, layer)`` of every layer under ``model`` that keeps statistics, each once."""
    found: List[Tuple[str, keras.layers.Layer]] = []
    seen = {id(model)}

    def walk(layer, prefix):
        for child in _compat.direct_sublayers(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = prefix + child.name
            if _kind_of(child) is not None:
                found.append((path, child))
            walk(child, path + "/")

    walk(model, "")
    return found


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LayerStatistics:
    """What :func:`recompute_batch_statistics` did with one layer.

    Attributes:
      path: where the layer sits, ``"nested_model/.../layer_name"``.
      name: the layer's name.
      layer_class: the layer's class.
      variables: the variables that were assigned, e.g. ``("moving_mean", "moving_variance")``.
      calls: how many times one forward pass calls the layer (more than 1 when shared).
      samples: input rows (batch entries) that reached the layer, all calls together.
      positions: values averaged per channel (``samples`` times the positions of every
        reduced axis but the batch; masked-out positions not counted).
      mean_change: largest ``|new - old|`` of the moving mean over the channels (None for
        a layer without one).
      variance_change: largest ``|new - old| / old`` of the moving variance over the
        channels (``inf`` where the old value was 0 and the new one is not).
      unchanged_channels: channels left as they were: no position reached them (every one
        masked out), or their statistic was not finite (NaN or inf in the inputs).
    """

    path: str
    name: str
    layer_class: type
    variables: Tuple[str, ...]
    calls: int
    samples: int
    positions: int
    mean_change: Optional[float]
    variance_change: float
    unchanged_channels: int = 0


@dataclasses.dataclass(frozen=True)
class RecomputeReport:
    """The result of :func:`recompute_batch_statistics`: one :class:`LayerStatistics` per layer.

    Behaves as the tuple of its layers (``len``, indexing, iteration), in the order they
    were recomputed (the order the model calls them); ``str(report)`` is a table.

    Attributes:
      layers: the :class:`LayerStatistics` of every recomputed layer.
      batches: batches of ``data`` read per pass.
      samples: samples (rows of ``x``) read per pass.
      not_called: paths of layers that keep statistics but that the model's forward pass
        never called (their statistics are left as they were).
    """

    layers: Tuple[LayerStatistics, ...]
    batches: int = 0
    samples: int = 0
    not_called: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def table(self) -> str:
        if not self.layers:
            if self.not_called:
                return ("recompute_batch_statistics: nothing changed; the forward pass called "
                        f"none of the layers that keep batch statistics "
                        f"({', '.join(self.not_called)})")
            return "recompute_batch_statistics: no layer keeps batch statistics; nothing changed"
        head = (f"recompute_batch_statistics: {len(self.layers)} layer(s) over "
                f"{self.samples} samples in {self.batches} batch(es)")
        rows = [("#", "layer", "class", "samples", "positions", "max|dmean|", "max|dvar|/var")]
        for i, r in enumerate(self.layers):
            mean = "-" if r.mean_change is None else f"{r.mean_change:.3g}"
            rows.append((str(i), r.path, _class_label(r.layer_class), str(r.samples),
                         str(r.positions), mean, f"{r.variance_change:.3g}"))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = [head]
        for row in rows:
            cells = [cell.rjust(w) if c >= 3 else cell.ljust(w)
                     for c, (cell, w) in enumerate(zip(row, widths))]
            lines.append("  " + "  ".join(cells).rstrip())
        notes = [f"  {r.path}: {r.unchanged_channels} channel(s) kept their old statistics "
                 "(all positions masked out, or not finite)"
                 for r in self.layers if r.unchanged_channels]
        if self.not_called:
            notes.append("  not called by the forward pass (left as they were): "
                         + ", ".join(self.not_called))
        return "\n".join(lines + notes)

    def __str__(self) -> str:
        return self.table()


# --------------------------------------------------------------------------------------
# Arguments and data
# --------------------------------------------------------------------------------------

def _check_count(name: str, value, hint: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer or None, received "
                         f"{name}={value!r}; {hint}")
    return int(value)


def _is_array(a) -> bool:
    if isinstance(a, keras.KerasTensor):
        return False
    if isinstance(a, (np.ndarray, tf.Tensor)):
        return True
    return hasattr(a, "shape") and hasattr(a, "__array__") and hasattr(a, "__getitem__")


def _array_structure(x) -> bool:
    """An array, or a dict/list/tuple of them (several model inputs)."""
    if _is_array(x):
        return True
    if isinstance(x, dict):
        return bool(x) and all(_is_array(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return bool(x) and all(_is_array(v) for v in x)
    return False


def _features(element, where: str):
    """``x`` of a data element ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``."""
    if isinstance(element, (tuple, list)):
        if not 1 <= len(element) <= 3:
            raise ValueError(
                f"data: {where} is a {type(element).__name__} of {len(element)} items; an "
                "element must be x, (x,), (x, y) or (x, y, sample_weight). For a model with "
                "several inputs, give x as a dict or list inside the tuple: ((x1, x2), y)")
        return element[0]
    return element


def _rows(x) -> int:
    leaf = tf.nest.flatten(x)[0]
    shape = leaf.shape
    if len(shape) == 0:
        raise ValueError(f"data: a batch holds a scalar of shape {tuple(shape)}; every input "
                         "must have a leading batch axis")
    return int(shape[0])


def _to_tensors(x):
    return tf.nest.map_structure(
        lambda a: a if isinstance(a, tf.Tensor) else tf.convert_to_tensor(np.asarray(a)), x)


class _ArrayBatches:
    """Slices of in-memory arrays, the same on every pass.

    ``nbatches`` counts batches of ``batch_size`` rows (what ``steps`` limits). With
    ``batch_size`` given, each forward call gets one such batch; without, consecutive
    default batches are run together, up to :data:`_CHUNK_BYTES` of input and
    :data:`_MAX_CHUNK` rows per call (inference does not depend on the batching).
    """

    def __init__(self, x, batch_size, steps):
        leaves = tf.nest.flatten(x)
        sizes = {int(a.shape[0]) if len(a.shape) else None for a in leaves}
        if None in sizes:
            raise ValueError("data: an array input must have a leading batch axis, received "
                             f"shapes {[tuple(a.shape) for a in leaves]}")
        if len(sizes) != 1:
            raise ValueError("data: the input arrays have different numbers of samples "
                             f"{sorted(sizes)} (shapes {[tuple(a.shape) for a in leaves]})")
        (n,) = sizes
        if n == 0:
            raise ValueError(f"data holds no samples (shape {tuple(leaves[0].shape)}); pass at "
                             "least one sample")
        self.x = x
        size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        count = math.ceil(n / size)
        self.nbatches = count if steps is None else min(count, steps)
        self.n = min(n, self.nbatches * size)
        if batch_size is None:
            row_bytes = sum(int(np.prod(a.shape[1:], dtype=np.int64)) * np.dtype(
                a.dtype.as_numpy_dtype if isinstance(a.dtype, tf.DType) else a.dtype).itemsize
                for a in leaves)
            per_call = _CHUNK_BYTES // max(row_bytes, 1) // size * size
            self.chunk = int(min(max(per_call, size), _MAX_CHUNK))
        else:
            self.chunk = size

    def __iter__(self):
        step = self.chunk
        for start in range(0, self.n, step):
            stop = min(start + step, self.n)
            yield tf.nest.map_structure(lambda a: _to_tensors(a[start:stop]), self.x)


class _DatasetBatches:
    """The batches of a ``tf.data.Dataset``, read again on every pass."""

    def __init__(self, dataset, steps):
        card = int(dataset.cardinality())
        if steps is None and card == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "data is an infinite tf.data.Dataset (e.g. after .repeat()) and steps=None; "
                "pass steps=<number of batches> to say how many batches to read")
        self.dataset = dataset if steps is None else dataset.take(steps)

    def __iter__(self):
        for i, element in enumerate(self.dataset):
            yield _features(element, f"element {i} of the dataset")


class _OnceBatches:
    """The batches of a generator or other iterable: read once, on the first pass, into
    memory (``x`` only, as tensors), and replayed on the later passes."""

    def __init__(self, iterable, steps):
        self.iterable = iterable
        self.steps = steps
        self.batches: Optional[List] = None

    def __iter__(self):
        if self.batches is None:
            self.batches = self._read()
        return iter(self.batches)

    def _read(self) -> List:
        steps = self.steps
        batches: List = []
        iterator = iter(self.iterable)
        nbytes = 0
        while steps is None or len(batches) < steps:
            try:
                element = next(iterator)
            except StopIteration:
                break
            x = _to_tensors(_features(element, f"batch {len(batches)} of the generator"))
            batches.append(x)
            if steps is None:
                nbytes += sum(int(t.shape.num_elements() or 0) * t.dtype.size
                              for t in tf.nest.flatten(x))
                if len(batches) > _MAX_UNBOUNDED_BATCHES or nbytes > _MAX_UNBOUNDED_BYTES:
                    raise ValueError(
                        f"data: the {type(self.iterable).__name__} gave {len(batches)} batches "
                        f"({nbytes / 2 ** 20:.0f} MiB) without running out, and steps=None; if "
                        "it is endless pass steps=<number of batches>, otherwise give the data "
                        "as a tf.data.Dataset (read again on every pass, not held in memory)")
        return batches


def _batches(data, batch_size, steps):
    """A re-iterable of ``x`` batches (nested tensors), the same on every pass."""
    if isinstance(data, tf.data.Dataset):
        if batch_size is not None:
            raise ValueError(
                f"batch_size={batch_size!r} applies to array data only; data is a "
                "tf.data.Dataset, whose elements are batches already: drop batch_size (or "
                "re-batch the dataset with .unbatch().batch(n))")
        return _DatasetBatches(data, steps)
    x = None
    if _array_structure(data) and not isinstance(data, (list, tuple)):
        x = data
    elif isinstance(data, tuple) and 1 <= len(data) <= 3 and _array_structure(data[0]):
        x = data[0]
    if x is not None:
        return _ArrayBatches(x, batch_size, steps)
    if isinstance(data, (str, bytes, dict, tuple)) or not (
            hasattr(data, "__iter__") or hasattr(data, "__next__")):
        raise TypeError(
            "data must be a tf.data.Dataset, an array (NumPy or tensor), a tuple (x, y) or "
            "(x, y, sample_weight) of arrays, or a generator / iterable of batches x or (x, y); "
            f"received data of type {type(data).__name__}: {_short_repr(data)}")
    if batch_size is not None:
        raise ValueError(
            f"batch_size={batch_size!r} applies to array data only; data is a "
            f"{type(data).__name__}, whose items are batches already: drop batch_size")
    return _OnceBatches(data, steps)


def _short_repr(obj, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------------------
# Capturing the inputs of the layers
# --------------------------------------------------------------------------------------

def _moments64(x, kept, mask):
    """``(rows, count, mean, m2)`` of ``x`` per channel over the axes not in ``kept``, float64.

    ``m2`` is the sum of squared deviations from the batch mean (two passes, no
    cancellation for inputs far from 0); ``count`` the positions per channel.
    """
    rank = x.shape.rank
    reduce = [a for a in range(rank) if a not in kept]
    xs = tf.cast(x, tf.float64)
    rows = tf.cast(tf.shape(xs)[0], tf.float64)
    if mask is None:
        n = tf.cast(tf.reduce_prod(tf.gather(tf.shape(xs), reduce)), tf.float64)
        mean = tf.reduce_mean(xs, reduce, keepdims=True)
        m2 = tf.reduce_sum(tf.square(xs - mean), reduce)
        count = tf.fill(tf.shape(m2), n)
        return rows, count, tf.reshape(mean, tf.shape(m2)), m2
    w = tf.broadcast_to(tf.expand_dims(tf.cast(mask, tf.bool), kept[0]), tf.shape(xs))
    zero = tf.zeros_like(xs)
    count = tf.reduce_sum(tf.cast(w, tf.float64), reduce, keepdims=True)
    mean = tf.math.divide_no_nan(tf.reduce_sum(tf.where(w, xs, zero), reduce, keepdims=True),
                                 count)
    m2 = tf.reduce_sum(tf.where(w, tf.square(xs - mean), zero), reduce)
    return rows, tf.reshape(count, tf.shape(m2)), tf.reshape(mean, tf.shape(m2)), m2


def _stacked_moments(x, kept, mask):
    rows, count, mean, m2 = _moments64(x, kept, mask)
    return tf.stack([tf.fill(tf.shape(m2), rows), count, mean, m2])


class _Entry:
    def __init__(self, index, path, layer, kind):
        self.index = index
        self.path = path
        self.layer = layer
        self.kind = kind
        self.calls = 0  # per forward pass, counted in the first one


class _Capture:
    """Wraps the ``call`` of every statistics layer; the wrapper reduces its inputs.

    Only the layer whose index is ``active`` reduces its inputs (``tf.cond`` in a
    traced function, so one trace serves every layer); the others pass through.
    ``results[index]`` collects, per call, a float64 tensor ``(4, channels...)``
    stacking rows, count, mean and m2 (:func:`_moments64`).
    """

    def __init__(self, entries: Sequence[_Entry], graph: bool):
        self.entries = list(entries)
        self.graph = graph
        self.active = -1
        self.results: Dict[int, list] = {}
        self.order: Optional[List[_Entry]] = None  # first-call order, while discovering
        self._saved = []

    def install(self):
        for entry in self.entries:
            layer = entry.layer
            had = "call" in vars(layer)
            original = layer.call
            self._saved.append((layer, had, vars(layer).get("call")))
            object.__setattr__(layer, "call", self._wrapper(entry, original))

    def restore(self):
        while self._saved:
            layer, had, previous = self._saved.pop()
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                try:
                    object.__delattr__(layer, "call")
                except AttributeError:
                    pass

    def _wrapper(self, entry, original):
        def call(*args, **kwargs):
            x = args[0] if args else kwargs.get("inputs")
            mask = None
            if entry.kind.masked:
                mask = kwargs.get("mask", args[2] if len(args) > 2 else None)
            self._record(entry, x, mask)
            return original(*args, **kwargs)

        return call

    def _record(self, entry, x, mask):
        if self.order is not None:
            if entry not in self.order:
                self.order.append(entry)
            entry.calls += 1
        x = tf.convert_to_tensor(x)
        rank = x.shape.rank
        kept = entry.kind.kept_axes(entry.layer, rank)
        if mask is not None:
            mask = tf.convert_to_tensor(mask)
            if mask.shape.rank != rank - 1 or len(kept) != 1:
                raise ValueError(
                    f"recompute_batch_statistics: layer {entry.path!r} received a mask of "
                    f"shape {tuple(mask.shape)} for an input of shape {tuple(x.shape)}; a mask "
                    "must have rank = input rank - 1 and the layer a single channel axis")
        if self.graph:
            shape = [4] + [x.shape[a] for a in kept]
            out = tf.cond(tf.equal(self.active, entry.index),
                          lambda: _stacked_moments(x, kept, mask),
                          lambda: tf.zeros(shape, tf.float64))
        elif self.active == entry.index:
            out = _stacked_moments(x, kept, mask)
        else:
            return
        self.results.setdefault(entry.index, []).append(out)


def _forward(model, capture: _Capture):
    """``f(x, active) -> {str(index): [moments per call]}`` (:class:`_Capture`)."""

    def step(x, active):
        capture.active = active
        capture.results = {}
        model(x, training=False)
        return {str(k): v for k, v in capture.results.items()}

    if not capture.graph:
        return step
    # the step has no tensor-dependent Python control flow: nothing for AutoGraph to convert
    return tf.function(step, reduce_retracing=True, autograph=False)


# --------------------------------------------------------------------------------------
# Merging and assigning
# --------------------------------------------------------------------------------------

def _merge(acc, batch):
    """Chan et al.'s pairwise update of ``(count, mean, m2)``, per channel, float64."""
    n_a, mean_a, m2_a = acc
    n_b, mean_b, m2_b = batch
    n = n_a + n_b
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(n > 0, n_b / np.where(n > 0, n, 1.0), 0.0)
    delta = mean_b - mean_a
    return n, mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac


def _relative_change(new, old):
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.abs(new - old)
        rel = np.where(old != 0, diff / np.abs(np.where(old != 0, old, 1.0)),
                       np.where(diff == 0, 0.0, np.inf))
    return float(np.max(rel)) if rel.size else 0.0


def _assign(entry: _Entry, count, mean, m2, samples) -> LayerStatistics:
    layer = entry.layer
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(count > 0, m2 / np.where(count > 0, count, 1.0), np.nan)
    ok = (count > 0) & np.isfinite(mean) & np.isfinite(var)
    var = np.maximum(var, 0.0)
    eps = float(getattr(layer, "epsilon", 0.0))
    values = {"mean": mean, "variance": var, "stddev": np.sqrt(var + eps)}
    targets = entry.kind.targets(layer)
    mean_change = None
    variance_change = 0.0
    for attr, quantity in targets:
        variable = getattr(layer, attr)
        old = np.asarray(variable.numpy())
        new = np.where(ok.reshape(old.shape), values[quantity].reshape(old.shape),
                       old.astype(np.float64))
        new = new.astype(old.dtype)
        if attr == "moving_mean":
            mean_change = float(np.max(np.abs(new.astype(np.float64) - old))) if new.size else 0.0
        elif attr == "moving_variance":
            variance_change = _relative_change(new.astype(np.float64), old.astype(np.float64))
        variable.assign(new)
    return LayerStatistics(
        path=entry.path,
        name=layer.name,
        layer_class=type(layer),
        variables=tuple(attr for attr, _ in targets),
        calls=entry.calls,
        samples=int(samples),
        positions=int(np.max(count)) if count.size else 0,
        mean_change=mean_change,
        variance_change=variance_change,
        unchanged_channels=int(np.size(ok) - np.count_nonzero(ok)),
    )


# --------------------------------------------------------------------------------------
# The function
# --------------------------------------------------------------------------------------

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
            f"model of type {type(model).__name__}: {_short_repr(model)}; wrap a single layer "
            "in keras.Sequential([keras.Input(shape), layer])")
    batch_size = _check_count("batch_size", batch_size,
                              "pass the number of samples per batch, e.g. batch_size=32, or None")
    steps = _check_count("steps", steps,
                         "pass the number of batches to read, e.g. steps=100, or None for all")
    source = _batches(data, batch_size, steps)

    found = _statistics_layers(model)
    if not found:
        return RecomputeReport(layers=())

    first = next(iter(source), None)
    if first is None:
        raise ValueError(f"data gave no batches (steps={steps}); pass at least one batch")
    first = _to_tensors(first)
    _rows(first)  # a leading batch axis
    if not model.built or not all(layer.built for _, layer in found):
        model(first, training=False)  # build it eagerly, before tracing

    variables = list(model.variables)
    snapshot = [np.array(v.numpy(), copy=True) for v in variables]
    capture = None
    try:
        entries = [_Entry(i, path, layer, _kind_of(layer)) for i, (path, layer) in
                   enumerate(found)]
        capture = _Capture(entries, graph=not getattr(model, "run_eagerly", False))
        capture.install()
        forward = _forward(model, capture)
        active = (lambda i: tf.constant(i, tf.int32)) if capture.graph else (lambda i: i)

        capture.order = []  # discovery: which layers run, and in which order
        if capture.graph:  # one trace, for batches of any size
            forward.get_concrete_function(
                tf.nest.map_structure(
                    lambda t: tf.TensorSpec([None] + t.shape.as_list()[1:], t.dtype), first),
                tf.TensorSpec([], tf.int32))
        else:
            forward(first, active(-1))
        order, capture.order = capture.order, None
        not_called = tuple(e.path for e in entries if e not in order)

        targets = {id(getattr(e.layer, attr)) for e in order
                   for attr, _ in e.kind.targets(e.layer)}
        records = []
        rows_per_pass = None
        batches_per_pass = 0
        for entry in order:
            acc = None
            samples = 0.0
            rows = 0
            batches = 0
            for x in source:
                x = _to_tensors(x)
                rows += _rows(x)
                batches += 1
                for out in forward(x, active(entry.index)).get(str(entry.index), ()):
                    r, count, mean, m2 = np.asarray(out)
                    samples += float(r.flat[0]) if r.size else 0.0
                    acc = (count, mean, m2) if acc is None else _merge(acc, (count, mean, m2))
            if rows_per_pass is None:
                rows_per_pass, batches_per_pass = rows, batches
            elif (rows, batches) != (rows_per_pass, batches_per_pass):
                raise ValueError(
                    f"data gave {rows_per_pass} samples in {batches_per_pass} batches on the "
                    f"first pass but {rows} samples in {batches} batches on the pass for layer "
                    f"{entry.path!r}; the data must give the same samples on every pass (one "
                    "per layer): use a deterministic tf.data pipeline, or steps=")
            if acc is None:
                raise ValueError(f"data gave no batches (steps={steps}); pass at least one batch")
            records.append(_assign(entry, *acc, samples=samples))
    except BaseException:
        for v, value in zip(variables, snapshot):
            v.assign(value)
        raise
    finally:
        if capture is not None:
            capture.restore()

    moved = [v for v, value in zip(variables, snapshot)
             if id(v) not in targets and not np.array_equal(v.numpy(), value, equal_nan=True)]
    if moved:
        for v, value in zip(variables, snapshot):
            if id(v) not in targets:
                v.assign(value)
        warnings.warn(
            "recompute_batch_statistics: the inference passes changed variable(s) "
            f"{[v.path for v in moved]}, which are not batch statistics; they were put back",
            RuntimeWarning, stacklevel=2)
    if records:
        batches_per_pass = getattr(source, "nbatches", batches_per_pass)
    return RecomputeReport(layers=tuple(records), batches=batches_per_pass,
                           samples=rows_per_pass or 0, not_called=not_called)
