"""Normalization kernels with hand-written gradients.

``layer_norm``, ``rms_norm``, ``batch_norm`` and ``group_norm`` compute
statistics, normalize and apply the learned scale and offset in one op whose
backward pass is written out (``tf.custom_gradient``) instead of being derived
by autodiff through the moments. The backward reuses the forward's mean and
inverse standard deviation (small tensors) and recomputes ``x - mean`` on the
fly, so a training step keeps nothing but ``x`` alive and reads ``x`` and
``dy`` a few times instead of materializing a dozen temporaries.

The maths, for a group of ``n`` values normalized together with
``xhat = (x - mean) * r``, ``r = 1 / sqrt(var + epsilon)``,
``y = gamma * xhat + beta`` and ``g = gamma * dy``::

    dx     = r * (g - mean(g) - xhat * mean(g * xhat))
    dgamma = sum(dy * xhat)      dbeta = sum(dy)

(sums over everything that shares ``gamma``); without centering (RMSNorm;
ScaleNorm, RMSNorm with a scalar scale and ``max(norm, epsilon)`` as the
divisor; filter response normalization, instance normalization without
centering) the ``mean(g)`` term and the mean drop out. The statistics are
exact two-pass moments in float32 (float64 for float64 input), the variance
clipped at 0.

Every kernel views the input as 2-D or 3-D without moving data: trailing
normalized axes as ``(rows, C)``; channels-last batch/group/instance
normalization as ``(A, S, C)`` with statistics per ``(a, group)`` over ``S``
and the group's channels (``A = 1`` for batch normalization). Other layouts
fall back to :func:`tfnorm.ops.moments` and :func:`tfnorm.ops.normalize`
with autodiff, which compute the same function.

Where the kernels run (:mod:`tfnorm.ops.kernel`; measured with ``tfnorm bench``):

* under XLA (``jit_compile=True``), as part of the enclosing cluster, with the
  reductions of :mod:`tfnorm.ops.reduce` that suit XLA on CPU;
* in a ``tf.function`` without XLA (Keras' default on CPU), each kernel is its
  own small XLA cluster, forward and backward separately
  (:func:`tfnorm.ops.kernel.with_backward`: the compiled forward returns the
  output and the small statistics, never a copy of ``x``): TensorFlow would
  otherwise run every elementwise op as a separate pass over memory. Training batch norm
  uses TensorFlow's fused ``FusedBatchNormV3`` op there instead, which is
  faster still;
* executing eagerly, as plain TensorFlow ops (no compilation).

``TFNORM_XLA_KERNELS=0`` in the environment keeps plain ops inside graphs too
(for a serving runtime built without XLA, say).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfnorm.ops.groups import group_moments
from tfnorm.ops.kernel import Kernel, bound_kernel, with_backward
from tfnorm.ops.moments import mean_square, moments, stats_dtype
from tfnorm.ops.normalize import normalize, rms_normalize
from tfnorm.ops.reduce import in_xla, sum_cols, sum_middle, sum_rows, xla_on_cpu
from tfnorm.ops.views import channels_last_view, flat, group_sum, param_for, scalar

__all__ = ["layer_norm", "rms_norm", "scale_norm", "batch_norm", "group_norm", "instance_norm"]


def _sorted_axes(axes: Sequence[int], rank: int) -> Tuple[int, ...]:
    return tuple(sorted(a % rank for a in axes))


def _is_trailing(axes: Tuple[int, ...], rank: int) -> bool:
    return axes == tuple(range(rank - len(axes), rank))


def _static_size(x: tf.Tensor, axes) -> Optional[int]:
    dims = [x.shape[a] for a in axes]
    if any(d is None for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64))


# ---------------------------------------------------------------------------
# Per-row statistics: LayerNorm, RMSNorm.

def _row_forward(x2, gamma, beta, eps_in, *, epsilon, center, clip):
    """Forward of :func:`_row_impl`: ``(y, mean, r, active)``, statistics ``(R, 1)``.

    ``mean`` is None without centering, ``active`` (where the statistic, not
    the bound, sets the divisor) None without ``clip``.
    """
    dt = stats_dtype(x2.dtype)
    eps = tf.cast(eps_in, dt) if eps_in is not None else scalar(epsilon, dt)
    xs = tf.cast(x2, dt)
    n = tf.cast(tf.shape(xs)[1], dt)
    mode = xla_on_cpu()
    if center:
        mean = sum_rows(xs, xla_cpu=mode) / n
        d = xs - mean
    else:
        mean = None
        d = xs
    var = sum_rows(tf.square(d), xla_cpu=mode) / n
    var = tf.maximum(var, tf.zeros([], dt))
    active = None
    if clip:
        root = tf.sqrt(var)
        active = root >= eps
        r = 1.0 / tf.maximum(root, eps)
    else:
        r = tf.math.rsqrt(var + eps)
    y = d * r
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return tf.cast(y, x2.dtype), mean, r, active


def _row_backward(dy, x2, gamma, beta, eps_in, mean, r, active):
    """Gradients of :func:`_row_forward` (module docstring): x[, gamma][, beta][, epsilon]."""
    dt = stats_dtype(x2.dtype)
    mode = xla_on_cpu()
    has_g = gamma is not None
    scalar_g = has_g and gamma.shape.rank == 0
    dys = tf.cast(dy, dt)
    xr = tf.cast(x2, dt)
    n = tf.cast(tf.shape(xr)[1], dt)
    dd = xr - mean if mean is not None else xr
    u = dys * dd                                   # dy * (x - mean)
    # mean(g * xhat) and mean(g) per row, g = gamma * dy
    if scalar_g:
        mgx = r * gamma * sum_rows(u, xla_cpu=mode) / n
    elif has_g:
        mgx = r * sum_rows(u, gamma, xla_cpu=mode) / n
    else:
        mgx = r * sum_rows(u, xla_cpu=mode) / n
    if active is not None:
        mgx = tf.where(active, mgx, tf.zeros_like(mgx))
    gd = dys * gamma if has_g else dys
    if mean is not None:
        mg = sum_rows(dys, gamma, xla_cpu=mode) / n
        dx = (gd - mg) * r - dd * (r * r * mgx)
    else:
        dx = gd * r - dd * (r * r * mgx)
    grads = [tf.cast(dx, x2.dtype)]
    if has_g:
        dg = sum_cols(u, r, xla_cpu=mode)
        if scalar_g:
            dg = tf.reduce_sum(dg)
        grads.append(tf.reshape(dg, tf.shape(gamma)))
    if beta is not None:
        grads.append(tf.reshape(sum_cols(dys, xla_cpu=mode), tf.shape(beta)))
    if eps_in is not None:  # a tensor epsilon is a constant here, as before
        grads.append(tf.zeros_like(eps_in))
    return grads


def _row_impl(x2, gamma, beta, epsilon, center, clip=False):
    """Normalizes each row of a 2-D ``x2``; ``gamma``/``beta`` of shape ``(C,)`` or None.

    ``gamma`` may also be a scalar. ``clip=True`` (ScaleNorm) divides by
    ``max(sqrt(var), epsilon)`` instead of ``sqrt(var + epsilon)``; where the
    bound is active the divisor is a constant and carries no gradient.
    Forward and backward are separate kernels (:func:`tfnorm.ops.kernel.with_backward`).
    """
    static = not isinstance(epsilon, (tf.Tensor, tf.Variable))  # a tensor: no gradient
    forward = bound_kernel(_row_forward, threshold=True, epsilon=float(epsilon) if static else 0.0,
                           center=bool(center), clip=bool(clip))
    backward = bound_kernel(_row_backward, threshold=True)
    return with_backward(forward, backward, x2, gamma, beta,
                         None if static else tf.stop_gradient(epsilon))


def layer_norm(x: tf.Tensor, axes: Sequence[int], scale=None, offset=None,
               epsilon: float = 1e-3) -> tf.Tensor:
    """LayerNorm over ``axes``: ``(x - mean) / sqrt(var + epsilon) * scale + offset``.

    One op with a hand-written gradient when ``axes`` are the trailing axes;
    the same function through :func:`moments` and :func:`normalize` otherwise.

    Args:
      x: input, any float dtype (statistics in float32 for half precision).
      axes: the normalized axes (statistics per position of the other axes).
      scale, offset: optional, shaped like the sizes of ``axes`` (in order).
      epsilon: added to the variance.

    Returns:
      A tensor like ``x``.

    Example:
      >>> layer_norm(tf.constant([[1.0, 2.0, 3.0]]), axes=[-1], epsilon=0.0).numpy().round(4)
      array([[-1.2247,  0.    ,  1.2247]], dtype=float32)
    """
    rank = x.shape.rank
    axes = _sorted_axes(axes, rank)
    n = _static_size(x, axes)
    if not _is_trailing(axes, rank) or n is None:
        mean, var = moments(x, axes)
        return normalize(x, mean, var, param_for(scale, axes, rank),
                         param_for(offset, axes, rank), epsilon)
    dt = stats_dtype(x.dtype)
    y2 = _row_impl(tf.reshape(x, [-1, n]), flat(scale, n, dt), flat(offset, n, dt),
                   epsilon, center=True)
    return tf.reshape(y2, tf.shape(x))


def rms_norm(x: tf.Tensor, axes: Sequence[int], scale=None, epsilon: float = 1e-6) -> tf.Tensor:
    """RMSNorm over ``axes``: ``x / sqrt(mean(x**2) + epsilon) * scale``.

    One op with a hand-written gradient when ``axes`` are the trailing axes.

    Example:
      >>> rms_norm(tf.constant([[3.0, 4.0]]), axes=[-1], epsilon=0.0).numpy().round(4)
      array([[0.8485, 1.1314]], dtype=float32)
    """
    rank = x.shape.rank
    axes = _sorted_axes(axes, rank)
    n = _static_size(x, axes)
    if not _is_trailing(axes, rank) or n is None:
        ms = mean_square(x, axes)
        return rms_normalize(x, ms, param_for(scale, axes, rank), None, epsilon)
    dt = stats_dtype(x.dtype)
    y2 = _row_impl(tf.reshape(x, [-1, n]), flat(scale, n, dt), None, epsilon, center=False)
    return tf.reshape(y2, tf.shape(x))


def scale_norm(x: tf.Tensor, axes: Sequence[int], gain, epsilon: float = 1e-5) -> tf.Tensor:
    """ScaleNorm over ``axes``: ``gain * x / max(||x||_2, epsilon)``, ``gain`` a scalar.

    The norm is ``sqrt(n * mean(x**2))`` over the ``n`` values of ``axes``
    (float32 for half precision). One op with a hand-written gradient (the
    RMSNorm one with a scalar scale ``gain / sqrt(n)``) when ``axes`` are the
    trailing axes; the same function with autodiff otherwise.

    Example:
      >>> scale_norm(tf.constant([[3.0, 4.0]]), axes=[-1], gain=10.0).numpy().round(4)
      array([[6., 8.]], dtype=float32)
    """
    rank = x.shape.rank
    axes = _sorted_axes(axes, rank)
    n = _static_size(x, axes)
    dt = stats_dtype(x.dtype)
    gain = tf.cast(gain, dt)
    if not _is_trailing(axes, rank) or n is None:
        ms = mean_square(x, axes)
        size = n if n is not None else tf.size(x) // tf.size(ms)
        norm = tf.sqrt(ms * tf.cast(size, ms.dtype))
        factor = gain / tf.maximum(norm, tf.constant(epsilon, ms.dtype))
        return x * tf.cast(factor, x.dtype)
    # ||x|| >= epsilon  <=>  sqrt(mean(x**2)) >= epsilon / sqrt(n)
    inv_root_n = 1.0 / float(np.sqrt(n))
    y2 = _row_impl(tf.reshape(x, [-1, n]), gain * inv_root_n, None, epsilon * inv_root_n,
                   center=False, clip=True)
    return tf.reshape(y2, tf.shape(x))


# ---------------------------------------------------------------------------
# Statistics per (a, channel group) over the middle axis: BatchNorm, GroupNorm, InstanceNorm.

def _grouped_forward(x3, gamma, beta, eps_in, *, groups, epsilon, center):
    """Forward of :func:`_grouped_impl`: ``(y, mean, var, r)``, statistics ``(A, 1, C)``."""
    dt = stats_dtype(x3.dtype)
    eps = tf.cast(eps_in, dt) if eps_in is not None else scalar(epsilon, dt)
    xs = tf.cast(x3, dt)
    n = tf.cast(tf.shape(xs)[1] * (x3.shape[-1] // groups), dt)
    mode = xla_on_cpu()
    if center:
        mean = group_sum(sum_middle(xs, mode), groups) / n
        d = xs - mean
    else:
        d = xs
    var = group_sum(sum_middle(tf.square(d), mode), groups) / n
    var = tf.maximum(var, tf.zeros([], dt))
    r = tf.math.rsqrt(var + eps)
    a = r * gamma if gamma is not None else r
    y = d * a
    if beta is not None:
        y = y + beta
    if not center:
        mean = tf.zeros_like(var)
    return tf.cast(y, x3.dtype), mean, var, r


def _grouped_backward(dy, x3, gamma, beta, eps_in, mean, var, r, *, groups, center):
    """Gradients of :func:`_grouped_forward` (module docstring): x[, gamma][, beta][, epsilon]."""
    dt = stats_dtype(x3.dtype)
    mode = xla_on_cpu()
    n = tf.cast(tf.shape(x3)[1] * (x3.shape[-1] // groups), dt)
    dys = tf.cast(dy, dt)
    dd = tf.cast(x3, dt)
    if center:
        dd = dd - mean
    p = sum_middle(dys, mode)            # (A, 1, C): sum of dy
    q = sum_middle(dys * dd, mode)       # (A, 1, C): sum of dy * (x - mean)
    qr = q * r                           # sum of dy * xhat
    gg = gamma if gamma is not None else tf.ones([], dt)
    mgx = group_sum(gg * qr, groups) / n      # mean(g * xhat) per group
    alpha = r * gg
    beta_ = -r * r * mgx
    if center:
        mg = group_sum(gg * p, groups) / n    # mean(g) per group
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


def _grouped_impl(x3, groups, gamma, beta, epsilon, center=True):
    """Normalizes ``x3`` of shape ``(A, S, C)`` per ``(a, group)``; returns ``(y, mean, var)``.

    ``mean`` and ``var`` have shape ``(A, 1, C)`` (each channel carries its
    group's value) and carry no gradient. ``center=False`` divides by the
    root mean square instead (``mean`` is then 0 and ``var`` the mean
    square). ``epsilon`` may be a scalar tensor, which then gets a gradient.
    Forward and backward are separate kernels (:func:`tfnorm.ops.kernel.with_backward`).
    """
    has_e = isinstance(epsilon, (tf.Tensor, tf.Variable))
    groups = int(groups)
    forward = bound_kernel(_grouped_forward, threshold=True, groups=groups,
                           epsilon=0.0 if has_e else float(epsilon), center=bool(center))
    backward = bound_kernel(_grouped_backward, threshold=True, groups=groups,
                            center=bool(center))
    return with_backward(forward, backward, x3, gamma, beta,
                         epsilon if has_e else None, outputs=3)


_normalize_kernel = Kernel(normalize)


def batch_norm(x: tf.Tensor, axes: Sequence[int], scale=None, offset=None,
               epsilon: float = 1e-3, mean=None, variance=None):
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
    axes = _sorted_axes(axes, rank)
    param_shape = [x.shape[a] for a in axes]
    if mean is not None or variance is not None:
        if mean is None or variance is None:
            raise ValueError("batch_norm needs both mean and variance, or neither")
        if axes == (rank - 1,):
            y = _normalize_kernel(x, *[None if t is None else tf.convert_to_tensor(t)
                                       for t in (mean, variance, scale, offset)], epsilon)
        else:
            y = normalize(x, param_for(mean, axes, rank), param_for(variance, axes, rank),
                          param_for(scale, axes, rank), param_for(offset, axes, rank), epsilon)
        return y, mean, variance
    if axes != (rank - 1,) or x.shape[-1] is None:
        reduce_axes = [a for a in range(rank) if a not in axes]
        mean, var = moments(x, reduce_axes)
        y = normalize(x, mean, var, param_for(scale, axes, rank),
                      param_for(offset, axes, rank), epsilon)
        return (y, tf.stop_gradient(tf.reshape(mean, param_shape)),
                tf.stop_gradient(tf.reshape(var, param_shape)))
    c = x.shape[-1]
    dt = stats_dtype(x.dtype)
    if x.dtype in _FUSED_BN_DTYPES and not in_xla() and _fused_op_accepts(epsilon):
        return _fused_batch_norm_op(x, flat(scale, c, dt), flat(offset, c, dt), epsilon)
    x3 = tf.reshape(x, [1, -1, c])
    y3, mean, var = _grouped_impl(x3, c, flat(scale, c, dt), flat(offset, c, dt), epsilon)
    return tf.reshape(y3, tf.shape(x)), tf.reshape(mean, [c]), tf.reshape(var, [c])


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
    are slower than :func:`_grouped_impl`, which is used there instead.
    """
    c = x.shape[-1]
    x4 = x if x.shape.rank == 4 else tf.reshape(x, [-1, 1, 1, c])
    one = tf.ones([c], tf.float32)
    scale = one if scale is None else tf.cast(scale, tf.float32)
    offset = tf.zeros_like(one) if offset is None else tf.cast(offset, tf.float32)
    empty = tf.zeros([0], tf.float32)
    y, mean, var_unbiased = tf.raw_ops.FusedBatchNormV3(
        x=x4, scale=scale, offset=offset, mean=empty, variance=empty,
        epsilon=float(epsilon), data_format="NHWC", is_training=True)[:3]
    # the op reports the unbiased variance; the layer keeps the biased one
    n = tf.cast(tf.size(x4) // c, tf.float32)
    var = var_unbiased * tf.math.divide_no_nan(n - 1.0, n)
    y = tf.reshape(y, tf.shape(x)) if x.shape.rank != 4 else y
    return y, tf.stop_gradient(mean), tf.stop_gradient(var)


def group_norm(x: tf.Tensor, groups: int, channel_axis: int, scale=None, offset=None,
               epsilon: float = 1e-3) -> tf.Tensor:
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
    rank = x.shape.rank
    channel_axis = channel_axis % rank
    c = x.shape[channel_axis]
    if channel_axis != rank - 1 or c is None:
        reduce_axes = [a for a in range(1, rank) if a != channel_axis]
        mean, var = group_moments(x, groups, channel_axis, reduce_axes)
        return normalize(x, mean, var, param_for(scale, [channel_axis], rank),
                         param_for(offset, [channel_axis], rank), epsilon)
    dt = stats_dtype(x.dtype)
    y3, _, _ = _grouped_impl(channels_last_view(x), groups, flat(scale, c, dt),
                             flat(offset, c, dt), epsilon)
    return tf.reshape(y3, tf.shape(x))


def instance_norm(x: tf.Tensor, channel_axis: int, scale=None, offset=None,
                  epsilon=1e-3, center: bool = True) -> tf.Tensor:
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
    rank = x.shape.rank
    channel_axis = channel_axis % rank
    c = x.shape[channel_axis]
    if channel_axis != rank - 1 or c is None:
        reduce_axes = [a for a in range(1, rank) if a != channel_axis]
        if not center:
            return rms_normalize(x, mean_square(x, reduce_axes),
                                 param_for(scale, [channel_axis], rank),
                                 param_for(offset, [channel_axis], rank), epsilon)
        mean, var = moments(x, reduce_axes)
        return normalize(x, mean, var, param_for(scale, [channel_axis], rank),
                         param_for(offset, [channel_axis], rank), epsilon)
    dt = stats_dtype(x.dtype)
    y3, _, _ = _grouped_impl(channels_last_view(x), c, flat(scale, c, dt),
                             flat(offset, c, dt), epsilon, center=center)
    return tf.reshape(y3, tf.shape(x))
