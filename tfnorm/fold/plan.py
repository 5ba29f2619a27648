"""What :func:`~tfnorm.fold_normalization` does with each layer, and why: :class:`Planner`.

The planner reads a model (every level, through :class:`~tfnorm.fold.graph.Graph`)
before anything is rebuilt, and decides:

* a ``BatchNormalization`` (tfnorm's or Keras') folds into the linear layer
  that produces its input when that layer is a ``Dense``, ``Conv1D/2D/3D`` or
  ``DepthwiseConv1D/2D`` (plain, weight-standardized, or inside a tfnorm
  ``WeightNormalization``/``SpectralNormalization``) with a linear activation,
  called once, whose output nothing else reads, with its channels on the
  normalized axis; otherwise it folds into a ``Dense`` it alone feeds, when it
  normalizes the last axis; otherwise it stays, with the reason;
* a tfnorm ``WeightNormalization``/``SpectralNormalization`` becomes the plain
  layer its ``remove()`` returns, and a weight-standardized convolution the
  plain Keras convolution holding its standardized kernel;
* every other normalization layer stays, with the reason.

Each layer that changes gets a :class:`Rebuild` (a new layer from a config,
and the values of its weights) or :data:`REMOVED`; each normalization gets one
record (:class:`~tfnorm.swap.SwapRecord` fields) in the order Keras runs the
graph.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np

import tfnorm.layers as tfnorm_layers
from tfnorm.fold import maths
from tfnorm.fold.graph import OUTPUT, Graph
from tfnorm.layers import kernels
from tfnorm.swap.match import default_match
from tfnorm.swap.rewrite import check_model, hidden_layers

__all__ = ["BATCH_NORMS", "REMOVED", "Planner", "Rebuild"]

TOOL = "fold_normalization"

#: The batch normalizations folded (their own ``call``: subclasses that keep it count).
BATCH_NORMS = (tfnorm_layers.BatchNormalization, keras.layers.BatchNormalization)
_WRAPPERS = (tfnorm_layers.WeightNormalization, tfnorm_layers.SpectralNormalization)
_STANDARDIZED = {
    tfnorm_layers.WeightStandardizedConv1D: keras.layers.Conv1D,
    tfnorm_layers.WeightStandardizedConv2D: keras.layers.Conv2D,
    tfnorm_layers.WeightStandardizedConv3D: keras.layers.Conv3D,
}
# kernels.kind values whose output channels a following normalization can fold into
_FOLDABLE_KINDS = ("dense", "conv", "depthwise")
_LINEAR_NAMES = "a Dense, Conv1D/2D/3D or DepthwiseConv1D/2D"

#: What a folded normalization becomes: nothing (the Rewriter's removal).
REMOVED = None


def _own_class(layer, classes) -> Optional[type]:
    """The class of ``classes`` that ``layer`` is an instance of with that class's ``call``."""
    for cls in classes:
        if isinstance(layer, cls) and type(layer).call is cls.call:
            return cls
    return None


def _label(layer) -> str:
    return f"{type(layer).__name__} {layer.name!r}"


def _weights(layer) -> Dict[str, np.ndarray]:
    return {v.name: np.asarray(v.numpy(), np.float64) for v in layer.weights}


@dataclasses.dataclass
class Source:
    """A linear layer of the old model seen as a plain Keras layer.

    ``cls`` and ``config`` make the plain layer, ``weights`` (by variable
    name, float64) are its values; ``layer`` holds its activation and data
    format; ``how`` says what was computed for a wrapper or a
    weight-standardized convolution (None for a plain layer).
    """

    old: keras.layers.Layer
    cls: type
    config: dict
    weights: Dict[str, np.ndarray]
    kind: Optional[str]
    layer: keras.layers.Layer
    how: Optional[str] = None


class Rebuild:
    """A layer of the new model made from a :class:`Source`, with any normalization folded in.

    ``before``: the ``(s, t)`` of a normalization in front of a Dense;
    ``after``: the ``(s, t)`` of one after the layer.
    """

    def __init__(self, source: Source):
        self.source = source
        self.before: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self.after: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def make(self) -> keras.layers.Layer:
        config = dict(
            self.source.config, name=self.source.old.name, trainable=self.source.old.trainable
        )
        if self.before is not None or self.after is not None:
            config["use_bias"] = True
        return self.source.cls.from_config(config)

    def values(self) -> Dict[str, np.ndarray]:
        values = dict(self.source.weights)
        if self.before is not None:
            values["kernel"], values["bias"] = maths.fold_before_dense(
                values["kernel"], values.get("bias"), *self.before
            )
        if self.after is not None:
            values["kernel"], values["bias"] = maths.fold_after(
                values["kernel"], values.get("bias"), self.source.kind, *self.after
            )
        return values

    def assign(self, new: keras.layers.Layer, path: str) -> None:
        """Writes :meth:`values` into ``new``, built at its place in the new model."""
        values = self.values()
        names = [v.name for v in new.weights]
        if sorted(names) != sorted(values):
            raise RuntimeError(
                f"fold_normalization: the new {type(new).__name__} {path!r} has "
                f"weights {names}, expected {sorted(values)}"
            )
        for v in new.weights:
            v.assign(keras.ops.cast(values[v.name], v.dtype))


def _batch_norm_affine(bn) -> Tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` of ``bn`` in inference: what both BatchNormalizations compute with
    ``moving_mean`` and ``moving_variance`` (tfnorm's renorm keeps the variance in step
    with ``moving_stddev``, and inference reads the variance)."""
    gamma = getattr(bn, "gamma", None)
    beta = getattr(bn, "beta", None)
    return maths.batch_norm_affine(
        bn.moving_mean.numpy(),
        bn.moving_variance.numpy(),
        None if gamma is None else gamma.numpy(),
        None if beta is None else beta.numpy(),
        bn.epsilon,
    )


class Planner:
    """Decides every change for one model (see the module docstring).

    Attributes:
      changes: ``id(old layer)`` -> its :class:`Rebuild`, or :data:`REMOVED`.
      records: one dict of :class:`~tfnorm.swap.SwapRecord` fields per
        normalization, in the order Keras runs the graph.
    """

    def __init__(self):
        self.changes: Dict[int, Optional[Rebuild]] = {}
        self.records: List[dict] = []
        self._graphs: Dict[int, Graph] = {}
        self._call_sites = collections.Counter()  # id(layer) -> calls in every model level
        self._sources: Dict[int, Tuple[Optional[Source], str]] = {}
        self._walked = set()  # ids of the models and layers decided on

    def plan(self, model) -> None:
        self._read(model, "")
        self._walk(model, "")

    # -- reading -----------------------------------------------------------------------
    def _read(self, model, where: str) -> None:
        check_model(model, where, tool=TOOL)
        graph = self._graphs[id(model)] = Graph.of(model)
        prefix = f"{where}/" if where else ""
        for name in graph.order:
            op = graph.ops[name]
            self._call_sites[id(op)] += len(graph.calls.get(name, ()))
            if isinstance(op, keras.Model) and id(op) not in self._graphs:
                self._read(op, prefix + name)

    def _walk(self, model, where: str) -> None:
        self._walked.add(id(model))
        graph = self._graphs[id(model)]
        prefix = f"{where}/" if where else ""
        for name in graph.order:
            op, path = graph.ops[name], prefix + name
            if id(op) in self._walked:  # a model or layer used at several levels: once
                continue
            if isinstance(op, keras.Model):
                self._walk(op, path)
                continue
            self._walked.add(id(op))
            if not isinstance(op, keras.layers.Layer) or isinstance(op, keras.layers.InputLayer):
                continue
            if isinstance(op, BATCH_NORMS):
                self._batch_norm(op, graph, path)
            elif isinstance(op, _WRAPPERS) or isinstance(op, tuple(_STANDARDIZED)):
                self._replace(op, path)
            elif default_match(op) or isinstance(op, keras.layers.SpectralNormalization):
                self._keep(op, path, _why_not_foldable(op))
            else:
                self._note_hidden(op, path)

    # -- sources -----------------------------------------------------------------------
    def _source(self, layer) -> Tuple[Optional[Source], str]:
        """The layer as a plain linear layer, or None and why not."""
        key = id(layer)
        if key not in self._sources:
            self._sources[key] = self._make_source(layer)
        return self._sources[key]

    def _make_source(self, layer) -> Tuple[Optional[Source], str]:
        """``(source, "")``; ``(None, "")`` for a layer that is not linear; ``(None, why)``
        for a linear layer that cannot be made plain (``why`` follows "which")."""
        wrapper = _own_class(layer, _WRAPPERS)
        if wrapper is not None:
            try:
                plain = layer.remove()
            except (ValueError, RuntimeError) as err:
                return None, f"could not be removed: {err}"
            return Source(
                layer,
                type(plain),
                plain.get_config(),
                _weights(plain),
                kernels.kind(plain),
                plain,
                f"the effective kernel from {wrapper.__name__}.remove()",
            ), ""
        standardized = _own_class(layer, _STANDARDIZED)
        if standardized is not None:
            config = layer.get_config()
            config.pop("epsilon")
            values = _weights(layer)
            values["kernel"] = maths.standardize_kernel(values["kernel"], layer.epsilon)
            return Source(
                layer,
                _STANDARDIZED[standardized],
                config,
                values,
                "conv",
                layer,
                f"the standardized kernel (epsilon={layer.epsilon:g})",
            ), ""
        if isinstance(layer, _WRAPPERS) or isinstance(layer, tuple(_STANDARDIZED)):
            return None, "is a subclass with its own call(): what it computes is not known"
        kind = kernels.kind(layer)
        if kind not in _FOLDABLE_KINDS:
            return None, ""
        if getattr(layer, "lora_enabled", False):
            return None, "has LoRA enabled"
        if getattr(layer, "quantization_mode", None) is not None:
            return None, f"is quantized (quantization_mode={layer.quantization_mode!r})"
        return Source(layer, type(layer), layer.get_config(), _weights(layer), kind, layer), ""

    def _rebuild(self, layer) -> Rebuild:
        change = self.changes.get(id(layer))
        if change is None:
            change = self.changes[id(layer)] = Rebuild(self._source(layer)[0])
        return change

    # -- decisions ---------------------------------------------------------------------
    def _record(self, path, action, layer, note, new_class=None, new_name=None):
        self.records.append(
            dict(
                path=path,
                action=action,
                old_class=type(layer),
                new_class=new_class,
                new_name=new_name,
                note=note,
            )
        )

    def _keep(self, layer, path, reason):
        self._record(path, "kept", layer, reason, new_class=type(layer), new_name=layer.name)

    def _replace(self, layer, path):
        source, why = self._source(layer)
        if source is None:
            self._keep(layer, path, f"{type(layer).__name__} {why}")
            return
        self._rebuild(layer)
        self._record(path, "replaced", layer, source.how, new_class=source.cls, new_name=layer.name)

    def _batch_norm(self, bn, graph, path):
        reason = self._why_not_batch_norm(bn, graph)
        if reason is None:
            call = graph.calls[bn.name][0]
            axis = _channel_axis(bn, len(call.shape))
            into, reason_after = self._producer(bn, call, graph, axis)
            if into is not None:
                self._fold(bn, path, into, after=True)
                return
            into, reason_before = self._reader(bn, call, graph, axis)
            if into is not None:
                self._fold(bn, path, into, after=False)
                return
            reason = f"{reason_after}; {reason_before}"
        self._keep(bn, path, reason)

    def _fold(self, bn, path, into, after):
        change = self._rebuild(into)
        affine = _batch_norm_affine(bn)
        source = change.source
        layer = f"{source.cls.__name__} {into.name!r}"
        if source.how is not None:
            layer += f" (which replaces {type(into).__name__} {into.name!r})"
        if after:
            change.after = affine
            where = f"the kernel and bias of the {layer} before it"
        else:
            change.before = affine
            where = f"the kernel rows and bias of the {layer} after it"
        self.changes[id(bn)] = REMOVED
        self._record(
            path,
            "folded",
            bn,
            f"scale and shift folded into {where}",
            new_class=source.cls,
            new_name=into.name,
        )

    def _why_not_batch_norm(self, bn, graph) -> Optional[str]:
        """Why ``bn`` cannot fold anywhere, whatever its neighbours, or None."""
        if _own_class(bn, BATCH_NORMS) is None:
            return (
                f"{type(bn).__name__} is a subclass of BatchNormalization with its own "
                "call(); what it computes is not known"
            )
        sites = self._call_sites[id(bn)]
        if sites != 1:
            return (
                f"it is called at {sites} places (a shared layer): folding it into one "
                "neighbour would change the others"
            )
        call = graph.calls[bn.name][0]
        if call.kwargs.get("training") is True:
            return (
                "it is called with training=True, so it always normalizes with the "
                "statistics of the batch; only inference statistics fold"
            )
        if call.shape is None:
            return "the rank of its input is not known"
        if _channel_axis(bn, len(call.shape)) is None:
            return f"it normalizes over the axes {bn.axis!r}; folding needs one channel axis"
        return None

    def _producer(self, bn, call, graph, axis) -> Tuple[Optional[keras.layers.Layer], str]:
        """The layer ``bn`` folds into from behind, or None and why not."""
        ref = call.first
        if ref is None:
            return None, "its input is not a single tensor"
        src = graph.ops.get(ref.name)
        if isinstance(src, keras.layers.InputLayer):
            return None, f"it reads the input {ref.name!r}, not the output of a linear layer"
        if isinstance(src, keras.Model):
            return None, (
                f"it reads the output of the nested model {ref.name!r} (folding "
                "stays within one model)"
            )
        if not isinstance(src, keras.layers.Layer):
            return None, f"it reads the result of the operation {ref.name!r}"
        source, why = self._source(src)
        if source is None or source.kind not in _FOLDABLE_KINDS:
            return None, f"it follows {_label(src)}, which {why or 'is not ' + _LINEAR_NAMES}"
        sites = self._call_sites[id(src)]
        if sites != 1:
            return None, f"it follows {_label(src)}, which is called at {sites} places"
        others = [name for name, _ in graph.readers(ref) if name != bn.name]
        if others:
            names = ", ".join("the model's outputs" if n == OUTPUT else repr(n) for n in others)
            return None, (
                f"the output of {_label(src)} is also read by {names}; folding "
                "would change what they receive"
            )
        activation = getattr(source.layer, "activation", None)
        if activation is not None and activation is not keras.activations.linear:
            act = getattr(activation, "__name__", repr(activation))
            return None, (
                f"it follows {_label(src)} with activation={act!r}, which lies between the two"
            )
        channels = kernels.channel_axis(source.layer, len(call.shape))
        if axis != channels:
            return None, (
                f"it normalizes axis {axis}, but the channels of {_label(src)} are "
                f"on axis {channels}"
            )
        return src, ""

    def _reader(self, bn, call, graph, axis) -> Tuple[Optional[keras.layers.Layer], str]:
        """The Dense ``bn`` folds into from the front, or None and why not."""
        readers = graph.readers(call.output)
        if any(name == OUTPUT for name, _ in readers):
            return None, "its output is a model output"
        if len(readers) != 1:
            return None, f"its output is read at {len(readers)} places"
        name, index = readers[0]
        dst = graph.ops.get(name)
        if not isinstance(dst, keras.layers.Layer) or isinstance(dst, keras.Model):
            return None, f"it feeds {name!r}, not a Dense"
        source, why = self._source(dst)
        if source is None or source.kind != "dense":
            padding = getattr(dst, "padding", None) or getattr(
                getattr(dst, "layer", None), "padding", None
            )
            if padding == "same":
                return None, (
                    f"it feeds {_label(dst)} with padding='same': the convolution pads the "
                    "normalized input with zeros, and folded in it would pad the raw input "
                    "with zeros, which normalize to beta - mean * gamma / sqrt(variance + "
                    "epsilon), not zero; outputs at the borders would change"
                )
            if padding is not None:
                return None, (
                    f"it feeds {_label(dst)}; a normalization in front of a layer "
                    "folds only into a Dense"
                )
            if why:
                return None, f"it feeds {_label(dst)}, which {why}"
            return None, f"it feeds {_label(dst)}, not a Dense"
        dst_call = graph.calls[name][index]
        if dst_call.first != call.output or len(dst_call.reads) != 1:
            return None, f"it is one of several inputs of {_label(dst)}"
        sites = self._call_sites[id(dst)]
        if sites != 1:
            return None, f"it feeds {_label(dst)}, which is called at {sites} places"
        if axis != len(call.shape) - 1:
            return None, (
                f"it normalizes axis {axis}, but the Dense {dst.name!r} after it "
                "contracts the last axis"
            )
        return dst, ""

    def _note_hidden(self, layer, path):
        for sub in hidden_layers(layer):
            if not _is_normalization(sub):
                continue
            self._keep(
                sub,
                f"{path}/{sub.name}",
                f"inside {type(layer).__name__} {path!r}, which is copied whole; "
                "layers inside other layers cannot be rewritten",
            )


def _is_normalization(layer) -> bool:
    return (
        isinstance(layer, BATCH_NORMS + _WRAPPERS + tuple(_STANDARDIZED))
        or isinstance(layer, keras.layers.SpectralNormalization)
        or default_match(layer)
    )


def _channel_axis(bn, rank: int) -> Optional[int]:
    """The one axis ``bn`` normalizes, in ``[0, rank)``; None for several axes."""
    axis = bn.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return None
        axis = axis[0]
    return int(axis) % rank


def _why_not_foldable(layer) -> str:
    if isinstance(layer, keras.layers.SpectralNormalization):
        return (
            "keras.layers.SpectralNormalization is copied as it is; "
            "tfnorm.SpectralNormalization folds into the plain layer"
        )
    return (
        f"{type(layer).__name__} computes its statistics from each input at run time: "
        "there are no fixed statistics to fold (only BatchNormalization in inference, "
        "WeightNormalization, SpectralNormalization and the weight-standardized "
        "convolutions fold)"
    )
