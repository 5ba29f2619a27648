"""Running a layer's own operation with a normalized kernel, shared by the weight-based layers.

Weight normalization, spectral normalization and the weight-standardized
convolutions never write into a kernel variable: they read its stored value
(:func:`read_stored`, not the mixed-precision cast), normalize it in ``call``,
and run the layer's matmul or convolution on it (:func:`linear`), then the
bias, a per-unit scale and the activation (:func:`finish`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnorm import _compat, ops

__all__ = ["channel_axis", "fan_in_axes", "finish", "is_dense", "linear", "read_stored"]


def read_stored(value, dtype):
    """A variable's stored value (not its mixed-precision cast) as a ``dtype`` tensor."""
    with _compat.no_autocast():  # mixed precision casts float32 variables on read
        return tf.cast(tf.convert_to_tensor(value), dtype)


def is_dense(layer) -> bool:
    return isinstance(layer, keras.layers.Dense)


def channel_axis(layer, rank: int) -> int:
    """Axis of the output units in the layer's output."""
    if not is_dense(layer) and layer.data_format == "channels_first":
        return 1
    return rank - 1


def linear(layer, inputs, kernel):
    """The wrapped layer's operation with ``kernel``, before bias and activation."""
    if is_dense(layer):
        return keras.ops.matmul(inputs, kernel)
    if layer.padding == "causal":  # Conv1D only: left-pad, then a valid convolution
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        pads = [[0, 0], [left, 0], [0, 0]]
        if layer.data_format == "channels_first":
            pads = [[0, 0], [0, 0], [left, 0]]
        return keras.ops.conv(keras.ops.pad(inputs, pads), kernel, strides=list(layer.strides),
                              padding="valid", dilation_rate=layer.dilation_rate,
                              data_format=layer.data_format)
    return layer.convolution_op(inputs, kernel)


def finish(layer, outputs, bias, scale=None):
    """``outputs * scale + bias`` per output unit (either may be None), then the activation.

    For half-precision outputs the per-unit multiply-add runs in float32: a data-dependent
    ``scale`` can be far below float16's normal range.
    """
    if bias is not None or scale is not None:
        rank = outputs.shape.rank
        shape = [1] * rank
        shape[channel_axis(layer, rank)] = -1
        y = ops.to_stats(outputs)
        if scale is not None:
            y = y * tf.reshape(tf.cast(scale, y.dtype), shape)
        if bias is not None:
            y = y + tf.reshape(tf.cast(bias, y.dtype), shape)
        outputs = tf.cast(y, outputs.dtype)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def fan_in_axes(kernel_rank: int):
    """Every kernel axis but the last (output units): the fan-in of each unit."""
    return list(range(kernel_rank - 1))
