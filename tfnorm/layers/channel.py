"""Normalization across channels at each position: local response and pixelwise normalization."""

from __future__ import annotations

from tfnorm import ops
from tfnorm.layers.base import (
    NormalizationLayer,
    check_axis,
    check_int,
    check_number,
    check_positive,
    check_single_axis,
    register,
)


@register("lrn")
class LocalResponseNormalization(NormalizationLayer):
    r"""Local response normalization across neighbouring channels, in TensorFlow's convention.

    Each activation is divided by a power of the sum of squares of the
    ``2 * depth_radius + 1`` channels around it (zeros beyond the edges)::

        sqr_sum[..., c] = sum(x[..., c - depth_radius : c + depth_radius + 1] ** 2)
        y = x / (bias + alpha * sqr_sum) ** beta

    which is ``tf.nn.local_response_normalization`` (extended to any rank and
    channel axis; the sum of squares is float32 under mixed precision),
    computed as one op with a hand-written gradient (:func:`tfnorm.ops.lrn.lrn`).

    PyTorch's ``torch.nn.LocalResponseNorm(size, alpha, beta, k)`` (and Caffe)
    divide ``alpha`` by the window size ``n``: they compute
    ``x / (k + alpha / n * sqr_sum) ** beta``. So PyTorch's
    ``LocalResponseNorm(size=n, alpha=a, beta=b, k=k)`` with an odd ``n`` is
    ``LocalResponseNormalization(depth_radius=(n - 1) // 2, bias=k, alpha=a / n, beta=b)``
    here (PyTorch's defaults ``alpha=1e-4, beta=0.75, k=1`` differ from
    TensorFlow's ``alpha=1, beta=0.5, bias=1`` too). AlexNet used
    ``n = 5, k = 2, alpha = 1e-4, beta = 0.75`` without the division, i.e.
    ``depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75`` here.

    Args:
      depth_radius: half-width of the channel window. Default 5.
      bias: the additive constant ``k`` (>= 0). Default 1.0.
      alpha: scale of the sum of squares (>= 0). Default 1.0.
      beta: exponent (>= 0). Default 0.5.
      axis: channel axis. Default -1.

    Call arguments:
      inputs: float tensor of rank >= 2 with channels on ``axis``.

    Example:
      >>> import numpy as np, tensorflow as tf, tfnorm
      >>> x = np.random.rand(1, 3, 3, 8).astype("float32")
      >>> lrn = tfnorm.LocalResponseNormalization(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
      >>> ref = tf.nn.local_response_normalization(x, 2, 2.0, 1e-4, 0.75)
      >>> bool(np.allclose(lrn(x), ref, rtol=1e-6))
      True

    Reference:
      A. Krizhevsky, I. Sutskever, G. E. Hinton. "ImageNet Classification with
      Deep Convolutional Neural Networks." NeurIPS 2012, Sec. 3.3.
    """

    def __init__(self, depth_radius=5, bias=1.0, alpha=1.0, beta=0.5, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = check_int("depth_radius", depth_radius, 0)
        self.bias = check_number("bias", bias)
        self.alpha = check_number("alpha", alpha)
        self.beta = check_number("beta", beta)
        self.axis = check_single_axis(type(self).__name__, axis)

    def build(self, input_shape):
        (c_axis,) = self._resolve_axes(self.axis, input_shape)
        self._channel = c_axis

    def call(self, inputs):
        return ops.lrn(inputs, self.depth_radius, self.bias, self.alpha, self.beta, self._channel)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "depth_radius": self.depth_radius,
                "bias": self.bias,
                "alpha": self.alpha,
                "beta": self.beta,
                "axis": self.axis,
            }
        )
        return config


@register("pixel")
class PixelNormalization(NormalizationLayer):
    r"""Pixelwise feature-vector normalization (ProGAN): each position's channels to unit RMS.

    At every position of every sample, the feature vector across channels is
    divided by its root mean square::

        y = x / sqrt(mean_c(x ** 2) + epsilon)

    with no learned parameters (the paper uses it in the generator after
    each convolution, instead of batch normalization). The arithmetic is that
    of ``RMSNormalization(axis=axis, scale=False)``, through the same fused
    op (:func:`tfnorm.ops.rms_norm`); this class carries the paper's name and
    default epsilon. The mean square is float32 under mixed precision.

    Args:
      epsilon: added to the mean square. Default 1e-8.
      axis: channel axis, or a list of axes. Default -1.

    Call arguments:
      inputs: float tensor of rank >= 2 with channels on ``axis``.

    Example:
      >>> import numpy as np, tfnorm
      >>> y = tfnorm.PixelNormalization()(np.array([[3.0, 4.0]], "float32"))
      >>> np.round(y.numpy().astype(float), 4).tolist()
      [[0.8485, 1.1314]]

    Reference:
      T. Karras, T. Aila, S. Laine, J. Lehtinen. "Progressive Growing of GANs for
      Improved Quality, Stability, and Variation." ICLR 2018, Sec. 4.2.
    """

    def __init__(self, epsilon=1e-8, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = check_positive("epsilon", epsilon)
        self.axis = check_axis(axis)

    def build(self, input_shape):
        self._axes = self._resolve_axes(self.axis, input_shape)

    def call(self, inputs):
        return ops.rms_norm(inputs, self._axes, epsilon=self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "axis": self.axis})
        return config
