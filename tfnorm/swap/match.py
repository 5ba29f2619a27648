"""Which layers :func:`~tfnorm.swap_normalization` replaces: ``match=``.

A matcher is a predicate ``layer -> bool``. :func:`default_match` is the one
used for ``match=None``; :func:`make_matcher` turns every other form of the
argument (a class, a registry name, a tuple of both, a predicate) into one.
Registry names are resolved by :func:`tfnorm.registry.resolve`; a name also
matches the Keras built-in of the same class name (``"batch"`` matches
``keras.layers.BatchNormalization`` too), so a model straight from
``keras.applications`` is matched by the name of the layer it holds.
"""

from __future__ import annotations

import inspect
from typing import Callable, List, Tuple

import keras

from tfnorm import registry

__all__ = ["default_match", "make_matcher"]


def _keras_builtin_normalizations() -> Tuple[type, ...]:
    names = (
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "RMSNormalization",
    )
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


#: The Keras built-in normalization layers :func:`default_match` selects.
KERAS_NORMALIZATIONS = _keras_builtin_normalizations()


def _wraps_a_layer(layer) -> bool:
    return isinstance(layer, keras.layers.Wrapper) or isinstance(
        getattr(layer, "layer", None), keras.layers.Layer
    )


def _registered_classes() -> Tuple[type, ...]:
    return tuple({registry.resolve(name) for name in registry.available()})


def is_layer_class(obj) -> bool:
    """Whether ``obj`` is a keras Layer subclass."""
    return inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)


def default_match(layer) -> bool:
    """The layers :func:`swap_normalization` replaces when ``match=None``.

    True for the Keras built-ins ``BatchNormalization``, ``LayerNormalization``,
    ``GroupNormalization``, ``UnitNormalization`` and ``RMSNormalization``, and
    for every tfnorm normalization layer: every instance of a class registered
    in :mod:`tfnorm.registry` (see :func:`tfnorm.available`), subclasses
    included, so a family registered later is matched too. Helpers that share
    the :class:`tfnorm.NormalizationLayer` base without being normalizations
    (the ``TLU`` activation that goes with FRN) are not registered and not
    matched; pass ``match=tfnorm.NormalizationLayer`` to match every subclass.

    False for models, for layers that wrap another layer (Keras
    ``SpectralNormalization`` and other weight-normalization wrappers: they
    normalize a kernel, and replacing them would drop the wrapped layer), and
    for ``keras.layers.Normalization`` (input standardization with fixed,
    adapted statistics, a preprocessing step).

    Example:
      >>> import keras, tfnorm
      >>> default_match(keras.layers.BatchNormalization()), default_match(keras.layers.Dense(2))
      (True, False)
    """
    if isinstance(layer, keras.Model) or _wraps_a_layer(layer):
        return False
    return isinstance(layer, KERAS_NORMALIZATIONS + _registered_classes())


def _classes_for_name(name: str, argname: str) -> Tuple[type, ...]:
    """The registered class of ``name``, and its Keras namesake when there is one."""
    try:
        cls = registry.resolve(name)
    except ValueError as err:
        raise ValueError(f"{argname}={name!r} is not a known normalization: {err}") from None
    twin = getattr(keras.layers, cls.__name__, None)
    return (cls, twin) if twin in KERAS_NORMALIZATIONS and twin is not cls else (cls,)


def make_matcher(match) -> Callable[[keras.layers.Layer], bool]:
    """The predicate ``layer -> bool`` that ``match=`` describes.

    Example:
      >>> import keras
      >>> matcher = make_matcher("batch")
      >>> matcher(keras.layers.BatchNormalization()), matcher(keras.layers.LayerNormalization())
      (True, False)
    """
    if match is None:
        return default_match
    if isinstance(match, str):
        classes = _classes_for_name(match, "match")
        return lambda layer: isinstance(layer, classes)
    if inspect.isclass(match):
        if not is_layer_class(match):
            raise TypeError(f"match must name keras Layer classes, received match={match!r}")
        return lambda layer: isinstance(layer, match)
    if isinstance(match, (tuple, list)):
        if not match:
            raise ValueError(
                "match=() matches nothing; pass None to match every "
                "normalization layer, or list the classes or names to replace"
            )
        classes: List[type] = []
        for item in match:
            if isinstance(item, str):
                classes.extend(_classes_for_name(item, "match"))
            elif is_layer_class(item):
                classes.append(item)
            else:
                raise TypeError(
                    f"match={match!r} holds {item!r}; every item must be a keras Layer "
                    "class or a registry name such as 'batch'"
                )
        found = tuple(classes)
        return lambda layer: isinstance(layer, found)
    if callable(match):
        return lambda layer: bool(match(layer))
    raise TypeError(
        "match must be None, a keras Layer class, a tuple of classes, a registry name "
        f"(one of {registry.available()}) or a predicate layer -> bool; received match={match!r}"
    )
