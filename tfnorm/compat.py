"""Models saved with TensorFlow Addons, loaded as tfnorm layers: :func:`tfa_objects`.

TensorFlow Addons wrote its layers into saved models as ``Addons>GroupNormalization``,
``Addons>InstanceNormalization``, ``Addons>WeightNormalization``,
``Addons>FilterResponseNormalization``, ``Addons>TLU`` and
``Addons>SpectralNormalization``. No current library reads those names;
:func:`tfa_objects` is the ``custom_objects`` mapping that reads a Keras 2 HDF5
(``.h5``) model holding them into Keras 3 as the tfnorm layers of the same
names, with TF-Addons' config keys translated and its weights moved into
tfnorm's layout::

    model = keras.saving.load_model("model.h5", custom_objects=tfnorm.compat.tfa_objects())

Once loaded, every such layer is a plain tfnorm layer (``type(layer)`` is
``tfnorm.GroupNormalization`` and so on): it trains, saves as ``.keras`` and
exports like any other. What each translation does, and the few behaviours
that differ from TF-Addons from then on, are listed in the README
("Coming from TF-Addons").

The mapping's classes are only for reading ``.h5`` files with
``keras.saving.load_model`` (whose reader hands every layer its saved weights
in TF-Addons' order and then calls ``finalize_state``, where the layer turns
into its tfnorm class); building a model from a TF-Addons config alone, without
the weights, is not supported.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import keras
import numpy as np

from tfnorm.layers import kernels
from tfnorm.layers.base import BASE_LAYER_KEYS
from tfnorm.layers.frn import TLU, FilterResponseNormalization
from tfnorm.layers.group import GroupNormalization, InstanceNormalization
from tfnorm.layers.spectral import SpectralNormalization
from tfnorm.layers.weight import WeightNormalization

__all__ = ["tfa_objects"]

_AFFINE_KEYS = (
    "center",
    "scale",
    "beta_initializer",
    "gamma_initializer",
    "beta_regularizer",
    "gamma_regularizer",
    "beta_constraint",
    "gamma_constraint",
)


class _Slot:
    """One weight of TF-Addons' layout while Keras' HDF5 reader fills it."""

    def __init__(self, name: str, shape, trainable: bool = True):
        self.name = self.path = name
        self.shape = tuple(int(n) for n in shape)
        self.trainable = trainable
        self.value = None

    def assign(self, value):
        self.value = np.asarray(value)


def _split(config: dict, keys, cls_name: str) -> Tuple[dict, dict]:
    """``(the layer's keys, base-layer keys)``; any other key is an error naming it."""
    own = {k: v for k, v in config.items() if k in keys}
    base = {k: v for k, v in config.items() if k in BASE_LAYER_KEYS}
    unknown = sorted(set(config) - set(own) - set(base))
    if unknown:
        raise ValueError(
            f"tfa_objects: the saved config of Addons>{cls_name} has key(s) "
            f"{unknown} that tfnorm does not know how to translate"
        )
    return own, base


class _FromTFA:
    """Mixin of the loading classes: TF-Addons' config in, TF-Addons' weight list shown to
    the HDF5 reader, then (``finalize_state``) the weights moved into tfnorm's layout and the
    instance turned into the tfnorm class it derives from."""

    _tfa_name = ""

    @classmethod
    def _tfnorm_class(cls):
        return next(c for c in cls.__mro__[1:] if not issubclass(c, _FromTFA))

    @classmethod
    def _translate(cls, config: dict) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**cls._translate(dict(config)))

    def _tfa_layout(self, input_shape) -> List[_Slot]:
        raise NotImplementedError

    def _tfa_assign(self, values: Dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def build(self, input_shape):
        super().build(input_shape)
        object.__setattr__(self, "_tfa_slots", tuple(self._tfa_layout(input_shape)))

    @property
    def trainable_weights(self):
        slots = self.__dict__.get("_tfa_slots")
        return super().trainable_weights if slots is None else [s for s in slots if s.trainable]

    @property
    def non_trainable_weights(self):
        slots = self.__dict__.get("_tfa_slots")
        if slots is None:
            return super().non_trainable_weights
        return [s for s in slots if not s.trainable]

    def finalize_state(self):
        slots = self.__dict__.get("_tfa_slots")
        if slots is None:
            return
        missing = [s.name for s in slots if s.value is None]
        if missing:
            raise ValueError(f"tfa_objects: no saved value for {missing} of {self.name!r}")
        self._tfa_assign({s.name: s.value for s in slots})
        object.__delattr__(self, "_tfa_slots")
        self.__class__ = self._tfnorm_class()


def _assign(variable, value) -> None:
    variable.assign(np.reshape(value, variable.shape).astype(variable.dtype))


def _affine_slots(layer, shape) -> List[_Slot]:
    return ([_Slot("gamma", shape)] if layer.gamma is not None else []) + (
        [_Slot("beta", shape)] if layer.beta is not None else []
    )


def _assign_affine(layer, values) -> None:
    for name in ("gamma", "beta"):
        if name in values:
            _assign(getattr(layer, name), values[name])


class _AffineFromTFA(_FromTFA):
    """TF-Addons' group and instance normalization: ``gamma``, ``beta`` of shape (C,)."""

    def _tfa_layout(self, input_shape):
        return _affine_slots(self, (input_shape[self.axis % len(input_shape)],))

    def _tfa_assign(self, values):
        _assign_affine(self, values)


class _TFAGroupNormalization(_AffineFromTFA, GroupNormalization):
    _tfa_name = "GroupNormalization"

    @classmethod
    def _translate(cls, config):
        own, base = _split(config, ("groups", "axis", "epsilon") + _AFFINE_KEYS, cls._tfa_name)
        return {**own, **base}


class _TFAInstanceNormalization(_AffineFromTFA, InstanceNormalization):
    _tfa_name = "InstanceNormalization"

    @classmethod
    def _translate(cls, config):
        own, base = _split(config, ("groups", "axis", "epsilon") + _AFFINE_KEYS, cls._tfa_name)
        own.pop("groups", None)  # always -1 (one group per channel)
        return {**own, **base}


class _TFAFilterResponseNormalization(_FromTFA, FilterResponseNormalization):
    _tfa_name = "FilterResponseNormalization"

    @classmethod
    def _translate(cls, config):
        own, base = _split(
            config,
            ("axis", "epsilon", "learned_epsilon", "learned_epsilon_constraint") + _AFFINE_KEYS,
            cls._tfa_name,
        )
        axis = own.pop("axis", [1, 2])
        if list(axis) != [1, 2]:  # TF-Addons itself refused anything else
            raise ValueError(
                f"tfa_objects: Addons>FilterResponseNormalization with axis={axis!r}"
                " (TF-Addons normalizes over axes [1, 2] of NHWC inputs)"
            )
        if own.pop("learned_epsilon_constraint", None) is not None:
            raise ValueError(
                "tfa_objects: Addons>FilterResponseNormalization has a "
                "learned_epsilon_constraint; tfnorm's learned epsilon has none"
            )
        return {"axis": -1, **own, **base}

    def _tfa_layout(self, input_shape):
        c = input_shape[-1]
        eps = [_Slot("learned_epsilon", (1,))] if self.learned_epsilon else []
        return eps + [_Slot("gamma", (1, 1, 1, c)), _Slot("beta", (1, 1, 1, c))]

    def _tfa_assign(self, values):
        _assign_affine(self, values)
        if "learned_epsilon" in values:
            _assign(self.learned_eps, values["learned_epsilon"])


class _TFATLU(_FromTFA, TLU):
    _tfa_name = "TLU"

    @classmethod
    def _translate(cls, config):
        keys = ("affine",) + tuple(
            f"{p}_{k}"
            for p in ("tau", "alpha")
            for k in ("initializer", "regularizer", "constraint")
        )
        own, base = _split(config, keys, cls._tfa_name)
        return {**own, **base}

    def build(self, input_shape):
        self.axis = list(range(1, len(input_shape)))  # TF-Addons: one tau per position
        super().build(input_shape)

    def _tfa_layout(self, input_shape):
        shape = tuple(input_shape[1:])
        return [_Slot("tau", shape)] + ([_Slot("alpha", shape)] if self.affine else [])

    def _tfa_assign(self, values):
        _assign(self.tau, values["tau"])
        if self.alpha is not None:
            _assign(self.alpha, values["alpha"])


def _wrapped(config, cls_name, keys):
    """``(the wrapped layer, the wrapper's keys, base-layer keys)``."""
    own, base = _split(config, ("layer",) + keys, cls_name)
    inner = dict(own.pop("layer"))
    # Keras 2 recorded the input shape of a model's first layer inside it; the wrapper is
    # built from its own input, so it is dropped (as Keras drops it from outer layers).
    inner["config"] = {k: v for k, v in inner["config"].items() if k != "batch_input_shape"}
    if cls_name == "WeightNormalization" and inner.get("class_name") in _RECURRENT:
        raise ValueError(
            f"tfa_objects: Addons>WeightNormalization wraps the recurrent layer "
            f"{inner['class_name']} {inner['config'].get('name')!r}; TF-Addons normalized its "
            f"recurrent kernel, tfnorm's WeightNormalization normalizes the input kernel, so "
            f"the saved weights would not give the saved model's outputs"
        )
    return keras.layers.deserialize(inner), own, base


_RECURRENT = ("SimpleRNN", "LSTM", "GRU", "RNN", "Bidirectional")


class _TFAWeightNormalization(_FromTFA, WeightNormalization):
    _tfa_name = "WeightNormalization"

    @classmethod
    def _translate(cls, config):
        layer, own, base = _wrapped(config, cls._tfa_name, ("data_init",))
        return {"layer": layer, **own, **base}

    def _tfa_layout(self, input_shape):
        kernel = self.layer.kernel
        bias = getattr(self.layer, "bias", None)
        slots = [_Slot("g", (self._units,)), _Slot("kernel", kernel.shape)]
        slots += [_Slot("bias", bias.shape)] if bias is not None else []
        slots.append(_Slot("initialized", (), trainable=False))
        if self.data_init:  # TF-Addons kept an unnormalized copy of the layer for its init
            slots.append(_Slot("init_kernel", kernel.shape, trainable=False))
            if bias is not None:
                slots.append(_Slot("init_bias", bias.shape, trainable=False))
        return slots

    def _tfa_assign(self, values):
        _assign(self.g, values["g"])
        _assign(self.layer.kernel, values["kernel"])
        if "bias" in values:  # TF-Addons' data-dependent init wrote the layer's bias itself
            _assign(self.layer.bias, values["bias"])
        if self.initialized is not None:
            _assign(self.initialized, float(bool(values["initialized"])))


def _unit_gain_u(w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A unit ``u`` with ``||W u|| = 1`` (``W`` the kernel as a (rows, units) matrix), on the
    side of the saved ``u``; when no unit vector has gain 1, the right singular vector whose
    gain is the nearest to 1."""
    m = w.reshape(-1, w.shape[-1]).astype(np.float64)
    u = u.reshape(-1).astype(np.float64)
    u = u / max(np.linalg.norm(u), 1e-30)
    _, s, vt = np.linalg.svd(m, full_matrices=True)
    s = np.concatenate([s, np.zeros(vt.shape[0] - s.size)])
    top, low = vt[0] * (1.0 if vt[0] @ u >= 0 else -1.0), vt[-1]
    if s[0] < 1.0:
        return top
    if s[-1] > 1.0:
        return low
    share = 1.0 if s[0] == s[-1] else (1.0 - s[-1] ** 2) / (s[0] ** 2 - s[-1] ** 2)
    return np.sqrt(share) * top + np.sqrt(1.0 - share) * low


class _TFASpectralNormalization(_FromTFA, SpectralNormalization):
    _tfa_name = "SpectralNormalization"

    @classmethod
    def _translate(cls, config):
        layer, own, base = _wrapped(config, cls._tfa_name, ("power_iterations",))
        if kernels.kind(layer) not in ("dense", "conv", "embedding"):
            raise ValueError(
                f"tfa_objects: Addons>SpectralNormalization wraps "
                f"{type(layer).__name__} {layer.name!r}, which TF-Addons "
                f"normalized as a plain kernel; tfnorm cannot reproduce that"
            )
        return {"layer": layer, **own, **base}

    def _tfa_layout(self, input_shape):
        name = self._kernel_names[0]
        bias = getattr(self.layer, "bias", None)
        slots = [_Slot(name, getattr(self._owner, name).shape)]
        slots += [_Slot("bias", bias.shape)] if bias is not None else []
        return slots + [_Slot("sn_u", (1, self._units), trainable=False)]

    def _tfa_assign(self, values):
        name = self._kernel_names[0]
        w = values[name]
        _assign(getattr(self._owner, name), w)
        if "bias" in values:
            _assign(self.layer.bias, values["bias"])
        # TF-Addons divides its kernel variable by sigma at every training call and uses it as
        # stored in inference; tfnorm divides by ||W u|| in inference. u is power-iteration
        # state: choosing one with ||W u|| = 1 keeps the saved model's outputs exactly.
        u = _unit_gain_u(w, values["sn_u"])
        gain = np.linalg.norm(w.reshape(-1, w.shape[-1]).astype(np.float64) @ u)
        if abs(gain - 1.0) > 1e-6:
            warnings.warn(
                f"tfa_objects: {self.name!r}: no u gives the kernel a gain of 1 "
                f"(singular values outside 1); inference outputs are divided by "
                f"{gain:.6g} relative to TF-Addons until the next training call",
                stacklevel=2,
            )
        _assign(self.u, u)


_CLASSES = (
    _TFAGroupNormalization,
    _TFAInstanceNormalization,
    _TFAWeightNormalization,
    _TFAFilterResponseNormalization,
    _TFATLU,
    _TFASpectralNormalization,
)


def tfa_objects() -> Dict[str, type]:
    """The ``custom_objects`` that load a TF-Addons model (Keras 2 ``.h5``) as tfnorm layers.

    Keys are the names TF-Addons wrote (``"Addons>GroupNormalization"``, ...);
    every layer comes out as the tfnorm class of the same name, holding the
    saved weights, with the saved model's inference outputs.

    Example::

        import keras, tfnorm
        model = keras.saving.load_model(
            "tfa_model.h5", custom_objects=tfnorm.compat.tfa_objects())
        type(model.get_layer("group_normalization")).__name__  # 'GroupNormalization'

    Returns:
      A new dict ``{"Addons>ClassName": loader class}`` for the six
      normalization classes of TF-Addons.
    """
    return {"Addons>" + cls._tfa_name: cls for cls in _CLASSES}
