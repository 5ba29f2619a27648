"""Dynamic Tanh, TLU, ScaleNorm and FRN ops against NumPy, on every path they can take.

``tfnorm.ops.dynamic_tanh``, ``tlu``, ``scale_norm`` and ``instance_norm(center=False)``
(filter response normalization) have hand-written gradients. They run as plain
ops eagerly, as their own XLA cluster inside a ``tf.function`` without XLA
(forced here at any size), and inlined in an enclosing XLA cluster; the layer
harness only sees tensors too small for the second path. Each path is checked
against NumPy forwards written from the papers' equations, and the gradients
against central differences of those forwards (float64).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.kernel_paths import MODES, compiled, numeric_grads
from tfnorm import ops


def _check(op, ref, arrays, mode, rtol=1e-6):
    """``op(*tensors)`` and its gradients against ``ref(*arrays)`` (float64)."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=ref(*arrays).shape)

    def step(*args):
        *inputs, w = args
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = op(*inputs)
        return y, tape.gradient(y, inputs, output_gradients=w)

    y, grads = compiled(step, mode)(*[tf.constant(a) for a in arrays + [w]])
    np.testing.assert_allclose(y.numpy(), ref(*arrays), rtol=1e-10, atol=1e-10)
    for k, (got, want) in enumerate(zip(grads, numeric_grads(ref, arrays, w))):
        np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=rtol, err_msg=f"input {k}")


# -- NumPy forwards (float64), from the papers' equations ---------------------------
def np_dyt(x, alpha, gamma, beta):
    return gamma * np.tanh(alpha * x) + beta  # Zhu et al. 2025, Eq. 1


def np_tlu(x, tau):
    return np.maximum(x, tau)  # Singh & Krishnan 2020, Eq. 3


def np_scale_norm(axes, epsilon):
    def f(x, g):  # Nguyen & Salazar 2019, Eq. 5
        norm = np.sqrt((x**2).sum(axis=axes, keepdims=True))
        return g * x / np.maximum(norm, epsilon)

    return f


def np_frn(x, gamma, beta, eps):  # Singh & Krishnan 2020, Eq. 1-2
    spatial = tuple(range(1, x.ndim - 1))
    nu2 = (x**2).mean(axis=spatial, keepdims=True)
    return gamma * x / np.sqrt(nu2 + np.abs(eps)) + beta


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "shape, pshape",
    [
        ((3, 4, 6), (6,)),  # channels last
        ((2, 3, 4, 2), (1, 3, 1, 1)),  # channels first
        ((2, 3, 4), (3, 4)),
    ],
)  # two trailing axes
def test_dynamic_tanh(shape, pshape, mode):
    rng = np.random.default_rng(0)
    arrays = [
        rng.normal(size=shape) * 2.0,
        np.array(0.7),
        rng.uniform(0.5, 1.5, size=pshape),
        rng.normal(size=pshape),
    ]
    _check(ops.dynamic_tanh, np_dyt, arrays, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape, pshape", [((3, 4, 4, 3), (3,)), ((2, 3, 5), (1, 3, 1))])
def test_tlu(shape, pshape, mode):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    tau = rng.uniform(-0.5, 0.5, size=pshape)
    # keep every x away from its threshold: max() has no derivative there
    x = np.where(np.abs(x - tau) < 1e-3, x + 0.01, x)
    _check(ops.tlu, np_tlu, [x, tau], mode)


@pytest.mark.parametrize("mode", MODES)
def test_tlu_ties_go_to_the_input(mode):
    """At x == tau the gradient flows to x, as for tf.maximum (not half to each)."""

    def step(x, tau):
        with tf.GradientTape() as tape:
            tape.watch([x, tau])
            y = ops.tlu(x, tau)
        return tape.gradient(y, [x, tau])

    x = tf.constant([[0.5, 0.25, -1.0]], tf.float32)
    tau = tf.constant([0.5, 0.0, 0.0], tf.float32)
    dx, dtau = compiled(step, mode)(x, tau)
    assert dx.numpy().tolist() == [[1.0, 1.0, 0.0]]
    assert dtau.numpy().tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "shape, axes", [((3, 4, 8), (2,)), ((2, 3, 4, 5), (2, 3)), ((2, 5, 3), (1,))]
)  # the last: not trailing
def test_scale_norm(shape, axes, mode):
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape) * 1.5 + 0.5
    x[0] *= 1e-4  # a sample whose norm is below epsilon: the bound is active there
    ref = np_scale_norm(axes, 1e-2)
    _check(lambda x, g: ops.scale_norm(x, axes, g, 1e-2), ref, [x, np.array(2.5)], mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 3), (3, 5, 2)])
def test_filter_response_normalization(shape, mode):
    rng = np.random.default_rng(3)
    c = shape[-1]
    arrays = [rng.normal(size=shape) * 1.5 + 1.0, rng.uniform(0.5, 1.5, c), rng.normal(size=c)]

    def op(x, g, b):
        return ops.instance_norm(x, -1, g, b, 1e-2, center=False)

    _check(op, lambda x, g, b: np_frn(x, g, b, 1e-2), arrays, mode)


@pytest.mark.parametrize("mode", MODES)
def test_filter_response_normalization_learned_epsilon(mode):
    """A tensor epsilon gets its gradient: the 1x1 spatial case, where it matters most."""
    rng = np.random.default_rng(4)
    arrays = [
        rng.normal(size=(4, 1, 1, 3)),
        rng.uniform(0.5, 1.5, 3),
        rng.normal(size=3),
        np.array(0.3),
    ]

    def op(x, g, b, e):
        return ops.instance_norm(x, -1, g, b, tf.abs(e), center=False)

    _check(op, np_frn, arrays, mode)


@pytest.mark.parametrize("mode", MODES)
def test_filter_response_normalization_channels_first(mode):
    """Channels not last: the generic path, same function."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 4, 2))
    g, b = rng.uniform(0.5, 1.5, 3), rng.normal(size=3)

    def ref(x, g, b):
        xt = np.moveaxis(x, 1, -1)
        return np.moveaxis(np_frn(xt, g, b, 1e-3), -1, 1)

    _check(lambda x, g, b: ops.instance_norm(x, 1, g, b, 1e-3, center=False), ref, [x, g, b], mode)


@pytest.mark.parametrize("mode", MODES)
def test_half_precision(mode):
    """float16 in and out; DyT and TLU in float16 element-wise, ScaleNorm and FRN statistics in
    float32 (inputs of 300 overflow a float16 sum of squares)."""
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(4, 6, 8)) * 300.0).astype(np.float16)
    xs = x.astype(np.float64)
    gamma, beta = rng.uniform(0.5, 1.5, 8), rng.normal(size=8)

    def run(x):
        return (
            ops.dynamic_tanh(x, 0.01, gamma, beta),
            ops.tlu(x, beta),
            ops.scale_norm(x, [-1], 2.0, 1e-5),
            ops.instance_norm(x, -1, gamma, beta, 1e-6, center=False),
        )

    refs = (
        np_dyt(xs, 0.01, gamma, beta),
        np_tlu(xs, beta.astype(np.float16)),
        np_scale_norm((2,), 1e-5)(xs, 2.0),
        np_frn(xs, gamma, beta, 1e-6),
    )
    for y, ref in zip(compiled(run, mode)(tf.constant(x)), refs):
        assert y.dtype == tf.float16
        y = y.numpy().astype(np.float64)
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, ref, rtol=2e-3, atol=2e-3 * max(1.0, np.abs(ref).max()))


def test_weights_of_another_dtype_are_cast():
    """float32 weights with a float64 input (the layers' float64 gradient checks)."""
    x = tf.constant([[0.5, -2.0]], tf.float64)
    y = ops.dynamic_tanh(x, tf.constant(1.0), tf.ones([2]), tf.zeros([2]))
    assert y.dtype == tf.float64
    np.testing.assert_allclose(y.numpy(), np.tanh([[0.5, -2.0]]), rtol=1e-12)


# autodiff versions of the same functions, for second-order gradients
_SECOND_ORDER = {
    "dyt": (
        lambda x, g: ops.dynamic_tanh(x, 0.7, g, tf.zeros_like(g)),
        lambda x, g: g * tf.tanh(0.7 * x),
    ),
    "scale": (
        lambda x, g: ops.scale_norm(x, [-1], g[0], 1e-3),
        lambda x, g: g[0] * x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), 1e-3),
    ),
    "frn": (
        lambda x, g: ops.instance_norm(x, -1, g, None, 1e-3, center=False),
        lambda x, g: g * x * tf.math.rsqrt(tf.reduce_mean(x * x, [1, 2], keepdims=True) + 1e-3),
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(_SECOND_ORDER))
def test_second_order_gradients(name, mode):
    """Gradient penalties differentiate the hand-written backward: it must be exact."""
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(2, 3, 3, 4)) * 1.5 + 0.5)
    g = tf.constant(rng.uniform(0.5, 1.5, 4))
    w = tf.constant(rng.normal(size=(2, 3, 3, 4)))
    fast, generic = _SECOND_ORDER[name]

    def penalty_grad(f, x, g):
        with tf.GradientTape() as outer:
            outer.watch([x, g])
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(f(x, g) * w)
            penalty = tf.reduce_sum(inner.gradient(y, x) ** 2)
        return outer.gradient(penalty, [x, g])

    want = penalty_grad(generic, x, g)
    got = compiled(lambda x, g: penalty_grad(fast, x, g), mode)(x, g)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-9, atol=1e-9)
