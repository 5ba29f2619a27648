"""Online Normalization (Chiley et al. 2019) as parallel recurrences over the batch axis.

The batch axis is time: sample ``t`` is normalized with the streamed statistics
left by samples ``0..t-1``. Every recurrence of the algorithm is linear in its
state, ``h_t = a_t * h_{t-1} + b_t``, so instead of a loop over samples the
whole batch is processed with a parallel prefix scan
(:func:`tfnorm.ops.scan.linear_recurrence`). Only the per-sample moments and
the final multiply-add touch the full activation tensor, as in batch
normalization: the forward pass reads ``x`` twice (the two-pass moments) and
writes ``z``; the backward pass reads ``x`` and ``dz`` once for two sums per
sample and channel, and once more to write ``dx``. Forward and backward are
one :class:`tfnorm.ops.kernel.FusedOp`, compiled at any size inside a graph
(plain ops eagerly; ``TFNORM_XLA_KERNELS=0`` turns this off); the control
state is the op's ``state``: read when the gradient is computed and assigned
outside the kernels.

Forward, per channel, with ``m_t``/``s2_t`` the mean/variance of sample ``t``
over its non-channel axes::

    y_t      = (x_t - mu_{t-1}) / sqrt(var_{t-1} + eps)
    var_t    = a_f var_{t-1} + (1 - a_f) s2_t + a_f (1 - a_f) (m_t - mu_{t-1})**2
    mu_t     = mu_{t-1} + (1 - a_f) (m_t - mu_{t-1})

Backward (the paper's control process, not the derivative of the forward),
with ``d_t`` the gradient arriving at ``y_t``::

    g        = d_t - (1 - a_b) v_{t-1} y_t ;  v_t = v_{t-1} + mean(g * y_t)
    g        = g / sqrt(var_{t-1} + eps)
    dx_t     = g - (1 - a_b) u_{t-1}       ;  u_t = u_{t-1} + mean(dx_t)
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import tensorflow as tf

from tfnorm.ops.axes import complement, resolve_axes
from tfnorm.ops.kernel import FusedOp
from tfnorm.ops.layout import fast_view, scalar
from tfnorm.ops.moments import stats_dtype, to_stats
from tfnorm.ops.reduce import sum_middle
from tfnorm.ops.scan import linear_recurrence

__all__ = ["online_normalize"]


class _Layout(NamedTuple):
    """How the kernels see ``x`` (hashable: it keys the compiled kernels).

    Channels-last input is viewed as ``(N, S, C)`` and per-sample, per-channel
    statistics are sums over ``S`` by :func:`tfnorm.ops.reduce.sum_middle`,
    fast under XLA on CPU as well; other layouts reduce their non-channel axes
    with ``tf.reduce_sum``. Statistics keep the reduced axes (length 1).
    """

    channels_last: bool
    trivial: bool  # one value per sample and channel: (N, C)
    reduce: Tuple[int, ...]  # the per-sample reduction axes of the view
    param_axes: Tuple[int, ...]  # where the channel axes sit in the view
    rank: int  # rank of the view

    def sum(self, t):
        if self.trivial:
            return t
        if self.channels_last:
            return sum_middle(t)
        return tf.reduce_sum(t, list(self.reduce), keepdims=True)

    def count(self, t, dtype):
        """Number of values each per-sample statistic of ``t`` averages over."""
        if self.trivial:
            return tf.constant(1.0, dtype)
        return tf.cast(tf.reduce_prod(tf.gather(tf.shape(t), list(self.reduce))), dtype)

    def param(self, p, dtype):
        """A per-channel tensor (sizes of the channel axes) broadcast over the view."""
        shape = [1] * self.rank
        for a, n in zip(self.param_axes, p.shape):
            shape[a] = n
        return tf.reshape(tf.cast(p, dtype), shape)


def _view(x, axis):
    """``(layout, x_view)`` for ``x`` with channels on ``axis``."""
    rank = x.shape.rank
    channels = resolve_axes(axis, rank)
    view = fast_view(x, channels, "samples")
    if view is not None:
        trivial = x.shape[1:-1].num_elements() == 1
        return _Layout(True, trivial, (1,), (2,), 3), view
    reduce = complement(channels, rank, skip_batch=True)
    return _Layout(False, not reduce, reduce, channels, rank), None


def _streamed(layout, xs, mean, variance, alpha_fwd):
    """Per-sample moments of the view ``xs`` and the streamed statistics before each sample."""
    dt = xs.dtype
    n = layout.count(xs, dt)
    m = layout.sum(xs) / n
    s2 = tf.zeros_like(m) if layout.trivial else layout.sum(tf.square(xs - m)) / n
    af = float(alpha_fwd)
    mu_before, mu_last = linear_recurrence(af, (1.0 - af) * m, layout.param(mean, dt))
    drive = (1.0 - af) * s2 + af * (1.0 - af) * tf.square(m - mu_before)
    var_before, var_last = linear_recurrence(af, drive, layout.param(variance, dt))
    return m, s2, mu_before, var_before, mu_last, var_last


def _forward_impl(
    xv, mean, variance, gamma, beta, *, layout, alpha_fwd, epsilon, ecm, clamp, ls_epsilon
):
    """Forward kernel: the output and what the backward kernel needs (all small but ``z``)."""
    xs = to_stats(xv)
    dt = xs.dtype
    m, s2, mu_before, var_before, mu_last, var_last = _streamed(
        layout, xs, mean, variance, alpha_fwd
    )
    inv = tf.math.rsqrt(var_before + scalar(epsilon, dt))  # 1 / sqrt(var_{t-1} + eps)
    a = inv if gamma is None else inv * layout.param(gamma, dt)
    b = None if beta is None else layout.param(beta, dt)
    shift = m - mu_before
    # centred in the statistics dtype: a folded x * a + b cancels for |x| >> sigma
    z = (xs - mu_before) * a
    if b is not None:
        z = z + b
    scale = tf.ones_like(shift[..., :1])
    if ecm == "ac":
        z = tf.clip_by_value(z, -clamp, clamp)
    elif ecm == "ls":
        # mean of z**2 over a sample: per channel (a s2 + (a shift + b)**2), from the moments
        zm = a * shift if b is None else a * shift + b
        ms = tf.reduce_mean(
            tf.square(a) * s2 + tf.square(zm), list(layout.param_axes), keepdims=True
        )
        scale = tf.math.rsqrt(ms + scalar(ls_epsilon, dt))
        z = z * scale
    # a non-finite input reaches the outputs but leaves the channel's streamed state
    ok = tf.math.logical_and(tf.math.is_finite(mu_last), tf.math.is_finite(var_last))
    mu_last = tf.where(ok, mu_last, layout.param(mean, dt))
    var_last = tf.where(ok, var_last, layout.param(variance, dt))
    return (
        tf.cast(z, xv.dtype),
        tf.reshape(mu_last, tf.shape(mean)),
        tf.reshape(var_last, tf.shape(variance)),
        mu_before,
        inv,
        shift,
        s2,
        scale,
    )


def _backward_impl(
    dz,
    xv,
    mean,
    variance,
    gamma,
    beta,
    mean_after,
    var_after,
    mu_before,
    inv,
    shift,
    s2,
    scale,
    u,
    v,
    *,
    layout,
    alpha_bkw,
    ecm,
    clamp,
):
    """Backward kernel: error compensation, then the control process.

    Returns the gradients of ``x`` (the streamed statistics have none) and of
    ``gamma``/``beta``, then the new control state ``(u, v)``.
    With ``o = d * a + b`` the affine output (``d = x - mu_{t-1}``,
    ``a = gamma / sqrt(var_{t-1} + eps)``), ``dL/do`` is ``dz`` (masked where
    the clamp is active), or for layer scaling ``r dz - r**3 o mean(dz o)``; it
    enters only through its sums ``sum(dL/do)``, ``sum(dL/do * d)`` per sample
    and channel and a final multiply-add, so one pass of reductions and one
    elementwise pass over the activations do everything.
    """
    dt = inv.dtype
    k = 1.0 - float(alpha_bkw)
    dzs = to_stats(dz)
    d = to_stats(xv) - mu_before  # recomputed: y = d * inv
    g = None if gamma is None else layout.param(gamma, dt)
    b = None if beta is None else layout.param(beta, dt)
    a = inv if g is None else inv * g
    if ecm == "ac":  # activation clamping passes |o| < clamp only
        o = d * a if b is None else d * a + b
        dzs = tf.where(tf.abs(o) < clamp, dzs, tf.zeros_like(dzs))
    sum_dz = layout.sum(dzs)  # per sample and channel
    sum_dz_d = layout.sum(dzs * d)
    count = layout.count(dzs, dt)
    # dL/do = c_dz * dz + c_d * d + c_1 (per sample and channel coefficients)
    c_dz, c_d, c_1 = 1.0, 0.0, 0.0
    s1, s2d = sum_dz, sum_dz_d  # sum(dL/do), sum(dL/do * d)
    if ecm == "ls":
        sum_o = count * (a * shift if b is None else a * shift + b)
        sum_o_d = count * (a * (s2 + tf.square(shift)) + (0.0 if b is None else b * shift))
        sum_dz_o = a * sum_dz_d + (0.0 if b is None else b * sum_dz)
        width = count * tf.cast(tf.reduce_prod([tf.shape(a)[i] for i in layout.param_axes]), dt)
        proj = tf.reduce_sum(sum_dz_o, list(layout.param_axes), keepdims=True) / width
        r3p = scale**3 * proj
        c_dz, c_d, c_1 = scale, -a * r3p, (0.0 if b is None else -b * r3p)
        s1 = scale * sum_dz - r3p * sum_o
        s2d = scale * sum_dz_d - r3p * sum_o_d
    q = s2d * inv  # sum(dL/do * y): the gradient of gamma
    gg = 1.0 if g is None else g
    mean_d = gg * s1 / count  # mean(d_t), d_t = dL/dy_t = gamma dL/do
    mean_dy = gg * q / count  # mean(d_t * y_t)
    mean_y = shift * inv
    mean_y2 = (s2 + tf.square(shift)) * tf.square(inv)
    u0, v0 = layout.param(u, dt), layout.param(v, dt)
    # v_t = v_{t-1} + mean(g * y) = (1 - k mean(y^2)) v_{t-1} + mean(d * y)
    v_before, v_last = linear_recurrence(1.0 - k * mean_y2, mean_dy, v0)
    mean_g = mean_d - k * v_before * mean_y
    # u_t = u_{t-1} + mean(dx_t) = (1 - k) u_{t-1} + mean(g) / sqrt(var + eps)
    u_before, u_last = linear_recurrence(1.0 - k, mean_g * inv, u0)
    # dx = (gamma dL/do - k v y) inv - k u
    f = inv * gg
    dx = dzs * (c_dz * f) + (
        d * (c_d * f - k * v_before * tf.square(inv)) + (c_1 * f - k * u_before)
    )
    # a non-finite incoming gradient (loss-scaling overflow) leaves the channel's state
    ok = tf.math.logical_and(tf.math.is_finite(u_last), tf.math.is_finite(v_last))
    u_new = tf.reshape(tf.where(ok, u_last, u0), tf.shape(u))
    v_new = tf.reshape(tf.where(ok, v_last, v0), tf.shape(v))
    batch_axes = [0] + list(layout.reduce)
    param_grads = tuple(
        tf.cast(tf.reshape(tf.reduce_sum(t, batch_axes), tf.shape(p)), p.dtype)
        for t, p in ((q, gamma), (s1, beta))
        if p is not None
    )
    return (tf.cast(dx, dz.dtype), None, None) + param_grads + (u_new, v_new)


_ONLINE = FusedOp(_forward_impl, _backward_impl, outputs=3, threshold=False)


def online_normalize(
    x: tf.Tensor,
    mean,
    variance,
    scale=None,
    offset=None,
    *,
    control: Callable[[], Tuple[tf.Tensor, tf.Tensor]],
    on_backward: Optional[Callable[[tf.Tensor, tf.Tensor], None]] = None,
    alpha_fwd: float = 0.999,
    alpha_bkw: float = 0.99,
    epsilon: float = 1e-5,
    axis: Union[int, Sequence[int]] = -1,
    ecm: Optional[str] = None,
    clamp_value: float = 5.0,
    ls_epsilon: float = 1e-5,
):
    """Online normalization of a batch in training, with the control-process backward.

    Computes ``z = ecm(y * scale + offset)`` with ``y`` the online-normalized
    input (module docstring) and ``ecm`` the error compensation: ``"ac"``
    clips to ``[-clamp_value, clamp_value]``, ``"ls"`` divides each sample by
    ``sqrt(mean(o**2) + ls_epsilon)`` over its non-batch axes, None does
    nothing. The gradient of ``x`` is the paper's control process applied to
    the gradient reaching ``y``; the error compensation and the affine
    transform are differentiated exactly, and the gradients of ``scale`` and
    ``offset`` are the ordinary ones.

    The control state is read and advanced in the backward pass: ``control()``
    returns ``(u, v)`` (shaped like the channel axes) when the gradient is
    computed, and ``on_backward(u_new, v_new)`` receives the state after the
    last sample; a layer passes functions that read and assign its variables.
    Where the incoming gradient is not finite (a loss-scaling overflow), the
    control state of the affected channels is left as it was; likewise, a
    non-finite input propagates to the output but leaves the streamed
    statistics of its channels as they were.

    ``scale`` and ``offset`` (learned weights) are inputs of the custom-gradient
    op, so the op is on the gradient tape, and the control state advances,
    whenever the layer has a trainable weight, even when nothing upstream needs
    the input gradient (a first layer).

    Args:
      x: input ``(N, ...)`` in any float dtype; statistics are float32 for
        half precision.
      mean, variance: streamed statistics before the batch (channel shape).
      scale, offset: optional gamma and beta (channel shape) or None.
      control: returns the control state ``(u, v)``.
      on_backward: receives the new control state; None to discard it.
      alpha_fwd, alpha_bkw: forward and backward decays ``a_f``, ``a_b``.
      epsilon: added to the streamed variance.
      axis: channel axis or axes.
      ecm: ``"ac"``, ``"ls"`` or None, applied after the affine transform.
      clamp_value: the bound of activation clamping.
      ls_epsilon: added to the mean square in layer scaling.

    Returns:
      ``(z, new_mean, new_variance)``; the streamed statistics after the
      batch have the channel shape and the statistics dtype.

    Example:
      >>> x = tf.constant([[1.0], [3.0]])
      >>> z, m, v = online_normalize(x, tf.zeros([1]), tf.ones([1]), epsilon=0.0,
      ...                            alpha_fwd=0.5, control=lambda: (tf.zeros([1]),) * 2)
      >>> z.numpy().astype(float).ravel().round(4).tolist(), m.numpy().tolist(), v.numpy().tolist()
      ([1.0, 2.8868], [1.75], [1.9375])
    """
    dt = stats_dtype(x.dtype)
    if ecm not in (None, "ac", "ls"):
        raise ValueError(f"ecm must be 'ac', 'ls' or None, received ecm={ecm!r}")
    layout, view = _view(x, axis)

    def read():
        u, v = control()
        return tf.cast(u, dt), tf.cast(v, dt)

    def write(u_new, v_new):
        if on_backward is not None:
            on_backward(u_new, v_new)

    z, mean_after, var_after = _ONLINE(
        x if view is None else view.tensor,
        tf.cast(mean, dt),
        tf.cast(variance, dt),
        scale,
        offset,
        state=(read, write),
        layout=layout,
        ecm=ecm,
        clamp=float(clamp_value),
        alpha_fwd=float(alpha_fwd),
        epsilon=float(epsilon),
        ls_epsilon=float(ls_epsilon),
        alpha_bkw=float(alpha_bkw),
    )
    return (z if view is None else view.restore(z)), mean_after, var_after
