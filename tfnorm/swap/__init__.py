"""Swap the normalization layers of a built Keras model: :func:`swap_normalization`.

:func:`swap_normalization` walks the layer graph of a built ``keras.Sequential`` or functional
``keras.Model`` (recursing into nested models), re-creates every layer, and
puts a new normalization layer, or nothing, where a matched layer was. The
model it is given is read, never written: the result is a new model with new
layers and new variables.

The package keeps one idea per module: :mod:`~tfnorm.swap.match` (which
layers, ``match=``), :mod:`~tfnorm.swap.build` (what replaces them, ``to=``),
:mod:`~tfnorm.swap.rewrite` (the graph walk), :mod:`~tfnorm.swap.weights`
(copied and carried weights) and :mod:`~tfnorm.swap.report` (what was done);
this module checks the arguments and runs them in that order.

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

import warnings

import keras

from tfnorm.swap import weights
from tfnorm.swap.build import make_factory
from tfnorm.swap.match import default_match, make_matcher
from tfnorm.swap.report import SwapRecord, SwapReport
from tfnorm.swap.rewrite import Rewriter, check_model
from tfnorm.swap.weights import WEIGHT_ROLES

__all__ = ["SwapRecord", "SwapReport", "WEIGHT_ROLES", "default_match", "swap_normalization"]


def _check_flag(name, value):
    if type(value).__name__ not in ("bool", "bool_") and value not in (0, 1):
        raise TypeError(f"{name} must be True or False, received {name}={value!r}")
    return bool(value)


def swap_normalization(
    model, to, *, match=None, keep_first=0, copy_weights=True, verbose=False, to_kwargs=None
) -> keras.Model:
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
    matcher = make_matcher(match)
    factory = make_factory(to, to_kwargs)
    if isinstance(keep_first, bool) or not isinstance(keep_first, int) or keep_first < 0:
        raise ValueError(
            f"keep_first must be an integer >= 0 (how many matched layers to "
            f"leave in place), received keep_first={keep_first!r}"
        )
    copy_weights = _check_flag("copy_weights", copy_weights)
    verbose = _check_flag("verbose", verbose)
    check_model(model, "")

    rewriter = Rewriter(model, matcher, factory, keep_first)
    new_model = rewriter.rewrite_model(model, "")
    if copy_weights:
        weights.copy_weights(rewriter.copies)
        weights.carry_weights(rewriter.swaps)
    else:
        weights.mark_fresh(rewriter.swaps)
    report = SwapReport(SwapRecord(**r) for r in rewriter.records)
    new_model.swap_report = report
    if not report:
        warnings.warn(
            f"swap_normalization: no layer of {model.name!r} matched match={match!r}; "
            "the result is an unchanged copy",
            stacklevel=2,
        )
    if verbose:
        print(report.table())
    return new_model
