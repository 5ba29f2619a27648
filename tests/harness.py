"""The generic layer test harness: one descriptor per public layer configuration.

A :class:`Case` says how to build a layer, what input it takes and what the
paper says it computes (a NumPy reference written from the equations). The
tests in ``test_layers.py`` and ``test_serving.py`` run every check over every
case; adding a layer to tfnorm means adding cases to ``tests/descriptors/``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

Params = Dict[str, np.ndarray]
# reference(x, params, training) -> y ; x and params are float64 numpy arrays.
Reference = Callable[[np.ndarray, Params, bool], np.ndarray]


def default_input(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    return rng.normal(size=shape) * 1.5 + 0.3


def default_randomize(layer: keras.layers.Layer, rng: np.random.Generator) -> None:
    """Gives every weight non-trivial values (positive, so variances stay valid)."""
    for v in layer.weights:
        v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype(v.dtype))


@dataclasses.dataclass
class Case:
    """One layer configuration under test.

    Attributes:
      id: test id, unique.
      cls: the public layer class (coverage is counted per class).
      kwargs: constructor arguments.
      input_shape: full input shape, batch included, used for every check.
      reference: NumPy reference ``(x, params, training) -> y``.
      factory: builds the layer from ``**extra`` (e.g. ``dtype``); defaults to
        ``cls(**kwargs, **extra)``; wrappers override it.
      training_modes: values of ``training`` checked against the reference.
      gradient: ``"fd"`` (autodiff vs finite differences), ``"custom"`` (the
        layer defines its own backward: compare with ``grad_reference``), or
        None (no gradient check; say why in ``notes``).
      grad_reference: ``(x, params, training, dy) -> dx`` for ``"custom"``.
      grad_shape: smaller input shape for the finite-difference check.
      input_fn: makes float64 inputs ``(rng, shape) -> x``.
      randomize: sets the layer's weights ``(layer, rng)`` before checks.
      stateful: calls in training mode change the layer's state.
      mp_scale: input magnitude for the mixed-precision check (float16
        overflows x**2 for x ~ 300: the check proves float32 statistics).
      atol, rtol: float32 tolerances against the reference.
      call_kwargs: extra call arguments.
      notes: why something is skipped or special.
    """

    id: str
    cls: type
    kwargs: Dict[str, Any]
    input_shape: Tuple[int, ...]
    reference: Reference
    factory: Optional[Callable[..., keras.layers.Layer]] = None
    training_modes: Tuple[bool, ...] = (False, True)
    gradient: Optional[str] = "fd"
    grad_reference: Optional[Callable] = None
    grad_shape: Optional[Tuple[int, ...]] = None
    grad_training: bool = True
    input_fn: Callable = default_input
    randomize: Callable = default_randomize
    stateful: bool = False
    mp_scale: float = 300.0
    atol: float = 2e-5
    rtol: float = 2e-5
    call_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: str = ""

    def make(self, **extra) -> keras.layers.Layer:
        if self.factory is not None:
            return self.factory(**extra)
        return self.cls(**{**self.kwargs, **extra})

    def __repr__(self):  # short ids in pytest output
        return self.id


# ---------------------------------------------------------------------------
def params_of(layer: keras.layers.Layer) -> Params:
    """Weights by (short) name as float64 arrays."""
    out = {}
    for v in layer.weights:
        out[v.name] = np.asarray(v.numpy(), dtype=np.float64)
    return out


def built(case: Case, seed: int = 0, shape=None, **extra) -> keras.layers.Layer:
    """A layer built for ``shape`` with randomized weights."""
    layer = case.make(**extra)
    layer.build(tuple(shape or case.input_shape))
    case.randomize(layer, np.random.default_rng(seed))
    return layer


def call(layer, x, training, case: Case):
    return layer(x, training=training, **case.call_kwargs)


def state_of(layer) -> list:
    return [v.numpy() for v in layer.non_trainable_weights]


def restore(layer, state) -> None:
    for v, s in zip(layer.non_trainable_weights, state):
        v.assign(s)


def finite_difference_grads(case: Case, training: bool, seed: int = 0, eps: float = 1e-6):
    """Autodiff and central-difference gradients of ``sum(y * w)`` in float64.

    Returns a list of ``(name, autodiff, numeric)`` for the input and every
    trainable weight. The layer's non-trainable state is restored after every
    evaluation, so stateful layers are differentiated at a fixed state.
    """
    shape = tuple(case.grad_shape or case.input_shape)
    rng = np.random.default_rng(seed)
    layer = built(case, seed, shape, dtype="float64")
    x0 = case.input_fn(rng, shape).astype(np.float64)
    y0 = call(layer, tf.constant(x0), training, case)
    w = rng.normal(size=y0.shape)
    state = state_of(layer)
    restore(layer, state)

    def loss():
        y = call(layer, x_var, training, case)
        return tf.reduce_sum(y * w)

    x_var = tf.Variable(x0)
    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, [x_var] + list(layer.trainable_weights))
    restore(layer, state)

    results = []
    targets = [("input", x_var)] + [(v.name, v) for v in layer.trainable_weights]
    for (name, var), g in zip(targets, grads):
        base = np.array(var.numpy())
        num = np.zeros_like(base)
        flat = base.reshape(-1)
        for i in range(flat.size):
            for sign in (1.0, -1.0):
                pert = flat.copy()
                pert[i] += sign * eps
                var.assign(pert.reshape(base.shape))
                val = float(loss())
                restore(layer, state)
                num.reshape(-1)[i] += sign * val / (2 * eps)
        var.assign(base)
        g = np.zeros_like(base) if g is None else np.asarray(tf.convert_to_tensor(g))
        results.append((name, g, num))
    return results


def autodiff_input_grad(case: Case, training: bool, seed: int = 0):
    """``(x, params, dy, dx)`` with ``dx`` the layer's own gradient of ``sum(y * dy)``.

    For layers whose backward pass is prescribed by their paper (and so is not
    the derivative of the forward): the test compares ``dx`` with the case's
    ``grad_reference``.
    """
    shape = tuple(case.grad_shape or case.input_shape)
    rng = np.random.default_rng(seed)
    layer = built(case, seed, shape, dtype="float64")
    params = params_of(layer)
    x0 = case.input_fn(rng, shape).astype(np.float64)
    x = tf.constant(x0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = call(layer, x, training, case)
        dy = rng.normal(size=y.shape)
        loss = tf.reduce_sum(y * dy)
    return x0, params, dy, tape.gradient(loss, x).numpy()


def single_layer_model(case: Case, layer=None) -> keras.Model:
    layer = layer or case.make()
    inp = keras.Input(case.input_shape[1:], batch_size=None)
    return keras.Model(inp, layer(inp))


class NoWrites:
    """Makes every write into ``variables`` raise while active."""

    _WRITES = ("assign", "assign_add", "assign_sub")

    def __init__(self, variables):
        self.variables = variables

    def __enter__(self):
        def refuse(*args, **kwargs):
            raise AssertionError("a wrapper wrote into the wrapped layer's variable")

        for v in self.variables:
            for k in self._WRITES:
                setattr(v, k, refuse)
        return self

    def __exit__(self, *exc):
        for v in self.variables:
            for k in self._WRITES:
                delattr(v, k)
