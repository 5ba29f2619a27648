"""Online Normalization: batch-size-independent normalization with streamed statistics."""

from __future__ import annotations

import tensorflow as tf

from tfnorm import ops
from tfnorm.layers.base import (
    AffineMixin,
    NormalizationLayer,
    check_fraction,
    check_positive,
    check_single_axis,
    register,
)

_ECM = (None, "ls", "ac")


def _check_ecm(ecm):
    if ecm not in _ECM:
        raise ValueError(
            f"ecm must be 'ac' (activation clamping), 'ls' (layer scaling) or None, "
            f"received ecm={ecm!r}"
        )
    return ecm


def _clamp(z, value):
    """``clip(z, -value, value)``; the gradient passes where ``|z| < value``, else 0.

    The same derivative as ``tf.clip_by_value`` for ``z``, without its
    gradients for the (constant) bounds, which cost two full reductions.
    """
    value = tf.cast(value, z.dtype)

    @tf.custom_gradient
    def clamp(z):
        out = tf.clip_by_value(z, -value, value)

        def grad(dz):
            return tf.where(tf.abs(out) < value, dz, tf.zeros_like(dz))

        return out, grad

    return clamp(z)


@register("online")
class OnlineNormalization(AffineMixin, NormalizationLayer):
    r"""Online Normalization: normalization with streamed statistics and a controlled backward.

    The batch axis is treated as time. Each sample ``x_t`` is normalized per
    channel with the statistics streamed from the samples before it, which
    are then updated with the mean ``m_t`` and variance ``s2_t`` of ``x_t``
    over its non-channel axes (its spatial/time positions; a single value per
    channel for a dense ``(N, C)`` input, where ``s2_t = 0``)::

        y_t   = (x_t - mu_{t-1}) / sqrt(var_{t-1} + epsilon)
        var_t = a_f var_{t-1} + (1 - a_f) s2_t + a_f (1 - a_f) (m_t - mu_{t-1})**2
        mu_t  = mu_{t-1} + (1 - a_f) (m_t - mu_{t-1})
        z_t   = ecm(gamma * y_t + beta)

    with ``a_f = alpha_fwd``. The streamed ``mu``, ``var`` start at 0 and 1,
    persist across calls and batches (non-trainable weights) and are what
    inference uses: ``z = ecm(gamma * (x - mu) / sqrt(var + epsilon) + beta)``.
    Because nothing is pooled across the batch, the layer trains at batch
    size 1 and on streams.

    The input gradient is the paper's control process, not the derivative of
    the forward pass. With ``d_t`` the gradient reaching ``y_t`` and
    ``a_b = alpha_bkw``, per sample and channel::

        g     = d_t - (1 - a_b) v_{t-1} y_t ;   v_t = v_{t-1} + mean(g * y_t)
        g     = g / sqrt(var_{t-1} + epsilon)
        dx_t  = g - (1 - a_b) u_{t-1}       ;   u_t = u_{t-1} + mean(dx_t)

    ``u`` and ``v`` start at 0, persist across steps, and advance exactly once
    per training step, in the backward pass, whenever a gradient is computed
    through the layer (including with ``jit_compile=True``). A forward pass
    without a gradient (``training=True`` outside a tape) advances only
    ``mu`` and ``var``. A layer with no trainable weight
    (``center=scale=False``) whose input needs no gradient has no backward
    pass, and ``u``, ``v`` stay as they are: they only shape the input gradient.

    The recurrences are linear, so the whole batch is processed with parallel
    prefix scans over the batch axis (``ceil(log2 N)`` vectorized steps on
    per-sample statistics, no loop over samples); only the per-sample moments
    and one multiply-add touch the activations, in the forward and in the
    backward pass, with the error compensation folded into both, so a
    training step costs about what batch normalization's does
    (:mod:`tfnorm.ops.online`).

    Error compensation (``ecm``), applied after ``gamma`` and ``beta``, in
    training and inference:

    * ``"ac"``: activation clamping, ``clip(z, -clamp_value, clamp_value)``.
    * ``"ls"``: layer scaling, each sample divided by
      ``sqrt(mean(z**2) + ls_epsilon)``, the mean over all its non-batch axes,
      differentiated exactly.
    * ``None``: nothing.

    Precision: statistics and the four state weights are float32 for
    half-precision inputs. Under a loss-scaled optimizer (``mixed_float16``),
    ``u`` and ``v`` are in the units of the scaled gradient; after the loss
    scale changes they readapt within about ``1 / (1 - alpha_bkw)`` samples, and
    a step whose gradient overflowed leaves them unchanged (channel by channel).
    Likewise a non-finite input propagates to the output, but the channels it
    reaches keep their previous ``mu`` and ``var``.

    Distribution: under ``tf.distribute`` each replica streams its own
    samples, starting from the shared state; the state weights use MEAN
    aggregation, so after each step the replicas' resulting ``mu``, ``var``,
    ``u`` and ``v`` are averaged into the shared state (as for the moving
    statistics of batch normalization).

    Args:
      alpha_fwd: forward decay of the streamed statistics. Default 0.999.
      alpha_bkw: backward decay of the control process. Default 0.99.
      axis: the channel axis (int). Default -1.
      epsilon: added to the streamed variance. Default 1e-5.
      ecm: ``"ac"``, ``"ls"`` or None. Default ``"ac"``.
      ls_epsilon: added to the mean square in layer scaling. Default 1e-5.
      clamp_value: the bound of activation clamping. Default 5.0.
      center: learn an offset ``beta``. Default True.
      scale: learn a scale ``gamma``. Default True.
      beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: for ``beta`` and ``gamma``; default
        ``"zeros"`` and ``"ones"`` initializers, no regularizer or constraint.

    Call arguments:
      inputs: float tensor of rank >= 2, such as ``(N, C)``, ``(N, T, C)``,
        ``(N, H, W, C)`` or ``(N, D, H, W, C)``; the order of the batch is the
        order of the stream.
      training: normalize with the streamed statistics and update them. A layer
        with ``trainable=False`` always runs in inference mode.

    Example:
      >>> import numpy as np, tfnorm
      >>> norm = tfnorm.OnlineNormalization(alpha_fwd=0.5)
      >>> y = norm(np.array([[1.0], [3.0]], "float32"), training=True)  # a stream of 2
      >>> np.round(y.numpy().astype(float).ravel(), 3).tolist()
      [1.0, 2.887]
      >>> norm.streaming_mean.numpy().tolist()
      [1.75]

    Reference:
      V. Chiley, I. Sharapov, A. Kosson, U. Koster, R. Reece, S. Samaniego de la
      Fuente, V. Subbiah, M. James. "Online Normalization for Training Neural
      Networks." NeurIPS 2019.
    """

    def __init__(
        self,
        alpha_fwd=0.999,
        alpha_bkw=0.99,
        axis=-1,
        epsilon=1e-5,
        ecm="ac",
        ls_epsilon=1e-5,
        clamp_value=5.0,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_single_axis(type(self).__name__, axis)
        self.alpha_fwd = check_fraction("alpha_fwd", alpha_fwd)
        self.alpha_bkw = check_fraction("alpha_bkw", alpha_bkw)
        self.axis = axis
        self.epsilon = check_positive("epsilon", epsilon)
        self.ecm = _check_ecm(ecm)
        self.ls_epsilon = check_positive("ls_epsilon", ls_epsilon, allow_zero=True)
        self.clamp_value = check_positive("clamp_value", clamp_value)
        self._init_affine(locals())

    def build(self, input_shape):
        self._axes = self._resolve_axes(self.axis, input_shape)
        shape = self._param_shape(self._axes, input_shape)
        self._build_affine(shape)
        state = dict(trainable=False, aggregation="mean")
        self.streaming_mean = self._param("streaming_mean", shape, "zeros", **state)
        self.streaming_variance = self._param("streaming_variance", shape, "ones", **state)
        self.u_control = self._param("u_control", shape, "zeros", **state)
        self.v_control = self._param("v_control", shape, "zeros", **state)

    def _read_control(self):
        return (tf.convert_to_tensor(self.u_control), tf.convert_to_tensor(self.v_control))

    def _write_control(self, u, v):
        self.u_control.assign(tf.cast(u, self.u_control.dtype))
        self.v_control.assign(tf.cast(v, self.v_control.dtype))

    def _ecm(self, z):
        if self.ecm == "ac":
            return _clamp(z, self.clamp_value)
        if self.ecm == "ls":  # RMS over all non-batch axes, with its exact gradient
            return ops.rms_norm(z, list(range(1, self._built_rank)), epsilon=self.ls_epsilon)
        return z

    def call(self, inputs, training=None):
        bshape = lambda p: self._broadcast(p, self._axes, self._built_rank)  # noqa: E731
        if not (bool(training) and self.trainable):
            z = ops.normalize(
                inputs,
                bshape(self.streaming_mean),
                bshape(self.streaming_variance),
                bshape(self.gamma),
                bshape(self.beta),
                self.epsilon,
            )
            return self._ecm(z)
        z, mean, var = ops.online_normalize(
            inputs,
            tf.convert_to_tensor(self.streaming_mean),
            tf.convert_to_tensor(self.streaming_variance),
            None if self.gamma is None else tf.convert_to_tensor(self.gamma),
            None if self.beta is None else tf.convert_to_tensor(self.beta),
            control=self._read_control,
            on_backward=self._write_control,
            alpha_fwd=self.alpha_fwd,
            alpha_bkw=self.alpha_bkw,
            epsilon=self.epsilon,
            axis=self._axes,
            ecm=self.ecm,
            clamp_value=self.clamp_value,
            ls_epsilon=self.ls_epsilon,
        )
        self.streaming_mean.assign(tf.cast(mean, self.streaming_mean.dtype))
        self.streaming_variance.assign(tf.cast(var, self.streaming_variance.dtype))
        return z

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha_fwd": self.alpha_fwd,
                "alpha_bkw": self.alpha_bkw,
                "axis": self.axis,
                "epsilon": self.epsilon,
                "ecm": self.ecm,
                "ls_epsilon": self.ls_epsilon,
                "clamp_value": self.clamp_value,
                **self._affine_config(),
            }
        )
        return config
