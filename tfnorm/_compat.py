"""The private parts of Keras and TensorFlow that tfnorm relies on, each behind one function.

Everything tfnorm needs from Keras or TensorFlow that is not public API lives
here and nowhere else (``tests/test_compat.py`` scans the package for it), one
small function per touchpoint:

================================  ==========================================================
function                          what it reaches
================================  ==========================================================
:func:`functional_class`          the hidden class of ``keras.Model(inputs, outputs)``
:func:`sequential_input_layer`    the ``InputLayer`` at the bottom of a built Sequential
:func:`flatten_layers`            every layer inside a layer, nested models and sublayers
:func:`direct_sublayers`          the layers a layer tracks directly
:func:`optimizer_strategy`        the tf.distribute strategy an optimizer was created under
:func:`no_autocast`               reading a variable's stored dtype under mixed precision
:func:`graph_in_xla_context`      whether a graph is being compiled by XLA
================================  ==========================================================

None of them runs anything at import time, so a Keras or TensorFlow release
that moves one of these never breaks ``import tfnorm``. When one is missing,
its function either falls back to a public (slower, or less precise)
equivalent, or, where there is none, raises :class:`KerasInternalsError`;
both name the function and the Keras/TensorFlow versions. :func:`fallbacks`
lists the touchpoints that fell back in this process.

Example:
  >>> from tfnorm import _compat
  >>> import keras
  >>> inputs = keras.Input((3,))
  >>> type(keras.Model(inputs, keras.layers.Dense(2)(inputs))) is _compat.functional_class()
  True
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Dict, List, Optional

import keras
import tensorflow as tf

__all__ = [
    "KerasInternalsError",
    "direct_sublayers",
    "fallbacks",
    "flatten_layers",
    "functional_class",
    "graph_in_xla_context",
    "no_autocast",
    "optimizer_strategy",
    "sequential_input_layer",
]

# function name -> why it fell back (filled as touchpoints are first used)
_FALLBACKS: Dict[str, str] = {}


class KerasInternalsError(RuntimeError):
    """A private Keras/TensorFlow API that tfnorm needs is missing from the installed version."""


def _versions() -> str:
    return f"Keras {keras.__version__}, TensorFlow {tf.__version__}"


def _problem(function: str, what: str, err: BaseException) -> str:
    return (
        f"tfnorm._compat.{function}: {what} is not available in {_versions()} "
        f"({type(err).__name__}: {err})"
    )


def _fall_back(function: str, what: str, err: BaseException, instead: str) -> None:
    if function in _FALLBACKS:
        return
    message = f"{_problem(function, what, err)}; {instead}"
    _FALLBACKS[function] = message
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _missing(function: str, what: str, err: BaseException) -> KerasInternalsError:
    return KerasInternalsError(
        f"{_problem(function, what, err)}. This tfnorm release needs a Keras 3 / TensorFlow "
        "version that has it (see the dependencies of the tfnorm package)"
    )


def fallbacks() -> Dict[str, str]:
    """The touchpoints that fell back to a public equivalent so far: ``{function: why}``.

    Example:
      >>> from tfnorm import _compat
      >>> _compat.fallbacks()
      {}
    """
    return dict(_FALLBACKS)


# --------------------------------------------------------------------------------------
# models and layers
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def functional_class() -> type:
    """The class of the models ``keras.Model(inputs, outputs)`` returns (not exported by Keras).

    Falls back to building a one-layer functional model and taking its type.
    """
    try:
        from keras.src.models.functional import Functional

        return Functional
    except ImportError as err:
        _fall_back(
            "functional_class",
            "keras.src.models.functional.Functional",
            err,
            "using the type of a small functional model instead",
        )
    return _type_of_a_functional_model()


def _type_of_a_functional_model() -> type:
    inputs = keras.Input((1,))
    return type(keras.Model(inputs, keras.layers.Identity()(inputs)))


def sequential_input_layer(model: keras.Sequential) -> Optional[keras.layers.InputLayer]:
    """The ``InputLayer`` a Sequential starts with, or None (no input shape given yet).

    ``Sequential.layers`` leaves that layer out; Keras keeps it first in the list
    of layers the model tracks, where :meth:`keras.Sequential.build` puts it.
    """
    try:
        tracked = model._layers
    except AttributeError as err:
        raise _missing(
            "sequential_input_layer", "the layer list of keras.Sequential (Sequential._layers)", err
        ) from None
    if tracked and isinstance(tracked[0], keras.layers.InputLayer):
        return tracked[0]
    return None


def _public_sublayers(layer) -> List[keras.layers.Layer]:
    """The layers held in ``layer``'s attributes (directly, or in lists, tuples and dicts)."""
    if isinstance(layer, keras.Model):
        try:
            return list(layer.layers)
        except (AttributeError, ValueError):
            return []
    found: List[keras.layers.Layer] = []
    for value in vars(layer).values():
        items = (
            value.values()
            if isinstance(value, dict)
            else (value if isinstance(value, (list, tuple)) else (value,))
        )
        for item in items:
            if (
                isinstance(item, keras.layers.Layer)
                and item is not layer
                and all(item is not f for f in found)
            ):
                found.append(item)
    return found


def direct_sublayers(layer) -> List[keras.layers.Layer]:
    """The layers ``layer`` tracks directly (for a Sequential: its ``InputLayer`` included).

    Falls back to the layers held in ``layer``'s attributes.
    """
    try:
        return list(layer._layers)
    except AttributeError as err:
        if not isinstance(layer, keras.layers.Layer):
            return []
        _fall_back(
            "direct_sublayers",
            "the tracked sublayers of keras.Layer (Layer._layers)",
            err,
            "reading the layers held in each layer's attributes instead",
        )
    return _public_sublayers(layer)


def flatten_layers(
    layer, include_self: bool = True, recursive: bool = True
) -> List[keras.layers.Layer]:
    """Every layer inside ``layer`` (nested models and sublayers of custom layers), each once.

    Falls back to a walk over :func:`direct_sublayers`.
    """
    try:
        flatten = layer._flatten_layers
    except AttributeError as err:
        _fall_back(
            "flatten_layers",
            "keras.Layer._flatten_layers",
            err,
            "walking the tracked sublayers instead",
        )
    else:
        return list(flatten(include_self=include_self, recursive=recursive))
    out: List[keras.layers.Layer] = [layer] if include_self else []
    seen = {id(layer)}
    stack = list(reversed(direct_sublayers(layer)))
    while stack:
        sub = stack.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        out.append(sub)
        if recursive:
            stack.extend(reversed(direct_sublayers(sub)))
    return out


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def optimizer_strategy(optimizer, default=None):
    """The ``tf.distribute`` strategy ``optimizer`` was created under, else ``default``.

    Keras' TensorFlow optimizers remember the strategy current when they were
    made; ``default`` is returned where that is not recorded.

    Example:
      >>> import keras, tensorflow as tf
      >>> from tfnorm import _compat
      >>> _compat.optimizer_strategy(keras.optimizers.SGD()) is tf.distribute.get_strategy()
      True
    """
    try:
        return optimizer._distribution_strategy
    except AttributeError as err:
        if isinstance(optimizer, keras.optimizers.Optimizer):
            _fall_back(
                "optimizer_strategy",
                "the strategy of a Keras optimizer (Optimizer._distribution_strategy)",
                err,
                "the optimizer's strategy is not checked",
            )
        return default


def no_autocast():
    """A context in which float variables read as their stored dtype, not the mixed-precision one.

    Falls back to a context that changes nothing (variables then read in the
    compute dtype of the layer being called).

    Example:
      >>> import keras
      >>> from tfnorm import _compat
      >>> with _compat.no_autocast():
      ...     keras.Variable(1.0).value.dtype.name
      'float32'
    """
    try:
        from keras.src.backend import AutocastScope
    except ImportError as err:
        _fall_back(
            "no_autocast",
            "keras.src.backend.AutocastScope",
            err,
            "variables are read in the compute dtype under mixed precision",
        )
        return contextlib.nullcontext()
    return AutocastScope(None)


# --------------------------------------------------------------------------------------
# TensorFlow
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _xla_context_test():
    try:
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError as err:
        _fall_back(
            "graph_in_xla_context",
            "tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext",
            err,
            "XLA traces are not recognized (plain reductions are used)",
        )
        return None
    return GraphOrParentsInXlaContext


def graph_in_xla_context(graph) -> bool:
    """Whether ``graph`` (or a graph it is nested in) is being compiled with XLA.

    TensorFlow's own ops consult the same test to specialize for XLA. Falls
    back to False.

    Example:
      >>> import tensorflow as tf
      >>> from tfnorm import _compat
      >>> @tf.function(jit_compile=True)
      ... def traced():
      ...     return tf.constant(_compat.graph_in_xla_context(tf.compat.v1.get_default_graph()))
      >>> bool(traced())
      True
    """
    test = _xla_context_test()
    return False if test is None else bool(test(graph))
