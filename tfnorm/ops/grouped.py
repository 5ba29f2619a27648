"""BatchNorm, GroupNorm and InstanceNorm: statistics per ``(a, group)`` of an ``(A, S, C)`` view.

The three ops share one kernel (:class:`tfnorm.ops.kernel.FusedOp`) on the
channels-last views of :func:`tfnorm.ops.layout.fast_view`: ``(N, S, C)``
for group and instance normalization (statistics per sample), ``(1, R, C)``
for batch normalization (``A = 1``: statistics over the batch). It computes
the statistics (:func:`tfnorm.ops.moments.grouped_moments`) over ``S`` and
the group's channels, normalizes and applies the learned scale and offset;
its backward pass reuses the forward's statistics (``(A, 1, C)`` tensors) and
recomputes ``x - mean`` on the fly. With ``n`` values per group,
``xhat = (x - mean) * r``, ``r = 1 / sqrt(var + epsilon)``,
``y = gamma * xhat + beta`` and ``g = gamma * dy``::

    dx     = r * (g - mean(g) - xhat * mean(g * xhat))       (means per group)
    dgamma = sum(dy * xhat)      dbeta = sum(dy)

Without centering (filter response normalization: instance normalization by
the root mean square) the ``mean(g)`` term and the mean drop out, and
``epsilon`` may be a scalar tensor (a learned epsilon) with the gradient
``-sum(g * xhat * r**2) / 2``.

Training batch normalization outside XLA uses TensorFlow's
``FusedBatchNormV3`` instead, which is faster still there. Other layouts
compute the same functions through :func:`tfnorm.ops.moments` (or
:func:`tfnorm.ops.group_moments`), :func:`tfnorm.ops.normalize` and autodiff.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfnorm.ops.groups import group_moments
from tfnorm.ops.kernel import FusedOp
from tfnorm.ops.layout import fast_view, flat, param_for, scalar, sorted_axes
from tfnorm.ops.moments import (
    group_size,
    group_sum,
    grouped_moments,
    mean_square,
    moments,
    stats_dtype,
    to_stats,
)
from tfnorm.ops.normalize import normalize, rms_normalize
from tfnorm.ops.reduce import in_xla, sum_middle, xla_on_cpu

__all__ = ["batch_norm", "group_norm", "instance_norm"]


def _grouped_forward(x3, gamma, beta, eps_in, *, groups, epsilon, center):
    """Normalizes ``x3`` ``(A, S, C)`` per ``(a, group)``: ``(y, mean, var, r)``, ``(A, 1, C)``.

    ``mean`` and ``var`` carry each group's value on its channels; without
    centering ``mean`` is 0 and ``var`` the mean square. ``eps_in``, a scalar
    tensor, replaces ``epsilon`` when given (and gets a gradient).
    """
    dt = stats_dtype(x3.dtype)
    eps = tf.cast(eps_in, dt) if eps_in is not None else scalar(epsilon, dt)
    stats = grouped_moments(x3, groups, center=center, xla_cpu=xla_on_cpu())
    r = tf.math.rsqrt(stats.var + eps)
    a = r * gamma if gamma is not None else r
    y = stats.centred * a
    if beta is not None:
        y = y + beta
    mean = stats.mean if center else tf.zeros_like(stats.var)
    return tf.cast(y, x3.dtype), mean, stats.var, r


def _grouped_backward(dy, x3, gamma, beta, eps_in, mean, var, r, *, groups, center):
    """Gradients of :func:`_grouped_forward` (module docstring): x[, gamma][, beta][, epsilon]."""
    dt = stats_dtype(x3.dtype)
    mode = xla_on_cpu()
    n = group_size(x3, groups, dt)
    dys = tf.cast(dy, dt)
    dd = tf.cast(x3, dt)
    if center:
        dd = dd - mean
    p = sum_middle(dys, mode)  # (A, 1, C): sum of dy
    q = sum_middle(dys * dd, mode)  # (A, 1, C): sum of dy * (x - mean)
    qr = q * r  # sum of dy * xhat
    gg = gamma if gamma is not None else tf.ones([], dt)
    mgx = group_sum(gg * qr, groups) / n  # mean(g * xhat) per group
    alpha = r * gg
    beta_ = -r * r * mgx
    if center:
        mg = group_sum(gg * p, groups) / n  # mean(g) per group
        dx = dys * alpha + (dd * beta_ - r * mg)
    else:
        dx = dys * alpha + dd * beta_
    grads = [tf.cast(dx, x3.dtype)]
    if gamma is not None:
        grads.append(tf.reshape(tf.reduce_sum(qr, [0, 1]), tf.shape(gamma)))
    if beta is not None:
        grads.append(tf.reshape(tf.reduce_sum(p, [0, 1]), tf.shape(beta)))
    if eps_in is not None:  # dr / d epsilon = -r**3 / 2 per (a, group)
        de = -0.5 * tf.reduce_sum(gg * qr * r * r)
        grads.append(tf.reshape(tf.cast(de, eps_in.dtype), tf.shape(eps_in)))
    return grads


def _grouped(op, view, groups, scale, offset, epsilon, center=True):
    """``op`` (the grouped kernel) on ``view``: ``(y, mean, var)``, the statistics ``(A, 1, C)``."""
    c, dt = view.size, stats_dtype(view.tensor.dtype)
    learned = isinstance(epsilon, (tf.Tensor, tf.Variable))
    return op(
        view.tensor,
        flat(scale, c, dt),
        flat(offset, c, dt),
        epsilon if learned else None,
        groups=int(groups),
        epsilon=0.0 if learned else float(epsilon),
        center=bool(center),
    )


# The fallbacks run in the statistics dtype from one cast of x and cast the output once: the
# gradients of the centring, mean and variance branches then meet in float32 (each rounded
# to float16 on its own, they overflow it for inputs of large magnitude).


def _batch_norm_plain(x, axes, scale, offset, epsilon):
    rank = x.shape.rank
    axes = sorted_axes(axes, rank)
    xs = to_stats(x)
    mean, var = moments(xs, [a for a in range(rank) if a not in axes])
    y = normalize(
        xs,
        mean,
        var,
        param_for(scale, axes, rank),
        param_for(offset, axes, rank),
        epsilon,
        centred=xs.dtype != x.dtype,
    )
    y = tf.cast(y, x.dtype)
    shape = [x.shape[a] for a in axes]
    return (y, tf.stop_gradient(tf.reshape(mean, shape)), tf.stop_gradient(tf.reshape(var, shape)))


def _per_sample_plain(x, channel_axis, scale, offset, epsilon, statistics):
    """Normalizes with ``statistics(x, axes)``: ``(mean, var)`` or ``(None, mean_square)``."""
    rank = x.shape.rank
    channel_axis = channel_axis % rank
    xs = to_stats(x)
    mean, var = statistics(xs, [a for a in range(1, rank) if a != channel_axis])
    scale, offset = (param_for(p, [channel_axis], rank) for p in (scale, offset))
    if mean is None:
        y = rms_normalize(xs, var, scale, offset, epsilon)
    else:
        y = normalize(xs, mean, var, scale, offset, epsilon, centred=xs.dtype != x.dtype)
    return tf.cast(y, x.dtype)


def _group_norm_plain(x, groups, channel_axis, scale, offset, epsilon):
    return _per_sample_plain(
        x,
        channel_axis,
        scale,
        offset,
        epsilon,
        lambda x, axes: group_moments(x, groups, channel_axis, axes),
    )


def _instance_norm_plain(x, channel_axis, scale, offset, epsilon, center):
    statistics = moments if center else (lambda x, axes: (None, mean_square(x, axes)))
    return _per_sample_plain(x, channel_axis, scale, offset, epsilon, statistics)


_BATCH_NORM = FusedOp(_grouped_forward, _grouped_backward, outputs=3, fallback=_batch_norm_plain)
_GROUP_NORM = FusedOp(_grouped_forward, _grouped_backward, outputs=3, fallback=_group_norm_plain)
_INSTANCE_NORM = FusedOp(
    _grouped_forward, _grouped_backward, outputs=3, fallback=_instance_norm_plain
)
_NORMALIZE = FusedOp(normalize)  # inference batch norm: autodiff through one kernel


def batch_norm(
    x: tf.Tensor,
    axes: Sequence[int],
    scale=None,
    offset=None,
    epsilon: float = 1e-3,
    mean=None,
    variance=None,
):
    """Batch normalization with batch statistics, channels on ``axes``.

    Returns ``(y, mean, var)``: the normalized tensor and the batch mean and
    (biased) variance, float32 (float64 for float64 input), shaped like the
    sizes of ``axes``, without gradient (for moving averages). One op with a
    hand-written gradient when ``axes`` is the last axis.

    With ``mean`` and ``variance`` given (the moving averages, at inference),
    ``x`` is normalized with them instead (autodiff gradient), and they are
    returned as they are.

    Example:
      >>> y, m, v = batch_norm(tf.constant([[1.0], [3.0]]), axes=[-1], epsilon=0.0)
      >>> y.numpy().ravel().tolist(), m.numpy().tolist(), v.numpy().tolist()
      ([-1.0, 1.0], [2.0], [1.0])
    """
    rank = x.shape.rank
    if mean is not None or variance is not None:
        if mean is None or variance is None:
            raise ValueError("batch_norm needs both mean and variance, or neither")
        axes = sorted_axes(axes, rank)
        if axes == (rank - 1,):
            y = _NORMALIZE(
                x,
                *[
                    None if t is None else tf.convert_to_tensor(t)
                    for t in (mean, variance, scale, offset)
                ],
                epsilon,
            )
        else:
            y = normalize(
                x,
                param_for(mean, axes, rank),
                param_for(variance, axes, rank),
                param_for(scale, axes, rank),
                param_for(offset, axes, rank),
                epsilon,
            )
        return y, mean, variance
    view = fast_view(x, axes, "batch")
    if view is None:
        return _BATCH_NORM.fallback(x, axes, scale, offset, epsilon)
    c, dt = view.size, stats_dtype(x.dtype)
    if x.dtype in _FUSED_BN_DTYPES and not in_xla() and _fused_op_accepts(epsilon):
        return _fused_batch_norm_op(x, flat(scale, c, dt), flat(offset, c, dt), epsilon)
    y3, mean, var = _grouped(_BATCH_NORM, view, c, scale, offset, epsilon)
    return view.restore(y3), tf.reshape(mean, [c]), tf.reshape(var, [c])


_FUSED_BN_DTYPES = (tf.float16, tf.bfloat16, tf.float32)


def _fused_op_accepts(epsilon) -> bool:
    """cuDNN's batch norm needs epsilon >= 1e-5; on CPU any epsilon is exact."""
    if epsilon >= 1.001e-5:
        return True
    try:
        return not tf.config.list_logical_devices("GPU")
    except Exception:  # pragma: no cover
        return False


def _fused_batch_norm_op(x, scale, offset, epsilon):
    """Channels-last training batch norm through TensorFlow's fused kernel (not under XLA).

    Outside XLA, TensorFlow's ``FusedBatchNormV3`` (oneDNN on x86) computes the
    statistics, the output and, through its registered gradient, the backward
    pass in a few multi-threaded passes; any channels-last tensor is a valid
    NHWC view ``(R, 1, 1, C)``. Under XLA the op is expanded into loops that
    are slower than the grouped kernel, which is used there instead.
    """
    c = x.shape[-1]
    x4 = x if x.shape.rank == 4 else tf.reshape(x, [-1, 1, 1, c])
    one = tf.ones([c], tf.float32)
    scale = one if scale is None else tf.cast(scale, tf.float32)
    offset = tf.zeros_like(one) if offset is None else tf.cast(offset, tf.float32)
    empty = tf.zeros([0], tf.float32)
    y, mean, var_unbiased = tf.raw_ops.FusedBatchNormV3(
        x=x4,
        scale=scale,
        offset=offset,
        mean=empty,
        variance=empty,
        epsilon=float(epsilon),
        data_format="NHWC",
        is_training=True,
    )[:3]
    # the op reports the unbiased variance; the layer keeps the biased one
    n = tf.cast(tf.size(x4) // c, tf.float32)
    var = var_unbiased * tf.math.divide_no_nan(n - 1.0, n)
    y = tf.reshape(y, tf.shape(x)) if x.shape.rank != 4 else y
    return y, tf.stop_gradient(mean), tf.stop_gradient(var)


def group_norm(
    x: tf.Tensor, groups: int, channel_axis: int, scale=None, offset=None, epsilon: float = 1e-3
) -> tf.Tensor:
    """GroupNorm: statistics per sample and channel group over the other axes.

    ``groups`` equal to the channel count is instance normalization. One op
    with a hand-written gradient when the channels are on the last axis.

    Args:
      x: input of rank >= 2, batch first.
      groups: number of groups; divides the channel count.
      channel_axis: the channel axis.
      scale, offset: optional, shape ``(C,)``.
      epsilon: added to the variance.

    Example:
      >>> x = tf.constant([[[1.0, 5.0], [3.0, 7.0]]])  # (N=1, S=2, C=2)
      >>> group_norm(x, groups=2, channel_axis=-1, epsilon=0.0).numpy().ravel().tolist()
      [-1.0, -1.0, 1.0, 1.0]
    """
    view = fast_view(x, [channel_axis], "samples")
    if view is None:
        return _GROUP_NORM.fallback(x, groups, channel_axis, scale, offset, epsilon)
    return view.restore(_grouped(_GROUP_NORM, view, groups, scale, offset, epsilon)[0])


def instance_norm(
    x: tf.Tensor, channel_axis: int, scale=None, offset=None, epsilon=1e-3, center: bool = True
) -> tf.Tensor:
    """InstanceNorm: statistics per sample and channel over every other axis but the batch.

    One op with a hand-written gradient when the channels are on the last axis.
    ``center=False`` divides by the root mean square instead of the standard
    deviation (filter response normalization); ``epsilon`` may then be a
    scalar tensor with a gradient (a learned epsilon).

    Example:
      >>> x = tf.constant([[[1.0, 5.0], [3.0, 9.0]]])  # (N=1, L=2, C=2)
      >>> instance_norm(x, channel_axis=-1, epsilon=0.0).numpy().ravel().tolist()
      [-1.0, -1.0, 1.0, 1.0]
      >>> x = tf.constant([[[3.0], [4.0]]])  # mean square 12.5
      >>> instance_norm(x, channel_axis=-1, epsilon=0.0, center=False).numpy().ravel().round(4)
      array([0.8485, 1.1314], dtype=float32)
    """
    view = fast_view(x, [channel_axis], "samples")
    if view is None:
        return _INSTANCE_NORM.fallback(x, channel_axis, scale, offset, epsilon, center)
    return view.restore(
        _grouped(_INSTANCE_NORM, view, view.size, scale, offset, epsilon, center=center)[0]
    )
