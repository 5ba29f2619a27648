"""Group reshapes and group statistics (GroupNorm, EvoNorm-S0, ...)."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from tfnorm.ops.moments import kept, to_stats
from tfnorm.ops.reduce import sum_over, xla_on_cpu

__all__ = ["split_groups", "merge_groups", "group_average", "group_moments", "divisors"]


def divisors(n: int):
    """Positive divisors of ``n`` (used to suggest valid ``groups`` values)."""
    return [d for d in range(1, n + 1) if n % d == 0]


def _dims(x):
    static = x.shape.as_list()
    dynamic = tf.shape(x)
    return [s if s is not None else dynamic[i] for i, s in enumerate(static)]


def split_groups(x: tf.Tensor, groups: int, axis: int) -> tf.Tensor:
    """Reshapes channel axis ``axis`` (size C) into two axes ``(groups, C // groups)``.

    Example:
      >>> split_groups(tf.zeros([2, 5, 6]), groups=3, axis=2).shape.as_list()
      [2, 5, 3, 2]
    """
    axis = axis % x.shape.rank
    dims = _dims(x)
    c = dims[axis]
    new = dims[:axis] + [groups, c // groups] + dims[axis + 1 :]
    return tf.reshape(x, tf.stack(new) if any(isinstance(d, tf.Tensor) for d in new) else new)


def merge_groups(x: tf.Tensor, axis: int) -> tf.Tensor:
    """Inverse of :func:`split_groups`: merges axes ``axis`` and ``axis + 1``."""
    axis = axis % x.shape.rank
    dims = _dims(x)
    new = dims[:axis] + [dims[axis] * dims[axis + 1]] + dims[axis + 2 :]
    return tf.reshape(x, tf.stack(new) if any(isinstance(d, tf.Tensor) for d in new) else new)


def group_average(t: tf.Tensor, groups: int, axis: int) -> tf.Tensor:
    """Averages ``t`` within channel groups along ``axis`` and broadcasts back.

    ``t`` is small (statistics with the reduced axes kept as 1), so the
    reshapes here cost nothing next to a pass over the activations.
    """
    axis = axis % t.shape.rank
    if groups == 1:
        return tf.reduce_mean(t, axis, keepdims=True) * tf.ones_like(t)
    g = split_groups(t, groups, axis)
    m = tf.reduce_mean(g, axis + 1, keepdims=True)
    m = tf.broadcast_to(m, tf.shape(g))
    return merge_groups(m, axis)


def group_moments(
    x: tf.Tensor,
    groups: int,
    channel_axis: int,
    reduce_axes: Sequence[int],
    mask: Optional[tf.Tensor] = None,
):
    """Mean and variance over ``reduce_axes`` and within each channel group.

    Returns float32 (or float64) statistics shaped like ``x`` with
    ``reduce_axes`` set to 1 and the channel axis full length (each channel
    carries its group's value), ready for :func:`tfnorm.ops.normalize`.

    Reduces over the spatial axes first to an (N, C)-sized tensor, then within
    groups on that small tensor: no 5-D reshape of the activations.

    ``mask`` (optional, broadcastable to ``x`` and the same for every channel
    of a position): only positions where it is nonzero count; what the others
    hold (inf included) does not matter. A slice with nothing kept has mean 0
    and variance 0.

    Example:
      >>> x = tf.constant([[[1.0], [3.0], [100.0]]])  # (N=1, T=3, C=1)
      >>> keep = tf.constant([[[True], [True], [False]]])
      >>> m, v = group_moments(x, 1, -1, [1], mask=keep)
      >>> float(m[0, 0, 0]), float(v[0, 0, 0])
      (2.0, 1.0)
    """
    rank = x.shape.rank
    channel_axis = channel_axis % rank
    reduce_axes = list(reduce_axes)
    xs = to_stats(x)
    if mask is not None:
        keep = tf.broadcast_to(kept(mask), tf.shape(xs))
        count = tf.reduce_sum(tf.cast(keep, xs.dtype), reduce_axes, keepdims=True)

        def kept_mean(t):
            kept = tf.where(keep, t, tf.zeros([], t.dtype))
            return tf.math.divide_no_nan(tf.reduce_sum(kept, reduce_axes, keepdims=True), count)

        mean = group_average(kept_mean(xs), groups, channel_axis)
        var = group_average(kept_mean(tf.math.squared_difference(xs, mean)), groups, channel_axis)
        return mean, tf.maximum(var, tf.zeros([], var.dtype))

    def average(t):
        if not reduce_axes:
            return t
        if xla_on_cpu():  # XLA's CPU reductions are slow: see tfnorm.ops.reduce
            n = tf.cast(tf.reduce_prod(tf.gather(tf.shape(t), reduce_axes)), t.dtype)
            return sum_over(t, reduce_axes, xla_cpu=True) / n
        return tf.reduce_mean(t, reduce_axes, keepdims=True)

    m_c = average(xs)
    mean = group_average(m_c, groups, channel_axis)
    v_c = average(tf.math.squared_difference(xs, mean))
    var = group_average(v_c, groups, channel_axis)
    return mean, tf.maximum(var, tf.zeros([], var.dtype))
