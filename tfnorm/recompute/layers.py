"""Which layers :func:`~tfnorm.recompute_batch_statistics` covers, and capturing their inputs.

:data:`STATISTICS_LAYERS` names the layer classes that keep batch statistics and what
each keeps (which variables, which axes are the channels, whether a mask counts);
:func:`statistics_layers` finds them in a model, nested models included. A
:class:`Capture` wraps their ``call`` so that a forward pass (:func:`make_forward`)
reduces the inputs of one chosen layer with
:func:`~tfnorm.recompute.moments.stacked_moments` while the others pass through.

Example:
  >>> import keras, tfnorm
  >>> from tfnorm.recompute.layers import kind_of, statistics_layers
  >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
  ...                           tfnorm.BatchNormalization(name="bn")])
  >>> [path for path, _ in statistics_layers(model)]
  ['bn']
  >>> kind_of(model.layers[0]) is None, kind_of(model.layers[1]).masked
  (True, True)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from tfnorm import _compat, ops
from tfnorm.layers.batch import BatchNormalization
from tfnorm.layers.evonorm import EvoNormB0
from tfnorm.layers.switchable import SwitchableNormalization
from tfnorm.recompute.moments import stacked_moments


@dataclasses.dataclass(frozen=True)
class _Kind:
    """What one class of layer keeps.

    Attributes:
      targets: layer -> ``((variable attribute, quantity), ...)`` where quantity is
        ``"mean"`` (the population mean), ``"variance"`` (the population variance) or
        ``"stddev"`` (``sqrt(variance + layer.epsilon)``).
      kept_axes: ``(layer, input rank) -> sorted non-negative axes`` that keep their own
        statistic (the channels); every other axis is averaged over.
      kept_mask: for a layer whose ``mask`` call argument removes positions from its
        training statistics (and so from the recomputed ones): ``(layer, mask, x) ->``
        boolean tensor broadcastable to ``x``, True where a position is kept, read as the
        layer reads the mask; None for a layer that ignores masks.
    """

    targets: Callable[[keras.layers.Layer], Tuple[Tuple[str, str], ...]]
    kept_axes: Callable[[keras.layers.Layer, int], Tuple[int, ...]]
    kept_mask: Optional[Callable[[keras.layers.Layer, tf.Tensor, tf.Tensor], tf.Tensor]] = None

    @property
    def masked(self) -> bool:
        return self.kept_mask is not None


def _built_axes(layer, rank):
    return tuple(sorted(int(a) % rank for a in layer._axes))


def _keras_axes(layer, rank):
    axis = layer.axis
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return tuple(sorted(int(a) % rank for a in axes))


_MEAN_VAR = (("moving_mean", "mean"), ("moving_variance", "variance"))


def _bn_targets(layer):
    if getattr(layer, "renorm", False):
        # with renorm, tfnorm and Keras keep moving_stddev next to moving_variance (and
        # derive the variance from it in training); both must describe the same statistic.
        return _MEAN_VAR + (
            ("moving_stddev", "stddev"),
            ("renorm_mean", "mean"),
            ("renorm_stddev", "stddev"),
        )
    return _MEAN_VAR


def _bn_kept_mask(layer, mask, x):
    # both of BatchNormalization's readings: tfnorm's (all but the channel axis) and Keras'
    mask, readings = layer._mask_readings(mask, x)
    return layer._mask_weights(mask, x, readings) > 0


def _keras_kept_mask(layer, mask, x):
    # Keras' BatchNormalization broadcasts a mask of the leading axes over the last one
    mask = tf.convert_to_tensor(mask)
    rank = x.shape.rank
    if mask.shape.rank != rank - 1 or len(_keras_axes(layer, rank)) != 1:
        raise ValueError(
            f"recompute_batch_statistics: layer {layer.name!r} received a mask of shape "
            f"{tuple(mask.shape)} for an input of shape {tuple(x.shape)}; keras' "
            "BatchNormalization takes a mask of the input's leading axes (rank - 1) and a "
            "single channel axis"
        )
    return tf.expand_dims(ops.kept(mask), -1)


#: The layer classes whose statistics :func:`recompute_batch_statistics` recomputes, in
#: the order they are matched (subclasses included), with what each keeps.
STATISTICS_LAYERS: Tuple[Tuple[type, _Kind], ...] = (
    (BatchNormalization, _Kind(_bn_targets, _built_axes, _bn_kept_mask)),
    (SwitchableNormalization, _Kind(lambda layer: _MEAN_VAR, _built_axes)),
    (EvoNormB0, _Kind(lambda layer: (("moving_variance", "variance"),), _built_axes)),
    (keras.layers.BatchNormalization, _Kind(_bn_targets, _keras_axes, _keras_kept_mask)),
)


def kind_of(layer) -> Optional[_Kind]:
    """What ``layer`` keeps (its entry in :data:`STATISTICS_LAYERS`); None if nothing."""
    if isinstance(layer, keras.Model):
        return None
    for cls, kind in STATISTICS_LAYERS:
        if isinstance(layer, cls):
            return kind
    return None


def statistics_layers(model) -> List[Tuple[str, keras.layers.Layer]]:
    """``(path, layer)`` of every layer under ``model`` that keeps statistics, each once."""
    found: List[Tuple[str, keras.layers.Layer]] = []
    seen = {id(model)}

    def walk(layer, prefix):
        for child in _compat.direct_sublayers(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = prefix + child.name
            if kind_of(child) is not None:
                found.append((path, child))
            walk(child, path + "/")

    walk(model, "")
    return found


class Entry:
    """One layer that keeps statistics: its ``index`` among them, its ``path``, the
    ``layer`` and its :class:`_Kind`; ``calls`` counts its calls in one forward pass."""

    def __init__(self, index, path, layer, kind):
        self.index = index
        self.path = path
        self.layer = layer
        self.kind = kind
        self.calls = 0  # per forward pass, counted in the first one


class Capture:
    """Wraps the ``call`` of every statistics layer; the wrapper reduces its inputs.

    Only the layer whose index is ``active`` reduces its inputs (``tf.cond`` in a
    traced function, so one trace serves every layer); the others pass through.
    ``results[index]`` collects, per call, a float64 tensor ``(4, channels...)``
    stacking rows, count, mean and m2
    (:func:`~tfnorm.recompute.moments.stacked_moments`).
    """

    def __init__(self, entries: Sequence[Entry], graph: bool):
        self.entries = list(entries)
        self.graph = graph
        self.active = -1
        self.results: Dict[int, list] = {}
        self.order: Optional[List[Entry]] = None  # first-call order, while discovering
        self._saved = []

    def install(self):
        for entry in self.entries:
            layer = entry.layer
            had = "call" in vars(layer)
            original = layer.call
            self._saved.append((layer, had, vars(layer).get("call")))
            object.__setattr__(layer, "call", self._wrapper(entry, original))

    def restore(self):
        while self._saved:
            layer, had, previous = self._saved.pop()
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                try:
                    object.__delattr__(layer, "call")
                except AttributeError:
                    pass

    def _wrapper(self, entry, original):
        def call(*args, **kwargs):
            x = args[0] if args else kwargs.get("inputs")
            mask = None
            if entry.kind.masked:
                mask = kwargs.get("mask", args[2] if len(args) > 2 else None)
            self._record(entry, x, mask)
            return original(*args, **kwargs)

        return call

    def _record(self, entry, x, mask):
        if self.order is not None:
            if entry not in self.order:
                self.order.append(entry)
            entry.calls += 1
        x = tf.convert_to_tensor(x)
        rank = x.shape.rank
        kept = entry.kind.kept_axes(entry.layer, rank)
        if mask is not None:
            mask = entry.kind.kept_mask(entry.layer, mask, x)
        if self.graph:
            shape = [4] + [x.shape[a] for a in kept]
            out = tf.cond(
                tf.equal(self.active, entry.index),
                lambda: stacked_moments(x, kept, mask),
                lambda: tf.zeros(shape, tf.float64),
            )
        elif self.active == entry.index:
            out = stacked_moments(x, kept, mask)
        else:
            return
        self.results.setdefault(entry.index, []).append(out)


def make_forward(model, capture: Capture):
    """``f(x, active) -> {str(index): [moments per call]}`` (:class:`Capture`)."""

    def step(x, active):
        capture.active = active
        capture.results = {}
        model(x, training=False)
        return {str(k): v for k, v in capture.results.items()}

    if not capture.graph:
        return step
    # the step has no tensor-dependent Python control flow: nothing for AutoGraph to convert
    return tf.function(step, reduce_retracing=True, autograph=False)
