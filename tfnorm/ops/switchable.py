"""Switchable normalization (Luo et al. 2019) as two big-tensor ops joined by small-tensor maths.

On a channels-last view ``x`` of shape ``(N, S, C)`` (``S`` spatial positions):

1. instance moments: the mean ``m`` and variance ``v`` per sample and
   channel, ``(N, 1, C)``. Backward, with ``S`` values per statistic::

       dx = (dm + 2 * dv * (x - m)) / S

2. the layer and batch statistics and the softmax mixture are computed from
   ``m`` and ``v`` alone (:func:`mix_statistics`; tensors of size ``N * C``,
   where autodiff is cheap);
3. normalization: ``y = (x - mean) * rsqrt(var + eps) * gamma + beta``
   with ``mean``/``var`` of shape ``(N, 1, C)``. Backward, with ``r = rsqrt(var + eps)``,
   ``P = sum_S dy`` and ``Q = sum_S dy * (x - mean)``::

       dx = dy * gamma * r       dmean = -gamma * r * P      dvar = -gamma * r**3 * Q / 2
       dgamma = sum_N r * Q      dbeta = sum_N P

So a training step reads ``x`` twice for the statistics and once to write
``y``; the backward reads ``x`` and ``dy`` for ``P`` and ``Q`` and once more
to write ``dx``, instead of differentiating through the moments. Statistics are
float32 for half-precision input. The whole forward, and the whole backward
(autodiff through step 2 only), are one :class:`tfnorm.ops.kernel.FusedOp`
on the ``"samples"`` view of :func:`tfnorm.ops.layout.fast_view`; step 1 is
:func:`tfnorm.ops.moments.grouped_moments` with one group per channel.
"""

from __future__ import annotations

import tensorflow as tf

from tfnorm.ops.kernel import FusedOp
from tfnorm.ops.layout import fast_view, scalar
from tfnorm.ops.moments import grouped_moments, stats_dtype
from tfnorm.ops.reduce import sum_middle, xla_on_cpu

__all__ = ["mix_statistics", "switchable_norm"]


def mix_statistics(mean_in, var_in, mean_weights, variance_weights, channel_axis, batch=None):
    """Layer and batch statistics from the instance ones, and their softmax-weighted mixture.

    ``mean_in``/``var_in``: per sample and channel, reduced axes kept. The
    layer statistics average them over ``channel_axis``, the batch statistics
    over axis 0 (the variance of a union of equal-sized groups is the mean
    within-group variance plus the variance of the group means), unless
    ``batch = (mean, var)`` is given (moving averages, or all replicas').
    The mixture is written as the instance statistics plus weighted
    differences: the softmax weights sum to 1 only up to rounding, and
    ``x - mean`` must cancel exactly when all three means agree. The mixed
    variance is clipped at 0.

    Returns:
      ``(mean, var, batch_mean, batch_var)``.

    Example:
      >>> m_in, v_in = tf.constant([[[1.0]], [[3.0]]]), tf.zeros([2, 1, 1])
      >>> m, v, mb, vb = mix_statistics(m_in, v_in, tf.zeros([3]), tf.zeros([3]), 2)
      >>> float(mb[0, 0, 0]), float(vb[0, 0, 0])
      (2.0, 1.0)
    """
    dt = mean_in.dtype
    mean_ln = tf.reduce_mean(mean_in, channel_axis, keepdims=True)
    var_ln = tf.reduce_mean(var_in + tf.square(mean_in - mean_ln), channel_axis, keepdims=True)
    if batch is None:
        mean_bn = tf.reduce_mean(mean_in, 0, keepdims=True)
        var_bn = tf.reduce_mean(var_in + tf.square(mean_in - mean_bn), 0, keepdims=True)
    else:
        mean_bn, var_bn = (tf.cast(t, dt) for t in batch)
    wm = tf.nn.softmax(tf.cast(mean_weights, dt))
    wv = tf.nn.softmax(tf.cast(variance_weights, dt))
    mean = mean_in + wm[1] * (mean_ln - mean_in) + wm[2] * (mean_bn - mean_in)
    var = var_in + wv[1] * (var_ln - var_in) + wv[2] * (var_bn - var_in)
    return mean, tf.maximum(var, tf.zeros([], dt)), mean_bn, var_bn


def _mixture(
    mean_in, var_in, mean_weights, variance_weights, moving_mean, moving_variance, training
):
    """Step 2 of the module docstring on ``(N, 1, C)`` statistics: ``(mean, var, mean_bn, var_bn)``."""
    batch = (
        None
        if training
        else (tf.reshape(moving_mean, [1, 1, -1]), tf.reshape(moving_variance, [1, 1, -1]))
    )
    return mix_statistics(mean_in, var_in, mean_weights, variance_weights, 2, batch)


def _switchable_forward(
    x3,
    mean_weights,
    variance_weights,
    gamma,
    beta,
    moving_mean,
    moving_variance,
    *,
    epsilon,
    training,
):
    """``(y, mean_bn, var_bn, mean_in, var_in, mean, r)``: steps 1 to 3 of the module docstring."""
    dt = stats_dtype(x3.dtype)
    xs = tf.cast(x3, dt)
    inst = grouped_moments(xs, x3.shape[-1], xla_cpu=xla_on_cpu())
    mean_in, var_in = inst.mean, inst.var
    mean, var, mean_bn, var_bn = _mixture(
        mean_in, var_in, mean_weights, variance_weights, moving_mean, moving_variance, training
    )
    r = tf.math.rsqrt(var + scalar(epsilon, dt))
    a = r * tf.cast(gamma, dt) if gamma is not None else r
    y = (xs - mean) * a
    if beta is not None:
        y = y + tf.cast(beta, dt)
    return (
        tf.cast(y, x3.dtype),
        tf.reshape(mean_bn, [-1]),
        tf.reshape(var_bn, [-1]),
        mean_in,
        var_in,
        mean,
        r,
    )


def _switchable_backward(
    dy,
    x3,
    mean_weights,
    variance_weights,
    gamma,
    beta,
    moving_mean,
    moving_variance,
    mean_bn,
    var_bn,
    mean_in,
    var_in,
    mean,
    r,
    *,
    training,
):
    """Gradients of :func:`_switchable_forward`: x, the weights[, gamma][, beta][, moving stats].

    The backward of steps 3 and 1 as in the module docstring, with autodiff
    through step 2 in between.
    """
    dt = stats_dtype(x3.dtype)
    mode = xla_on_cpu()
    dys = tf.cast(dy, dt)
    xs = tf.cast(x3, dt)
    s = tf.cast(tf.shape(xs)[1], dt)
    gg = tf.cast(gamma, dt) if gamma is not None else tf.ones([], dt)
    a = r * gg
    p = sum_middle(dys, mode)  # (N, 1, C): sum of dy
    q = sum_middle(dys * (xs - mean), mode)  # (N, 1, C): sum of dy * (x - mean)
    moving = [] if training else [moving_mean, moving_variance]
    small = [mean_in, var_in, mean_weights, variance_weights] + moving
    with tf.GradientTape() as tape:
        tape.watch(small)
        mix_mean, mix_var, _, _ = _mixture(
            mean_in, var_in, mean_weights, variance_weights, moving_mean, moving_variance, training
        )
    dm, dv, *small_grads = tape.gradient(
        [mix_mean, mix_var], small, output_gradients=[-a * p, -0.5 * gg * r * r * r * q]
    )
    dx = dys * a + (dm + 2.0 * dv * (xs - mean_in)) / s
    grads = [tf.cast(dx, x3.dtype)] + small_grads[:2]
    if gamma is not None:
        grads.append(
            tf.cast(tf.reshape(tf.reduce_sum(r * q, [0, 1]), tf.shape(gamma)), gamma.dtype)
        )
    if beta is not None:
        grads.append(tf.cast(tf.reshape(tf.reduce_sum(p, [0, 1]), tf.shape(beta)), beta.dtype))
    return grads + small_grads[2:]


_SWITCHABLE = FusedOp(_switchable_forward, _switchable_backward, outputs=3)


def switchable_norm(
    x: tf.Tensor,
    mean_weights,
    variance_weights,
    gamma=None,
    beta=None,
    moving_mean=None,
    moving_variance=None,
    *,
    epsilon: float = 1e-5,
    training: bool = False,
):
    """Switchable normalization of a channels-last ``x`` (rank >= 3).

    Returns ``(y, batch_mean, batch_var)``; the batch statistics (shape
    ``(C,)``, for the moving averages) are those of ``x`` in training and
    ``moving_mean``/``moving_variance`` otherwise. Without XLA, inside a graph,
    the forward and the backward each run as their own XLA cluster
    (:mod:`tfnorm.ops.kernel`).

    Example:
      >>> x = tf.reshape(tf.range(16.0), [2, 4, 2])
      >>> y, m, v = switchable_norm(x, tf.zeros([3]), tf.zeros([3]), training=True)
      >>> tuple(y.shape), m.numpy().tolist()
      ((2, 4, 2), [7.0, 8.0])
    """
    view = fast_view(x, [-1], "samples")
    if view is None:
        raise ValueError(
            f"switchable_norm needs a known channel count on the last axis, "
            f"received an input of shape {x.shape}"
        )
    if not training:
        moving_mean = tf.convert_to_tensor(moving_mean)
        moving_variance = tf.convert_to_tensor(moving_variance)
    y3, mean_bn, var_bn = _SWITCHABLE(
        view.tensor,
        tf.convert_to_tensor(mean_weights),
        tf.convert_to_tensor(variance_weights),
        None if gamma is None else tf.convert_to_tensor(gamma),
        None if beta is None else tf.convert_to_tensor(beta),
        moving_mean,
        moving_variance,
        epsilon=float(epsilon),
        training=bool(training),
    )
    return view.restore(y3), mean_bn, var_bn
