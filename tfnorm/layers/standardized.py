"""Weight-standardized convolutions (Qiao et al. 2019): each filter standardized before use."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnorm import ops
from tfnorm.layers import kernels
from tfnorm.layers.base import (
    CheckedCall,
    check_bool,
    check_config_keys,
    check_int,
    check_positive,
    constraint,
    initializer,
    register,
    regularizer,
)


class _WeightStandardized(CheckedCall):
    """Each filter standardized over its fan-in before the convolution (Qiao et al. 2019).

    One constructor for the 1-D, 2-D and 3-D convolutions: the Keras
    convolution's own arguments (an int ``strides``/``dilation_rate`` means the
    same along every spatial axis, as in Keras) and ``epsilon``.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        epsilon=1e-5,
        **kwargs,
    ):
        check_int("filters", filters, 1)
        check_int("groups", groups, 1)
        use_bias = check_bool("use_bias", use_bias)
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same", "causal"):
            raise ValueError(
                f"padding must be 'valid', 'same' or 'causal', received padding={padding!r}"
            )
        # named errors for the Keras objects (Keras' own do not name the argument)
        kernel_initializer = initializer("kernel_initializer", kernel_initializer)
        bias_initializer = initializer("bias_initializer", bias_initializer)
        kernel_regularizer = regularizer("kernel_regularizer", kernel_regularizer)
        bias_regularizer = regularizer("bias_regularizer", bias_regularizer)
        activity_regularizer = regularizer("activity_regularizer", activity_regularizer)
        kernel_constraint = constraint("kernel_constraint", kernel_constraint)
        bias_constraint = constraint("bias_constraint", bias_constraint)
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self.epsilon = check_positive("epsilon", epsilon)

    @classmethod
    def from_config(cls, config):
        check_config_keys(cls, config)
        return super().from_config(config)

    def add_weight(self, *args, **kwargs):
        # The kernel takes part in statistics (its standardization): float32 whatever the
        # policy (float64 in a float64 layer), as the normalization layers' own weights.
        if kwargs.get("name") == "kernel":
            kwargs["dtype"] = ops.stats_dtype(self.variable_dtype)
        return super().add_weight(*args, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self._record_built_shape(input_shape)

    def _standardized_kernel(self, dtype):
        w = kernels.read_stored(self.kernel, dtype)
        mean, var = ops.moments(w, kernels.fan_in_axes(len(w.shape)))
        return ops.normalize(w, mean, var, epsilon=self.epsilon)

    def call(self, inputs):
        kernel = self._standardized_kernel(ops.stats_dtype(inputs.dtype))
        outputs = kernels.linear(self, inputs, tf.cast(kernel, inputs.dtype))
        bias = None if self.bias is None else kernels.read_stored(self.bias, inputs.dtype)
        return kernels.finish(self, outputs, bias)

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


_WS_DOC = r"""Weight-standardized {rank}D convolution: each filter has zero mean and unit variance.

    A ``keras.layers.Conv{rank}D`` whose kernel is standardized, per output
    filter, over its fan-in (the kernel window and the input channels of its
    group) before every convolution::

        W_hat[..., j] = (W[..., j] - mean_j) / sqrt(var_j + epsilon)
        y = activation(conv(x, W_hat) + b)

    The stored kernel stays unconstrained (the optimizer updates it; the
    standardization is part of the forward pass, so gradients go through it).
    Statistics are float32 under mixed precision. Weight standardization is
    meant to be paired with a per-sample activation normalization (group or
    layer normalization).

    Args:
      filters, kernel_size, strides, padding, data_format, dilation_rate,
      groups, activation, use_bias, kernel_initializer, bias_initializer,
      kernel_regularizer, bias_regularizer, activity_regularizer,
      kernel_constraint, bias_constraint: as in ``keras.layers.Conv{rank}D``.
      epsilon: added to each filter's variance. Default 1e-5.

    Call arguments:
      inputs: a rank-{rank_plus_2} tensor, as for ``keras.layers.Conv{rank}D``.

    Example:
      >>> import numpy as np, tfnorm
      >>> conv = tfnorm.WeightStandardizedConv{rank}D(4, 3)
      >>> y = conv(np.random.rand(2, {example_shape}, 3).astype("float32"))
      >>> tuple(y.shape)
      (2, {example_out}, 4)

    Reference:
      S. Qiao, H. Wang, C. Liu, W. Shen, A. Yuille. "Micro-Batch Training with
      Batch-Channel Normalization and Weight Standardization." arXiv:1903.10520, 2019.
    """


@register("ws_conv1d", kind="layer")
class WeightStandardizedConv1D(_WeightStandardized, keras.layers.Conv1D):
    __doc__ = _WS_DOC.format(rank=1, rank_plus_2=3, example_shape="8", example_out="6")


@register("ws_conv2d", kind="layer")
class WeightStandardizedConv2D(_WeightStandardized, keras.layers.Conv2D):
    __doc__ = _WS_DOC.format(rank=2, rank_plus_2=4, example_shape="8, 8", example_out="6, 6")


@register("ws_conv3d", kind="layer")
class WeightStandardizedConv3D(_WeightStandardized, keras.layers.Conv3D):
    __doc__ = _WS_DOC.format(rank=3, rank_plus_2=5, example_shape="5, 5, 5", example_out="3, 3, 3")
