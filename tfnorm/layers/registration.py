"""One registration point: ``@register("group", groups=True)`` on a layer class.

The decorator does everything a layer needs to be found:

* Keras serialization: the class is registered with
  ``keras.saving.register_keras_serializable`` under the package ``"tfnorm"``
  (tfnorm's own classes) or ``package`` (default ``"Custom"``, Keras' own
  default, for a user's class). The package name is written into every saved
  model; tfnorm's never changes.
* The short name: ``tfnorm.get(name)``, the swap helper's default matching
  and the study's ``--norms`` find the class under it (:mod:`tfnorm.registry`).
* Its :class:`Traits`: what callers need to know about the class without
  reading its signature (whether it takes ``groups``, normalizes with batch
  statistics, can synchronize them across replicas).

Users put their own layers into ``tfnorm.get``, swap and the study the same
way, with ``tfnorm.register``.

Example:
  >>> import keras, tfnorm
  >>> @tfnorm.register("halve_doc", package="my_project")
  ... class Halve(keras.layers.Layer):
  ...     def call(self, x):
  ...         return x / 2
  >>> type(tfnorm.get("halve_doc")).__name__, tfnorm.traits(Halve).kind
  ('Halve', 'normalization')
  >>> keras.saving.get_registered_name(Halve)
  'my_project>Halve'
  >>> tfnorm.registry.unregister("halve_doc")
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Dict, Optional

import keras

__all__ = ["KINDS", "PACKAGE", "Traits", "register", "traits"]

PACKAGE = "tfnorm"

#: What a registered class is. Only ``"normalization"`` classes are matched by
#: the swap helper's default and offered to the study; the others are found by
#: ``tfnorm.get`` alone.
KINDS = (
    "normalization",  # shape-preserving normalization of activations (BN, LN, GN, ...)
    "activation",  # goes with a normalization but normalizes nothing (TLU)
    "layer",  # a layer with weights of its own that normalizes inside (cosine, WS conv)
    "wrapper",  # wraps another layer and normalizes its kernel (weight, spectral norm)
)

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclasses.dataclass(frozen=True)
class Traits:
    """What callers need to know about a registered layer class.

    Attributes:
      name: the short name (``tfnorm.get(name)``).
      kind: one of :data:`KINDS`.
      groups: the constructor takes ``groups`` (channel groups that must divide
        the channel count).
      batch_statistics: in training the layer normalizes with statistics of the
        batch (moving averages or similar at inference); its output for one
        sample depends on the other samples of the batch.
      synchronized: the constructor takes ``synchronized``, which makes the
        batch statistics span every replica under ``tf.distribute``.
    """

    name: str
    kind: str = "normalization"
    groups: bool = False
    batch_statistics: bool = False
    synchronized: bool = False


# short name -> class, and class -> traits: filled by @register only.
_CLASSES: Dict[str, type] = {}
_TRAITS: Dict[type, Traits] = {}


def _flag(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"register: {name} must be True or False, received {name}={value!r}")
    return value


def register(
    name: str,
    *,
    kind: str = "normalization",
    groups: bool = False,
    batch_statistics: bool = False,
    synchronized: bool = False,
    package: Optional[str] = None,
):
    """Class decorator: registers a Keras layer class under the short ``name``.

    Args:
      name: lower-case short name (letters, digits, ``_``), unique.
      kind: one of ``"normalization"`` (default), ``"activation"``,
        ``"layer"``, ``"wrapper"``.
      groups, batch_statistics, synchronized: the class's :class:`Traits`.
      package: the Keras serialization package; default ``"tfnorm"`` for
        tfnorm's classes and ``"Custom"`` for others.

    Returns:
      The decorator, which returns the class unchanged.

    Raises:
      ValueError: a malformed name, an unknown kind, or a name already taken
        by another class.
      TypeError: the decorated object is not a ``keras.layers.Layer`` subclass.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"register: name must be a lower-case identifier such as 'my_norm', "
            f"received name={name!r}"
        )
    if kind not in KINDS:
        raise ValueError(f"register: kind must be one of {list(KINDS)}, received kind={kind!r}")
    traits_ = Traits(
        name,
        kind,
        _flag("groups", groups),
        _flag("batch_statistics", batch_statistics),
        _flag("synchronized", synchronized),
    )

    def decorate(cls):
        if not (inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)):
            raise TypeError(
                f"register({name!r}) decorates a keras Layer subclass, received {cls!r}"
            )
        taken = _CLASSES.get(name)
        if taken is not None and _qualname(taken) != _qualname(cls):
            raise ValueError(
                f"register: name={name!r} is taken by {_qualname(taken)}; choose another "
                f"name for {_qualname(cls)}"
            )
        own = cls.__module__.split(".")[0] == PACKAGE
        keras.saving.register_keras_serializable(package=package or (PACKAGE if own else "Custom"))(
            cls
        )
        _CLASSES[name] = cls
        _TRAITS[cls] = traits_
        return cls

    return decorate


def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def traits(cls) -> Optional[Traits]:
    """The :class:`Traits` of a layer class or instance (from its nearest registered base).

    None for a class that is neither registered nor derived from a registered one.

    Example:
      >>> import tfnorm
      >>> t = tfnorm.traits(tfnorm.GroupNormalization)
      >>> t.name, t.groups, t.batch_statistics
      ('group', True, False)
      >>> tfnorm.traits(tfnorm.BatchNormalization()).synchronized
      True
    """
    if not inspect.isclass(cls):
        cls = type(cls)
    for base in cls.__mro__:
        if base in _TRAITS:
            return _TRAITS[base]
    return None
