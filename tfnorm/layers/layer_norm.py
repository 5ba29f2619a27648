"""Per-sample normalization over feature axes: LayerNorm and RMSNorm."""

from __future__ import annotations

from tfnorm import ops
from tfnorm.layers.base import (
    AffineMixin,
    NormalizationLayer,
    check_axis,
    check_positive,
    register,
)


@register("layer")
class LayerNormalization(AffineMixin, NormalizationLayer):
    r"""Layer normalization: each sample normalized over its feature axes.

    ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta``, with ``mean`` and
    ``var`` (biased) taken per sample over ``axis``; ``gamma`` and ``beta``
    live on ``axis``. Statistics are float32 for half-precision input. When
    ``axis`` names the trailing axes (the usual case), forward and backward
    are one op with a hand-written gradient (:func:`tfnorm.ops.layer_norm`).

    ``LayerNormalization(center=False, scale=False)`` is *LayerNorm-simple* of
    Xu et al. 2019 ("Understanding and Improving Layer Normalization"): the
    same normalization without the learned bias and gain, which the paper finds
    as good as or better than full LayerNorm on several tasks.

    Args:
      axis: int or list of ints, the axes to normalize over. Default -1.
      epsilon: added to the variance. Default 1e-3.
      center: learn ``beta``. Default True.
      scale: learn ``gamma``. Default True.
      beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: as in ``keras.layers.LayerNormalization``.

    Call arguments:
      inputs: float tensor of rank >= 2.

    Masks: a Keras mask (from ``Masking``, ``Embedding(mask_zero=True)``, ...)
    is passed on unchanged to the next layer and not used here. With the
    default ``axis=-1`` the statistics are per position (per sample and step,
    over the channels), so padded steps cannot affect the other steps; they
    are normalized like any other. With ``axis`` naming a masked axis (the
    time axis, say), padded steps do count in the statistics.

    Example:
      >>> import numpy as np, tfnorm
      >>> y = tfnorm.LayerNormalization()(np.arange(6, dtype="float32").reshape(2, 3))
      >>> np.round(y.numpy().astype(float), 3).tolist()
      [[-1.224, 0.0, 1.224], [-1.224, 0.0, 1.224]]

    Reference:
      J. L. Ba, J. R. Kiros, G. E. Hinton. "Layer Normalization." arXiv:1607.06450, 2016.
    """

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
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
        self.axis = check_axis(axis)
        self.epsilon = check_positive("epsilon", epsilon)
        self._init_affine(locals())

    def build(self, input_shape):
        self._axes = self._resolve_axes(self.axis, input_shape)
        self._build_affine(self._param_shape(self._axes, input_shape))

    def call(self, inputs):
        return ops.layer_norm(inputs, self._axes, self.gamma, self.beta, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "epsilon": self.epsilon, **self._affine_config()})
        return config


@register("rms")
class RMSNormalization(AffineMixin, NormalizationLayer):
    r"""Root-mean-square normalization: LayerNorm without re-centering.

    ``y = gamma * x / sqrt(mean(x**2) + epsilon)``, the mean of squares taken per
    sample over ``axis`` (in float32 for half-precision input). Over trailing
    axes, one op with a hand-written gradient (:func:`tfnorm.ops.rms_norm`).

    Args:
      axis: int or list of ints, the axes to normalize over. Default -1.
      epsilon: added to the mean square. Default 1e-6.
      scale: learn ``gamma``. Default True.
      gamma_initializer, gamma_regularizer, gamma_constraint: for ``gamma``.

    Call arguments:
      inputs: float tensor of rank >= 2.

    Example:
      >>> import numpy as np, tfnorm
      >>> y = tfnorm.RMSNormalization(epsilon=0.0)(np.array([[3.0, 4.0]], "float32"))
      >>> np.round(y.numpy().astype(float), 4).tolist()
      [[0.8485, 1.1314]]

    Reference:
      B. Zhang, R. Sennrich. "Root Mean Square Layer Normalization." NeurIPS 2019.
    """

    def __init__(
        self,
        axis=-1,
        epsilon=1e-6,
        scale=True,
        gamma_initializer="ones",
        gamma_regularizer=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = check_axis(axis)
        self.epsilon = check_positive("epsilon", epsilon, allow_zero=True)
        self._init_affine(locals())

    def build(self, input_shape):
        self._axes = self._resolve_axes(self.axis, input_shape)
        self._build_affine(self._param_shape(self._axes, input_shape))

    def call(self, inputs):
        return ops.rms_norm(inputs, self._axes, self.gamma, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "epsilon": self.epsilon, **self._affine_config()})
        return config
