"""The graph rewrite behind :func:`~tfnorm.swap_normalization`.

A :class:`Rewriter` re-creates a built Sequential or functional model layer by
layer, recursing into nested models, and puts the factory's replacement (or
nothing) in place of each matched layer. Every object of the old graph is
converted once (``convert`` caches by identity), so a layer called at several
places, or a nested model used twice, gets one new object used at all of them.
It reads the old model and never writes it; the layers it re-creates and the
replacements it makes are listed for :mod:`tfnorm.swap.weights`, and one
record per matched layer for :mod:`tfnorm.swap.report`.

Functional models are walked by Keras' public ``keras.models.clone_model``:
``clone_function`` converts each operation (layer, nested model or
``keras.ops`` node), and ``call_function`` runs a removed layer as the
identity and a replacement with the call arguments it accepts, naming the
layer when it cannot be built at its place. Measured on Keras 3.15.1,
``clone_model`` cannot do the rest, so:

* it re-compiles the clone of a compiled model from the model's compile
  config, which fails for a loss or metric that is a lambda or a Python
  function not registered as serializable (and builds a new optimizer
  otherwise); the model it is given is therefore a plain, uncompiled
  ``keras.Model(model.input, model.output)`` over the same graph;
* it drops the model's own ``trainable`` flag, so the result is re-made as
  ``keras.Model(inputs, outputs, name=..., trainable=...)`` over the graph the
  clone built;
* its new inputs take the name of the input tensor rather than of its
  ``InputLayer`` and drop ``sparse``, ``ragged`` and ``optional``; the inputs
  are made here (``input_tensors=``);
* ``recursive=True`` does not hand nested Sequential and functional models
  (subclasses of them included) to ``clone_function``, so there is no way to
  refuse a subclass, which it turns into a plain functional model, or to
  know a nested layer's path for the report; and it runs the layers of a
  nested Sequential without ``call_function``. Nested models are rewritten
  here, from ``clone_function``, and ``recursive`` stays False;
* for a Sequential it takes no ``call_function``, its ``clone_function``
  must return a layer (so a layer cannot be removed without leaving an
  ``Identity`` layer in its place), and it builds the new Sequential in one
  go, so a replacement that cannot be built is not traced to its layer. A
  Sequential is rebuilt here with ``keras.Sequential.add``, one layer at a
  time; its ``InputLayer`` comes from :func:`tfnorm._compat.sequential_input_layer`
  (``clone_model`` reads the same private list).

The identities of the old model's layers come from
:func:`tfnorm._compat.flatten_layers` and the classes of plain functional
models from :func:`tfnorm._compat.functional_class`.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Dict, List, Tuple

import keras

from tfnorm import _compat

__all__ = ["Rewriter", "check_model", "hidden_layers"]


def check_model(model, where: str, tool: str = "swap_normalization") -> None:
    """Refuses what cannot be rewritten: non-models, unbuilt Sequentials, subclassed models.

    ``tool`` is the function named in the messages (the caller of the rewrite).
    """
    label = f"the nested model {where!r}" if where else "model"
    if not isinstance(model, keras.Model):
        if isinstance(model, keras.layers.Layer):
            raise TypeError(
                f"model must be a keras.Model (Sequential or functional); received the "
                f"{type(model).__name__} layer {model.name!r}. Wrap it first, e.g. "
                "keras.Sequential([keras.Input(shape), layer])"
            )
        raise TypeError(
            f"model must be a keras.Model (Sequential or functional), received model={model!r}"
        )
    cls = type(model).__name__
    functional = _compat.functional_class()
    if type(model) is keras.Sequential:
        if not model.built or _compat.sequential_input_layer(model) is None:
            raise ValueError(
                f"{label} is an unbuilt Sequential ({model.name!r}): without an input shape "
                "its layers have no weights to copy and no shapes to check. Build it first: "
                "start it with keras.Input(shape=...), or call model.build((None, ...)) or "
                "the model on a batch"
            )
        return
    if type(model) is functional:
        return
    if isinstance(model, (functional, keras.Sequential)):
        raise ValueError(
            f"{label} is an instance of {cls}, a subclass of keras.Model/Sequential; the "
            f"rewritten model would be a plain keras.Model and silently lose what {cls} adds. "
            "To rewrite its graph anyway, pass "
            "keras.Model(model.inputs, model.outputs) (a plain model over the same graph; "
            "making it changes nothing), and re-wrap the result yourself"
        )
    raise ValueError(
        f"{label} is a subclassed keras.Model ({cls}): its layers are connected by the Python "
        f"code of {cls}.call(), which {tool} cannot see or rewrite. Build the "
        "model with keras.Sequential or the functional API (keras.Model(inputs, outputs)), "
        f"or give {cls}.__init__ the normalization as an argument (e.g. a name passed to "
        "tfnorm.get) and construct a new model with it"
    )


def hidden_layers(layer):
    """The layers inside a (non-model) layer, which a rewrite copies whole with it; nested
    models excluded (they are rewritten themselves)."""
    try:
        inner = _compat.flatten_layers(layer, include_self=False, recursive=True)
    except (AttributeError, TypeError):
        return []
    return [sub for sub in inner if not isinstance(sub, keras.Model)]


def _identity(*args, **kwargs):
    """What a removed layer becomes: its first input, unchanged."""
    return args[0] if args else next(iter(kwargs.values()))


def _accepted_call_kwargs(layer, kwargs):
    """Drops the ``mask``/``training`` a replacement's ``call`` does not take.

    Keras records them for the old layer (``mask=None`` is filled in for every
    layer whose ``call`` takes a mask) and fills them in again for the new
    layer when its ``call`` takes them.
    """
    params = inspect.signature(layer.call).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params or k not in ("mask", "training")}


def _new_input(t, input_layer=None):
    """A fresh ``keras.Input`` like the symbolic input ``t`` made by ``input_layer``."""
    name = input_layer.name if isinstance(input_layer, keras.layers.InputLayer) else t.name
    return keras.Input(
        batch_shape=t.shape,
        dtype=t.dtype,
        sparse=t.sparse,
        ragged=getattr(t, "ragged", False),
        name=name,
        optional=getattr(input_layer, "optional", False),
    )


class _ErrorContext:
    """Re-raises a replacement's build/call error saying where it happened."""

    def __init__(self, old, path, new):
        self.old, self.path, self.new = old, path, new

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or not issubclass(exc_type, (ValueError, TypeError)):
            return False
        shape = None
        try:
            shape = tuple(self.old.input.shape)
        except Exception:  # noqa: BLE001 - the shape only decorates the message
            pass
        where = f" (input shape {shape})" if shape is not None else ""
        raise (ValueError if issubclass(exc_type, ValueError) else TypeError)(
            f"replacing {type(self.old).__name__} {self.path!r}{where} with "
            f"{type(self.new).__name__} failed: {exc}. To choose arguments per layer, pass a "
            "callable to=lambda old: ... (old.input.shape gives the layer's input shape)"
        ) from exc


class Rewriter:
    """Rewrites one model; ``records``, ``copies`` and ``swaps`` describe what it did.

    Attributes:
      records: one dict of :class:`~tfnorm.swap.SwapRecord` fields per matched
        layer, in the order Keras runs the graph.
      copies: ``(old, new, path)`` for every layer re-created from its config.
      swaps: ``(record, old, new)`` for every replacement.
    """

    def __init__(self, model, matcher, factory, keep_first):
        self.matcher = matcher
        self.factory = factory
        self.keep_first = keep_first
        self.n_matched = 0
        self.cache: Dict[int, object] = {}
        self.alive: List[object] = []  # keeps id() keys valid
        self.old_ids = {id(layer) for layer in _compat.flatten_layers(model, include_self=True)}
        self.produced: Dict[int, Tuple[keras.layers.Layer, str]] = {}  # id(new) -> (old, path)
        self.records: List[dict] = []
        self.copies: List[Tuple[keras.layers.Layer, keras.layers.Layer, str]] = []
        self.swaps: List[Tuple[dict, keras.layers.Layer, keras.layers.Layer]] = []

    # -- models ----------------------------------------------------------------------
    def rewrite_model(self, model, where: str):
        check_model(model, where)
        prefix = f"{where}/" if where else ""
        if isinstance(model, keras.Sequential):
            return self._sequential(model, prefix)
        return self._functional(model, prefix)

    def _sequential(self, model, prefix):
        input_layer = _compat.sequential_input_layer(model)
        new = keras.Sequential(name=model.name, trainable=model.trainable)
        new.add(_new_input(input_layer.output, input_layer))
        for layer in model.layers:
            converted = self.convert(layer, prefix)
            if converted is _identity:
                continue
            with self._context(converted):
                new.add(converted)
        return new

    def _functional(self, model, prefix):
        input_layers = {
            id(layer.output): layer
            for layer in model.layers
            if isinstance(layer, keras.layers.InputLayer)
        }
        inputs = keras.tree.map_structure(
            lambda t: _new_input(t, input_layers.get(id(t))), model.input
        )

        def call_function(op, *args, **kwargs):
            if op is _identity:
                return _identity(*args, **kwargs)
            if id(op) not in self.produced:
                return op(*args, **kwargs)
            with self._context(op):
                return op(*args, **_accepted_call_kwargs(op, kwargs))

        # an uncompiled view of the same graph (see the module docstring); named, so that it
        # takes no automatic name from Keras' counter
        plain = keras.Model(model.input, model.output, name=model.name)
        clone = keras.models.clone_model(
            plain,
            input_tensors=inputs,
            clone_function=lambda op: self.convert(op, prefix),
            call_function=call_function,
            recursive=False,
        )
        return keras.Model(inputs, clone.output, name=model.name, trainable=model.trainable)

    def _context(self, new):
        """Names the replaced layer when ``new`` fails at its place (copies fail as they are)."""
        if id(new) not in self.produced:
            return contextlib.nullcontext()
        old, path = self.produced[id(new)]
        return _ErrorContext(old, path, new)

    # -- layers ----------------------------------------------------------------------
    def convert(self, op, prefix):
        """The new object for ``op``: a copy, a rewritten model, a replacement or the identity."""
        key = id(op)
        if key not in self.cache:
            self.alive.append(op)
            self.cache[key] = self._convert(op, prefix)
        return self.cache[key]

    def _convert(self, op, prefix):
        path = prefix + op.name
        if isinstance(op, keras.Model):
            return self.rewrite_model(op, path)
        if not isinstance(op, keras.layers.Layer):  # a keras.ops operation in the graph
            return type(op).from_config(op.get_config())
        if not self.matcher(op):
            self._note_hidden_matches(op, path)
            return self._clone(op, path)
        index = self.n_matched
        self.n_matched += 1
        if index < self.keep_first:
            new = self._clone(op, path)
            self.records.append(
                dict(
                    path=path,
                    action="kept",
                    old_class=type(op),
                    new_class=type(op),
                    new_name=new.name,
                    note=f"keep_first={self.keep_first}",
                )
            )
            return new
        new = self.factory(op)
        if new is None:
            self.records.append(
                dict(
                    path=path,
                    action="removed",
                    old_class=type(op),
                    dropped=tuple(w.name for w in op.weights),
                )
            )
            return _identity
        if id(new) in self.old_ids:
            raise ValueError(
                f"to returned a layer of the original model ({new.name!r}) as the replacement "
                f"of {path!r}; return a new layer, e.g. type(old).from_config(old.get_config())"
            )
        if id(new) in self.produced:
            raise ValueError(
                f"to returned the same {type(new).__name__} object for "
                f"{self.produced[id(new)][1]!r} and {path!r}; the two would share weights. "
                "Return a new layer on each call"
            )
        self.produced[id(new)] = (op, path)
        record = dict(
            path=path, action="replaced", old_class=type(op), new_class=type(new), new_name=new.name
        )
        self.records.append(record)
        self.swaps.append((record, op, new))
        return new

    def _clone(self, layer, path):
        try:
            new = type(layer).from_config(layer.get_config())
        except Exception as err:  # noqa: BLE001 - re-raised with the layer's name
            raise ValueError(
                f"could not re-create layer {path!r} ({type(layer).__name__}) from its config "
                f"({type(err).__name__}: {err}); give {type(layer).__name__} a get_config() "
                "that from_config() accepts"
            ) from err
        self.copies.append((layer, new, path))
        return new

    def _note_hidden_matches(self, layer, path):
        for sub in hidden_layers(layer):
            if not self.matcher(sub):
                continue
            note = (
                f"inside {type(layer).__name__} {path!r}, which is copied whole; "
                "layers inside custom layers cannot be rewritten"
            )
            self.records.append(
                dict(
                    path=f"{path}/{sub.name}",
                    action="kept",
                    old_class=type(sub),
                    new_class=type(sub),
                    note=note,
                )
            )
            warnings.warn(
                f"swap_normalization left {type(sub).__name__} {sub.name!r} as it is: it is {note}",
                stacklevel=4,
            )
