"""AdaNorm and DetachNorm (Xu et al. 2019): layer normalization with altered gradients.

Both are ablations and improvements of *LayerNorm-simple*, which is
``tfnorm.LayerNormalization(center=False, scale=False)``: layer normalization
without the learned bias and gain.
"""

from __future__ import annotations

import tensorflow as tf

from tfnorm import ops
from tfnorm.layers.base import NormalizationLayer, check_axis, check_positive, register


@register("adanorm")
class AdaNorm(NormalizationLayer):
    r"""Adaptive normalization: LayerNorm-simple with an input-adaptive, detached gain.

    Per sample, over ``axis``::

        y = (x - mean) / (std + epsilon)
        z = c * (1 - k * y) * y

    with ``std`` the unbiased (``n - 1``) standard deviation, as in the paper.
    The factor ``phi(y) = c * (1 - k * y)`` replaces LayerNorm's learned bias
    and gain and is treated as a constant in the backward pass (the paper's
    gradient detachment), so ``dL/dy = c * (1 - k * y) * dL/dz``; the
    gradient then flows through ``mean`` and ``std`` as in LayerNorm (one op
    with this backward written out, :func:`tfnorm.ops.adanorm.adanorm`). The
    layer has no weights. Statistics are float32 for half-precision input.

    Args:
      axis: int or list of ints, the axes to normalize over. Default -1.
      k: the slope of ``phi``; the paper uses 0.1. Default 0.1.
      c: the scale of ``phi`` (the paper's ``C``, a hyper-parameter). Default 1.0.
      epsilon: added to the standard deviation. Default 1e-5.

    Call arguments:
      inputs: float tensor of rank >= 2.

    Example:
      >>> import numpy as np, tfnorm
      >>> z = tfnorm.AdaNorm(k=0.1)(np.array([[1.0, 2.0, 3.0]], "float32"))
      >>> np.round(z.numpy().astype(float), 3).tolist()
      [[-1.1, 0.0, 0.9]]

    Reference:
      J. Xu, X. Sun, Z. Zhang, G. Zhao, J. Lin. "Understanding and Improving
      Layer Normalization." NeurIPS 2019.
    """

    def __init__(self, axis=-1, k=0.1, c=1.0, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.axis = check_axis(axis)
        self.k = check_positive("k", k, allow_zero=True)
        self.c = check_positive("c", c)
        self.epsilon = check_positive("epsilon", epsilon)

    def build(self, input_shape):
        self._axes = self._resolve_axes(self.axis, input_shape)

    def call(self, inputs):
        return ops.adanorm(inputs, self._axes, self.k, self.c, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "k": self.k, "c": self.c, "epsilon": self.epsilon})
        return config


@register("detach")
class DetachNormalization(NormalizationLayer):
    r"""DetachNorm: the LayerNorm forward pass with the mean and variance detached.

    Per sample, over ``axis``::

        z = (x - mean) / sqrt(var + epsilon)

    exactly the forward pass of LayerNorm-simple
    (``tfnorm.LayerNormalization(center=False, scale=False)``; biased
    variance), but ``mean`` and ``var`` are constants for the backward pass,
    so ``dL/dx = dL/dz / sqrt(var + epsilon)``. Xu et al. use it to show
    that the derivatives of the mean and variance, which this layer cuts,
    matter more to LayerNorm than the forward normalization. No weights.
    Statistics are float32 for half-precision input.

    Args:
      axis: int or list of ints, the axes to normalize over. Default -1.
      epsilon: added to the variance. Default 1e-5.

    Call arguments:
      inputs: float tensor of rank >= 2.

    Example:
      >>> import numpy as np, tfnorm
      >>> z = tfnorm.DetachNormalization()(np.array([[1.0, 3.0]], "float32"))
      >>> np.round(z.numpy().astype(float), 3).tolist()
      [[-1.0, 1.0]]

    Reference:
      J. Xu, X. Sun, Z. Zhang, G. Zhao, J. Lin. "Understanding and Improving
      Layer Normalization." NeurIPS 2019.
    """

    def __init__(self, axis=-1, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.axis = check_axis(axis)
        self.epsilon = check_positive("epsilon", epsilon)

    def build(self, input_shape):
        self._axes = self._resolve_axes(self.axis, input_shape)

    def call(self, inputs):
        mean, var = ops.moments(tf.stop_gradient(inputs), self._axes)
        return ops.normalize(inputs, mean, var, epsilon=self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "epsilon": self.epsilon})
        return config
