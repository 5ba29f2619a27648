"""Short names for layers: ``tfnorm.get("group", groups=8)``.

The study runner and the swap helper build their layers through here.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Callable, Dict, List

import keras

from tfnorm import layers

# name -> layer class. Class names are accepted as aliases automatically.
_REGISTRY: Dict[str, type] = {
    "batch": layers.BatchNormalization,
    "layer": layers.LayerNormalization,
    "rms": layers.RMSNormalization,
    "group": layers.GroupNormalization,
    "instance": layers.InstanceNormalization,
    "online": layers.OnlineNormalization,
    "adanorm": layers.AdaNorm,
    "detach": layers.DetachNormalization,
    "frn": layers.FilterResponseNormalization,
    "evonorm_b0": layers.EvoNormB0,
    "evonorm_s0": layers.EvoNormS0,
    "switchable": layers.SwitchableNormalization,
    "lrn": layers.LocalResponseNormalization,
    "pixel": layers.PixelNormalization,
    "scale": layers.ScaleNormalization,
    "dyt": layers.DynamicTanh,
}


def register_name(name: str, cls: type) -> None:
    """Adds ``name`` for ``cls`` (a keras Layer subclass)."""
    if not (inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)):
        raise TypeError(f"register_name needs a keras Layer subclass, received cls={cls!r}")
    _REGISTRY[name] = cls


def available() -> List[str]:
    """The short names :func:`get` understands, sorted.

    Example:
      >>> "group" in available()
      True
    """
    return sorted(_REGISTRY)


def _lookup(name: str):
    key = name.strip()
    if key in _REGISTRY:
        return _REGISTRY[key]
    lowered = key.lower().replace("-", "_")
    if lowered in _REGISTRY:
        return _REGISTRY[lowered]
    for cls in _REGISTRY.values():
        if cls.__name__ == key or cls.__name__.lower() == key.lower():
            return cls
    return None


def resolve(name: str) -> type:
    """The class registered under ``name`` (short name or class name)."""
    cls = _lookup(name)
    if cls is None:
        names = available() + sorted({c.__name__ for c in _REGISTRY.values()})
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown normalization name={name!r}.{hint} Available: {', '.join(available())}"
        )
    return cls


def get(name, /, **kwargs) -> keras.layers.Layer:
    """Builds a configured normalization layer.

    Args:
      name: a short name (see :func:`available`), a class name, a layer class,
        or a callable returning a layer.
      **kwargs: constructor arguments (the layer's ``name`` included).

    Example:
      >>> import tfnorm
      >>> layer = tfnorm.get("group", groups=8)
      >>> type(layer).__name__, layer.groups
      ('GroupNormalization', 8)
    """
    if isinstance(name, str):
        return resolve(name)(**kwargs)
    if inspect.isclass(name):
        if not issubclass(name, keras.layers.Layer):
            raise TypeError(f"get needs a keras Layer subclass, received name={name!r}")
        return name(**kwargs)
    if callable(name):
        layer = name(**kwargs)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"the callable name={name!r} returned {type(layer).__name__}, not a keras Layer")
        return layer
    raise TypeError(f"name must be a string, a Layer class or a callable, received name={name!r}")


Factory = Callable[..., keras.layers.Layer]
