"""The EvoNorm ops against NumPy on every path they can take.

``tfnorm.ops.evonorm_b0`` / ``evonorm_s0`` run as plain ops eagerly, as plain
ops in a graph (small tensors), as their own XLA cluster inside a graph, and
inlined in an enclosing XLA cluster. The generic harness checks the layers
eagerly and under XLA; here the outputs and the hand-written gradients are
checked on each path in float64: the forward written from Liu et al. 2020
(Table 1), the gradients by central differences of that NumPy forward.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.kernel_paths import MODES, compiled, numeric_grads
from tfnorm.ops import kernel
from tfnorm.ops.evonorm import evonorm_b0, evonorm_s0


# -- NumPy forwards (float64, channels last) ----------------------------------------
def np_b0_parts(x, v1, eps, variance=None):
    """(left, right) of the max: sqrt(s2_b + eps) and v1 x + sqrt(s2_i + eps)."""
    sp = tuple(range(1, x.ndim - 1))
    s2b = x.var(axis=(0,) + sp) if variance is None else variance
    s2i = x.var(axis=sp, keepdims=True)
    return np.sqrt(s2b + eps), v1 * x + np.sqrt(s2i + eps)


def np_b0(x, v1, g, b, eps, variance=None):
    left, right = np_b0_parts(x, v1, eps, variance)
    return x / np.maximum(left, right) * g + b


def np_s0(groups):
    def f(x, v1, g, b, eps, variance=None):
        n, c = x.shape[0], x.shape[-1]
        xg = x.reshape(n, -1, groups, c // groups)
        var = np.broadcast_to(xg.var(axis=(1, 3), keepdims=True), xg.shape).reshape(x.shape)
        return x / (1.0 + np.exp(-v1 * x)) / np.sqrt(var + eps) * g + b

    return f


# id: (op, numpy forward, input shape, affine, given variance)
CASES = {
    "b0-train": ("b0", np_b0, (3, 2, 3, 4), True, False),
    "b0-train-plain": ("b0", np_b0, (4, 5, 3), False, False),
    "b0-given-variance": ("b0", np_b0, (3, 2, 3, 4), True, True),
    "s0-groups": ("s0", np_s0(2), (2, 3, 2, 4), True, False),
    "s0-instance-plain": ("s0", np_s0(3), (2, 5, 3), False, False),
    "s0-dense": ("s0", np_s0(2), (5, 6), True, False),
}


def _inputs(shape, seed):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = rng.normal(size=shape) * 1.5 + 0.3
    v1 = rng.uniform(-1.5, 1.5, c)
    g = rng.uniform(0.5, 1.5, c)
    b = rng.normal(size=c)
    var = rng.uniform(0.5, 3.0, c)
    w = rng.normal(size=shape)
    return x, v1, g, b, var, w


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_outputs_and_gradients(name, mode):
    which, ref, shape, affine, given = CASES[name]
    x, v1, g, b, var, w = _inputs(shape, sum(map(ord, name)))
    eps = 1e-3
    groups = {"s0-groups": 2, "s0-instance-plain": 3, "s0-dense": 2}.get(name)
    if which == "b0":
        left, right = np_b0_parts(x, v1, eps, var if given else None)
        # both sides of the max occur, and no element sits on the kink
        assert (right > left).any() and (right < left).any()
        assert np.abs(right - left).min() > 1e-3

    def op(x, v1, g, b, var):
        gg, bb = (g, b) if affine else (None, None)
        if which == "b0":
            return evonorm_b0(x, -1, v1, gg, bb, eps, variance=var if given else None)
        return evonorm_s0(x, groups, -1, v1, gg, bb, eps), None

    def step(x, v1, g, b, var, w):
        with tf.GradientTape() as tape:
            tape.watch([x, v1, g, b, var])
            y, s2b = op(x, v1, g, b, var)
        grads = tape.gradient(y, [x, v1, g, b, var], output_gradients=w)
        return y, s2b, grads

    args = [tf.constant(a) for a in (x, v1, g, b, var, w)]
    y, s2b, grads = compiled(step, mode)(*args)

    def fwd(x, v1, g, b, var):
        if not affine:
            g, b = 1.0, 0.0
        return ref(x, v1, g, b, eps, var if given else None)

    np.testing.assert_allclose(y.numpy(), fwd(x, v1, g, b, var), rtol=1e-10, atol=1e-10)
    if which == "b0":
        want = var if given else x.var(axis=tuple(range(x.ndim - 1)))
        np.testing.assert_allclose(s2b.numpy(), want, rtol=1e-10, atol=1e-12)
    expected = numeric_grads(fwd, [x, v1, g, b, var], w)
    for got, want, what in zip(grads, expected, ("x", "v1", "gamma", "beta", "variance")):
        got = np.zeros_like(want) if got is None else got.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"d/d{what}")


@pytest.mark.parametrize("mode", MODES)
def test_half_precision_input_float32_statistics(mode):
    """bfloat16 in and out, float32 statistics and maths: large inputs stay finite and right."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 6, 8)) * 300.0 + 1000.0
    xb = tf.cast(tf.constant(x, tf.float32), tf.bfloat16)
    xs = tf.cast(xb, tf.float64).numpy()
    v1 = rng.uniform(-0.01, 0.01, 8)
    g = rng.uniform(0.5, 1.5, 8)
    b = rng.normal(size=8)

    def run(x):
        p = [tf.constant(a, tf.float32) for a in (v1, g, b)]
        y0, s2b = evonorm_b0(x, -1, *p, epsilon=1e-5)
        return y0, s2b, evonorm_s0(x, 4, -1, *p, epsilon=1e-5)

    y0, s2b, y1 = compiled(run, mode)(xb)
    assert y0.dtype == y1.dtype == tf.bfloat16 and s2b.dtype == tf.float32
    np.testing.assert_allclose(s2b.numpy(), xs.var(axis=(0, 1)), rtol=1e-5)
    for y, ref in ((y0, np_b0(xs, v1, g, b, 1e-5)), (y1, np_s0(4)(xs, v1, g, b, 1e-5))):
        y = tf.cast(y, tf.float64).numpy()
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, ref, atol=2e-2 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("op", ["b0", "s0"])
def test_kernel_is_its_own_xla_cluster_inside_a_graph(op, monkeypatch):
    """Above the size threshold the ops compile on their own in a graph without XLA."""
    monkeypatch.setattr(kernel, "MIN_XLA_ELEMENTS", 0)
    x = tf.constant(np.random.default_rng(6).normal(size=(2, 3, 4)), tf.float32)
    v1 = tf.ones([4])
    if op == "b0":
        fn = tf.function(lambda x: evonorm_b0(x, -1, v1)[0])
    else:
        fn = tf.function(lambda x: evonorm_s0(x, 2, -1, v1))
    graph = fn.get_concrete_function(x).graph.as_graph_def()
    assert any(n.attr["_XlaMustCompile"].b for n in graph.node if "_XlaMustCompile" in n.attr)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["b0", "s0"])
def test_second_order_gradients(which, mode):
    """Gradient penalties differentiate the hand-written backward: it must match autodiff's.

    The reference is the channels-first layout of the same input, which the
    ops compute with plain moments and autodiff.
    """
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(3, 4, 4, 4)) * 1.5 + 0.5)
    v1 = tf.constant(rng.uniform(-1.0, 1.0, 4))
    g = tf.constant(rng.uniform(0.5, 1.5, 4))
    b = tf.constant(rng.normal(size=4))
    w = tf.constant(rng.normal(size=(3, 4, 4, 4)))

    def op(x, v1, g, axis):
        if which == "b0":
            return evonorm_b0(x, axis, v1, g, b, 1e-3)[0]
        return evonorm_s0(x, 2, axis, v1, g, b, 1e-3)

    def penalty_grad(x, v1, g, channels_first):
        with tf.GradientTape() as outer:
            outer.watch([x, v1, g])
            with tf.GradientTape() as inner:
                inner.watch(x)
                xin = tf.transpose(x, [0, 3, 1, 2]) if channels_first else x
                y = op(xin, v1, g, 1 if channels_first else -1)
                if channels_first:
                    y = tf.transpose(y, [0, 2, 3, 1])
                value = tf.reduce_sum(y * w)
            penalty = tf.reduce_sum(inner.gradient(value, x) ** 2)
        return outer.gradient(penalty, [x, v1, g])

    want = penalty_grad(x, v1, g, True)
    got = compiled(lambda x, v1, g: penalty_grad(x, v1, g, False), mode)(x, v1, g)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-8, atol=1e-8)
