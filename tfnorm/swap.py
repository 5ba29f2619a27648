"""Swap the normalization layers of a built Keras model: :func:`swap_normalization`.

:func:`swap_normalization` walks the layer graph of a built ``keras.Sequential`` or functional
``keras.Model`` (recursing into nested models), re-creates every layer, and
puts a new normalization layer, or nothing, where a matched layer was. The
model it is given is read, never written: the result is a new model with new
layers and new variables.

Example:
  >>> import keras, tfnorm
  >>> model = keras.Sequential([keras.Input((4, 4, 8)), keras.layers.Conv2D(8, 3),
  ...                           keras.layers.BatchNormalization(), keras.layers.ReLU()])
  >>> new = tfnorm.swap_normalization(model, "group", to_kwargs={"groups": 4})
  >>> [type(layer).__name__ for layer in new.layers]
  ['Conv2D', 'GroupNormalization', 'ReLU']
  >>> new.swap_report[0].carried
  (('gamma', 'gamma'), ('beta', 'beta'))
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Mapping
from typing import Callable, Dict, List, Optional, Tuple

import keras
from keras.src.models.functional import Functional as _Functional  # what keras.Model(i, o) is

from tfnorm import registry

__all__ = ["SwapRecord", "SwapReport", "WEIGHT_ROLES", "default_match", "swap_normalization"]

#: Weight name -> meaning. A weight of the new layer receives the old layer's
#: weight of the same meaning (and the same shape). Layers of the same class
#: also match weights by exact name.
WEIGHT_ROLES: Dict[str, str] = {
    "gamma": "scale",
    "scale": "scale",
    "beta": "offset",
    "offset": "offset",
    "moving_mean": "moving_mean",
    "moving_variance": "moving_variance",
}


def _keras_builtin_normalizations() -> Tuple[type, ...]:
    names = ("BatchNormalization", "LayerNormalization", "GroupNormalization",
             "UnitNormalization", "RMSNormalization")
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


_KERAS_NORMS = _keras_builtin_normalizations()


def _wraps_a_layer(layer) -> bool:
    return isinstance(layer, keras.layers.Wrapper) or isinstance(
        getattr(layer, "layer", None), keras.layers.Layer)


def _registered_classes() -> Tuple[type, ...]:
    return tuple({registry.resolve(name) for name in registry.available()})


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
    return isinstance(layer, _KERAS_NORMS + _registered_classes())


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------

def _class_label(cls) -> str:
    if cls is None:
        return "-"
    name = cls.__name__
    module = getattr(cls, "__module__", "")
    if module.startswith("tfnorm"):
        return f"tfnorm.{name}"
    if module.startswith("keras") and getattr(keras.layers, name, None) is cls:
        return f"keras.layers.{name}"
    return f"{module}.{name}"


@dataclasses.dataclass(frozen=True)
class SwapRecord:
    """What :func:`swap_normalization` did with one matched layer.

    Attributes:
      path: where the old layer sits, ``"nested_model/.../layer_name"``.
      action: ``"replaced"``, ``"removed"`` or ``"kept"``.
      old_class: the class of the matched layer.
      new_class: the class of its replacement (None unless replaced; the old
        class when kept).
      new_name: the name of the layer in the new model (None when removed).
      carried: ``(new_weight, old_weight)`` name pairs whose values were carried over.
      fresh: weights of the replacement left at their initial values.
      dropped: weights of the old layer that found no place in the replacement.
      note: why a layer was kept, or why weights were not carried.
    """

    path: str
    action: str
    old_class: type
    new_class: Optional[type] = None
    new_name: Optional[str] = None
    carried: Tuple[Tuple[str, str], ...] = ()
    fresh: Tuple[str, ...] = ()
    dropped: Tuple[str, ...] = ()
    note: str = ""


class SwapReport(tuple):
    """The :class:`SwapRecord` of every matched layer, in topological order.

    Attached to the new model as ``model.swap_report`` (not saved with it);
    ``str(report)`` is the table ``verbose=True`` prints.
    """

    @property
    def replaced(self) -> Tuple[SwapRecord, ...]:
        return tuple(r for r in self if r.action == "replaced")

    @property
    def removed(self) -> Tuple[SwapRecord, ...]:
        return tuple(r for r in self if r.action == "removed")

    @property
    def kept(self) -> Tuple[SwapRecord, ...]:
        return tuple(r for r in self if r.action == "kept")

    def table(self) -> str:
        head = (f"swap_normalization: {len(self.replaced)} replaced, {len(self.removed)} "
                f"removed, {len(self.kept)} kept")
        rows = [("#", "layer", "was", "now", "weights")]
        for i, r in enumerate(self):
            if r.action == "replaced":
                now = _class_label(r.new_class)
                parts = []
                if r.carried:
                    parts.append("carried " + ", ".join(
                        n if n == o else f"{n}<-{o}" for n, o in r.carried))
                if r.fresh:
                    parts.append("fresh " + ", ".join(r.fresh))
                if r.dropped:
                    parts.append("dropped " + ", ".join(r.dropped))
                weights = "; ".join(parts) or "no weights"
            elif r.action == "removed":
                now = "(removed)"
                weights = ("dropped " + ", ".join(r.dropped)) if r.dropped else "no weights"
            else:
                now = "(kept)"
                weights = "copied"
            if r.note:
                weights += f" [{r.note}]"
            rows.append((str(i), r.path, _class_label(r.old_class), now, weights))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        lines = [head]
        for row in rows:
            cells = [row[c].ljust(widths[c]) for c in range(4)] + [row[4]]
            lines.append("  " + "  ".join(cells).rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------

def _is_layer_class(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)


def _classes_for_name(name: str, argname: str) -> Tuple[type, ...]:
    try:
        cls = registry.resolve(name)
    except ValueError as err:
        raise ValueError(f"{argname}={name!r} is not a known normalization: {err}") from None
    twin = getattr(keras.layers, cls.__name__, None)
    return (cls, twin) if twin in _KERAS_NORMS and twin is not cls else (cls,)


def _make_matcher(match) -> Callable[[keras.layers.Layer], bool]:
    if match is None:
        return default_match
    if isinstance(match, str):
        classes = _classes_for_name(match, "match")
        return lambda layer: isinstance(layer, classes)
    if inspect.isclass(match):
        if not _is_layer_class(match):
            raise TypeError(f"match must name keras Layer classes, received match={match!r}")
        return lambda layer: isinstance(layer, match)
    if isinstance(match, (tuple, list)):
        if not match:
            raise ValueError("match=() matches nothing; pass None to match every "
                             "normalization layer, or list the classes or names to replace")
        classes: List[type] = []
        for item in match:
            if isinstance(item, str):
                classes.extend(_classes_for_name(item, "match"))
            elif _is_layer_class(item):
                classes.append(item)
            else:
                raise TypeError(
                    f"match={match!r} holds {item!r}; every item must be a keras Layer "
                    "class or a registry name such as 'batch'")
        found = tuple(classes)
        return lambda layer: isinstance(layer, found)
    if callable(match):
        return lambda layer: bool(match(layer))
    raise TypeError(
        "match must be None, a keras Layer class, a tuple of classes, a registry name "
        f"(one of {registry.available()}) or a predicate layer -> bool; received match={match!r}")


def _describe(to) -> str:
    return getattr(to, "__qualname__", None) or repr(to)


def _make_factory(to, to_kwargs):
    """Returns factory(old_layer) -> new layer, or None to remove the layer."""
    if to_kwargs is not None:
        if not isinstance(to_kwargs, Mapping):
            raise TypeError(f"to_kwargs must be a dict of constructor arguments, "
                            f"received to_kwargs={to_kwargs!r}")
        bad = [k for k in to_kwargs if not isinstance(k, str)]
        if bad:
            raise TypeError(f"to_kwargs keys must be argument names, received keys {bad!r}")
    if to is None:
        if to_kwargs:
            raise TypeError(f"to=None removes the matched layers and takes no to_kwargs; "
                            f"received to_kwargs={dict(to_kwargs)!r}")
        return lambda old: None
    kwargs = dict(to_kwargs or {})
    if isinstance(to, str):
        try:
            cls = registry.resolve(to)
        except ValueError as err:
            raise ValueError(f"to={to!r} is not a known normalization: {err}") from None
    elif isinstance(to, functools.partial) and _is_layer_class(to.func):
        if to.args:
            raise TypeError(f"to={to!r}: a partial of a layer class may only fix keyword "
                            "arguments (positional ones would be ambiguous)")
        cls = to.func
        kwargs = {**to.keywords, **kwargs}
    elif inspect.isclass(to):
        if not _is_layer_class(to):
            raise TypeError(f"to must be a keras Layer class, a registry name, a callable "
                            f"old_layer -> new_layer or None; received the class to={to!r}")
        cls = to
    elif callable(to):
        if to_kwargs is not None:
            raise TypeError(
                f"to_kwargs goes with a registry name or a layer class; the callable "
                f"to={_describe(to)} builds its own layers, so put those arguments inside it")

        def from_callable(old):
            new = to(old)
            if new is None:
                raise TypeError(
                    f"to={_describe(to)} returned None for layer {old.name!r}; return a new "
                    "layer. To remove layers pass to=None (and match=... to choose which)")
            if not isinstance(new, keras.layers.Layer):
                raise TypeError(f"to={_describe(to)} returned {type(new).__name__} for layer "
                                f"{old.name!r}; it must return a keras Layer")
            return new

        return from_callable
    else:
        raise TypeError(
            "to must be a registry name (one of "
            f"{registry.available()}), a keras Layer class, a callable old_layer -> new_layer, "
            f"or None to remove the matched layers; received to={to!r}")

    if "name" in kwargs:
        raise ValueError(
            f"to_kwargs={kwargs!r} sets 'name', but each replacement takes the name of the "
            "layer it replaces (names must stay unique); use a callable to= to choose names")
    try:  # fail now, with the argument's name, rather than in the middle of the graph
        registry.get(cls, **kwargs)
    except (TypeError, ValueError) as err:
        raise (ValueError if isinstance(err, ValueError) else TypeError)(
            f"to_kwargs={kwargs!r} are not valid arguments for {cls.__name__}: {err}") from None
    accepts = set(inspect.signature(cls.__init__).parameters)
    open_kwargs = any(p.kind == p.VAR_KEYWORD
                      for p in inspect.signature(cls.__init__).parameters.values())

    def from_class(old):
        kw = dict(kwargs)
        inherited = {"name": old.name, "dtype": old.dtype_policy.name,
                     "trainable": old.trainable}
        for key, value in inherited.items():
            if key not in kw and (open_kwargs or key in accepts):
                kw[key] = value
        return registry.get(cls, **kw)

    return from_class


def _check_flag(name, value):
    if type(value).__name__ not in ("bool", "bool_") and value not in (0, 1):
        raise TypeError(f"{name} must be True or False, received {name}={value!r}")
    return bool(value)


def _check_model(model, where: str) -> None:
    label = f"the nested model {where!r}" if where else "model"
    if not isinstance(model, keras.Model):
        if isinstance(model, keras.layers.Layer):
            raise TypeError(
                f"model must be a keras.Model (Sequential or functional); received the "
                f"{type(model).__name__} layer {model.name!r}. Wrap it first, e.g. "
                "keras.Sequential([keras.Input(shape), layer])")
        raise TypeError(f"model must be a keras.Model (Sequential or functional), "
                        f"received model={model!r}")
    cls = type(model).__name__
    if type(model) is keras.Sequential:
        if not model.built or not model._layers or not isinstance(
                model._layers[0], keras.layers.InputLayer):
            raise ValueError(
                f"{label} is an unbuilt Sequential ({model.name!r}): without an input shape "
                "its layers have no weights to copy and no shapes to check. Build it first: "
                "start it with keras.Input(shape=...), or call model.build((None, ...)) or "
                "the model on a batch")
        return
    if type(model) is _Functional:
        return
    if isinstance(model, (_Functional, keras.Sequential)):
        raise ValueError(
            f"{label} is an instance of {cls}, a subclass of keras.Model/Sequential; the "
            f"rewritten model would be a plain keras.Model and silently lose what {cls} adds. "
            "To swap the layers of its graph anyway, pass "
            "keras.Model(model.inputs, model.outputs) (a plain model over the same graph; "
            "making it changes nothing), and re-wrap the result yourself")
    raise ValueError(
        f"{label} is a subclassed keras.Model ({cls}): its layers are connected by the Python "
        f"code of {cls}.call(), which swap_normalization cannot see or rewrite. Build the "
        "model with keras.Sequential or the functional API (keras.Model(inputs, outputs)), "
        f"or give {cls}.__init__ the normalization as an argument (e.g. a name passed to "
        "tfnorm.get) and construct a new model with it")


# --------------------------------------------------------------------------------------
# The rewrite
# --------------------------------------------------------------------------------------

def _identity(*args, **kwargs):
    return args[0] if args else next(iter(kwargs.values()))


class _Rewriter:
    def __init__(self, model, matcher, factory, keep_first):
        self.matcher = matcher
        self.factory = factory
        self.keep_first = keep_first
        self.n_matched = 0
        self.cache: Dict[int, object] = {}
        self.alive: List[object] = []            # keeps id() keys valid
        self.old_ids = {id(layer) for layer in model._flatten_layers(include_self=True)}
        self.produced: Dict[int, str] = {}       # id(new replacement) -> old path
        self.records: List[dict] = []
        self.copies: List[Tuple[keras.layers.Layer, keras.layers.Layer, str]] = []
        self.swaps: List[Tuple[dict, keras.layers.Layer, keras.layers.Layer]] = []

    # -- models ----------------------------------------------------------------------
    def rewrite_model(self, model, where: str):
        _check_model(model, where)
        prefix = f"{where}/" if where else ""
        if isinstance(model, keras.Sequential):
            return self._sequential(model, prefix)
        return self._functional(model, prefix)

    def _sequential(self, model, prefix):
        new = keras.Sequential(name=model.name, trainable=model.trainable)
        new.add(_new_input(model._layers[0].output))
        for layer in model.layers:
            converted = self.convert(layer, prefix)
            if converted is _identity:
                continue
            with self._context(layer, prefix, converted):
                new.add(converted)
        return new

    def _functional(self, model, prefix):
        inputs = keras.tree.map_structure(_new_input, model.input)

        def operation_fn(op):
            converted = self.convert(op, prefix)
            if converted is _identity:
                return _identity

            replaced = id(converted) in self.produced

            def call(*args, **kwargs):
                if replaced:
                    kwargs = _accepted_call_kwargs(converted, kwargs)
                with self._context(op, prefix, converted):
                    return converted(*args, **kwargs)

            return call

        outputs = model._run_through_graph(inputs, operation_fn=operation_fn)
        return keras.Model(inputs, outputs, name=model.name, trainable=model.trainable)

    def _context(self, old, prefix, new):
        return _ErrorContext(old, prefix + old.name, new, replaced=id(new) in self.produced)

    # -- layers ----------------------------------------------------------------------
    def convert(self, op, prefix):
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
            self.records.append(dict(path=path, action="kept", old_class=type(op),
                                     new_class=type(op), new_name=new.name,
                                     note=f"keep_first={self.keep_first}"))
            return new
        new = self.factory(op)
        if new is None:
            self.records.append(dict(path=path, action="removed", old_class=type(op),
                                     dropped=tuple(w.name for w in op.weights)))
            return _identity
        if id(new) in self.old_ids:
            raise ValueError(
                f"to returned a layer of the original model ({new.name!r}) as the replacement "
                f"of {path!r}; return a new layer, e.g. type(old).from_config(old.get_config())")
        if id(new) in self.produced:
            raise ValueError(
                f"to returned the same {type(new).__name__} object for {self.produced[id(new)]!r} "
                f"and {path!r}; the two would share weights. Return a new layer on each call")
        self.produced[id(new)] = path
        record = dict(path=path, action="replaced", old_class=type(op), new_class=type(new),
                      new_name=new.name)
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
                "that from_config() accepts") from err
        self.copies.append((layer, new, path))
        return new

    def _note_hidden_matches(self, layer, path):
        try:
            inner = layer._flatten_layers(include_self=False, recursive=True)
        except (AttributeError, TypeError):
            return
        for sub in inner:
            if isinstance(sub, keras.Model) or not self.matcher(sub):
                continue
            note = (f"inside {type(layer).__name__} {path!r}, which is copied whole; "
                    "layers inside custom layers cannot be rewritten")
            self.records.append(dict(path=f"{path}/{sub.name}", action="kept",
                                     old_class=type(sub), new_class=type(sub), note=note))
            warnings.warn(f"swap_normalization left {type(sub).__name__} {sub.name!r} as it is: "
                          f"it is {note}", stacklevel=4)

    # -- weights ---------------------------------------------------------------------
    def copy_weights(self):
        for old, new, path in self.copies:
            src, dst = old.variables, new.variables
            if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape)
                                           for a, b in zip(src, dst)):
                raise ValueError(
                    f"cannot copy the weights of layer {path!r} ({type(old).__name__}): its "
                    f"re-created copy has variables {[(v.name, tuple(v.shape)) for v in dst]}, "
                    f"the original {[(v.name, tuple(v.shape)) for v in src]}. Its config does not "
                    "describe it fully; pass copy_weights=False to start from fresh weights")
            for a, b in zip(src, dst):
                b.assign(a.value)

    def carry_weights(self):
        for record, old, new in self.swaps:
            old_weights = list(old.weights)
            used = set()
            carried, fresh, notes = [], [], []
            for v in new.weights:
                src = None
                if type(old) is type(new):
                    same = [w for w in old_weights if w.name == v.name and id(w) not in used]
                    src = same[0] if len(same) == 1 else None
                role = WEIGHT_ROLES.get(v.name)
                if src is None and role is not None:
                    same = [w for w in old_weights
                            if WEIGHT_ROLES.get(w.name) == role and id(w) not in used]
                    src = same[0] if len(same) == 1 else None
                if src is not None and tuple(src.shape) == tuple(v.shape):
                    v.assign(keras.ops.cast(src.value, v.dtype))
                    used.add(id(src))
                    carried.append((v.name, src.name))
                else:
                    fresh.append(v.name)
                    if src is not None:
                        notes.append(f"{v.name} {tuple(v.shape)} vs {src.name} "
                                     f"{tuple(src.shape)}: shapes differ")
            record.update(carried=tuple(carried), fresh=tuple(fresh),
                          dropped=tuple(w.name for w in old_weights if id(w) not in used),
                          note="; ".join(notes))

    def mark_fresh(self):
        for record, old, new in self.swaps:
            record.update(fresh=tuple(v.name for v in new.weights),
                          dropped=tuple(w.name for w in old.weights),
                          note="copy_weights=False")


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


def _new_input(t):
    """A fresh ``keras.Input`` like the symbolic input ``t``."""
    ref = getattr(getattr(t, "_keras_history", None), "operation", None)
    name = ref.name if isinstance(ref, keras.layers.InputLayer) else t.name
    return keras.Input(batch_shape=t.shape, dtype=t.dtype, sparse=t.sparse,
                       ragged=getattr(t, "ragged", False), name=name,
                       optional=getattr(ref, "optional", False))


class _ErrorContext:
    """Re-raises a replacement's build/call error saying where it happened."""

    def __init__(self, old, path, new, replaced):
        self.old, self.path, self.new, self.replaced = old, path, new, replaced

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or not issubclass(exc_type, (ValueError, TypeError)):
            return False
        if not self.replaced:
            return False  # a copy, not a replacement: its error is the layer's own
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


def swap_normalization(model, to, *, match=None, keep_first=0, copy_weights=True,
                       verbose=False, to_kwargs=None) -> keras.Model:
    """Returns a new model with the normalization layers of ``model`` swapped.

    Every layer of ``model`` (recursively through nested Sequential and
    functional models) is re-created; each layer that ``match`` selects is
    replaced by a new layer built from ``to``, or removed when ``to`` is None.
    ``model``, its layers and its weights are never modified, and the new model
    shares no layer and no variable with it. A layer used at several call
    sites (or a nested model used several times) gets one replacement used at
    all of them. Non-layer graph operations (``keras.ops`` calls) are re-created
    too. The new model is not compiled.

    Weights (``copy_weights=True``): every layer that is not replaced gets an
    exact copy of its variables. A replacement receives the old layer's
    weights whose meaning it shares, when the shapes agree: scale
    (``gamma``/``scale``), offset (``beta``/``offset``), and moving statistics
    (``moving_mean``, ``moving_variance``) for layers that keep them; between
    layers of the same class every weight is matched by name. The rest starts
    at its initializer (see :data:`WEIGHT_ROLES`). With ``copy_weights=False``
    nothing is copied: the whole new model starts from fresh weights.

    Args:
      model: a built ``keras.Sequential`` or functional ``keras.Model``.
        Subclassed models (whose ``call`` is Python code) and Sequential
        models without an input shape are refused with a ``ValueError``.
      to: what to put in place of each matched layer:

        * a registry name (``"group"``, see :func:`tfnorm.available`) or a
          keras Layer class, built with ``to_kwargs``; the replacement takes
          the old layer's name, dtype policy and ``trainable`` flag unless
          ``to_kwargs`` sets ``dtype``/``trainable``;
        * a ``functools.partial`` of a layer class: the same as the class
          with its keywords as ``to_kwargs``;
        * a callable ``old_layer -> new_layer``, to choose arguments per layer
          (``old_layer.input.shape`` gives its input shape); it must return a
          new layer on each call (not None, not a layer of ``model``), which is
          used as it is: it keeps its own name, dtype and ``trainable``;
        * ``None``: remove the matched layers (each becomes the identity).
      match: which layers to replace. None (default): :func:`default_match`,
        every Keras built-in and every registered tfnorm normalization. Or a layer
        class (subclasses match too), a tuple of classes and registry names,
        a registry name (``"batch"`` matches ``tfnorm.BatchNormalization`` and
        its Keras namesake ``keras.layers.BatchNormalization``), or a predicate
        ``layer -> bool``. Models are always recursed into, never matched.
        A matched layer inside a custom (non-model) layer cannot be reached:
        it is kept, listed in the report and warned about.
      keep_first: leave the first ``keep_first`` matched layers as they are, in
        topological order from the input (the order in which Keras runs the
        graph, entering nested models where they are called; parallel branches
        follow Keras' order). ``swap_normalization(model, None, keep_first=1)``
        keeps one, early normalization layer. Default 0.
      copy_weights: copy and carry weights as described above. Default True.
      verbose: print the report table (what was replaced, removed or kept, and
        which weights were carried, fresh or dropped). Default False.
      to_kwargs: constructor arguments for a name or class ``to``, e.g.
        ``{"groups": 32}``. Default None.

    Returns:
      A new ``keras.Sequential`` (for a Sequential input) or functional
      ``keras.Model``, with ``swap_report``: a :class:`SwapReport` of one
      :class:`SwapRecord` per matched layer, in topological order.

    Raises:
      TypeError / ValueError: for a bad ``model``, ``to``, ``match``,
        ``keep_first`` or ``to_kwargs``; and when a replacement cannot be
        built at its place (for example ``groups`` that does not divide the
        channels), naming the layer and its input shape.

    Example:
      >>> import keras, tfnorm
      >>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
      ...                           keras.layers.BatchNormalization(), keras.layers.Dense(4),
      ...                           keras.layers.BatchNormalization()])
      >>> one_bn = tfnorm.swap_normalization(model, None, keep_first=1)
      >>> [type(layer).__name__ for layer in one_bn.layers]
      ['Dense', 'BatchNormalization', 'Dense']
      >>> [r.action for r in one_bn.swap_report]
      ['kept', 'removed']
    """
    matcher = _make_matcher(match)
    factory = _make_factory(to, to_kwargs)
    if isinstance(keep_first, bool) or not isinstance(keep_first, int) or keep_first < 0:
        raise ValueError(f"keep_first must be an integer >= 0 (how many matched layers to "
                         f"leave in place), received keep_first={keep_first!r}")
    copy_weights = _check_flag("copy_weights", copy_weights)
    verbose = _check_flag("verbose", verbose)
    _check_model(model, "")

    rewriter = _Rewriter(model, matcher, factory, keep_first)
    new_model = rewriter.rewrite_model(model, "")
    if copy_weights:
        rewriter.copy_weights()
        rewriter.carry_weights()
    else:
        rewriter.mark_fresh()
    report = SwapReport(SwapRecord(**r) for r in rewriter.records)
    new_model.swap_report = report
    if not report:
        warnings.warn(f"swap_normalization: no layer of {model.name!r} matched match={match!r}; "
                      "the result is an unchanged copy", stacklevel=2)
    if verbose:
        print(report.table())
    return new_model
