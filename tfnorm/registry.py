"""Short names for layers: ``tfnorm.get("group", groups=8)``.

Every class decorated with :func:`tfnorm.register` (tfnorm's own, and any a
user registers) is found here under its short name and, as an alias, under its
class name (case-insensitive, ``-`` for ``_``). The study runner and the swap
helper build their layers through here and read a class's
:class:`~tfnorm.layers.registration.Traits` with :func:`traits`.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Callable, Dict, List, Optional

import keras

from tfnorm import layers  # noqa: F401  (importing the layers registers them)
from tfnorm.layers import registration
from tfnorm.layers.registration import Traits, register

__all__ = [
    "Traits",
    "available",
    "classes",
    "get",
    "lookup",
    "register",
    "register_name",
    "resolve",
    "traits",
    "unregister",
]

# short name -> class: the store @register fills (one dict, shared with it).
_REGISTRY: Dict[str, type] = registration._CLASSES


def register_name(name: str, cls: type) -> None:
    """Adds the short ``name`` for an existing keras Layer class (a normalization).

    Unlike :func:`tfnorm.register`, the class is not (re-)registered for Keras
    serialization: this names a class that already serializes, such as a Keras
    built-in. Remove the name with :func:`unregister`.

    Example:
      >>> import keras
      >>> register_name("keras_layer", keras.layers.LayerNormalization)
      >>> type(get("keras_layer")).__name__
      'LayerNormalization'
      >>> unregister("keras_layer")
    """
    if not (inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)):
        raise TypeError(f"register_name needs a keras Layer subclass, received cls={cls!r}")
    _REGISTRY[name] = cls


def unregister(name: str) -> None:
    """Removes the short ``name`` (the class stays registered for serialization)."""
    cls = _REGISTRY.pop(name, None)
    if (
        cls is not None
        and registration._TRAITS.get(cls, None) is not None
        and registration._TRAITS[cls].name == name
    ):
        del registration._TRAITS[cls]


def traits(cls) -> Optional[Traits]:
    """The :class:`Traits` of a layer class or instance.

    A class named with :func:`register_name` has the traits of a plain
    normalization; one that is not registered at all has None.

    Example:
      >>> traits(layers.EvoNormS0).groups, traits(layers.OnlineNormalization).batch_statistics
      (True, False)
    """
    found = registration.traits(cls)
    if found is not None:
        return found
    cls = cls if inspect.isclass(cls) else type(cls)
    for name, registered in _REGISTRY.items():
        if registered is cls:
            return Traits(name)
    return None


def available(kind: Optional[str] = "normalization") -> List[str]:
    """The short names :func:`get` understands, sorted.

    Args:
      kind: only the names of this kind (see
        :data:`tfnorm.layers.registration.KINDS`); None for every name.

    Example:
      >>> "group" in available(), "cosine_dense" in available(), "cosine_dense" in available(None)
      (True, False, True)
    """
    if kind is not None and kind not in registration.KINDS:
        raise ValueError(
            f"kind must be one of {list(registration.KINDS)} or None, received kind={kind!r}"
        )
    return sorted(
        name for name, cls in _REGISTRY.items() if kind is None or _kind(name, cls) == kind
    )


def _kind(name, cls) -> str:
    found = registration.traits(cls)
    return found.kind if found is not None and found.name == name else "normalization"


def classes(kind: Optional[str] = "normalization") -> tuple:
    """The distinct classes behind :func:`available`, in name order."""
    out = []
    for name in available(kind):
        if _REGISTRY[name] not in out:
            out.append(_REGISTRY[name])
    return tuple(out)


def lookup(name: str) -> Optional[type]:
    """The class under a short name or class name (case-insensitive), or None."""
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
    """The class registered under ``name`` (short name or class name); a ValueError otherwise."""
    cls = lookup(name)
    if cls is None:
        names = available(None) + sorted({c.__name__ for c in _REGISTRY.values()})
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
                f"the callable name={name!r} returned {type(layer).__name__}, not a keras Layer"
            )
        return layer
    raise TypeError(f"name must be a string, a Layer class or a callable, received name={name!r}")


Factory = Callable[..., keras.layers.Layer]
