"""Who feeds whom in one level of a model: the connectivity folding needs.

Folding a normalization into a neighbour is only right when the two are
joined by a tensor nothing else reads. :class:`Graph` answers that for one
level of a built model (nested models are levels of their own): every call
of every operation, the tensors each call reads, and every reader of each
tensor, the model's outputs included. A functional model's connectivity is
read from its config (``model.get_config()``: each layer's ``inbound_nodes``
name the tensors it reads by ``[operation, call, output]``, the public
``.keras`` format, with calls counted within this model only); a Sequential's
is its list of layers, each reading the one before.

Example:
  >>> import keras
  >>> inputs = keras.Input((3,), name="x")
  >>> h = keras.layers.Dense(2, name="d")(inputs)
  >>> model = keras.Model(inputs, [keras.layers.BatchNormalization(name="bn")(h), h])
  >>> graph = Graph.of(model)
  >>> graph.readers(graph.calls["d"][0].output)
  [('bn', 0), ('<output>', 0)]
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, NamedTuple, Optional, Tuple

import keras

from tfnorm import _compat

__all__ = ["Call", "Graph", "OUTPUT", "Ref"]

#: The reader name of a model output.
OUTPUT = "<output>"


class Ref(NamedTuple):
    """One tensor of the graph: output ``tensor`` of call ``call`` of operation ``name``."""

    name: str
    call: int
    tensor: int


@dataclasses.dataclass
class Call:
    """One call of an operation: what it reads."""

    name: str
    index: int
    first: Optional[Ref]  # the first positional argument, when it is one tensor
    reads: Tuple[Ref, ...]  # every tensor among its arguments
    kwargs: dict  # its keyword arguments that are not tensors
    shape: Optional[tuple] = None  # the shape of ``first``

    @property
    def output(self) -> Ref:
        return Ref(self.name, self.index, 0)


def _tensor_ref(value) -> Optional[Tuple[Ref, tuple]]:
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        config = value.get("config", {})
        name, call, tensor = config["keras_history"]
        shape = config.get("shape")
        return Ref(name, int(call), int(tensor)), (None if shape is None else tuple(shape))
    return None


def _refs_in(value, out: List[Ref]) -> None:
    found = _tensor_ref(value)
    if found is not None:
        out.append(found[0])
    elif isinstance(value, dict):
        for item in value.values():
            _refs_in(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _refs_in(item, out)


def _output_refs(value, out: List[Ref]) -> None:
    """The ``[name, call, tensor]`` triples of ``output_layers`` (any nesting)."""
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and isinstance(value[0], str)
        and all(isinstance(v, int) for v in value[1:])
    ):
        out.append(Ref(value[0], value[1], value[2]))
    elif isinstance(value, dict):
        for item in value.values():
            _output_refs(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _output_refs(item, out)


class Graph:
    """The operations of one model level, their calls, and the readers of every tensor.

    Attributes:
      ops: name -> operation (layer, nested model, ``keras.ops`` node or ``InputLayer``).
      order: the names in the order Keras runs them.
      calls: name -> the calls of that operation in this model.
    """

    def __init__(self):
        self.ops: Dict[str, object] = {}
        self.order: List[str] = []
        self.calls: Dict[str, List[Call]] = {}
        self._readers: Dict[Ref, List[Tuple[str, int]]] = {}

    @classmethod
    def of(cls, model) -> "Graph":
        graph = cls()
        if isinstance(model, keras.Sequential):
            graph._read_sequential(model)
        else:
            graph._read_functional(model)
        return graph

    def _add_call(self, call: Call) -> None:
        self.calls.setdefault(call.name, []).append(call)
        for ref in call.reads:
            self._readers.setdefault(ref, []).append((call.name, call.index))

    def _add_output(self, ref: Ref) -> None:
        self._readers.setdefault(ref, []).append((OUTPUT, 0))

    def _read_sequential(self, model) -> None:
        input_layer = _compat.sequential_input_layer(model)
        self.ops[input_layer.name] = input_layer
        self.order.append(input_layer.name)
        previous = Ref(input_layer.name, 0, 0)
        shape = tuple(input_layer.output.shape)
        for layer in model.layers:
            if layer.name not in self.ops:
                self.ops[layer.name] = layer
                self.order.append(layer.name)
            index = len(self.calls.get(layer.name, ()))
            self._add_call(Call(layer.name, index, previous, (previous,), {}, shape))
            previous = Ref(layer.name, index, 0)
            try:
                shape = tuple(layer.compute_output_shape(shape))
            except Exception:  # noqa: BLE001 - the shape is only used for axis checks
                shape = None
        self._add_output(previous)

    def _read_functional(self, model) -> None:
        by_name = {op.name: op for op in model.operations}
        config = model.get_config()
        for entry in config["layers"]:
            name = entry["name"]
            self.ops[name] = by_name.get(name)
            self.order.append(name)
            for index, node in enumerate(entry.get("inbound_nodes", [])):
                args, kwargs = node.get("args", []), node.get("kwargs", {})
                reads: List[Ref] = []
                _refs_in([args, kwargs], reads)
                first = _tensor_ref(args[0]) if args else None
                plain = {k: v for k, v in kwargs.items() if not _has_tensor(v)}
                self._add_call(
                    Call(
                        name,
                        index,
                        None if first is None else first[0],
                        tuple(reads),
                        plain,
                        None if first is None else first[1],
                    )
                )
        outputs: List[Ref] = []
        _output_refs(config["output_layers"], outputs)
        for ref in outputs:
            self._add_output(ref)

    def readers(self, ref: Ref) -> List[Tuple[str, int]]:
        """``(operation name, call index)`` of every call reading ``ref``; ``(OUTPUT, 0)``
        for a model output."""
        return list(self._readers.get(ref, ()))


def _has_tensor(value) -> bool:
    found: List[Ref] = []
    _refs_in(value, found)
    return bool(found)
