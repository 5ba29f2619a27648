"""What :func:`~tfnorm.swap_normalization` puts in place of a matched layer: ``to=``.

:func:`make_factory` turns ``to`` and ``to_kwargs`` into a factory
``old_layer -> new_layer`` (or ``-> None``: remove the layer), checking the
arguments once, before the graph is walked, so that a bad argument is named
as such rather than failing in the middle of a rewrite. Layers are made by
:func:`tfnorm.registry.get` from the class :func:`tfnorm.registry.resolve`
finds for a name; the class is kept (not only the name) because what a
replacement inherits from the old layer (name, dtype policy, ``trainable``)
depends on the arguments its constructor takes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Callable, Optional

import keras

from tfnorm import registry
from tfnorm.swap.match import is_layer_class

__all__ = ["make_factory"]

Factory = Callable[[keras.layers.Layer], Optional[keras.layers.Layer]]


def _describe(to) -> str:
    return getattr(to, "__qualname__", None) or repr(to)


def _check_to_kwargs(to_kwargs) -> None:
    if to_kwargs is None:
        return
    if not isinstance(to_kwargs, Mapping):
        raise TypeError(
            f"to_kwargs must be a dict of constructor arguments, received to_kwargs={to_kwargs!r}"
        )
    bad = [k for k in to_kwargs if not isinstance(k, str)]
    if bad:
        raise TypeError(f"to_kwargs keys must be argument names, received keys {bad!r}")


def _from_callable(to) -> Factory:
    def from_callable(old):
        new = to(old)
        if new is None:
            raise TypeError(
                f"to={_describe(to)} returned None for layer {old.name!r}; return a new "
                "layer. To remove layers pass to=None (and match=... to choose which)"
            )
        if not isinstance(new, keras.layers.Layer):
            raise TypeError(
                f"to={_describe(to)} returned {type(new).__name__} for layer "
                f"{old.name!r}; it must return a keras Layer"
            )
        return new

    return from_callable


def _from_class(cls: type, kwargs: dict) -> Factory:
    if "name" in kwargs:
        raise ValueError(
            f"to_kwargs={kwargs!r} sets 'name', but each replacement takes the name of the "
            "layer it replaces (names must stay unique); use a callable to= to choose names"
        )
    try:  # fail now, with the argument's name, rather than in the middle of the graph
        registry.get(cls, **kwargs)
    except (TypeError, ValueError) as err:
        raise (ValueError if isinstance(err, ValueError) else TypeError)(
            f"to_kwargs={kwargs!r} are not valid arguments for {cls.__name__}: {err}"
        ) from None
    params = inspect.signature(cls.__init__).parameters
    accepts = set(params)
    open_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())

    def from_class(old):
        kw = dict(kwargs)
        inherited = {"name": old.name, "dtype": old.dtype_policy.name, "trainable": old.trainable}
        for key, value in inherited.items():
            if key not in kw and (open_kwargs or key in accepts):
                kw[key] = value
        return registry.get(cls, **kw)

    return from_class


def make_factory(to, to_kwargs) -> Factory:
    """The factory ``old_layer -> new_layer`` (None: remove the layer) that ``to`` describes.

    Example:
      >>> import keras
      >>> factory = make_factory("group", {"groups": 2})
      >>> new = factory(keras.layers.BatchNormalization(name="bn"))
      >>> type(new).__name__, new.name, new.groups
      ('GroupNormalization', 'bn', 2)
      >>> make_factory(None, None)(keras.layers.BatchNormalization()) is None
      True
    """
    _check_to_kwargs(to_kwargs)
    if to is None:
        if to_kwargs:
            raise TypeError(
                f"to=None removes the matched layers and takes no to_kwargs; "
                f"received to_kwargs={dict(to_kwargs)!r}"
            )
        return lambda old: None
    kwargs = dict(to_kwargs or {})
    if isinstance(to, str):
        try:
            cls = registry.resolve(to)
        except ValueError as err:
            raise ValueError(f"to={to!r} is not a known normalization: {err}") from None
    elif isinstance(to, functools.partial) and is_layer_class(to.func):
        if to.args:
            raise TypeError(
                f"to={to!r}: a partial of a layer class may only fix keyword "
                "arguments (positional ones would be ambiguous)"
            )
        cls = to.func
        kwargs = {**to.keywords, **kwargs}
    elif inspect.isclass(to):
        if not is_layer_class(to):
            raise TypeError(
                f"to must be a keras Layer class, a registry name, a callable "
                f"old_layer -> new_layer or None; received the class to={to!r}"
            )
        cls = to
    elif callable(to):
        if to_kwargs is not None:
            raise TypeError(
                f"to_kwargs goes with a registry name or a layer class; the callable "
                f"to={_describe(to)} builds its own layers, so put those arguments inside it"
            )
        return _from_callable(to)
    else:
        raise TypeError(
            "to must be a registry name (one of "
            f"{registry.available()}), a keras Layer class, a callable old_layer -> new_layer, "
            f"or None to remove the matched layers; received to={to!r}"
        )
    return _from_class(cls, kwargs)
