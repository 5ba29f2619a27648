"""The ``data`` of :func:`~tfnorm.recompute_batch_statistics`, as the same batches on every pass.

:func:`batch_source` turns each accepted form into a re-iterable of ``x`` batches
(nested tensors): a ``tf.data.Dataset`` is read again on every pass, arrays are
sliced, and a generator or other iterable is read once, into memory, and replayed.
:func:`check_count` checks ``batch_size`` and ``steps``.

Example:
  >>> import numpy as np
  >>> from tfnorm.recompute.data import batch_source
  >>> source = batch_source(np.zeros((100, 3), "float32"), batch_size=32, steps=None)
  >>> source.nbatches, [int(x.shape[0]) for x in source]
  (4, [32, 32, 32, 4])
"""

from __future__ import annotations

import math
import numbers
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf

#: Default number of samples per batch for array data (as in ``keras.Model.fit``).
DEFAULT_BATCH_SIZE = 32
# Without ``steps``, a generator or iterable is read into memory up to these sizes; one that
# gives more is taken for an endless one.
_MAX_UNBOUNDED_BATCHES = 100_000
_MAX_UNBOUNDED_BYTES = 4 * 2**30
# Array data without batch_size: input rows per forward call (a few MiB, at most _MAX_CHUNK).
_CHUNK_BYTES = 4 * 2**20
_MAX_CHUNK = 1024


def check_count(name: str, value, hint: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"{name} must be a positive integer or None, received {name}={value!r}; {hint}"
        )
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
                "several inputs, give x as a dict or list inside the tuple: ((x1, x2), y)"
            )
        return element[0]
    return element


def batch_rows(x) -> int:
    leaf = tf.nest.flatten(x)[0]
    shape = leaf.shape
    if len(shape) == 0:
        raise ValueError(
            f"data: a batch holds a scalar of shape {tuple(shape)}; every input "
            "must have a leading batch axis"
        )
    return int(shape[0])


def to_tensors(x):
    return tf.nest.map_structure(
        lambda a: a if isinstance(a, tf.Tensor) else tf.convert_to_tensor(np.asarray(a)), x
    )


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
            raise ValueError(
                "data: an array input must have a leading batch axis, received "
                f"shapes {[tuple(a.shape) for a in leaves]}"
            )
        if len(sizes) != 1:
            raise ValueError(
                "data: the input arrays have different numbers of samples "
                f"{sorted(sizes)} (shapes {[tuple(a.shape) for a in leaves]})"
            )
        (n,) = sizes
        if n == 0:
            raise ValueError(
                f"data holds no samples (shape {tuple(leaves[0].shape)}); pass at least one sample"
            )
        self.x = x
        size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        count = math.ceil(n / size)
        self.nbatches = count if steps is None else min(count, steps)
        self.n = min(n, self.nbatches * size)
        if batch_size is None:
            row_bytes = sum(
                int(np.prod(a.shape[1:], dtype=np.int64))
                * np.dtype(
                    a.dtype.as_numpy_dtype if isinstance(a.dtype, tf.DType) else a.dtype
                ).itemsize
                for a in leaves
            )
            per_call = _CHUNK_BYTES // max(row_bytes, 1) // size * size
            self.chunk = int(min(max(per_call, size), _MAX_CHUNK))
        else:
            self.chunk = size

    def __iter__(self):
        step = self.chunk
        for start in range(0, self.n, step):
            stop = min(start + step, self.n)
            yield tf.nest.map_structure(lambda a, s=slice(start, stop): to_tensors(a[s]), self.x)


class _DatasetBatches:
    """The batches of a ``tf.data.Dataset``, read again on every pass."""

    def __init__(self, dataset, steps):
        card = int(dataset.cardinality())
        if steps is None and card == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "data is an infinite tf.data.Dataset (e.g. after .repeat()) and steps=None; "
                "pass steps=<number of batches> to say how many batches to read"
            )
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
            x = to_tensors(_features(element, f"batch {len(batches)} of the generator"))
            batches.append(x)
            if steps is None:
                nbytes += sum(
                    int(t.shape.num_elements() or 0) * t.dtype.size for t in tf.nest.flatten(x)
                )
                if len(batches) > _MAX_UNBOUNDED_BATCHES or nbytes > _MAX_UNBOUNDED_BYTES:
                    raise ValueError(
                        f"data: the {type(self.iterable).__name__} gave {len(batches)} batches "
                        f"({nbytes / 2**20:.0f} MiB) without running out, and steps=None; if "
                        "it is endless pass steps=<number of batches>, otherwise give the data "
                        "as a tf.data.Dataset (read again on every pass, not held in memory)"
                    )
        return batches


def batch_source(data, batch_size, steps):
    """A re-iterable of ``x`` batches (nested tensors), the same on every pass."""
    if isinstance(data, tf.data.Dataset):
        if batch_size is not None:
            raise ValueError(
                f"batch_size={batch_size!r} applies to array data only; data is a "
                "tf.data.Dataset, whose elements are batches already: drop batch_size (or "
                "re-batch the dataset with .unbatch().batch(n))"
            )
        return _DatasetBatches(data, steps)
    x = None
    if _array_structure(data) and not isinstance(data, (list, tuple)):
        x = data
    elif isinstance(data, tuple) and 1 <= len(data) <= 3 and _array_structure(data[0]):
        x = data[0]
    if x is not None:
        return _ArrayBatches(x, batch_size, steps)
    if isinstance(data, (str, bytes, dict, tuple)) or not (
        hasattr(data, "__iter__") or hasattr(data, "__next__")
    ):
        raise TypeError(
            "data must be a tf.data.Dataset, an array (NumPy or tensor), a tuple (x, y) or "
            "(x, y, sample_weight) of arrays, or a generator / iterable of batches x or (x, y); "
            f"received data of type {type(data).__name__}: {short_repr(data)}"
        )
    if batch_size is not None:
        raise ValueError(
            f"batch_size={batch_size!r} applies to array data only; data is a "
            f"{type(data).__name__}, whose items are batches already: drop batch_size"
        )
    return _OnceBatches(data, steps)


def short_repr(obj, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."
