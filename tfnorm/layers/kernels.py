"""Running a layer's own operation with a normalized kernel, shared by the weight-based layers.

Weight normalization, spectral normalization and the weight-standardized
convolutions never write into a kernel variable: they read its stored value
(:func:`read_stored`, not the mixed-precision cast), normalize it in ``call``,
and run the layer's matmul, convolution or lookup on it (:func:`linear`), then
the bias, a per-unit scale and the activation (:func:`finish`). A recurrent
layer runs through :class:`Recurrence`: a ``keras.layers.RNN`` over a stand-in
cell whose input kernel is the normalized tensor and whose other weights are
the wrapped cell's own variables, read, never written.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnorm import _compat, ops

__all__ = [
    "Recurrence",
    "channel_axis",
    "fan_in_axes",
    "finish",
    "is_dense",
    "kernel_names",
    "kernel_owner",
    "kind",
    "linear",
    "read_stored",
]

# Layer kinds by the operation that applies their kernel. A layer is of a kind when it is an
# instance of one of its classes whose own ``call`` it keeps: that call is what
# :func:`linear` reproduces (a subclass with another ``call`` computes something else).
_KINDS = (
    ("dense", (keras.layers.Dense,)),
    ("conv", (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)),
    (
        "conv_transpose",
        (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose),
    ),
    ("depthwise", (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)),
    ("separable", (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)),
    ("embedding", (keras.layers.Embedding,)),
    ("recurrent", (keras.layers.SimpleRNN, keras.layers.LSTM, keras.layers.GRU)),
)
_CELLS = (keras.layers.SimpleRNNCell, keras.layers.LSTMCell, keras.layers.GRUCell)


def kind(layer):
    """The layer's kind: ``"dense"``, ``"conv"``, ``"conv_transpose"``, ``"depthwise"``,
    ``"separable"``, ``"embedding"`` or ``"recurrent"``; None when its forward pass is not
    Keras' own (another class, a subclass overriding ``call``, a custom cell)."""
    for name, classes in _KINDS:
        for cls in classes:
            if isinstance(layer, cls) and type(layer).call is cls.call:
                if name == "recurrent" and type(getattr(layer, "cell", None)) not in _CELLS:
                    return None
                return name
    return None


def kernel_owner(layer):
    """The object holding the kernel attributes: the cell of a recurrent layer, else the layer."""
    return layer.cell if kind(layer) == "recurrent" else layer


def kernel_names(layer):
    """Names of the attributes of :func:`kernel_owner` that are the layer's kernel(s); for a
    recurrent layer the input kernel (the recurrent kernel is not one of them)."""
    k = kind(layer)
    if k == "embedding":
        return ("embeddings",)
    if k == "separable":
        return ("depthwise_kernel", "pointwise_kernel")
    return ("kernel",)


def read_stored(value, dtype):
    """A variable's stored value (not its mixed-precision cast) as a ``dtype`` tensor."""
    with _compat.no_autocast():  # mixed precision casts float32 variables on read
        return tf.cast(tf.convert_to_tensor(value), dtype)


def is_dense(layer) -> bool:
    return isinstance(layer, keras.layers.Dense)


def channel_axis(layer, rank: int) -> int:
    """Axis of the output units in the layer's output."""
    if getattr(layer, "data_format", None) == "channels_first":
        return 1
    return rank - 1


def _causal_pad(layer, inputs):
    """Conv1D's causal padding: left-pad the time axis by the kernel's dilated span."""
    left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
    pads = [[0, 0], [left, 0], [0, 0]]
    if layer.data_format == "channels_first":
        pads = [[0, 0], [0, 0], [left, 0]]
    return keras.ops.pad(inputs, pads)


def linear(layer, inputs, kernel, pointwise=None):
    """The wrapped layer's operation with ``kernel``, before bias and activation.

    ``pointwise`` is the second kernel of a separable convolution (``kernel`` is then its
    depthwise kernel). A recurrent layer is run by :class:`Recurrence`, not here.
    """
    k = kind(layer)
    if is_dense(layer):
        return keras.ops.matmul(inputs, kernel)
    if k == "embedding":
        indices = inputs if inputs.dtype in (tf.int32, tf.int64) else tf.cast(inputs, tf.int32)
        return keras.ops.take(kernel, indices, axis=0)
    if k == "conv_transpose":
        return keras.ops.conv_transpose(
            inputs,
            kernel,
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if k == "depthwise":
        return keras.ops.depthwise_conv(
            inputs,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if k == "separable":
        return keras.ops.separable_conv(
            inputs,
            kernel,
            pointwise,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if layer.padding == "causal":  # Conv1D only: left-pad, then a valid convolution
        return keras.ops.conv(
            _causal_pad(layer, inputs),
            kernel,
            strides=list(layer.strides),
            padding="valid",
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
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
    if getattr(layer, "activation", None) is not None:
        outputs = layer.activation(outputs)
    return outputs


def fan_in_axes(kernel_rank: int):
    """Every kernel axis but the last (output units): the fan-in of each unit."""
    return list(range(kernel_rank - 1))


class Recurrence:
    """Runs a ``SimpleRNN``, ``LSTM`` or ``GRU`` with its input kernel replaced by a tensor.

    A stand-in cell of the wrapped cell's class and config, never built, reads
    ``kernel`` from the tensor given to :meth:`__call__` and ``recurrent_kernel``
    and ``bias`` from the wrapped cell's variables; a ``keras.layers.RNN`` with
    the wrapped layer's sequence options runs it step by step (the cell's own
    ``call``, so every gate, activation, dropout and ``reset_after`` option is
    Keras'). Nothing of the wrapped layer is assigned to. It runs the generic
    loop, not cuDNN.
    """

    def __init__(self, layer):
        cell = layer.cell
        box = {}

        def substituted(self):
            if "kernel" not in box:
                raise RuntimeError("the stand-in cell runs only inside Recurrence.__call__")
            return box["kernel"]

        stand_in = type(
            type(cell).__name__,
            (type(cell),),
            {
                "kernel": property(substituted),
                "recurrent_kernel": property(lambda self: cell.recurrent_kernel),
                "bias": property(lambda self: cell.bias),
            },
        )
        config = cell.get_config()
        config["name"] = f"{cell.name}_normalized"
        self._cell = stand_in.from_config(config)
        self._cell.built = True  # its weights are the wrapped cell's
        self._box = box
        self._rnn = keras.layers.RNN(
            self._cell,
            return_sequences=layer.return_sequences,
            return_state=layer.return_state,
            go_backwards=layer.go_backwards,
            unroll=layer.unroll,
            zero_output_for_mask=layer.zero_output_for_mask,
            dtype=layer.dtype_policy,
            name=f"{layer.name}_normalized",
        )

    def __call__(self, inputs, kernel, mask=None, training=None, initial_state=None):
        """The wrapped layer's output with ``kernel`` (in the layer's compute dtype)."""
        self._box["kernel"] = kernel
        try:
            return self._rnn(inputs, initial_state=initial_state, mask=mask, training=training)
        finally:
            self._box.pop("kernel", None)
