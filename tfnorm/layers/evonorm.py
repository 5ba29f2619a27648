"""EvoNorms: normalization and activation fused into one layer (Liu et al. 2020)."""

from __future__ import annotations

import tensorflow as tf

from tfnorm import ops
from tfnorm.layers.base import (
    AffineMixin,
    NormalizationLayer,
    check_bool,
    check_fraction,
    check_groups,
    check_int,
    check_positive,
    check_single_axis,
    initializer,
    register,
    serialize,
    update_moving_average,
)


@register("evonorm_b0", batch_statistics=True, synchronized=True)
class EvoNormB0(AffineMixin, NormalizationLayer):
    r"""EvoNorm-B0: a batch-dependent normalization-activation layer found by search.

    With ``s2_b`` the batch variance per channel (over the batch and spatial
    axes; a moving average of it in inference), ``s2_i`` the instance variance
    per sample and channel (over the spatial axes) and ``v1`` a learned
    per-channel vector::

        y = x / max(sqrt(s2_b + epsilon), v1 * x + sqrt(s2_i + epsilon)) * gamma + beta

    No separate activation follows: the ``max`` is the non-linearity. In
    training the moving variance is updated as
    ``moving_variance <- momentum * moving_variance + (1 - momentum) * s2_b``
    (a channel whose batch variance is not finite keeps its moving variance).
    Needs at least one spatial axis: rank >= 3. Statistics and the element-wise
    maths are float32 under mixed precision; the output has the input's dtype.

    With ``synchronized=True`` under ``tf.distribute`` the batch variance (and
    its moving average) is that of the global batch, all replicas together
    (two all-reduces: the global mean, then the squared deviations from it);
    the instance variance is per sample. Without it each replica uses its own
    slice of the batch.

    Args:
      momentum: moving-average momentum. Default 0.99.
      epsilon: added to both variances. Default 1e-5.
      axis: channel axis. Default -1.
      center, scale: learn ``beta``, ``gamma``. Default True.
      beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: for ``beta`` and ``gamma``.
      moving_variance_initializer: Default ``"ones"``.
      synchronized: batch variance over all replicas in sync. Default False.

    Call arguments:
      inputs: float tensor of rank >= 3 with channels on ``axis``.
      training: use the batch variance and update its moving average.

    Example:
      >>> import numpy as np, tfnorm
      >>> layer = tfnorm.EvoNormB0(momentum=0.9)
      >>> y = layer(np.random.rand(4, 5, 5, 3).astype("float32"), training=True)
      >>> tuple(y.shape), bool(np.all(layer.moving_variance.numpy() < 1))
      ((4, 5, 5, 3), True)

    Reference:
      H. Liu, A. Brock, K. Simonyan, Q. V. Le. "Evolving Normalization-Activation
      Layers." NeurIPS 2020.
    """

    min_rank = 3

    def __init__(
        self,
        momentum=0.99,
        epsilon=1e-5,
        axis=-1,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        moving_variance_initializer="ones",
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.synchronized = check_bool("synchronized", synchronized)
        self.momentum = check_fraction("momentum", momentum)
        self.epsilon = check_positive("epsilon", epsilon)
        self.axis = check_single_axis(type(self).__name__, axis)
        self._init_affine(locals())
        self.moving_variance_initializer = initializer(
            "moving_variance_initializer", moving_variance_initializer
        )

    def build(self, input_shape):
        (c_axis,) = self._resolve_axes(self.axis, input_shape)
        self._axes = (c_axis,)
        self._batch = ops.complement((c_axis,), self._built_rank)
        channels = input_shape[c_axis]
        self._build_affine((channels,))
        self.v1 = self._param("v1", (channels,), "ones")
        self.moving_variance = self._param(
            "moving_variance",
            (channels,),
            self.moving_variance_initializer,
            trainable=False,
            aggregation="mean",
        )

    def call(self, inputs, training=None):
        c_axis = self._axes[0]
        params = (self.v1, self.gamma, self.beta)
        if bool(training) and self.trainable:
            if self.synchronized and ops.replicas_in_sync() > 1:
                # the global batch variance, differentiated through the all-reduces
                _, batch_var = ops.replica_moments(ops.to_stats(inputs), self._batch)
                y, _ = ops.evonorm_b0(
                    inputs,
                    c_axis,
                    *params,
                    epsilon=self.epsilon,
                    variance=tf.reshape(batch_var, [-1]),
                )
            else:
                y, batch_var = ops.evonorm_b0(inputs, c_axis, *params, epsilon=self.epsilon)
            update_moving_average(self.moving_variance, batch_var, self.momentum)
            return y
        y, _ = ops.evonorm_b0(
            inputs, c_axis, *params, epsilon=self.epsilon, variance=self.moving_variance
        )
        return y

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "axis": self.axis,
                **self._affine_config(),
                "moving_variance_initializer": serialize(self.moving_variance_initializer),
                "synchronized": self.synchronized,
            }
        )
        return config


@register("evonorm_s0", groups=True)
class EvoNormS0(AffineMixin, NormalizationLayer):
    r"""EvoNorm-S0: a batch-independent normalization-activation layer found by search.

    With ``s2_g`` the variance per sample over the spatial axes and the
    channels of each group (as in group normalization) and ``v1`` a learned
    per-channel vector::

        y = x * sigmoid(v1 * x) / sqrt(s2_g + epsilon) * gamma + beta

    The numerator is a SiLU/Swish-like gate; no separate activation follows.
    Works for any rank >= 2 (without spatial axes the variance is over each
    group's channels). Float32 statistics and maths under mixed precision.

    Args:
      groups: number of channel groups; must divide the channel count. Default 32.
      epsilon: added to the variance. Default 1e-5.
      axis: channel axis. Default -1.
      center, scale: learn ``beta``, ``gamma``. Default True.
      beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: for ``beta`` and ``gamma``.

    Call arguments:
      inputs: float tensor of rank >= 2 with channels on ``axis``.

    Example:
      >>> import numpy as np, tfnorm
      >>> y = tfnorm.EvoNormS0(groups=2)(np.random.rand(2, 6, 6, 4).astype("float32"))
      >>> tuple(y.shape)
      (2, 6, 6, 4)

    Reference:
      H. Liu, A. Brock, K. Simonyan, Q. V. Le. "Evolving Normalization-Activation
      Layers." NeurIPS 2020.
    """

    def __init__(
        self,
        groups=32,
        epsilon=1e-5,
        axis=-1,
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
        self.groups = check_int("groups", groups, 1)
        self.epsilon = check_positive("epsilon", epsilon)
        self.axis = check_single_axis(type(self).__name__, axis)
        self._init_affine(locals())

    def build(self, input_shape):
        (c_axis,) = self._resolve_axes(self.axis, input_shape)
        channels = input_shape[c_axis]
        check_groups(self.groups, channels, self.axis)
        self._axes = (c_axis,)
        self._build_affine((channels,))
        self.v1 = self._param("v1", (channels,), "ones")

    def call(self, inputs):
        return ops.evonorm_s0(
            inputs, self.groups, self._axes[0], self.v1, self.gamma, self.beta, epsilon=self.epsilon
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "groups": self.groups,
                "epsilon": self.epsilon,
                "axis": self.axis,
                **self._affine_config(),
            }
        )
        return config
