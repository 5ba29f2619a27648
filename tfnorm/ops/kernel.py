"""Where tfnorm's kernels run, and :class:`FusedOp`, the one type every kernel is built as.

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
copies of that input for the backward). :class:`FusedOp` holds such a pair
with the plain-op function used for layouts the kernels do not take.
``TFNORM_XLA_KERNELS=0`` in the environment keeps plain ops everywhere (for a
serving runtime built without XLA, say).
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfnorm.ops.reduce import in_xla

__all__ = [
    "FusedOp",
    "Kernel",
    "bound_kernel",
    "with_backward",
    "xla_kernels_enabled",
    "MIN_XLA_ELEMENTS",
]

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
        if (
            tf.executing_eagerly()
            or in_xla()
            or not xla_kernels_enabled()
            or (self.threshold and _known_elements(args[0]) < MIN_XLA_ELEMENTS)
        ):
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


State = Tuple[Callable[[], Sequence[tf.Tensor]], Callable[..., None]]


def with_backward(
    forward: Callable, backward: Callable, *inputs, outputs: int = 1, state: Optional[State] = None
):
    """``forward(*inputs)`` with the gradient ``backward``, each its own kernel.

    ``forward`` returns ``(y, *stats)``; the result is its first ``outputs``
    values (a tensor when ``outputs`` is 1), those after ``y`` without
    gradient. The gradient of ``y`` is ``backward(dy, *inputs, *stats)``, one
    gradient per input that is not None (None inputs are passed on as None;
    a gradient may be None). With :class:`Kernel` s for ``forward`` and
    ``backward``, inside a graph without XLA each is its own cluster: the
    compiled forward returns nothing but ``y`` and ``stats``, and the
    backward reads the inputs from the caller.

    ``state = (read, write)`` gives the backward a state that lives outside
    the kernels (a layer's variables): ``read()`` is called when the gradient
    is computed and its tensors are passed after ``stats``; the backward then
    returns the new state after the gradients, and ``write(*new_state)``
    receives it.

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
            if state is None:
                return list(backward(dy, *full, *stats))
            read, write = state
            result = list(backward(dy, *full, *stats, *read()))
            write(*result[len(present) :])
            return result[: len(present)]

        if outputs == 1:
            return y, grad
        return (y, *stats[: outputs - 1]), grad

    result = op(*[inputs[i] for i in present])
    if outputs == 1:
        return result
    return (result[0],) + tuple(tf.stop_gradient(t) for t in result[1:])


def _static_names(fn: Callable) -> Tuple[str, ...]:
    """The keyword-only parameters of ``fn``: the Python values a kernel is bound to."""
    return tuple(
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    )


class FusedOp:
    """A kernel: ``forward`` and its hand-written ``backward``, plus the plain-op ``fallback``.

    Calling the op with tensors (None for an absent optional one) and the
    Python values of the forward's and backward's keyword-only parameters
    binds each of the two to the values it names (:func:`bound_kernel`) and
    joins them with :func:`with_backward`. Where it runs:

    * executing eagerly: as plain TensorFlow ops, no compilation;
    * in a ``tf.function`` without XLA: the forward and the backward each as
      their own small XLA cluster, compiled once per shape, when the first
      input has at least ``MIN_XLA_ELEMENTS`` elements (at any size with
      ``threshold=False``), and as plain ops below that; the compiled forward
      returns the output and small statistics only, and the backward reads
      the inputs from the caller;
    * under ``jit_compile=True``: as part of the enclosing cluster.

    Without a ``backward`` the op is the forward alone, differentiated by
    autodiff. ``fallback`` is the same function through
    :func:`tfnorm.ops.moments` and autodiff, for the layouts
    :func:`tfnorm.ops.layout.fast_view` does not view; the public op calls it
    (it takes the public op's arguments).

    Example:
      >>> def fwd(x, *, power):
      ...     return (x ** power,)
      >>> def bwd(dy, x, *, power):
      ...     return [dy * power * x ** (power - 1)]
      >>> cube = FusedOp(fwd, bwd)
      >>> x = tf.constant([1.0, 2.0])
      >>> with tf.GradientTape() as tape:
      ...     tape.watch(x)
      ...     y = cube(x, power=3.0)
      >>> y.numpy().tolist(), tape.gradient(y, x).numpy().tolist()
      ([1.0, 8.0], [3.0, 12.0])
    """

    def __init__(
        self,
        forward: Callable,
        backward: Optional[Callable] = None,
        *,
        outputs: int = 1,
        threshold: bool = True,
        fallback: Optional[Callable] = None,
    ):
        self.forward = forward
        self.backward = backward
        self.outputs = outputs
        self.threshold = threshold
        self.fallback = fallback
        self._names = (
            _static_names(forward),
            _static_names(backward) if backward is not None else (),
        )

    def __call__(self, *inputs, state: Optional[State] = None, **static):
        fwd_names, bwd_names = self._names
        unknown = set(static) - set(fwd_names) - set(bwd_names)
        if unknown:
            raise TypeError(f"{self.forward.__name__} takes no static argument {sorted(unknown)}")
        forward = bound_kernel(
            self.forward,
            threshold=self.threshold,
            **{k: static[k] for k in fwd_names if k in static},
        )
        if self.backward is None:
            return forward(*inputs)
        backward = bound_kernel(
            self.backward,
            threshold=self.threshold,
            **{k: static[k] for k in bwd_names if k in static},
        )
        return with_backward(forward, backward, *inputs, outputs=self.outputs, state=state)
