"""EvoNorm-B0 and EvoNorm-S0 (Liu et al. 2020) as single ops with hand-written gradients.

Channels-last inputs are viewed as ``(N, S, C)`` (``S`` the product of the
spatial axes) without moving data; statistics are float32 (float64 for
float64 input), the output has the input's dtype.

EvoNorm-B0, with ``L = sqrt(s2_b + epsilon)`` per channel (batch variance
over ``N`` and ``S``, or a given variance), ``s = sqrt(s2_i + epsilon)`` per
sample and channel (instance variance over ``S``, mean ``m``)::

    R = v1 * x + s        D = max(L, R)        z = x / D        y = gamma * z + beta

With ``g = gamma * dy``, ``t = g * z / D`` (so ``dD = -t``) and ``M`` the
elements where ``R > L`` (ties go to ``L``, as with ``tf.maximum``)::

    dx   = g / D - v1 * t * M - (x - m) * sum_S(t * M) / (S * s)
                 - (x - mean_b) * sum_NS(t * (1 - M)) / (N * S * L)
    dv1  = -sum_NS(t * M * x)      dgamma = sum_NS(dy * z)      dbeta = sum_NS(dy)

(with a given variance the last term of ``dx`` becomes its gradient,
``-sum_NS(t * (1 - M)) / (2 L)``). The batch variance combines the per-sample
two-pass sums exactly: ``N S s2_b = sum_n [sum_S (x - m)**2 + S (m - mean_b)**2]``.

EvoNorm-S0, with ``r = 1 / sqrt(s2_g + epsilon)`` per sample and channel group
(variance over ``S`` and the group's channels, ``K`` values, mean ``mu``),
``q = sigmoid(v1 * x)`` and ``h = x * q``::

    y = gamma * h * r + beta
    dx = g * r * (q + v1 * x * q * (1 - q)) - (x - mu) * r**3 * sum_group(g * h) / K
    dv1 = sum_NS(g * r * x**2 * q * (1 - q))   dgamma = sum_NS(dy * h * r)

The forward pass keeps nothing but per-(sample, channel) statistics for the
backward pass, which recomputes the element-wise terms from ``x`` and ``dy``:
a sum pass over them, then ``dx``. The per-sample statistics are
:func:`tfnorm.ops.moments.grouped_moments` of the ``"samples"`` view of
:func:`tfnorm.ops.layout.fast_view` (one group per channel for B0). Forward and
backward are one :class:`tfnorm.ops.kernel.FusedOp`: plain ops eagerly, each
its own XLA cluster inside a graph (so the compiled forward never returns a
copy of ``x`` for the backward), or part of an enclosing XLA cluster. Other
layouts (channels first) compute the same functions through
:func:`tfnorm.ops.moments` and autodiff.
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf

from tfnorm.ops.axes import complement
from tfnorm.ops.groups import group_moments
from tfnorm.ops.kernel import FusedOp
from tfnorm.ops.layout import fast_view, flat, param_for, scalar
from tfnorm.ops.moments import (
    group_size,
    group_sum,
    grouped_moments,
    moments,
    stats_dtype,
    to_stats,
)
from tfnorm.ops.reduce import sum_middle, xla_on_cpu

__all__ = ["evonorm_b0", "evonorm_s0"]


def _per_channel(t):
    """``(A, 1, C) -> (C,)`` by summing over ``A``."""
    return tf.reduce_sum(t, [0, 1])


# ---------------------------------------------------------------------------
# EvoNorm-B0


def _b0_forward(x3, v1, gamma, beta, variance, *, epsilon):
    """Forward of EvoNorm-B0 on ``x3`` ``(N, S, C)``: ``y`` and the statistics the backward needs.

    Returns ``(y, s2_b, m, s, mean_b, L)``; ``variance`` (shape ``(C,)``), when
    given, replaces the batch variance and ``mean_b`` is None.
    """
    dt = stats_dtype(x3.dtype)
    eps = scalar(epsilon, dt)
    xs = tf.cast(x3, dt)
    inst = grouped_moments(xs, x3.shape[-1], xla_cpu=xla_on_cpu())  # per (n, channel)
    m, s_n = inst.mean, inst.count  # (N, 1, C), S
    s = tf.sqrt(inst.var + eps)
    if variance is None:
        mb = tf.reduce_mean(m, 0, keepdims=True)  # (1, 1, C)
        ssq = inst.sum_sq + s_n * tf.math.squared_difference(m, mb)
        var_b = tf.maximum(
            _per_channel(ssq) / (tf.cast(tf.shape(xs)[0], dt) * s_n), tf.zeros([], dt)
        )
    else:
        mb, var_b = None, variance
    big_l = tf.sqrt(var_b + eps)  # (C,)
    y = xs / tf.maximum(big_l, v1 * xs + s)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return tf.cast(y, x3.dtype), var_b, m, s, mb, big_l


def _b0_backward(dy, x3, v1, gamma, beta, variance, var_b, m, s, mb, big_l):
    """Gradients of :func:`_b0_forward` (module docstring): x, v1[, gamma][, beta][, variance]."""
    dt = stats_dtype(x3.dtype)
    mode = xla_on_cpu()
    dys = tf.cast(dy, dt)
    xs = tf.cast(x3, dt)
    shape = tf.shape(xs)
    s_n = tf.cast(shape[1], dt)
    right = v1 * xs + s
    den = tf.maximum(big_l, right)
    z = xs / den
    gd = dys * gamma if gamma is not None else dys
    t = gd * z / den  # -dL/dD
    tm = tf.where(right > big_l, t, tf.zeros([], dt))
    p_t = sum_middle(t, mode)  # (N, 1, C)
    p_m = sum_middle(tm, mode)
    p_mx = sum_middle(tm * xs, mode)
    left_sum = _per_channel(p_t - p_m)  # sum of t where the batch std wins
    dx = gd / den - v1 * tm - (xs - m) * (p_m / (s_n * s))
    if mb is not None:
        dx = dx - (xs - mb) * (left_sum / (tf.cast(shape[0], dt) * s_n * big_l))
    grads = [tf.cast(dx, x3.dtype), -_per_channel(p_mx)]
    if gamma is not None:
        grads.append(_per_channel(sum_middle(dys * z, mode)))
    if beta is not None:
        grads.append(_per_channel(sum_middle(dys, mode)))
    if mb is None:
        grads.append(-left_sum / (2.0 * big_l))
    return grads


def evonorm_b0(
    x: tf.Tensor, channel_axis: int, v1, gamma=None, beta=None, epsilon: float = 1e-5, variance=None
) -> Tuple[tf.Tensor, tf.Tensor]:
    """EvoNorm-B0: ``x / max(sqrt(s2_b + epsilon), v1 * x + sqrt(s2_i + epsilon)) * gamma + beta``.

    ``s2_b`` is the batch variance per channel over every axis but
    ``channel_axis`` (or ``variance`` when given: the moving average at
    inference, or a cross-replica batch variance, which then receives its
    gradient), ``s2_i`` the variance per sample and channel over the spatial
    axes. One op with a hand-written gradient when the channels are on the
    last axis (module docstring); the same function through
    :func:`tfnorm.ops.moments` and autodiff otherwise.

    Args:
      x: input of rank >= 3, batch first (statistics in float32 for half precision).
      channel_axis: the channel axis.
      v1, gamma, beta: shape ``(C,)``; ``gamma`` and ``beta`` may be None.
      epsilon: added to both variances.
      variance: optional, shape ``(C,)``: used instead of the batch variance.

    Returns:
      ``(y, s2_b)``: ``y`` like ``x``; the batch variance (or ``variance``),
      shape ``(C,)``, in the statistics dtype, without gradient.

    Example:
      >>> x = tf.constant([[[1.0], [3.0]], [[2.0], [6.0]]])  # (N=2, L=2, C=1)
      >>> y, var = evonorm_b0(x, -1, v1=tf.zeros([1]), epsilon=0.0)
      >>> y.numpy().ravel().astype(float).round(4).tolist(), var.numpy().tolist()
      ([0.5345, 1.6036, 1.0, 3.0], [3.5])
    """
    view = fast_view(x, [channel_axis], "samples")
    if view is None:
        return _B0.fallback(x, channel_axis, v1, gamma, beta, epsilon, variance)
    c, dt = view.size, stats_dtype(x.dtype)
    y3, var = _B0(
        view.tensor,
        flat(v1, c, dt),
        flat(gamma, c, dt),
        flat(beta, c, dt),
        flat(variance, c, dt),
        epsilon=float(epsilon),
    )
    return view.restore(y3), var


def _b0_plain(x, channel_axis, v1, gamma, beta, epsilon, variance):
    rank = x.shape.rank
    xs = to_stats(x)
    dt = xs.dtype
    eps = scalar(epsilon, dt)
    c_shape = [x.shape[channel_axis]]

    def b(p):
        return None if p is None else tf.cast(param_for(p, [channel_axis], rank), dt)

    if variance is None:
        _, batch_var = moments(xs, complement((channel_axis,), rank))
    else:
        batch_var = b(variance)
    _, inst_var = moments(xs, complement((channel_axis,), rank, skip_batch=True))
    right = b(v1) * xs + tf.sqrt(inst_var + eps)
    y = xs / tf.maximum(tf.sqrt(batch_var + eps), right)
    if gamma is not None:
        y = y * b(gamma)
    if beta is not None:
        y = y + b(beta)
    return tf.cast(y, x.dtype), tf.stop_gradient(tf.reshape(batch_var, c_shape))


_B0 = FusedOp(_b0_forward, _b0_backward, outputs=2, fallback=_b0_plain)


# ---------------------------------------------------------------------------
# EvoNorm-S0


def _s0_forward(x3, v1, gamma, beta, *, groups, epsilon):
    """Forward of EvoNorm-S0 on ``x3`` ``(N, S, C)``: ``(y, mean, r)``, per ``(n, group)``."""
    dt = stats_dtype(x3.dtype)
    xs = tf.cast(x3, dt)
    stats = grouped_moments(xs, groups, xla_cpu=xla_on_cpu())
    mean, r = stats.mean, tf.math.rsqrt(stats.var + scalar(epsilon, dt))
    y = xs * tf.sigmoid(v1 * xs) * (r * gamma if gamma is not None else r)
    if beta is not None:
        y = y + beta
    return tf.cast(y, x3.dtype), mean, r


def _s0_backward(dy, x3, v1, gamma, beta, mean, r, *, groups):
    """Gradients of :func:`_s0_forward` (module docstring): x, v1[, gamma][, beta]."""
    dt = stats_dtype(x3.dtype)
    mode = xla_on_cpu()
    dys = tf.cast(dy, dt)
    xs = tf.cast(x3, dt)
    k = group_size(xs, groups, dt)
    q = tf.sigmoid(v1 * xs)
    dq = xs * q * (1.0 - q)  # x * sigmoid'(v1 x)
    p_h = sum_middle(dys * xs * q, mode)  # (N, 1, C)
    p_q = sum_middle(dys * xs * dq, mode)
    gg = gamma if gamma is not None else tf.ones([], dt)
    kappa = -(r * r * r) * group_sum(gg * p_h, groups) / k  # times (x - mean)
    dx = dys * ((r * gg) * (q + v1 * dq)) + (xs - mean) * kappa
    grads = [tf.cast(dx, x3.dtype), _per_channel(gg * r * p_q)]
    if gamma is not None:
        grads.append(_per_channel(r * p_h))
    if beta is not None:
        grads.append(_per_channel(sum_middle(dys, mode)))
    return grads


def evonorm_s0(
    x: tf.Tensor, groups: int, channel_axis: int, v1, gamma=None, beta=None, epsilon: float = 1e-5
) -> tf.Tensor:
    """EvoNorm-S0: ``x * sigmoid(v1 * x) / sqrt(s2_g + epsilon) * gamma + beta``.

    ``s2_g`` is the variance per sample and channel group over every other
    axis but the batch. One op with a hand-written gradient when the channels
    are on the last axis (module docstring); the same function through
    :func:`tfnorm.ops.group_moments` and autodiff otherwise.

    Args:
      x: input of rank >= 2, batch first (statistics in float32 for half precision).
      groups: number of channel groups; divides the channel count.
      channel_axis: the channel axis.
      v1, gamma, beta: shape ``(C,)``; ``gamma`` and ``beta`` may be None.
      epsilon: added to the variance.

    Example:
      >>> x = tf.constant([[[0.0, 2.0], [0.0, -2.0]]])  # (N=1, L=2, C=2)
      >>> y = evonorm_s0(x, groups=1, channel_axis=-1, v1=tf.zeros([2]), epsilon=0.0)
      >>> y.numpy().ravel().astype(float).round(4).tolist()
      [0.0, 0.7071, 0.0, -0.7071]
    """
    view = fast_view(x, [channel_axis], "samples")
    if view is None:
        return _S0.fallback(x, groups, channel_axis, v1, gamma, beta, epsilon)
    c, dt = view.size, stats_dtype(x.dtype)
    return view.restore(
        _S0(
            view.tensor,
            flat(v1, c, dt),
            flat(gamma, c, dt),
            flat(beta, c, dt),
            groups=int(groups),
            epsilon=float(epsilon),
        )
    )


def _s0_plain(x, groups, channel_axis, v1, gamma, beta, epsilon):
    rank = x.shape.rank
    xs = to_stats(x)
    dt = xs.dtype

    def b(p):
        return None if p is None else tf.cast(param_for(p, [channel_axis], rank), dt)

    _, var = group_moments(
        xs, groups, channel_axis, complement((channel_axis,), rank, skip_batch=True)
    )
    y = xs * tf.sigmoid(b(v1) * xs) * tf.math.rsqrt(var + scalar(epsilon, dt))
    if gamma is not None:
        y = y * b(gamma)
    if beta is not None:
        y = y + b(beta)
    return tf.cast(y, x.dtype)


_S0 = FusedOp(_s0_forward, _s0_backward, fallback=_s0_plain)
