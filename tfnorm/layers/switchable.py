"""Switchable normalization: a learned mixture of instance, layer and batch statistics."""

from __future__ import annotations

import tensorflow as tf

from tfnorm import ops
from tfnorm.layers.base import (
    AffineMixin,
    NormalizationLayer,
    check_bool,
    check_fraction,
    check_positive,
    check_single_axis,
    initializer,
    register,
    serialize,
    update_moving_average,
)


@register("switchable", batch_statistics=True, synchronized=True)
class SwitchableNormalization(AffineMixin, NormalizationLayer):
    r"""Switchable normalization: instance, layer and batch statistics mixed by learned weights.

    For an input with channels on ``axis`` and spatial axes ``S``, three sets
    of statistics are computed: instance (per sample and channel, over ``S``),
    layer (per sample, over ``S`` and the channels) and batch (per channel,
    over the batch and ``S``). They are mixed with two learned softmax weight
    vectors, one for the means and one for the variances::

        mean = sum_k softmax(mean_weights)_k * mean_k       k in (instance, layer, batch)
        var  = sum_k softmax(variance_weights)_k * var_k
        y    = gamma * (x - mean) / sqrt(var + epsilon) + beta

    The layer and batch statistics are derived from the instance ones (the
    variance of a union of equal-sized groups is the mean within-group
    variance plus the variance of the group means), so the activations are
    reduced once. In inference the batch statistics are replaced by moving
    averages updated in training with ``momentum`` (a channel whose batch
    statistic is not finite keeps its moving average). Needs at least one spatial
    axis: rank >= 3. Float32 statistics under mixed precision.

    With ``synchronized=True`` under ``tf.distribute`` the batch statistics
    (and so their moving averages) are those of the global batch, all replicas
    together (one all-reduce of the count, sum and sum of squares shifted by
    the moving mean); instance and layer statistics are per sample and need
    no communication. Without it each replica uses its own slice of the batch.

    Args:
      momentum: moving-average momentum of the batch statistics. Default 0.99.
      epsilon: added to the mixed variance. Default 1e-5.
      axis: channel axis. Default -1.
      center, scale: learn ``beta``, ``gamma`` per channel. Default True.
      synchronized: batch statistics over all replicas in sync. Default False.
      beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: for ``beta`` and ``gamma``.
      moving_mean_initializer, moving_variance_initializer: Default
        ``"zeros"``, ``"ones"``.

    Call arguments:
      inputs: float tensor of rank >= 3 with channels on ``axis``.
      training: use the batch statistics and update their moving averages.

    Example:
      >>> import numpy as np, tfnorm
      >>> sn = tfnorm.SwitchableNormalization()
      >>> y = sn(np.random.rand(4, 6, 6, 3).astype("float32"), training=True)
      >>> tuple(y.shape), tuple(sn.mean_weights.shape)  # (instance, layer, batch) logits
      ((4, 6, 6, 3), (3,))

    Reference:
      P. Luo, R. Zhang, J. Ren, Z. Peng, J. Li. "Switchable Normalization for
      Learning-to-Normalize Deep Representation." IEEE TPAMI 2019 (ICLR 2019).
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
        moving_mean_initializer="zeros",
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
        self.moving_mean_initializer = initializer(
            "moving_mean_initializer", moving_mean_initializer
        )
        self.moving_variance_initializer = initializer(
            "moving_variance_initializer", moving_variance_initializer
        )

    def build(self, input_shape):
        (c_axis,) = self._resolve_axes(self.axis, input_shape)
        self._axes = (c_axis,)
        self._spatial = ops.complement((c_axis,), self._built_rank, skip_batch=True)
        self._batch = ops.complement((c_axis,), self._built_rank)
        channels = input_shape[c_axis]
        self._build_affine((channels,))
        self.mean_weights = self._param("mean_weights", (3,), "ones")
        self.variance_weights = self._param("variance_weights", (3,), "ones")
        self.moving_mean = self._param(
            "moving_mean",
            (channels,),
            self.moving_mean_initializer,
            trainable=False,
            aggregation="mean",
        )
        self.moving_variance = self._param(
            "moving_variance",
            (channels,),
            self.moving_variance_initializer,
            trainable=False,
            aggregation="mean",
        )

    def _b(self, param):
        return self._broadcast(param, self._axes, self._built_rank)

    def call(self, inputs, training=None):
        c = self._axes[0]
        use_batch = bool(training) and self.trainable
        cross_replica = use_batch and self.synchronized and ops.replicas_in_sync() > 1
        if c == self._built_rank - 1 and not cross_replica:
            # channels last: the op with hand-written gradients (tfnorm.ops.switchable)
            y, mean_bn, var_bn = ops.switchable_norm(
                inputs,
                self.mean_weights,
                self.variance_weights,
                self.gamma,
                self.beta,
                None if use_batch else self.moving_mean,
                None if use_batch else self.moving_variance,
                epsilon=self.epsilon,
                training=use_batch,
            )
        else:
            mean_in, var_in = ops.moments(inputs, self._spatial)  # (N, 1.., C), stats dtype
            batch = None  # training: derived from the instance statistics
            if cross_replica:
                shift = tf.stop_gradient(self._b(tf.convert_to_tensor(self.moving_mean)))
                batch = ops.replica_moments(inputs, self._batch, shift=shift)
            elif not use_batch:
                batch = (self._b(self.moving_mean), self._b(self.moving_variance))
            mean, var, mean_bn, var_bn = ops.mix_statistics(
                mean_in, var_in, self.mean_weights, self.variance_weights, c, batch
            )
            y = ops.normalize(
                inputs, mean, var, self._b(self.gamma), self._b(self.beta), self.epsilon
            )
        if use_batch:
            update_moving_average(self.moving_mean, mean_bn, self.momentum)
            update_moving_average(self.moving_variance, var_bn, self.momentum)
        return y

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "axis": self.axis,
                **self._affine_config(),
                "moving_mean_initializer": serialize(self.moving_mean_initializer),
                "moving_variance_initializer": serialize(self.moving_variance_initializer),
                "synchronized": self.synchronized,
            }
        )
        return config
