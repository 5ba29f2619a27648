"""Statistics: moments over arbitrary axes, optionally masked, in float32.

Every layer in tfnorm takes its statistics from here. Half-precision input is
upcast to float32 for the reductions (``stats_dtype``); float64 input keeps
float64 so that finite-difference checks stay exact. Variances are clipped at
zero, so a constant input gives a variance of exactly 0 and, with the layer's
epsilon, a finite output.

:func:`moments` and :func:`mean_square` reduce arbitrary axes (the plain-op
paths); :func:`row_moments` and :func:`grouped_moments` are the same two-pass
statistics of the kernels' views (:mod:`tfnorm.ops.layout`), per row of an
``(R, C)`` view and per ``(a, channel group)`` of an ``(A, S, C)`` view, with
the sums of :mod:`tfnorm.ops.reduce` that suit the compiler.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf

from tfnorm.ops.reduce import sum_middle, sum_over, sum_rows, xla_on_cpu

__all__ = [
    "kept",
    "stats_dtype",
    "to_stats",
    "moments",
    "mean_square",
    "shifted_sums",
    "moments_from_sums",
    "replicas_in_sync",
    "replica_moments",
    "ViewMoments",
    "row_moments",
    "grouped_moments",
    "group_size",
    "group_sum",
]

_HALF = (tf.float16, tf.bfloat16)


def stats_dtype(dtype) -> tf.DType:
    """The dtype statistics are computed in: float32 for half precision, else ``dtype``."""
    dtype = tf.as_dtype(dtype)
    if dtype in _HALF:
        return tf.float32
    if not dtype.is_floating:
        raise ValueError(
            f"cannot normalize an input of dtype {dtype.name}; cast it to a float dtype first "
            "(e.g. tf.cast(x, 'float32'))"
        )
    return dtype


def to_stats(x: tf.Tensor) -> tf.Tensor:
    """Casts ``x`` to its statistics dtype (a no-op for float32/float64)."""
    dt = stats_dtype(x.dtype)
    return x if x.dtype == dt else tf.cast(x, dt)


def kept(mask) -> tf.Tensor:
    """A boolean mask: ``mask`` itself, or where a numeric ``mask`` is nonzero (as in Keras).

    Example:
      >>> kept(tf.constant([0.0, 0.5, -2.0])).numpy().tolist()
      [False, True, True]
    """
    mask = tf.convert_to_tensor(mask)
    return mask if mask.dtype.is_bool else tf.not_equal(mask, tf.zeros([], mask.dtype))


def _mask_weights(mask, x) -> tf.Tensor:
    w = tf.cast(mask, x.dtype)
    return tf.broadcast_to(w, tf.shape(x))


def moments(
    x: tf.Tensor,
    axes: Sequence[int],
    mask: Optional[tf.Tensor] = None,
    keepdims: bool = True,
    correction: int = 0,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Mean and variance of ``x`` over ``axes``, in the statistics dtype.

    Two passes (mean, then mean squared deviation), so no cancellation for
    inputs with a large mean.

    Args:
      x: a float tensor.
      axes: the axes to reduce.
      mask: optional tensor broadcastable to ``x``; entries where it is 0 are
        ignored (padded steps). An all-masked slice gives mean 0 and variance 0.
      keepdims: keep reduced axes with length 1.
      correction: 0 for the population variance, 1 for the unbiased one.

    Returns:
      ``(mean, variance)``, variance clipped at 0.

    Example:
      >>> import numpy as np
      >>> m, v = moments(tf.constant([[1.0, 2.0, 3.0]]), axes=[1])
      >>> [round(float(m[0, 0]), 4)], [round(float(v[0, 0]), 4)]
      ([2.0], [0.6667])
    """
    axes = list(axes)
    xs = to_stats(x)
    if mask is None:
        n = tf.cast(tf.reduce_prod(tf.gather(tf.shape(xs), axes)), xs.dtype)
        if xla_on_cpu():  # XLA's CPU reductions are slow: see tfnorm.ops.reduce
            mean = sum_over(xs, axes, xla_cpu=True) / n
            sq = sum_over(tf.math.squared_difference(xs, mean), axes, xla_cpu=True)
        else:
            mean = tf.reduce_mean(xs, axes, keepdims=True)
            sq = tf.reduce_sum(tf.math.squared_difference(xs, mean), axes, keepdims=True)
        var = sq / tf.maximum(n - correction, 1) if correction else sq / n
    else:
        w = _mask_weights(mask, xs)
        count = tf.reduce_sum(w, axes, keepdims=True)
        mean = tf.math.divide_no_nan(tf.reduce_sum(xs * w, axes, keepdims=True), count)
        sq = tf.reduce_sum(w * tf.math.squared_difference(xs, mean), axes, keepdims=True)
        var = tf.math.divide_no_nan(sq, tf.maximum(count - correction, 1) if correction else count)
    var = tf.maximum(var, tf.zeros([], var.dtype))
    if not keepdims:
        mean = tf.squeeze(mean, axes)
        var = tf.squeeze(var, axes)
    return mean, var


def mean_square(
    x: tf.Tensor, axes: Sequence[int], mask: Optional[tf.Tensor] = None, keepdims: bool = True
) -> tf.Tensor:
    """Mean of ``x**2`` over ``axes``: the second moment without the mean (RMSNorm, FRN).

    Example:
      >>> float(mean_square(tf.constant([[3.0, 4.0]]), axes=[1])[0, 0])
      12.5
    """
    axes = list(axes)
    xs = to_stats(x)
    if mask is None:
        if xla_on_cpu():
            n = tf.cast(tf.reduce_prod(tf.gather(tf.shape(xs), axes)), xs.dtype)
            ms = sum_over(tf.square(xs), axes, xla_cpu=True) / n
            return ms if keepdims else tf.squeeze(ms, axes)
        return tf.reduce_mean(tf.square(xs), axes, keepdims=keepdims)
    w = _mask_weights(mask, xs)
    ms = tf.math.divide_no_nan(
        tf.reduce_sum(w * tf.square(xs), axes, keepdims=True), tf.reduce_sum(w, axes, keepdims=True)
    )
    return ms if keepdims else tf.squeeze(ms, axes)


def shifted_sums(
    x: tf.Tensor, axes: Sequence[int], shift: tf.Tensor, mask: Optional[tf.Tensor] = None
):
    """Count, sum and sum of squares of ``x - shift`` over ``axes`` (keepdims).

    The building block of statistics that must be combined across replicas
    with a single all-reduce: sums add, means do not. ``shift`` (for example
    the moving mean) removes most of the cancellation of the one-pass formula.
    """
    axes = list(axes)
    xs = to_stats(x) - tf.cast(shift, stats_dtype(x.dtype))
    if mask is None:
        n = tf.cast(tf.reduce_prod(tf.gather(tf.shape(xs), axes)), xs.dtype)
        count = tf.ones_like(tf.reduce_sum(xs, axes, keepdims=True)) * n
        s1 = tf.reduce_sum(xs, axes, keepdims=True)
        s2 = tf.reduce_sum(tf.square(xs), axes, keepdims=True)
    else:
        w = _mask_weights(mask, xs)
        count = tf.reduce_sum(w, axes, keepdims=True)
        s1 = tf.reduce_sum(w * xs, axes, keepdims=True)
        s2 = tf.reduce_sum(w * tf.square(xs), axes, keepdims=True)
    return count, s1, s2


def moments_from_sums(count, s1, s2, shift):
    """Mean and (clipped) variance from :func:`shifted_sums` output."""
    m1 = tf.math.divide_no_nan(s1, count)
    var = tf.math.divide_no_nan(s2, count) - tf.square(m1)
    var = tf.maximum(var, tf.zeros([], var.dtype))
    return m1 + tf.cast(shift, m1.dtype), var


def replicas_in_sync() -> int:
    """Replicas whose batches are combined by :func:`replica_moments` here (1 outside ``strategy.run``)."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def replica_moments(
    x: tf.Tensor,
    axes: Sequence[int],
    *,
    shift: Optional[tf.Tensor] = None,
    mask: Optional[tf.Tensor] = None,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Mean and variance over ``axes`` of the global batch of all replicas in sync (keepdims).

    Inside ``strategy.run`` with more than one replica, every replica gets the
    statistics of the concatenation of all replicas' inputs; elsewhere this is
    :func:`moments`. With a ``shift`` (e.g. a moving mean, the same on every
    replica) one all-reduce carries the count, sum and sum of squares of
    ``x - shift``; without one, two all-reduces give the exact two-pass result
    (the global mean, then the squared deviations from it). Gradients flow
    through the all-reduce. ``axes`` must include the batch axis 0.

    Example:
      >>> m, v = replica_moments(tf.constant([[1.0], [3.0]]), axes=[0])
      >>> float(m[0, 0]), float(v[0, 0])
      (2.0, 1.0)
    """
    if replicas_in_sync() == 1:
        return moments(x, axes, mask)
    ctx = tf.distribute.get_replica_context()
    total = tf.distribute.ReduceOp.SUM
    if shift is not None:
        count, s1, s2 = shifted_sums(x, axes, shift, mask)
        count, s1, s2 = tf.unstack(ctx.all_reduce(total, tf.stack([count, s1, s2])))
        return moments_from_sums(count, s1, s2, shift)
    axes = list(axes)
    xs = to_stats(x)
    w = tf.ones_like(xs) if mask is None else _mask_weights(mask, xs)
    count = tf.reduce_sum(w, axes, keepdims=True)
    s1 = tf.reduce_sum(w * xs, axes, keepdims=True)
    count, s1 = tf.unstack(ctx.all_reduce(total, tf.stack([count, s1])))
    mean = tf.math.divide_no_nan(s1, count)
    sq = ctx.all_reduce(
        total, tf.reduce_sum(w * tf.math.squared_difference(xs, mean), axes, keepdims=True)
    )
    var = tf.maximum(tf.math.divide_no_nan(sq, count), tf.zeros([], sq.dtype))
    return mean, var


# ---------------------------------------------------------------------------
# Statistics of the kernels' views.


class ViewMoments(NamedTuple):
    """Two-pass statistics of a view, in the statistics dtype, reduced axes kept (length 1)."""

    mean: Optional[tf.Tensor]  # None without centering
    var: tf.Tensor  # clipped at 0; the mean square without centering
    centred: tf.Tensor  # x - mean, shaped like x (x itself without centering)
    sum_sq: tf.Tensor  # the sum of centred**2 that var divides
    count: tf.Tensor  # the values each statistic is taken over


def row_moments(
    x2: tf.Tensor, center: bool = True, correction: int = 0, xla_cpu: Optional[bool] = None
) -> ViewMoments:
    """Statistics of each row of a 2-D ``x2`` ``(R, C)``: shapes ``(R, 1)``.

    ``correction=1`` divides the sum of squares by ``C - 1`` (at least 1).
    ``xla_cpu`` as in :func:`tfnorm.ops.reduce.sum_rows`.

    Example:
      >>> m = row_moments(tf.constant([[1.0, 2.0, 3.0]]))
      >>> float(m.mean[0, 0]), round(float(m.var[0, 0]), 4), m.centred.numpy().tolist()
      (2.0, 0.6667, [[-1.0, 0.0, 1.0]])
    """
    xs = to_stats(x2)
    dt = xs.dtype
    mode = xla_on_cpu() if xla_cpu is None else xla_cpu
    n = tf.cast(tf.shape(xs)[1], dt)
    mean = None
    d = xs
    if center:
        mean = sum_rows(xs, xla_cpu=mode) / n
        d = xs - mean
    sq = sum_rows(tf.square(d), xla_cpu=mode)
    var = sq / tf.maximum(n - correction, 1.0) if correction else sq / n
    return ViewMoments(mean, tf.maximum(var, tf.zeros([], dt)), d, sq, n)


def group_size(x3: tf.Tensor, groups: int, dtype) -> tf.Tensor:
    """The number of values per ``(a, group)`` of an ``(A, S, C)`` tensor, as ``dtype``."""
    return tf.cast(tf.shape(x3)[1] * (x3.shape[-1] // groups), dtype)


def group_sum(t: tf.Tensor, groups: int) -> tf.Tensor:
    """Sums an ``(A, 1, C)`` tensor within channel groups; broadcastable result.

    Example:
      >>> group_sum(tf.constant([[[1.0, 2.0, 3.0, 4.0]]]), 2).numpy().tolist()
      [[[3.0, 3.0, 7.0, 7.0]]]
    """
    c = t.shape[-1]
    if groups == c:
        return t
    if groups == 1:
        return tf.reduce_sum(t, -1, keepdims=True)
    a = tf.shape(t)[0]
    g = tf.reshape(t, tf.stack([a, 1, groups, c // groups]))
    s = tf.reduce_sum(g, -1, keepdims=True)
    return tf.reshape(tf.broadcast_to(s, tf.shape(g)), tf.stack([a, 1, c]))


def grouped_moments(
    x3: tf.Tensor, groups: int, center: bool = True, xla_cpu: Optional[bool] = None
) -> ViewMoments:
    """Statistics per ``(a, channel group)`` of ``x3`` ``(A, S, C)`` over ``S`` and the group.

    ``mean``, ``var`` and ``sum_sq`` have shape ``(A, 1, C)`` or, for one
    group, ``(A, 1, 1)``; each channel carries its group's value
    (:func:`group_sum`). ``groups`` equal to ``C`` gives per-channel
    statistics (InstanceNorm, and BatchNorm with ``A = 1``). For arbitrary
    axes see :func:`tfnorm.ops.group_moments`.

    Example:
      >>> m = grouped_moments(tf.constant([[[1.0, 5.0], [3.0, 7.0]]]), groups=2)
      >>> m.mean.numpy().tolist(), m.var.numpy().tolist()
      ([[[2.0, 6.0]]], [[[1.0, 1.0]]])
    """
    xs = to_stats(x3)
    dt = xs.dtype
    mode = xla_on_cpu() if xla_cpu is None else xla_cpu
    n = group_size(xs, groups, dt)
    mean = None
    d = xs
    if center:
        mean = group_sum(sum_middle(xs, mode), groups) / n
        d = xs - mean
    sq = group_sum(sum_middle(tf.square(d), mode), groups)
    return ViewMoments(mean, tf.maximum(sq / n, tf.zeros([], dt)), d, sq, n)
