"""Applying statistics: ``y = (x - mean) / sqrt(var + eps) * scale + offset``.

The per-channel (or per-sample) factors are small, so they are folded in the
statistics dtype into one multiplier and one addend, and the big tensor sees a
single multiply-add in its own dtype: ``y = x * a + b`` with
``a = scale / sqrt(var + eps)`` and ``b = offset - mean * a``.
"""

from __future__ import annotations

import tensorflow as tf

from tfnorm.ops.kernel import FusedOp
from tfnorm.ops.layout import scalar
from tfnorm.ops.moments import stats_dtype
from tfnorm.ops.reduce import sum_over

__all__ = ["fold", "inverse_norm", "normalize", "rms_normalize"]


def fold(mean, var, scale=None, offset=None, epsilon: float = 1e-3, dtype=tf.float32):
    """The multiplier ``a`` and addend ``b`` with ``normalize(x) == x * a + b``.

    ``mean`` may be ``None`` (no centering, as in RMSNorm); then ``b`` is
    ``offset`` (or ``None``). Everything is computed in ``dtype``.
    """
    var = tf.cast(var, dtype)
    a = tf.math.rsqrt(var + scalar(epsilon, dtype))
    if scale is not None:
        a = a * tf.cast(scale, dtype)
    b = None
    if mean is not None:
        b = -tf.cast(mean, dtype) * a
    if offset is not None:
        b = tf.cast(offset, dtype) if b is None else b + tf.cast(offset, dtype)
    return a, b


def _apply(x, a, b):
    y = x * tf.cast(a, x.dtype)
    if b is not None:
        y = y + tf.cast(b, x.dtype)
    return y


def normalize(
    x: tf.Tensor, mean, var, scale=None, offset=None, epsilon: float = 1e-3, centred: bool = False
) -> tf.Tensor:
    """Normalizes ``x`` with given statistics; the result has ``x``'s dtype.

    Args:
      x: the input.
      mean, var: statistics broadcastable to ``x`` (any float dtype).
      scale, offset: optional learned gamma and beta, broadcastable to ``x``.
      epsilon: added to the variance.
      centred: subtract the mean before scaling, as is always done for half precision
        (for an ``x`` that was cast up from half precision).

    Example:
      >>> x = tf.constant([[1.0, 3.0]])
      >>> normalize(x, mean=2.0, var=1.0, epsilon=0.0).numpy().tolist()
      [[-1.0, 1.0]]
    """
    dtype = stats_dtype(x.dtype)
    if (dtype != x.dtype or centred) and mean is not None:
        # Half precision: centre first, in float32. The folded x*a + b overflows float16 and
        # cancels (even in float32) when |x| >> sigma, e.g. for a constant input of 1e4.
        a, b = fold(None, var, scale, offset, epsilon, dtype)
        y = (tf.cast(x, dtype) - tf.cast(mean, dtype)) * a
        return tf.cast(y if b is None else y + b, x.dtype)
    a, b = fold(mean, var, scale, offset, epsilon, dtype)
    return _apply(x, a, b)


def rms_normalize(
    x: tf.Tensor, mean_sq, scale=None, offset=None, epsilon: float = 1e-6
) -> tf.Tensor:
    """``x / sqrt(mean_sq + eps) * scale (+ offset)``: normalization without centering."""
    a, b = fold(None, mean_sq, scale, offset, epsilon, stats_dtype(x.dtype))
    return _apply(x, a, b)


def _inverse_norm_impl(w, *, axes):
    sq = sum_over(tf.square(w), axes)
    return tf.math.rsqrt(tf.maximum(sq, tf.constant(1e-30, w.dtype)))


_INVERSE_NORM = FusedOp(_inverse_norm_impl)  # differentiated by autodiff


def inverse_norm(w: tf.Tensor, axes) -> tf.Tensor:
    """``1 / ||w||`` over ``axes`` (kept as size-1 axes), in ``w``'s dtype.

    A zero norm gives ``1e15`` (the squared norm is floored at ``1e-30``), not
    inf. On a large tensor inside a graph it runs as one compiled kernel
    (:class:`tfnorm.ops.kernel.FusedOp`): a single read of ``w``, no squared copy.

    Example:
      >>> inverse_norm(tf.constant([[3.0, 0.0], [4.0, 2.0]]), [0]).numpy().tolist()
      [[0.20000000298023224, 0.5]]
    """
    axes = tuple(sorted(a % w.shape.rank for a in axes))
    return _INVERSE_NORM(w, axes=axes)
