"""Local response normalization as one op with its backward written out.

Along the channel axis, with ``W`` the window sum over the ``2 r + 1``
channels around each one (zeros beyond the edges; ``W`` is symmetric)::

    s = W(x**2)        t = bias + alpha * s        p = t ** -beta
    y = x * p

so, with ``dy`` the gradient reaching ``y``::

    dx = dy * p - 2 * alpha * beta * x * W(dy * y / t)

The window sum adds ``2 r + 1`` shifted slices of the zero-padded
squares: the same additions in the same order as a direct loop over the
window, in float32 (float64 for float64 input). Measured on 2 CPU cores
(32x56x56x64 float32), this beat a matrix product with a banded 0/1 matrix,
XLA's windowed reduction, concatenated shifts and cumulative sums (1.5-6x
slower, with XLA or without); a difference of cumulative sums would also
lose float32 precision. ``t ** -beta`` is a square root, reciprocal or product of
those for the common exponents (0.5, 0.75, 1, ...), several times cheaper
than a general power under XLA.

The forward pass writes the padded squares and ``y``; the backward pass
recomputes ``s`` from ``x`` (nothing but ``x`` is kept: saving ``t`` and
``p`` measured no faster) and sums a second window. The two passes are one
:class:`tfnorm.ops.kernel.FusedOp`: plain ops eagerly, part of the enclosing
XLA cluster under ``jit_compile=True``, and two small XLA clusters (forward,
then backward) inside a ``tf.function`` without XLA.
"""

from __future__ import annotations

import tensorflow as tf

from tfnorm.ops.kernel import FusedOp
from tfnorm.ops.moments import stats_dtype

__all__ = ["lrn", "window_sum"]


def window_sum(t: tf.Tensor, axis: int, radius: int) -> tf.Tensor:
    """``s[c] = sum(t[c - radius : c + radius + 1])`` along ``axis``, zeros beyond the edges.

    Example:
      >>> window_sum(tf.constant([[1.0, 2.0, 3.0, 4.0]]), axis=1, radius=1).numpy().tolist()
      [[3.0, 6.0, 9.0, 7.0]]
    """
    axis %= t.shape.rank
    size = t.shape[axis]
    r = radius if size is None else min(radius, size - 1)
    if r <= 0:
        return t
    if size is None:  # known only when the graph runs
        size = tf.shape(t)[axis]
    pads = [[0, 0]] * t.shape.rank
    pads[axis] = [r, r]
    padded = tf.pad(t, pads)
    lead = (slice(None),) * axis
    total = padded[lead + (slice(0, size),)]
    for i in range(1, 2 * r + 1):
        total = total + padded[lead + (slice(i, i + size),)]
    return total


def _neg_power(t: tf.Tensor, beta: float) -> tf.Tensor:
    """``t ** -beta``, through square roots and reciprocals where ``beta`` allows it."""
    if beta == 0.0:
        return tf.ones_like(t)
    if beta == 0.5:
        return tf.math.rsqrt(t)
    if beta == 1.0:
        return tf.math.reciprocal(t)
    if beta == 0.25:
        return tf.sqrt(tf.math.rsqrt(t))
    if beta == 0.75:
        r = tf.math.rsqrt(t)
        return r * tf.sqrt(r)
    if beta == 1.5:
        r = tf.math.rsqrt(t)
        return r * r * r
    if beta == 2.0:
        return tf.math.reciprocal(t * t)
    return tf.pow(t, tf.constant(-beta, t.dtype))


def _factor(xs, axis, radius, bias, alpha, beta):
    """``t = bias + alpha * W(x**2)`` and ``p = t ** -beta`` in the statistics dtype."""
    t = tf.constant(bias, xs.dtype) + tf.constant(alpha, xs.dtype) * window_sum(
        tf.square(xs), axis, radius
    )
    return t, _neg_power(t, beta)


def _lrn_forward(x, *, axis, radius, bias, alpha, beta):
    """``(y,)`` in ``x``'s dtype."""
    xs = tf.cast(x, stats_dtype(x.dtype))
    _, p = _factor(xs, axis, radius, bias, alpha, beta)
    return (tf.cast(xs * p, x.dtype),)


def _lrn_backward(dy, x, *, axis, radius, bias, alpha, beta):
    """The gradient of :func:`_lrn_forward` (module docstring), as a one-element list."""
    dt = stats_dtype(x.dtype)
    xr = tf.cast(x, dt)  # recomputed: no float32 copy of a half-precision x is kept
    dys = tf.cast(dy, dt)
    t, pr = _factor(xr, axis, radius, bias, alpha, beta)
    dx = dys * pr
    if beta != 0.0 and alpha != 0.0:
        u = dys * (xr * pr) / t
        dx = dx - tf.constant(2.0 * alpha * beta, dt) * xr * window_sum(u, axis, radius)
    return [tf.cast(dx, x.dtype)]


_LRN = FusedOp(_lrn_forward, _lrn_backward)


def lrn(
    x: tf.Tensor,
    depth_radius: int = 5,
    bias: float = 1.0,
    alpha: float = 1.0,
    beta: float = 0.5,
    axis: int = -1,
) -> tf.Tensor:
    """``x / (bias + alpha * sqr_sum) ** beta``, ``sqr_sum`` a window sum of ``x**2`` on ``axis``.

    The window covers the ``2 * depth_radius + 1`` channels around each one
    (``tf.nn.local_response_normalization`` for any rank and channel axis).
    Statistics in float32 for half-precision input; the result has the
    input's dtype. One op with the backward of the module docstring.

    Example:
      >>> y = lrn(tf.constant([[3.0, 4.0]]), depth_radius=1, bias=0.0, alpha=1.0, beta=0.5)
      >>> y.numpy().astype(float).round(4).tolist()
      [[0.6, 0.8]]
    """
    axis = int(axis) % x.shape.rank
    return _LRN(
        x,
        axis=axis,
        radius=int(depth_radius),
        bias=float(bias),
        alpha=float(alpha),
        beta=float(beta),
    )
