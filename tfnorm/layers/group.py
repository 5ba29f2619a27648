"""Per-sample normalization over channel groups and spatial axes: GroupNorm, InstanceNorm."""

from __future__ import annotations

import tensorflow as tf

from tfnorm import ops
from tfnorm.layers.base import (
    AffineMixin,
    NormalizationLayer,
    check_groups,
    check_int,
    check_mask,
    check_positive,
    check_single_axis,
    register,
)


def _masked_group_norm(layer, x, mask, groups):
    """Group normalization whose statistics count the kept positions of ``mask`` only.

    ``mask`` has the input's shape without the channel axis (``(N, T)`` for
    ``(N, T, C)``; nonzero = kept); it is checked here and the statistics are
    :func:`tfnorm.ops.group_moments` with that mask.
    """
    name = type(layer).__name__
    mask = check_mask(name, mask)
    c = layer._axes[0]
    x_shape = tuple(x.shape)
    expected = x_shape[:c] + x_shape[c + 1 :]
    m_shape = tuple(mask.shape) if mask.shape.rank is not None else None
    if (
        m_shape is None
        or len(m_shape) != len(expected)
        or not all(m is None or e is None or m == e for m, e in zip(m_shape, expected))
    ):
        raise ValueError(
            f"{name}: received a mask of shape {m_shape} for an input of shape "
            f"{x_shape} with axis={layer.axis!r}; the mask must have shape "
            f"{expected}: the input's shape without the channel axis"
        )
    rank = len(x_shape)
    axes = [a for a in range(1, rank) if a != c]
    mean, var = ops.group_moments(x, groups, c, axes, mask=tf.expand_dims(mask, c))
    return ops.normalize(
        x,
        mean,
        var,
        layer._broadcast(layer.gamma, layer._axes, rank),
        layer._broadcast(layer.beta, layer._axes, rank),
        layer.epsilon,
    )


@register("group", groups=True)
class GroupNormalization(AffineMixin, NormalizationLayer):
    r"""Group normalization: channels split into groups, each normalized per sample.

    For a sample and a group ``g`` of ``C / groups`` channels, the mean and
    variance are taken over the group's channels and all spatial axes::

        y = gamma * (x - mean_g) / sqrt(var_g + epsilon) + beta

    with ``gamma``, ``beta`` per channel. ``groups=1`` normalizes each sample
    over all its features (LayerNorm over channels and space); ``groups=C`` is
    instance normalization (prefer :class:`InstanceNormalization`, which says so).

    Statistics are reduced over the spatial axes first (a small ``(N, C)``
    tensor), then averaged within groups: no reshape of the activations. With
    channels last, forward and backward are one op with a hand-written
    gradient (:func:`tfnorm.ops.group_norm`).

    Args:
      groups: number of groups; must divide the channel count. ``-1`` means one
        group per channel (instance normalization), as in
        ``keras.layers.GroupNormalization``; the config keeps ``-1``. Default 32.
      axis: channel axis. Default -1.
      epsilon: added to the variance. Default 1e-3.
      center, scale: learn ``beta``, ``gamma``. Default True.
      beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: as in ``keras.layers.GroupNormalization``.

    Call arguments:
      inputs: float tensor of rank >= 2 with channels on ``axis``.
      mask: optional tensor with the input's shape without the channel axis
        (``(N, T)`` for ``(N, T, C)``, as ``Masking`` or
        ``Embedding(mask_zero=True)`` produce it), ``True`` (or nonzero: a
        numeric mask is not a weight) where a position is kept. Padded
        positions take no part in their sample's statistics; they are still
        normalized with them. A sample with nothing kept gets mean 0 and
        variance 0. Without a mask every position counts. The mask is passed
        on unchanged to the next layer.

    Example:
      >>> import numpy as np, tfnorm
      >>> gn = tfnorm.GroupNormalization(groups=2)
      >>> y = gn(np.random.rand(2, 5, 5, 4).astype("float32"))
      >>> tuple(y.shape)
      (2, 5, 5, 4)

    Reference:
      Y. Wu, K. He. "Group Normalization." ECCV 2018.
    """

    def __init__(
        self,
        groups=32,
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
        if groups != -1 or isinstance(groups, bool):
            check_int("groups", groups, 1)
        self.groups = groups
        self.axis = check_single_axis(type(self).__name__, axis)
        self.epsilon = check_positive("epsilon", epsilon)
        self._init_affine(locals())

    def build(self, input_shape):
        (c_axis,) = self._resolve_axes(self.axis, input_shape)
        channels = input_shape[c_axis]
        self._groups = channels if self.groups == -1 else self.groups
        check_groups(self._groups, channels, self.axis)
        self._axes = (c_axis,)
        self._build_affine((channels,))

    def call(self, inputs, mask=None):
        if mask is not None:
            return _masked_group_norm(self, inputs, mask, self._groups)
        return ops.group_norm(
            inputs, self._groups, self._axes[0], self.gamma, self.beta, self.epsilon
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "groups": self.groups,
                "axis": self.axis,
                "epsilon": self.epsilon,
                **self._affine_config(),
            }
        )
        return config


@register("instance")
class InstanceNormalization(AffineMixin, NormalizationLayer):
    r"""Instance normalization: each channel of each sample normalized over space.

    ``y = gamma * (x - mean_nc) / sqrt(var_nc + epsilon) + beta``, where the
    statistics are taken per sample and per channel over every axis except the
    batch and channel axes. Needs at least one spatial axis: rank >= 3
    (``(N, L, C)``, ``(N, H, W, C)``, ``(N, D, H, W, C)``). With channels last,
    one op with a hand-written gradient (:func:`tfnorm.ops.instance_norm`).

    Args:
      axis: channel axis. Default -1.
      epsilon: added to the variance. Default 1e-3.
      center, scale: learn ``beta``, ``gamma`` per channel. Default True.
      beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: initializers etc. for ``beta``/``gamma``.

    Call arguments:
      inputs: float tensor of rank >= 3 with channels on ``axis``.
      mask: optional tensor with the input's shape without the channel axis
        (``(N, T)`` for ``(N, T, C)`` or ``(N, C, T)``), ``True`` (or nonzero:
        a numeric mask is not a weight) where a position is kept. Padded steps
        take no part in the statistics of their sample and channel; they are
        still normalized with them. Without a mask every position counts.
        The mask is passed on unchanged to the next layer.

    Example:
      >>> import numpy as np, tfnorm
      >>> y = tfnorm.InstanceNormalization()(np.random.rand(2, 8, 8, 3).astype("float32"))
      >>> bool(np.allclose(y.numpy().mean(axis=(1, 2)), 0, atol=1e-5))
      True

    Reference:
      D. Ulyanov, A. Vedaldi, V. Lempitsky. "Instance Normalization: The Missing
      Ingredient for Fast Stylization." arXiv:1607.08022, 2016.
    """

    min_rank = 3

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
        self.axis = check_single_axis(type(self).__name__, axis)
        self.epsilon = check_positive("epsilon", epsilon)
        self._init_affine(locals())

    def build(self, input_shape):
        (c_axis,) = self._resolve_axes(self.axis, input_shape)
        self._axes = (c_axis,)
        self._build_affine((input_shape[c_axis],))

    def call(self, inputs, mask=None):
        if mask is not None:
            return _masked_group_norm(self, inputs, mask, inputs.shape[self._axes[0]])
        return ops.instance_norm(inputs, self._axes[0], self.gamma, self.beta, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "epsilon": self.epsilon, **self._affine_config()})
        return config
