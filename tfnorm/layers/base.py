"""The vocabulary every tfnorm layer is written in.

* Registration: :func:`register` (:mod:`tfnorm.layers.registration`).
* Argument checks, one rule per kind of argument, each raising a ValueError
  (TypeError for flags) that names the argument and the value received:
  flags (:func:`check_bool`: a real ``bool``, so ``"false"`` is not True),
  positive numbers, fractions, integers, plain numbers, a single channel axis,
  channel groups (:func:`check_groups`), and the keys of a config.
* :class:`AffineMixin`: the learned ``gamma``/``beta`` of a layer, their
  initializers, regularizers and constraints, their weights and their config.
* :class:`NormalizationLayer`: the base class, whose ``__call__`` checks each
  input (a float dtype; the rank the layer was built for) before Keras runs
  the layer's ``call``.

Layers hold weights and call :mod:`tfnorm.ops`; nothing here computes a
statistic.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Iterable, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfnorm import ops
from tfnorm.layers.registration import PACKAGE, register  # noqa: F401  (the vocabulary)

# Keyword arguments the Keras base Layer accepts and writes into configs.
BASE_LAYER_KEYS = frozenset(
    {
        "name",
        "trainable",
        "dtype",
        "autocast",
        "activity_regularizer",
        "input_shape",
        "batch_input_shape",
        "batch_size",
        "input_dim",
    }
)


def init_arguments(cls) -> Tuple[str, ...]:
    """Names of the explicit ``__init__`` arguments of ``cls`` (no ``self``/``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(
        p.name
        for p in params
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )


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
    """Raises a ValueError when ``x`` (a tensor, array or nested list) is not floating point."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        if not isinstance(x, (list, tuple, int, float)):
            return
        dtype = np.asarray(x).dtype
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError:
        dtype = None
    if dtype is None or not dtype.is_floating:
        name = getattr(dtype, "name", None) or np.asarray(x).dtype.name
        raise ValueError(
            f"{layer_name} received an input of dtype {name}; normalization needs a float "
            f"input. Cast it first, e.g. keras.ops.cast(x, 'float32')"
        )


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type; catchable as either TypeError or ValueError."""


def check_mask(layer_name: str, mask) -> tf.Tensor:
    """A call's ``mask`` as a tensor; a ValueError unless it is boolean or numeric.

    A numeric mask means "kept" where it is nonzero (as in Keras); it is never a weight.
    """
    mask = tf.convert_to_tensor(mask)
    if not (mask.dtype.is_bool or mask.dtype.is_integer or mask.dtype.is_floating):
        raise ValueError(
            f"{layer_name}: mask must be boolean or numeric (nonzero means kept), "
            f"received a mask of dtype {mask.dtype.name}"
        )
    return mask


def check_bool(name: str, value) -> bool:
    """For flags (``center``, ``scale``, ``renorm``, ...): ``True`` or ``False`` only.

    NumPy booleans count; ``0``/``1``, strings such as ``"false"`` and None
    do not (``bool("false")`` would be True). Raises an :class:`ArgumentTypeError`.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name} must be True or False, received {name}={value!r}")
    return bool(value)


def check_number(name: str, value, allow_zero: bool = True) -> float:
    """A real, non-negative (or positive) Python/NumPy number, as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number, received {name}={value!r}")
    return float(check_positive(name, value, allow_zero=allow_zero))


def check_positive(name: str, value, allow_zero: bool = False):
    """A finite number > 0 (>= 0 with ``allow_zero``); inf and NaN are refused."""
    try:
        ok = (value >= 0 if allow_zero else value > 0) and bool(np.isfinite(value))
    except TypeError:
        ok = False
    if isinstance(value, bool) or not ok:
        need = "a finite non-negative number" if allow_zero else "a finite positive number"
        raise ValueError(f"{name} must be {need}, received {name}={value!r}")
    return value


def check_fraction(name: str, value):
    """For momenta and decay rates: a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], received {name}={value!r}")
    return float(value)


def check_int(name: str, value, minimum: int = 1, maximum=None):
    """A Python/NumPy integer in ``[minimum, maximum]`` (no upper bound when None)."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}, received {name}={value!r}")
    return int(value)


def check_groups(groups: int, channels: int, axis) -> None:
    """A ValueError, with the nearest valid choices, when ``groups`` does not divide ``channels``.

    Example:
      >>> try:
      ...     check_groups(5, 64, -1)
      ... except ValueError as err:
      ...     print(err)
      groups=5 must divide the 64 channels on axis -1; try groups=2, groups=4, groups=8, groups=16
    """
    if channels % groups:
        valid = [d for d in ops.divisors(channels) if d > 1] or [1]
        near = sorted(sorted(valid, key=lambda d: (abs(d - groups), d))[:4])
        raise ValueError(
            f"groups={groups} must divide the {channels} channels on axis {axis}; "
            f"try {', '.join(f'groups={d}' for d in near)}"
        )


def check_axis(axis):
    """For layers over one or more feature axes: an int or a list of ints (checked at build)."""
    ops.as_axis_tuple(axis)
    return axis


def check_single_axis(layer_name: str, axis):
    """For layers with one channel axis: an int (a list is a ValueError)."""
    if isinstance(axis, (list, tuple)):
        raise ValueError(f"{layer_name} takes a single channel axis, received axis={axis!r}")
    ops.as_axis_tuple(axis)
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


class AffineMixin:
    """The learned ``gamma`` (scale) and ``beta`` (offset) of a layer, from arguments to config.

    ``self._init_affine(locals())`` in the constructor picks the affine
    arguments out of the constructor's own: the flags ``center``/``scale``
    when the layer has them, and ``{gamma,beta}_{initializer,regularizer,
    constraint}`` (a parameter is the layer's when its ``_initializer`` argument
    is). ``_build_affine(shape)`` creates the float32 weights, ``gamma`` first
    (None for a parameter switched off); ``_affine_config()`` returns the
    matching config entries.
    """

    def _init_affine(self, arguments):
        self._affine_params = tuple(p for p in ("gamma", "beta") if f"{p}_initializer" in arguments)
        if "center" in arguments:
            self.center = check_bool("center", arguments["center"])
        if "scale" in arguments:
            self.scale = check_bool("scale", arguments["scale"])
        for p in self._affine_params:
            set_weight_arguments(
                self,
                p,
                arguments[f"{p}_initializer"],
                arguments.get(f"{p}_regularizer"),
                arguments.get(f"{p}_constraint"),
            )

    def _affine_on(self, param) -> bool:
        if param not in self._affine_params:
            return False
        switch = "scale" if param == "gamma" else "center"
        return getattr(self, switch, True)

    def _build_affine(self, shape):
        for p in ("gamma", "beta"):
            weight = None
            if self._affine_on(p):
                weight = self._param(
                    p,
                    shape,
                    getattr(self, f"{p}_initializer"),
                    getattr(self, f"{p}_regularizer"),
                    getattr(self, f"{p}_constraint"),
                )
            setattr(self, p, weight)

    def _affine_config(self):
        config = {k: getattr(self, k) for k in ("center", "scale") if hasattr(self, k)}
        config.update(weight_arguments_config(self, *self._affine_params))
        return config


def _keras_object(module, kind, name, value):
    try:
        return module.get(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}={value!r} is not a valid {kind}: {err}") from None


def initializer(name: str, value):
    """``keras.initializers.get(value)``; a ValueError naming the argument ``name`` if it fails."""
    return _keras_object(keras.initializers, "initializer", name, value)


def regularizer(name: str, value):
    """``keras.regularizers.get(value)``, naming ``name`` when it fails."""
    return _keras_object(keras.regularizers, "regularizer", name, value)


def constraint(name: str, value):
    """``keras.constraints.get(value)``, naming ``name`` when it fails."""
    return _keras_object(keras.constraints, "constraint", name, value)


_WEIGHT_ARGUMENTS = (
    ("initializer", initializer),
    ("regularizer", regularizer),
    ("constraint", constraint),
)


def set_weight_arguments(
    layer, weight: str, initializer_value, regularizer_value=None, constraint_value=None
) -> None:
    """Sets ``layer.<weight>_initializer``, ``_regularizer`` and ``_constraint``, each checked."""
    values = (initializer_value, regularizer_value, constraint_value)
    for (kind, get), value in zip(_WEIGHT_ARGUMENTS, values):
        setattr(layer, f"{weight}_{kind}", get(f"{weight}_{kind}", value))


def weight_arguments_config(layer, *weights: str) -> dict:
    """The config entries :func:`set_weight_arguments` set, for each of ``weights``."""
    return {
        f"{w}_{kind}": serialize(getattr(layer, f"{w}_{kind}"))
        for w in weights
        for kind, _ in _WEIGHT_ARGUMENTS
    }


def _shape_of(x):
    """The shape of a tensor, KerasTensor, array or nested list as a tuple, or None."""
    shape = getattr(x, "shape", None)
    if shape is None:
        if not isinstance(x, (list, tuple)):
            return None
        shape = np.shape(x)
    try:
        return tuple(shape)
    except (TypeError, ValueError):  # a tf.TensorShape of unknown rank
        return None


class CheckedCall:
    """A ``__call__`` that checks each input before Keras runs the layer.

    Every call, eager or traced, checks that the input is floating point and,
    once the layer is built, that its rank is the rank the layer was built for
    (a layer resolves its axes for that rank; on another rank they would name
    other axes). Built is recorded by :meth:`NormalizationLayer._check_rank`
    (every ``build`` goes through it) or by ``_record_built_shape``.
    """

    #: False for a layer whose arithmetic holds at any rank (a Dense-like layer).
    fixed_rank = True

    def __call__(self, *args, **kwargs):
        inputs = args[0] if args else kwargs.get("inputs")
        check_float_input(type(self).__name__, inputs)
        built = getattr(self, "_built_input_shape", None)
        if built is not None and self.fixed_rank:
            shape = _shape_of(inputs)
            if shape is not None and len(shape) != len(built):
                axis = getattr(self, "axis", None)
                axis_note = f" with axis={axis!r}" if axis is not None else ""
                raise ValueError(
                    f"{type(self).__name__} {self.name!r} was built for inputs of rank "
                    f"{len(built)} (shape {built}){axis_note}, received an input of shape "
                    f"{shape} (rank {len(shape)}). Its axes were resolved for rank "
                    f"{len(built)}; use a new layer for inputs of another rank"
                )
        return super().__call__(*args, **kwargs)

    def _record_built_shape(self, input_shape):
        self._built_input_shape = tuple(input_shape)

    @property
    def _built_rank(self) -> int:
        return len(self._built_input_shape)


_HALF = (tf.float16, tf.bfloat16)


def _statistics_input(layer, x):
    """``x`` in the dtype the layer computes on: Keras' rule (the compute dtype), except that
    under a half-precision policy a float32 input stays float32 (a float64 one becomes
    float32), so no input is rounded to half precision before its statistics."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not tf.as_dtype(dtype).is_floating:
        return x
    dtype, compute = tf.as_dtype(dtype), tf.as_dtype(layer.compute_dtype)
    if dtype == compute:
        return x
    if compute in _HALF and dtype not in _HALF:
        return x if dtype == tf.float32 else tf.cast(x, tf.float32)
    return tf.cast(x, compute)


def _in_statistics_precision(call):
    """Wraps a layer's ``call``: the input as :func:`_statistics_input` gives it, the outputs
    in the compute dtype (the policy's, as for any Keras layer)."""

    def wrapped(self, inputs, *args, **kwargs):
        outputs = call(self, _statistics_input(self, inputs), *args, **kwargs)
        compute = tf.as_dtype(self.compute_dtype)
        return tf.nest.map_structure(
            lambda t: (
                tf.cast(t, compute)
                if getattr(t, "dtype", compute) != compute and tf.as_dtype(t.dtype).is_floating
                else t
            ),
            outputs,
        )

    wrapped.__wrapped__ = call  # Keras reads the call signature through it
    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        setattr(wrapped, attr, getattr(call, attr, None))
    wrapped._tfnorm_statistics_precision = True
    return wrapped


class NormalizationLayer(CheckedCall, keras.layers.Layer):
    """Base class of tfnorm's shape-preserving normalization layers.

    Adds to ``keras.layers.Layer``: the input checks of :class:`CheckedCall`,
    a ``from_config`` that rejects unknown keys with a clear message, identity
    ``compute_output_shape``, mask pass-through, and helpers for validated axes
    and float32 parameters. A subclass's ``build`` resolves its axes with
    :meth:`_resolve_axes` (or checks the rank with :meth:`_check_rank`), which
    records the built shape.
    """

    #: Smallest input rank the layer accepts (batch axis included).
    min_rank = 2

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("call")
        if call is not None and not getattr(call, "_tfnorm_statistics_precision", False):
            cls.call = _in_statistics_precision(call)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        # Inputs are cast by the layer itself (see _statistics_input), not by Keras: a float32
        # input under mixed_float16 is not rounded to float16 before its statistics.
        self.autocast = False

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
        self._record_built_shape(input_shape)
        return rank

    def _resolve_axes(self, axis, input_shape, argname="axis") -> Tuple[int, ...]:
        """Validated non-negative feature axes whose sizes are known."""
        rank = self._check_rank(input_shape)
        axes = ops.resolve_axes(axis, rank, argname)
        for a in axes:
            if input_shape[a] is None:
                raise ValueError(
                    f"{type(self).__name__}: {argname}={axis!r} points at axis {a} of input "
                    f"shape {tuple(input_shape)}, whose size is unknown; the size of the "
                    "normalized/channel axis must be known when the layer is built"
                )
        return axes

    def _param(
        self,
        name,
        shape,
        initializer,
        regularizer=None,
        constraint=None,
        trainable=True,
        aggregation="none",
    ):
        """A float32 weight (float64 in a float64 layer) whatever the dtype policy, never
        autocast: it takes part in statistics, which are float32 under half precision."""
        return self.add_weight(
            name=name,
            shape=tuple(shape),
            dtype=ops.stats_dtype(self.variable_dtype),
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
