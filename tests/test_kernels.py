"""The fused normalization ops against NumPy, on every path they can take.

``tfnorm.ops.layer_norm`` & co. run as plain ops when executing eagerly, as
their own XLA cluster inside a ``tf.function`` without XLA, inlined in an
enclosing XLA cluster, and (training batch norm outside XLA, float32) through
TensorFlow's fused batch-norm op. The generic harness checks the layers'
gradients eagerly; here the outputs and the hand-written gradients are checked
on each path against NumPy: the forward written from the papers' equations,
the gradients by central differences of that NumPy forward.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.kernel_paths import MODES, compiled, numeric_grads
from tfnorm import ops
from tfnorm.ops import kernel


# -- NumPy forwards (float64) -------------------------------------------------------
def np_layer_norm(x, g, b, eps, axes):
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def np_rms_norm(x, g, b, eps, axes):
    return x / np.sqrt((x**2).mean(axis=axes, keepdims=True) + eps) * g


def np_batch_norm(x, g, b, eps, axes):
    red = tuple(range(x.ndim - 1))
    mu = x.mean(axis=red)
    var = ((x - mu) ** 2).mean(axis=red)
    return (x - mu) / np.sqrt(var + eps) * g + b


def np_group_norm(groups):
    def f(x, g, b, eps, axes):
        n, c = x.shape[0], x.shape[-1]
        xg = x.reshape(n, -1, groups, c // groups)
        mu = xg.mean(axis=(1, 3), keepdims=True)
        var = ((xg - mu) ** 2).mean(axis=(1, 3), keepdims=True)
        return ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape) * g + b

    return f


CASES = {
    # id: (tfnorm op (x, g, b, eps) -> y, numpy forward, input shape, param shape, axes, eps)
    "layer": (
        lambda x, g, b, e: ops.layer_norm(x, [-1], g, b, e),
        np_layer_norm,
        (3, 4, 6),
        (6,),
        (2,),
        1e-3,
    ),
    "layer-2axes": (
        lambda x, g, b, e: ops.layer_norm(x, [2, 3], g, b, e),
        np_layer_norm,
        (2, 3, 2, 4),
        (2, 4),
        (2, 3),
        1e-5,
    ),
    "rms": (lambda x, g, b, e: ops.rms_norm(x, [-1], g, e), np_rms_norm, (4, 5), (5,), (1,), 1e-6),
    "batch": (
        lambda x, g, b, e: ops.batch_norm(x, [-1], g, b, e)[0],
        np_batch_norm,
        (6, 3, 4),
        (4,),
        None,
        1e-3,
    ),
    "group": (
        lambda x, g, b, e: ops.group_norm(x, 2, -1, g, b, e),
        np_group_norm(2),
        (2, 3, 3, 8),
        (8,),
        None,
        1e-3,
    ),
    "instance": (
        lambda x, g, b, e: ops.instance_norm(x, -1, g, b, e),
        np_group_norm(4),
        (2, 3, 4),
        (4,),
        None,
        1e-3,
    ),
}


def _run(op, mode, x, g, b, w):
    def step(x, g, b, w):
        with tf.GradientTape() as tape:
            tape.watch([x, g, b])
            y = op(x, g, b)
        return y, tape.gradient(y, [x, g, b], output_gradients=w)

    args = [tf.constant(a) for a in (x, g, b, w)]
    return compiled(step, mode)(*args)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_outputs_and_gradients(name, mode):
    op, ref, shape, pshape, axes, eps = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) * 1.5 + 2.0
    g = rng.uniform(0.5, 1.5, size=pshape)
    b = rng.normal(size=pshape)
    w = rng.normal(size=shape)

    def fwd(x, g, b):
        return ref(x, g, b, eps, axes)

    y, grads = _run(lambda x, g, b: op(x, g, b, eps), mode, x, g, b, w)
    np.testing.assert_allclose(y.numpy(), fwd(x, g, b), rtol=1e-10, atol=1e-10)
    expected = numeric_grads(fwd, [x, g, b], w)
    for got, want, what in zip(grads, expected, ("x", "gamma", "beta")):
        got = np.zeros_like(want) if got is None else got.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"d/d{what}")


@pytest.mark.parametrize("mode", MODES)
def test_batch_norm_float32_statistics_and_gradients(mode):
    """float32 takes TensorFlow's fused op outside XLA: same numbers, biased variance."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 5, 5, 6)) * 2.0 + 3.0
    g = rng.uniform(0.5, 1.5, 6)
    b = rng.normal(size=6)
    w = rng.normal(size=x.shape)

    def step(x, g, b, w):
        with tf.GradientTape() as tape:
            tape.watch([x, g, b])
            y, mean, var = ops.batch_norm(x, [-1], g, b, 1e-3)
        return (y, mean, var), tape.gradient(y, [x, g, b], output_gradients=w)

    args = [tf.constant(a, tf.float32) for a in (x, g, b, w)]
    (y, mean, var), (dx, dg, db) = compiled(step, mode)(*args)
    red = (0, 1, 2)
    mu, v = x.mean(red), x.var(red)
    xhat = (x - mu) / np.sqrt(v + 1e-3)
    np.testing.assert_allclose(y.numpy(), xhat * g + b, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(mean.numpy(), mu, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(var.numpy(), v, atol=1e-5, rtol=1e-5)
    # Ioffe & Szegedy 2015, Sec. 3: the batch-norm backward pass
    dxhat = w * g
    want_dx = (dxhat - dxhat.mean(red) - xhat * (dxhat * xhat).mean(red)) / np.sqrt(v + 1e-3)
    np.testing.assert_allclose(dx.numpy(), want_dx, atol=2e-5, rtol=2e-4)
    np.testing.assert_allclose(dg.numpy(), (w * xhat).sum(red), atol=2e-4, rtol=2e-5)
    np.testing.assert_allclose(db.numpy(), w.sum(red), atol=2e-4, rtol=2e-5)


@pytest.mark.parametrize("mode", MODES)
def test_half_precision_input_float32_statistics(mode):
    """bfloat16 in, bfloat16 out, float32 statistics: large inputs stay finite and right."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 16)) * 300.0 + 1000.0
    xb = tf.cast(tf.constant(x, tf.float32), tf.bfloat16)
    xs = tf.cast(xb, tf.float64).numpy()

    def run(x):
        return (
            ops.layer_norm(x, [-1]),
            ops.rms_norm(x, [-1]),
            ops.batch_norm(x, [-1])[0],
            ops.group_norm(x, 4, -1),
        )

    fn = run if mode == "eager" else tf.function(run, jit_compile=(mode == "xla"))
    refs = (
        np_layer_norm(xs, 1.0, 0.0, 1e-3, (-1,)),
        np_rms_norm(xs, 1.0, 0.0, 1e-6, (-1,)),
        np_batch_norm(xs, 1.0, 0.0, 1e-3, None),
        np_group_norm(4)(xs, 1.0, 0.0, 1e-3, None),
    )
    for y, ref in zip(fn(xb), refs):
        assert y.dtype == tf.bfloat16
        y = tf.cast(y, tf.float64).numpy()
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, ref, atol=3e-2 * max(1.0, np.abs(ref).max()))


def test_plain_ops_when_xla_kernels_are_disabled(monkeypatch):
    """TFNORM_XLA_KERNELS=0: no XLA cluster inside a graph, same numbers."""
    monkeypatch.setattr(kernel, "MIN_XLA_ELEMENTS", 0)
    monkeypatch.setenv("TFNORM_XLA_KERNELS", "0")
    x = tf.constant(np.random.default_rng(3).normal(size=(3, 8)))
    fn = tf.function(lambda x: ops.layer_norm(x, [-1]))
    graph = fn.get_concrete_function(x).graph.as_graph_def()
    flags = [n.attr["_XlaMustCompile"].b for n in graph.node if "_XlaMustCompile" in n.attr]
    assert not any(flags)
    np.testing.assert_allclose(
        fn(x).numpy(), np_layer_norm(x.numpy(), 1.0, 0.0, 1e-3, (-1,)), atol=1e-12
    )
    monkeypatch.setenv("TFNORM_XLA_KERNELS", "1")
    fn2 = tf.function(lambda x: ops.layer_norm(x, [-1]))
    graph2 = fn2.get_concrete_function(x).graph.as_graph_def()
    assert any(n.attr["_XlaMustCompile"].b for n in graph2.node if "_XlaMustCompile" in n.attr)


def _generic(name):
    """The same functions through ops.moments / ops.group_moments and autodiff."""

    def layer(x, g, b):
        mean, var = ops.moments(x, [x.shape.rank - 1])
        return ops.normalize(x, mean, var, g, b, 1e-3)

    def group(x, g, b):
        mean, var = ops.group_moments(x, 2, x.shape.rank - 1, list(range(1, x.shape.rank - 1)))
        return ops.normalize(x, mean, var, g, b, 1e-3)

    def batch(x, g, b):
        mean, var = ops.moments(x, list(range(x.shape.rank - 1)))
        return ops.normalize(x, mean, var, g, b, 1e-3)

    return {"layer": layer, "group": group, "batch": batch}[name]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["layer", "group", "batch"])
def test_second_order_gradients(name, mode):
    """Gradient penalties differentiate the backward pass: the hand-written one must be exact."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(2, 3, 3, 4)) * 1.5 + 0.5)
    g = tf.constant(rng.uniform(0.5, 1.5, 4))
    b = tf.constant(rng.normal(size=4))
    w = tf.constant(rng.normal(size=(2, 3, 3, 4)))
    fast = {
        "layer": lambda x, g, b: ops.layer_norm(x, [-1], g, b, 1e-3),
        "group": lambda x, g, b: ops.group_norm(x, 2, -1, g, b, 1e-3),
        "batch": lambda x, g, b: ops.batch_norm(x, [-1], g, b, 1e-3)[0],
    }[name]

    def penalty_grad(f, x, g):
        with tf.GradientTape() as outer:
            outer.watch([x, g])
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(f(x, g, b) * w)
            penalty = tf.reduce_sum(inner.gradient(y, x) ** 2)
        return outer.gradient(penalty, [x, g])

    want = penalty_grad(_generic(name), x, g)
    got = compiled(lambda x, g: penalty_grad(fast, x, g), mode)(x, g)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-9, atol=1e-9)


def test_xla_context_is_detected():
    """``in_xla`` sees ``jit_compile=True`` and nothing else (the sums' CPU path keys off it).

    It reads a TensorFlow-internal context; if a TensorFlow release moves it,
    the ops fall back to plain reductions (still correct, slower) and this
    test is the one that says so.
    """
    from tfnorm.ops import reduce

    seen = {}

    def probe(key):
        def f(x):
            seen[key] = reduce.in_xla()
            return x * 2.0

        return f

    x = tf.ones([2])
    probe("eager")(x)
    tf.function(probe("graph"))(x)
    tf.function(probe("xla"), jit_compile=True)(x)
    assert seen == {"eager": False, "graph": False, "xla": True}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape, axes", [((6, 5), (0,)), ((3, 3, 4, 5), (0, 1, 2)), ((4, 7), (1,))])
def test_inverse_norm(shape, axes, mode):
    """``1/||w||`` over ``axes`` (the per-unit scale of weight normalization) and its gradient."""

    def ref(w):
        return 1.0 / np.sqrt((w**2).sum(axis=axes, keepdims=True))

    w = np.random.default_rng(3).normal(size=shape)
    dy = np.random.default_rng(4).normal(size=ref(w).shape)

    def step(w, dy):
        with tf.GradientTape() as tape:
            tape.watch(w)
            y = ops.inverse_norm(w, axes)
        return y, tape.gradient(y, w, output_gradients=dy)

    y, grad = compiled(step, mode)(tf.constant(w), tf.constant(dy))
    np.testing.assert_allclose(y.numpy(), ref(w), rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), numeric_grads(ref, [w], dy)[0], rtol=1e-6, atol=1e-8)


def test_inverse_norm_of_zero_is_finite():
    y = ops.inverse_norm(tf.zeros([3, 2]), [0]).numpy()
    assert np.all(np.isfinite(y)) and y.shape == (1, 2)
