"""Filter response normalization and its thresholded linear unit (Singh & Krishnan 2020)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnorm import ops
from tfnorm.layers.base import (
    AffineMixin,
    NormalizationLayer,
    check_axis,
    check_bool,
    check_positive,
    check_single_axis,
    register,
    set_weight_arguments,
    weight_arguments_config,
)

# Starting value of the learned part of epsilon (nonzero: |e| has no gradient at 0).
_LEARNED_EPSILON_INIT = 1e-4


@register("frn")
class FilterResponseNormalization(AffineMixin, NormalizationLayer):
    r"""Filter response normalization: each channel divided by its mean square over space.

    Per sample and channel, with ``nu2`` the mean of ``x**2`` over the spatial
    axes (no mean subtraction, no batch dependence)::

        y = gamma * x / sqrt(nu2 + |epsilon|) + beta

    With ``learned_epsilon=True`` the epsilon is ``epsilon + |e|`` with ``e`` a
    trainable scalar starting at 1e-4 (the paper finds a learned epsilon
    matters for 1x1 spatial extents, e.g. late layers or dense-like inputs);
    ``epsilon`` is then a fixed lower bound. The paper pairs FRN with
    :class:`TLU`, ``max(y, tau)``, which replaces the activation after it.
    Needs at least one spatial axis: rank >= 3. The mean square is float32
    under mixed precision. It is instance normalization without centering:
    :func:`tfnorm.ops.instance_norm` with ``center=False``, one op with a
    hand-written gradient for channels-last inputs.

    Args:
      axis: channel axis. Default -1.
      epsilon: added to the mean square (its absolute value). Default 1e-6.
      learned_epsilon: learn an extra epsilon. Default False.
      center, scale: learn ``beta``, ``gamma`` per channel. Default True.
      beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: for ``beta`` and ``gamma``.

    Call arguments:
      inputs: float tensor of rank >= 3 with channels on ``axis``.

    Example:
      >>> import numpy as np, tfnorm
      >>> x = np.random.rand(2, 4, 4, 3).astype("float32")
      >>> y = tfnorm.FilterResponseNormalization()(x).numpy()
      >>> bool(np.allclose((y ** 2).mean(axis=(1, 2)), 1, atol=1e-4))
      True

    Reference:
      S. Singh, S. Krishnan. "Filter Response Normalization Layer: Eliminating
      Batch Dependence in the Training of Deep Neural Networks." CVPR 2020.
    """

    min_rank = 3

    def __init__(
        self,
        axis=-1,
        epsilon=1e-6,
        learned_epsilon=False,
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
        self.axis = check_single_axis(type(self).__name__, axis)
        self.learned_epsilon = check_bool("learned_epsilon", learned_epsilon)
        self.epsilon = check_positive("epsilon", epsilon, allow_zero=learned_epsilon)
        self._init_affine(locals())

    def build(self, input_shape):
        (c_axis,) = self._resolve_axes(self.axis, input_shape)
        self._axes = (c_axis,)
        self._build_affine((input_shape[c_axis],))
        self.learned_eps = (
            self._param("learned_eps", (), keras.initializers.Constant(_LEARNED_EPSILON_INIT))
            if self.learned_epsilon
            else None
        )

    def call(self, inputs):
        eps = abs(self.epsilon)
        if self.learned_eps is not None:
            dt = ops.stats_dtype(inputs.dtype)
            eps = tf.constant(eps, dt) + tf.abs(tf.cast(self.learned_eps, dt))
        return ops.instance_norm(inputs, self._axes[0], self.gamma, self.beta, eps, center=False)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "axis": self.axis,
                "epsilon": self.epsilon,
                "learned_epsilon": self.learned_epsilon,
                **self._affine_config(),
            }
        )
        return config


@register("tlu", kind="activation")
class TLU(NormalizationLayer):
    r"""Thresholded linear unit: ``y = max(x, tau)`` with a learned threshold per channel.

    The activation the FRN paper pairs with :class:`FilterResponseNormalization`
    (FRN has no mean subtraction, so a ReLU's fixed threshold at 0 can leave
    units dead; TLU learns where to cut). ``tau`` starts at 0 (a ReLU after a
    zero-mean input). One op with a hand-written gradient (:func:`tfnorm.ops.tlu`).

    ``affine=True`` is the TLU-affine variant (as in TF-Addons' ``TLU``): the
    threshold is a learned line, ``y = max(x, alpha * x + tau)``, with ``alpha``
    per channel (initialised to 0, where it starts as the plain TLU); ties go
    to ``x``. By default both live on the channel axis; TF-Addons' ``TLU``
    learned one per position and channel, which is ``axis=(1, ..., rank - 1)``
    here (a model saved with TF-Addons loads that way,
    :func:`tfnorm.compat.tfa_objects`).

    Args:
      affine: learn the slope ``alpha`` too. Default False.
      axis: the axis, or list of axes, that ``tau`` and ``alpha`` vary along
        (their shape is the input's sizes there; they are shared along every
        other axis). Default -1, the channel axis.
      tau_initializer, tau_regularizer, tau_constraint: for ``tau``.
        Default ``"zeros"``, None, None.
      alpha_initializer, alpha_regularizer, alpha_constraint: for ``alpha``
        (``affine=True``). Default ``"zeros"``, None, None.

    Call arguments:
      inputs: float tensor of rank >= 2.

    Example:
      >>> import numpy as np, tfnorm
      >>> tfnorm.TLU()(np.array([[-1.0, 2.0]], "float32")).numpy().tolist()
      [[0.0, 2.0]]

    Reference:
      S. Singh, S. Krishnan. "Filter Response Normalization Layer: Eliminating
      Batch Dependence in the Training of Deep Neural Networks." CVPR 2020.
    """

    def __init__(
        self,
        affine=False,
        axis=-1,
        tau_initializer="zeros",
        tau_regularizer=None,
        tau_constraint=None,
        alpha_initializer="zeros",
        alpha_regularizer=None,
        alpha_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.affine = check_bool("affine", affine)
        self.axis = check_axis(axis)
        set_weight_arguments(self, "tau", tau_initializer, tau_regularizer, tau_constraint)
        set_weight_arguments(self, "alpha", alpha_initializer, alpha_regularizer, alpha_constraint)

    def build(self, input_shape):
        self._axes = self._resolve_axes(self.axis, input_shape)
        shape = tuple(input_shape[a] for a in self._axes)
        self.tau = self._param(
            "tau", shape, self.tau_initializer, self.tau_regularizer, self.tau_constraint
        )
        self.alpha = (
            self._param(
                "alpha",
                shape,
                self.alpha_initializer,
                self.alpha_regularizer,
                self.alpha_constraint,
            )
            if self.affine
            else None
        )

    def call(self, inputs):
        tau = self._broadcast(self.tau, self._axes, self._built_rank)
        if self.alpha is None:
            return ops.tlu(inputs, tau)
        alpha = self._broadcast(self.alpha, self._axes, self._built_rank)
        line = inputs * tf.cast(alpha, inputs.dtype) + tf.cast(tau, inputs.dtype)
        return tf.maximum(inputs, line)  # its gradient goes to inputs on ties

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "affine": self.affine,
                "axis": self.axis,
                **weight_arguments_config(self, "tau", "alpha"),
            }
        )
        return config
