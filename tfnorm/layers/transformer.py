"""Lightweight replacements of LayerNorm in transformers: ScaleNorm and Dynamic Tanh."""

from __future__ import annotations

import math

import keras
import numpy as np

from tfnorm import ops
from tfnorm.layers.base import AffineMixin, NormalizationLayer, check_axis, check_positive, register


@register("scale")
class ScaleNormalization(NormalizationLayer):
    r"""ScaleNorm: the feature vector projected onto a sphere of learned radius.

    Per sample, over the feature axes ``axis`` of size ``d`` in total::

        y = g * x / max(||x||_2, epsilon)

    with a single learned scalar ``g`` initialised to ``sqrt(d)`` (so the output
    starts with unit root mean square, like LayerNorm's). The norm is float32
    under mixed precision. Over trailing axes this is one op with a
    hand-written gradient (:func:`tfnorm.ops.scale_norm`).

    Args:
      epsilon: lower bound of the norm. Default 1e-5.
      axis: int or list of ints, the axes to normalize over. Default -1.

    Call arguments:
      inputs: float tensor of rank >= 2.

    Example:
      >>> import numpy as np, tfnorm
      >>> layer = tfnorm.ScaleNormalization()
      >>> y = layer(np.array([[3.0, 4.0, 0.0, 0.0]], "float32"))
      >>> float(layer.g.numpy()), np.round(y.numpy().astype(float), 4).tolist()
      (2.0, [[1.2, 1.6, 0.0, 0.0]])

    Reference:
      T. Q. Nguyen, J. Salazar. "Transformers without Tears: Improving the
      Normalization of Self-Attention." IWSLT 2019.
    """

    def __init__(self, epsilon=1e-5, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = check_positive("epsilon", epsilon)
        self.axis = check_axis(axis)

    def build(self, input_shape):
        self._axes = self._resolve_axes(self.axis, input_shape)
        size = math.prod(input_shape[a] for a in self._axes)
        self.g = self._param("g", (), keras.initializers.Constant(math.sqrt(size)))

    def call(self, inputs):
        return ops.scale_norm(inputs, self._axes, self.g, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "axis": self.axis})
        return config


@register("dyt")
class DynamicTanh(AffineMixin, NormalizationLayer):
    r"""Dynamic Tanh (DyT): an element-wise stand-in for LayerNorm in transformers.

    No statistics at all::

        y = gamma * tanh(alpha * x) + beta

    with a learned scalar ``alpha`` (initialised to ``alpha_init``) and
    per-feature ``gamma`` (ones) and ``beta`` (zeros) on ``axis``. The paper
    observes that trained LayerNorms map inputs through tanh-like S-curves and
    replaces them by this; ``alpha_init`` matters (0.5 for most models; lower
    for large or deep ones). Element-wise maths run in the input's dtype; one
    op with a hand-written gradient (:func:`tfnorm.ops.dynamic_tanh`).

    Args:
      alpha_init: initial value of ``alpha``. Default 0.5.
      axis: int or list of ints, the axes ``gamma`` and ``beta`` live on. Default -1.
      beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: for ``beta`` and ``gamma``.

    Call arguments:
      inputs: float tensor of rank >= 2.

    Example:
      >>> import numpy as np, tfnorm
      >>> y = tfnorm.DynamicTanh(alpha_init=1.0)(np.array([[0.0, 100.0]], "float32"))
      >>> np.round(y.numpy().astype(float), 4).tolist()
      [[0.0, 1.0]]

    Reference:
      J. Zhu, X. Chen, K. He, Y. LeCun, Z. Liu. "Transformers without
      Normalization." CVPR 2025.
    """

    def __init__(
        self,
        alpha_init=0.5,
        axis=-1,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (
            isinstance(alpha_init, (bool, np.bool_))
            or not isinstance(alpha_init, (int, float, np.number))
            or not np.isfinite(alpha_init)
        ):
            raise ValueError(
                f"alpha_init must be a finite number, received alpha_init={alpha_init!r}"
            )
        self.alpha_init = float(alpha_init)
        self.axis = check_axis(axis)
        self._init_affine(locals())

    def build(self, input_shape):
        self._axes = self._resolve_axes(self.axis, input_shape)
        self.alpha = self._param("alpha", (), keras.initializers.Constant(self.alpha_init))
        self._build_affine(self._param_shape(self._axes, input_shape))

    def call(self, inputs):
        return ops.dynamic_tanh(
            inputs,
            self.alpha,
            self._broadcast(self.gamma, self._axes, self._built_rank),
            self._broadcast(self.beta, self._axes, self._built_rank),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"alpha_init": self.alpha_init, "axis": self.axis, **self._affine_config()})
        return config
