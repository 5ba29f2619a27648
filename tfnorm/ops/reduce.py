"""Sums over the three reduction patterns of normalization, fast under both compilers.

Normalization reduces a tensor viewed as 2-D or 3-D:

* ``sum_rows``  ``(R, C) -> (R, 1)``: over the minor axis (LayerNorm, RMSNorm);
* ``sum_cols``  ``(R, C) -> (1, C)``: over the leading axis (BatchNorm);
* ``sum_middle`` ``(A, S, C) -> (A, 1, C)``: over the middle axis (GroupNorm,
  InstanceNorm: per sample and channel over the spatial positions).

Without XLA, and under XLA on GPU, TensorFlow's and XLA's own reductions are
used as they are (a weighted row sum is a matrix-vector product, which needs
no temporary for the product). XLA on CPU emits a reduction as a loop that is
compute-bound when the reduced axis is not the minor one or the output is
small. There, measured on 2 cores (see ``tfnorm bench``):

* a row sum is a matrix-vector product with a vector of ones (about 3x faster
  than XLA's reduce on 4096 x 1024);
* a column or middle sum first adds the ``k`` (up to 8) equal slices of the
  reduced axis elementwise, a vectorized, parallel loop that XLA fuses with the
  producer, and reduces the ``k`` times shorter rest (3-4x faster on
  32 x 3136 x 64 than one reduce; deeper trees and matrix products were slower).

The results are the same sums in the input dtype (float32 or float64),
accumulated in a different order.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

__all__ = ["in_xla", "xla_on_cpu", "sum_rows", "sum_cols", "sum_middle", "sum_over"]

# the context TensorFlow itself consults to specialize ops for XLA (False where it moved)
from tfnorm._compat import graph_in_xla_context as _graph_in_xla  # noqa: E402


def in_xla() -> bool:
    """True while tracing a function compiled with XLA (``jit_compile=True``)."""
    if tf.executing_eagerly():
        return False
    try:
        return bool(_graph_in_xla(tf.compat.v1.get_default_graph()))
    except Exception:  # pragma: no cover - defensive: never fail a trace for a speed hint
        return False


def xla_on_cpu() -> bool:
    """Whether this trace is compiled by XLA for a CPU (no GPU visible)."""
    if not in_xla():
        return False
    try:
        return not tf.config.list_logical_devices("GPU")
    except Exception:  # pragma: no cover
        return False


_FOLD = (8, 7, 6, 5, 4, 3, 2)


def _fold(x: tf.Tensor, axis: int) -> tf.Tensor:
    """Adds the ``k`` equal slices of ``axis`` (k the largest of 8..2 dividing it)."""
    n = x.shape[axis]
    k = next((k for k in _FOLD if n is not None and n >= 2 * k and n % k == 0), None)
    if k is None:
        return x
    dims = tf.unstack(tf.shape(x))
    shape = dims[:axis] + [k, n // k] + dims[axis + 1 :]
    parts = tf.unstack(tf.reshape(x, tf.stack(shape)), axis=axis)
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def sum_rows(
    x: tf.Tensor, weights: Optional[tf.Tensor] = None, xla_cpu: Optional[bool] = None
) -> tf.Tensor:
    """``sum_c x[r, c] * weights[c]`` for a 2-D ``x``, shape ``(R, 1)``.

    ``xla_cpu``: whether the sum is compiled by XLA for a CPU; None detects it
    from the trace (a gradient function of an XLA-compiled function is traced
    outside the XLA context, so kernels pass the forward's answer down).

    Example:
      >>> sum_rows(tf.constant([[1.0, 2.0], [3.0, 4.0]])).numpy().ravel().tolist()
      [3.0, 7.0]
    """
    if xla_cpu is None:
        xla_cpu = xla_on_cpu()
    if weights is None:
        if xla_cpu:
            return tf.matmul(x, tf.ones([tf.shape(x)[1], 1], x.dtype))
        return tf.reduce_sum(x, 1, keepdims=True)
    return tf.matmul(x, tf.reshape(weights, [-1, 1]))


def sum_cols(
    x: tf.Tensor, weights: Optional[tf.Tensor] = None, xla_cpu: Optional[bool] = None
) -> tf.Tensor:
    """``sum_r weights[r] * x[r, c]`` for a 2-D ``x``, shape ``(1, C)`` (``xla_cpu`` as above).

    Example:
      >>> sum_cols(tf.constant([[1.0, 2.0], [3.0, 4.0]])).numpy().ravel().tolist()
      [4.0, 6.0]
    """
    if xla_cpu is None:
        xla_cpu = xla_on_cpu()
    if weights is not None:
        if not xla_cpu:
            return tf.matmul(tf.reshape(weights, [1, -1]), x)
        x = x * tf.reshape(weights, [-1, 1])
    if xla_cpu:
        x = _fold(x, 0)
    return tf.reduce_sum(x, 0, keepdims=True)


def sum_middle(x: tf.Tensor, xla_cpu: Optional[bool] = None) -> tf.Tensor:
    """``sum_s x[a, s, c]`` for a 3-D ``x``, shape ``(A, 1, C)`` (``xla_cpu`` as above).

    Example:
      >>> sum_middle(tf.ones([2, 3, 4]))[:, 0, 0].numpy().tolist()
      [3.0, 3.0]
    """
    if xla_cpu is None:
        xla_cpu = xla_on_cpu()
    if xla_cpu:
        x = _fold(x, 1)
    return tf.reduce_sum(x, 1, keepdims=True)


def _block(axes, rank):
    """``(start, stop)`` when ``axes`` are one contiguous run of axes, else None."""
    axes = sorted(a % rank for a in axes)
    if axes and axes == list(range(axes[0], axes[-1] + 1)):
        return axes[0], axes[-1] + 1
    return None


def sum_over(x: tf.Tensor, axes, xla_cpu: Optional[bool] = None) -> tf.Tensor:
    """``reduce_sum(x, axes, keepdims=True)``, through the fast patterns under XLA on CPU.

    A contiguous run of axes is a row, column or middle sum of a free reshape
    of ``x``; anything else is TensorFlow's reduction.

    Example:
      >>> sum_over(tf.ones([2, 3, 4]), [1, 2]).numpy().ravel().tolist()
      [12.0, 12.0]
    """
    if xla_cpu is None:
        xla_cpu = xla_on_cpu()
    axes = [a % x.shape.rank for a in axes]
    block = _block(axes, x.shape.rank) if xla_cpu else None
    if block is None:
        return tf.reduce_sum(x, axes, keepdims=True)
    start, stop = block
    dims = x.shape.as_list()
    dyn = tf.shape(x)
    out_shape = tf.tensor_scatter_nd_update(
        dyn, [[a] for a in axes], tf.ones([len(axes)], dyn.dtype)
    )

    def size(lo, hi):
        known = dims[lo:hi]
        if all(d is not None for d in known):
            return int(np.prod(known, dtype=np.int64))
        return tf.reduce_prod(dyn[lo:hi])

    def shape(*sizes):
        if all(isinstance(v, int) for v in sizes):
            return list(sizes)
        return tf.stack([tf.cast(v, tf.int32) for v in sizes])

    outer, inner = size(0, start), size(stop, len(dims))
    reduced = size(start, stop)
    if isinstance(inner, int) and inner == 1:
        s = sum_rows(tf.reshape(x, shape(outer, reduced)), xla_cpu=True)
    elif isinstance(outer, int) and outer == 1:
        s = sum_cols(tf.reshape(x, shape(reduced, inner)), xla_cpu=True)
    else:
        s = sum_middle(tf.reshape(x, shape(outer, reduced, inner)), xla_cpu=True)
    return tf.reshape(s, out_shape)
