"""Cosine normalization layers: dense and convolution with cosine similarity."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnorm import ops
from tfnorm.layers.base import (
    CheckedCall,
    check_bool,
    check_config_keys,
    check_int,
    check_positive,
    register,
    set_weight_arguments,
    weight_arguments_config,
)

_BIAS_DOC = """
    The bias, as in the paper, is part of the vectors: with ``use_bias=True``
    the weight vector is ``[w, b]`` and the input vector ``[x, 1]``, so the
    output is still a cosine, ``(w . x + b) / (|[w, b]| |[x, 1]|)``, within
    [-1, 1]. A bias added after the cosine (as in a plain Dense layer) would
    shift that range, which is what cosine normalization exists to bound; a
    bias learned by a following normalization or activation layer does not
    need this one. ``centered=True`` subtracts the mean over all components,
    the bias component included.
"""


class _CosineBase(CheckedCall, keras.layers.Layer):
    """Shared construction, weights and config of the cosine layers."""

    def _init_common(
        self,
        centered,
        use_bias,
        epsilon,
        activation,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        kernel_constraint,
        bias_constraint,
    ):
        self.centered = check_bool("centered", centered)
        self.use_bias = check_bool("use_bias", use_bias)
        self.epsilon = check_positive("epsilon", epsilon)
        self.activation = keras.activations.get(activation)
        set_weight_arguments(
            self, "kernel", kernel_initializer, kernel_regularizer, kernel_constraint
        )
        set_weight_arguments(self, "bias", bias_initializer, bias_regularizer, bias_constraint)

    @classmethod
    def from_config(cls, config):
        check_config_keys(cls, config)
        return super().from_config(config)

    def _build_weights(self, kernel_shape, units):
        # float32 weights whatever the policy (float64 in a float64 layer), never autocast:
        # their norms are statistics
        dtype = ops.stats_dtype(self.variable_dtype)
        self.kernel = self.add_weight(
            name="kernel",
            shape=tuple(kernel_shape),
            dtype=dtype,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        self.bias = (
            self.add_weight(
                name="bias",
                shape=(units,),
                dtype=dtype,
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                autocast=False,
            )
            if self.use_bias
            else None
        )

    def _tensors(self):
        kernel = tf.convert_to_tensor(self.kernel)
        bias = None if self.bias is None else tf.convert_to_tensor(self.bias)
        return kernel, bias

    def _common_config(self):
        return {
            "centered": self.centered,
            "use_bias": self.use_bias,
            "epsilon": self.epsilon,
            "activation": keras.activations.serialize(self.activation),
            **weight_arguments_config(self, "kernel", "bias"),
        }


@register("cosine_dense", kind="layer")
class CosineDense(_CosineBase):
    #: Smallest input rank (batch axis included).
    min_rank = 2
    #: Like Dense, any rank >= 2 works once built: the cosine is over the last axis.
    fixed_rank = False

    __doc__ = (
        r"""A dense layer whose units output cosine similarities.

    Each unit outputs the cosine between its weight vector ``w`` (a column of
    ``kernel``) and the input vector ``x`` (the last axis), then the activation::

        out = activation( (w . x) / (sqrt(|w|**2 + epsilon) * sqrt(|x|**2 + epsilon)) )

    bounded in [-1, 1] before the activation. ``centered=True`` is the paper's
    centered cosine (the Pearson correlation): ``w`` and ``x`` are both
    mean-subtracted first.
    """
        + _BIAS_DOC
        + r"""
    The input and kernel norms are float32 for half-precision input.

    Args:
      units: number of output units.
      centered: use the centered cosine (Pearson correlation). Default False.
      use_bias: fold a learned bias into the vectors (see above). Default False.
      epsilon: added to both squared norms. Default 1e-6.
      activation: applied to the cosine. Default None.
      kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
      kernel_constraint, bias_constraint: as in ``keras.layers.Dense``.
        Defaults ``"glorot_uniform"``, ``"zeros"``, None, None, None, None.

    Call arguments:
      inputs: float tensor ``(..., D)``.

    Example:
      >>> import numpy as np, tfnorm
      >>> layer = tfnorm.CosineDense(3)
      >>> out = layer(np.random.rand(2, 5).astype("float32") * 100)
      >>> tuple(out.shape), bool(np.abs(out.numpy()).max() <= 1.0)
      ((2, 3), True)

    Reference:
      C. Luo, J. Zhan, L. Wang, Q. Yang. "Cosine Normalization: Using Cosine
      Similarity Instead of Dot Product in Neural Networks." ICANN 2018
      (arXiv:1702.05870, 2017).
    """
    )

    def __init__(
        self,
        units,
        centered=False,
        use_bias=False,
        epsilon=1e-6,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_int("units", units, 1)
        self._init_common(
            centered,
            use_bias,
            epsilon,
            activation,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"CosineDense needs an input of rank >= 2 (batch axis included), received "
                f"an input of shape {tuple(input_shape)}"
            )
        d = input_shape[-1]
        if d is None:
            raise ValueError(
                f"CosineDense needs the size of the last input axis when it is built, "
                f"received an input of shape {tuple(input_shape)}"
            )
        self._build_weights((d, self.units), self.units)

    def call(self, inputs):
        kernel, bias = self._tensors()
        out = ops.cosine_matmul(inputs, kernel, bias, self.centered, self.epsilon)
        return self.activation(out) if self.activation is not None else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, **self._common_config()})
        return config


# ---------------------------------------------------------------------------
def _tuple_arg(name, value, rank):
    items = (value,) * rank if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        items = tuple(items)
    except TypeError:
        items = ()
    if len(items) != rank or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items
    ):
        raise ValueError(
            f"{name} must be a positive int or a tuple of {rank} positive ints, "
            f"received {name}={value!r}"
        )
    return items


def _conv_length(n, k, s, d, padding):
    if n is None:
        return None
    if padding == "valid":
        return (n - d * (k - 1) - 1) // s + 1
    return -(-n // s)  # same, causal


class _CosineConv(_CosineBase):
    rank = 2

    @property
    def min_rank(self):
        """The input rank: batch, ``rank`` spatial axes, channels."""
        return self.rank + 2

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        dilation_rate=1,
        centered=False,
        use_bias=False,
        epsilon=1e-6,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.filters = check_int("filters", filters, 1)
        self.kernel_size = _tuple_arg("kernel_size", kernel_size, self.rank)
        self.strides = _tuple_arg("strides", strides, self.rank)
        self.dilation_rate = _tuple_arg("dilation_rate", dilation_rate, self.rank)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"{name}: strides={strides!r} and dilation_rate={dilation_rate!r} cannot both "
                "exceed 1; use one of them"
            )
        modes = ("valid", "same", "causal") if self.rank == 1 else ("valid", "same")
        padding_l = padding.lower() if isinstance(padding, str) else padding
        if padding_l not in modes:
            raise ValueError(
                f"padding must be one of {list(modes)} for {name}, received padding={padding!r}"
            )
        self.padding = padding_l
        data_format = keras.config.image_data_format() if data_format is None else data_format
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                "data_format must be 'channels_last', 'channels_first' or None, "
                f"received data_format={data_format!r}"
            )
        self.data_format = data_format
        self._init_common(
            centered,
            use_bias,
            epsilon,
            activation,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )

    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        name = type(self).__name__
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"{name} needs an input of rank {self.rank + 2} (batch, {self.rank} spatial "
                f"axes, channels), received an input of shape {tuple(input_shape)}"
            )
        c = input_shape[self._channel_axis()]
        if c is None:
            raise ValueError(
                f"{name} needs the number of input channels when it is built, received an "
                f"input of shape {tuple(input_shape)} with data_format={self.data_format!r}"
            )
        self._record_built_shape(input_shape)
        self._build_weights(self.kernel_size + (c, self.filters), self.filters)

    def call(self, inputs):
        x = inputs
        first = self.data_format == "channels_first"
        if first:
            x = tf.transpose(x, [0] + list(range(2, self.rank + 2)) + [1])
        padding = self.padding.upper()
        if self.padding == "causal":
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            x = tf.pad(x, [[0, 0], [left, 0], [0, 0]])
            padding = "VALID"
        kernel, bias = self._tensors()
        out = ops.cosine_conv(
            x, kernel, bias, self.strides, padding, self.dilation_rate, self.centered, self.epsilon
        )
        if self.activation is not None:
            out = self.activation(out)
        if first:
            out = tf.transpose(out, [0, self.rank + 1] + list(range(1, self.rank + 1)))
        return out

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.data_format == "channels_first":
            spatial = input_shape[2:]
        else:
            spatial = input_shape[1:-1]
        out = tuple(
            _conv_length(n, k, s, d, self.padding)
            for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)
        )
        if self.data_format == "channels_first":
            return (input_shape[0], self.filters) + out
        return (input_shape[0],) + out + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "data_format": self.data_format,
                **self._common_config(),
            }
        )
        return config


_CONV_DOC = (
    r"""A {rank}-D convolution whose outputs are cosine similarities.

    Each output is the cosine between an input patch ``x`` (the window of
    ``kernel_size`` positions times all input channels under the filter) and
    the filter ``w``, then the activation::

        out = activation( (w . x) / (sqrt(|w|**2 + epsilon) * sqrt(|x|**2 + epsilon)) )

    bounded in [-1, 1] before the activation. The patch norms come from a
    convolution of ``x**2`` (summed over channels) with a ones kernel, with the
    same strides, dilation and padding, so no patch is extracted in memory; a
    ``"same"`` (or ``"causal"``) patch includes its zero padding.
    ``centered=True`` is the paper's centered cosine (Pearson correlation) of
    patch and filter, which needs only the patch sums of ``x`` as well.
    """
    + _BIAS_DOC
    + r"""
    Patch and filter norms are float32 for half-precision input; the
    convolution itself runs in the compute dtype with the unit-norm filter.

    Args:
      filters: number of output channels.
      kernel_size: int or tuple of {rank} ints.
      strides: int or tuple of {rank} ints. Default 1.
      padding: {paddings}. Default ``"valid"``.
      dilation_rate: int or tuple of {rank} ints. Default 1 (cannot exceed 1
        together with ``strides``).
      centered: use the centered cosine (Pearson correlation). Default False.
      use_bias: fold a learned bias into the vectors (see above). Default False.
      epsilon: added to both squared norms. Default 1e-6.
      activation: applied to the cosine. Default None.
      kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
      kernel_constraint, bias_constraint: as in ``keras.layers.Conv{rank}D``.
        Defaults ``"glorot_uniform"``, ``"zeros"``, None, None, None, None.
      data_format: ``"channels_last"``, ``"channels_first"`` or None (Keras'
        ``image_data_format()``). Default None.

    Call arguments:
      inputs: float tensor of rank {rank2}.

    Example:
      >>> import numpy as np, tfnorm
      >>> layer = tfnorm.CosineConv{rank}D(4, 3, padding="same")
      >>> out = layer(np.random.rand(2, {example_shape}, 3).astype("float32") * 100)
      >>> tuple(out.shape), bool(np.abs(out.numpy()).max() <= 1.0)
      ((2, {example_shape}, 4), True)

    Reference:
      C. Luo, J. Zhan, L. Wang, Q. Yang. "Cosine Normalization: Using Cosine
      Similarity Instead of Dot Product in Neural Networks." ICANN 2018
      (arXiv:1702.05870, 2017).
    """
)


@register("cosine_conv1d", kind="layer")
class CosineConv1D(_CosineConv):
    __doc__ = _CONV_DOC.format(
        rank=1, rank2=3, example_shape="8", paddings='``"valid"``, ``"same"`` or ``"causal"``'
    )
    rank = 1


@register("cosine_conv2d", kind="layer")
class CosineConv2D(_CosineConv):
    __doc__ = _CONV_DOC.format(
        rank=2, rank2=4, example_shape="6, 6", paddings='``"valid"`` or ``"same"``'
    )
    rank = 2
