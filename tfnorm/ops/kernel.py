"""Where tfnorm's kernels run: plain ops, or their own small XLA cluster inside a graph.

A *kernel* here is a pure function of tensors (no variable is read or
written) that computes a whole normalization, often with a hand-written
gradient. Executing eagerly, or while tracing for XLA (``jit_compile=True``,
where the kernel becomes part of the enclosing cluster), its ops are emitted
as they are. Inside a ``tf.function`` without XLA (Keras' default on CPU),
TensorFlow would run every elementwise op as a separate pass over memory, so
a kernel on a large enough tensor is called as a ``tf.function(jit_compile=True)``:
its forward and its backward each compile into a few fused loops, once per
shape. A kernel with a hand-written gradient is two kernels joined by
:func:`with_backward`: a forward returning the output and small statistics,
and a backward reading the input again from the caller (a forward compiled
together with a ``tf.custom_gradient`` closing over its input has to return
copies of that input for the backward). ``TFNORM_XLA_KERNELS=0`` in the
environment keeps plain ops everywhere (for a serving runtime built without
XLA, say).
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from tfnorm.ops.reduce import in_xla

__all__ = ["Kernel", "bound_kernel", "with_backward", "xla_kernels_enabled",
           "MIN_XLA_ELEMENTS"]

# Below this many elements (unknown dimensions counted as 1) a thresholded kernel stays
# plain ops inside a graph: its own XLA cluster would save little and cost a compilation.
MIN_XLA_ELEMENTS = 1 << 18


def xla_kernels_enabled() -> bool:
    """False when the environment variable ``TFNORM_XLA_KERNELS`` is ``0``."""
    return os.environ.get("TFNORM_XLA_KERNELS", "1").strip().lower() not in ("0", "false", "no")


def _known_elements(x) -> int:
    return int(np.prod([d or 1 for d in x.shape.as_list()], dtype=np.int64))


class Kernel:
    """``impl`` called as plain ops or as its own XLA cluster (module docstring).

    Args:
      impl: the kernel, a pure function whose first argument is its main input.
      threshold: compile only when that input has at least ``MIN_XLA_ELEMENTS``
        elements (read at call time); False compiles at any size.
    """

    def __init__(self, impl: Callable, threshold: bool = True):
        self.impl = impl
        self.threshold = threshold
        self._compiled = None

    def __call__(self, *args, **kwargs):
        if (tf.executing_eagerly() or in_xla() or not xla_kernels_enabled()
                or (self.threshold and _known_elements(args[0]) < MIN_XLA_ELEMENTS)):
            return self.impl(*args, **kwargs)
        if self._compiled is None:
            self._compiled = tf.function(self.impl, jit_compile=True, autograph=False)
        return self._compiled(*args, **kwargs)


_BOUND: Dict[tuple, Kernel] = {}


def bound_kernel(impl: Callable, threshold: Optional[bool] = False, **static) -> Kernel:
    """The :class:`Kernel` of ``impl`` with the Python values ``static`` bound (one per binding).

    Example:
      >>> def scale(x, *, factor):
      ...     return x * factor
      >>> double = bound_kernel(scale, factor=2.0)
      >>> double(tf.constant([1.0, 2.0])).numpy().tolist()
      [2.0, 4.0]
      >>> double is bound_kernel(scale, factor=2.0)
      True
    """
    key = (impl, bool(threshold)) + tuple(sorted(static.items()))
    if key not in _BOUND:
        _BOUND[key] = Kernel(functools.partial(impl, **static), threshold=bool(threshold))
    return _BOUND[key]


def with_backward(forward: Callable, backward: Callable, *inputs, outputs: int = 1):
    """``forward(*inputs)`` with the gradient ``backward``, each its own kernel.

    ``forward`` returns ``(y, *stats)``; the result is its first ``outputs``
    values (a tensor when ``outputs`` is 1), those after ``y`` without
    gradient. The gradient of ``y`` is ``backward(dy, *inputs, *stats)``, one
    gradient per input that is not None (None inputs are passed on as None).
    With :class:`Kernel` s for ``forward`` and ``backward``, inside a graph
    without XLA each is its own cluster: the compiled forward returns nothing
    but ``y`` and ``stats``, and the backward reads the inputs from the caller.

    Example:
      >>> def fwd(x):  # RMS normalization of a vector
      ...     r = tf.math.rsqrt(tf.reduce_mean(x * x))
      ...     return x * r, r
      >>> def bwd(dy, x, r):
      ...     return [r * dy - x * r ** 3 * tf.reduce_mean(dy * x)]
      >>> x = tf.constant([3.0, 4.0])
      >>> with tf.GradientTape() as tape:
      ...     tape.watch(x)
      ...     y = with_backward(fwd, bwd, x)
      >>> [round(float(v), 4) for v in tape.gradient(y, x)]
      [0.0453, -0.0339]
    """
    present = [i for i, t in enumerate(inputs) if t is not None]

    @tf.custom_gradient
    def op(*tensors):
        full = list(inputs)
        for i, t in zip(present, tensors):
            full[i] = t
        y, *stats = forward(*full)

        def grad(dy, *_):
            return list(backward(dy, *full, *stats))

        if outputs == 1:
            return y, grad
        return (y, *stats[:outputs - 1]), grad

    result = op(*[inputs[i] for i in present])
    if outputs == 1:
        return result
    return (result[0],) + tuple(tf.stop_gradient(t) for t in result[1:])
