"""What every tfnorm layer shares: registration, config checks, input checks.

Layers hold weights and call :mod:`tfnorm.ops`; nothing here computes a
statistic.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Iterable, Sequence, Tuple

import keras
import tensorflow as tf

from tfnorm.ops.axes import as_axis_tuple, resolve_axes

PACKAGE = "tfnorm"


def register(cls):
    """Registers ``cls`` for Keras serialization under the package ``"tfnorm"``.

    The package name is written into every saved model; it never changes.
    """
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


# Keyword arguments the Keras base Layer accepts and writes into configs.
BASE_LAYER_KEYS = frozenset({
    "name", "trainable", "dtype", "autocast", "activity_regularizer",
    "input_shape", "batch_input_shape", "batch_size", "input_dim",
})


def init_arguments(cls) -> Tuple[str, ...]:
    """Names of the explicit ``__init__`` arguments of ``cls`` (no ``self``/``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in params
                 if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


def check_config_keys(cls, config: dict) -> None:
    """Raises a ValueError listing keys of ``config`` that ``cls`` does not take."""
    allowed = set(init_arguments(cls)) | BASE_LAYER_KEYS
    unknown = sorted(k for k in config if k not in allowed)
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, sorted(allowed), n=1)
            if close:
                hints.append(f"{k!r} (did you mean {close[0]!r}?)")
        hint = f"; {', '.join(hints)}" if hints else ""
        raise ValueError(
            f"unknown key(s) {unknown} in the config for {cls.__name__}{hint}. "
            f"Valid keys: {sorted(allowed)}"
        )


def check_float_input(layer_name: str, x) -> None:
    """Raises a ValueError when ``x`` is not a floating tensor."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return
    dtype = tf.as_dtype(dtype)
    if not dtype.is_floating:
        raise ValueError(
            f"{layer_name} received an input of dtype {dtype.name}; normalization needs a float "
            f"input. Cast it first, e.g. keras.ops.cast(x, 'float32')"
        )


def check_positive(name: str, value, allow_zero: bool = False):
    try:
        ok = value >= 0 if allow_zero else value > 0
    except TypeError:
        ok = False
    if isinstance(value, bool) or not ok:
        need = "a non-negative number" if allow_zero else "a positive number"
        raise ValueError(f"{name} must be {need}, received {name}={value!r}")
    return value


def check_fraction(name: str, value):
    """For momenta and decay rates: a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], received {name}={value!r}")
    return float(value)


def check_int(name: str, value, minimum: int = 1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, received {name}={value!r}")
    return value


def check_single_axis(layer_name: str, axis):
    """For layers with one channel axis: an int (a list is a ValueError)."""
    if isinstance(axis, (list, tuple)):
        raise ValueError(f"{layer_name} takes a single channel axis, received axis={axis!r}")
    as_axis_tuple(axis)
    return axis


def update_moving_average(variable, value, momentum: float) -> None:
    """``variable <- momentum * variable + (1 - momentum) * value``, skipping non-finite entries.

    A channel whose new average would not be finite (a NaN or inf in the batch)
    keeps its old value, so one bad batch never poisons the inference statistics.
    ``value`` is reshaped to the variable's shape and carries no gradient.
    """
    value = tf.reshape(tf.stop_gradient(value), variable.shape)
    new = variable * momentum + tf.cast(value, variable.dtype) * (1.0 - momentum)
    variable.assign(tf.where(tf.math.is_finite(new), new, variable))


class NormalizationLayer(keras.layers.Layer):
    """Base class of tfnorm's shape-preserving normalization layers.

    Adds to ``keras.layers.Layer``: a ``from_config`` that rejects unknown keys
    with a clear message, identity ``compute_output_shape``, mask pass-through,
    and helpers for validated axes and float32 parameters.
    """

    #: Smallest input rank the layer accepts (batch axis included).
    min_rank = 2

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    @classmethod
    def from_config(cls, config):
        check_config_keys(cls, config)
        return super().from_config(config)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    # -- helpers for subclasses -------------------------------------------------
    def _check_rank(self, input_shape, min_rank=None):
        min_rank = self.min_rank if min_rank is None else min_rank
        rank = len(input_shape)
        if rank < min_rank:
            raise ValueError(
                f"{type(self).__name__} needs an input of rank >= {min_rank} (batch axis "
                f"included), received an input of shape {tuple(input_shape)} (rank {rank})"
            )
        return rank

    def _resolve_axes(self, axis, input_shape, argname="axis") -> Tuple[int, ...]:
        """Validated non-negative feature axes whose sizes are known."""
        rank = self._check_rank(input_shape)
        axes = resolve_axes(axis, rank, argname)
        for a in axes:
            if input_shape[a] is None:
                raise ValueError(
                    f"{type(self).__name__}: {argname}={axis!r} points at axis {a} of input "
                    f"shape {tuple(input_shape)}, whose size is unknown; the size of the "
                    "normalized/channel axis must be known when the layer is built"
                )
        return axes

    def _param(self, name, shape, initializer, regularizer=None, constraint=None,
               trainable=True, aggregation="none"):
        """A float32 weight (never autocast: it takes part in statistics)."""
        return self.add_weight(
            name=name,
            shape=tuple(shape),
            initializer=initializer,
            regularizer=regularizer,
            constraint=constraint,
            trainable=trainable,
            autocast=False,
            aggregation=aggregation,
        )

    def _param_shape(self, axes: Sequence[int], input_shape) -> Tuple[int, ...]:
        return tuple(input_shape[a] for a in axes)

    @staticmethod
    def _broadcast(param, axes: Iterable[int], rank: int):
        """Reshapes a weight stored with shape ``(sizes of axes)`` to broadcast over rank."""
        if param is None:
            return None
        axes = list(axes)
        if axes == [rank - 1]:
            return param
        shape = [1] * rank
        for a, n in zip(axes, param.shape):
            shape[a] = n
        return tf.reshape(param, shape)


def serialize(obj):
    """Serializes a Keras initializer/regularizer/constraint (``None`` stays ``None``)."""
    return keras.saving.serialize_keras_object(obj) if obj is not None else None
