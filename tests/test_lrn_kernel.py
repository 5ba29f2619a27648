"""``tfnorm.ops.lrn.lrn`` against NumPy on every path a kernel can take.

The generic harness checks the layer eagerly and inside small graphs; here
the forward and the hand-written backward are checked in float64 against a
NumPy forward written from Krizhevsky et al.'s equation (TensorFlow's
convention), and central differences of it, executing eagerly, in a
``tf.function`` with plain ops, with the kernel as its own XLA cluster, and
inside an enclosing XLA cluster; with each exponent that has its own
arithmetic, on either channel axis.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.kernel_paths import MODES, compiled
from tfnorm.ops.lrn import lrn


def np_lrn(x, radius, bias, alpha, beta, axis):
    """b[c] = a[c] / (bias + alpha * sum_{|j - c| <= radius} a[j]**2) ** beta."""
    xm = np.moveaxis(x, axis, -1)
    out = np.empty_like(xm)
    channels = xm.shape[-1]
    for c in range(channels):
        window = [j for j in range(channels) if abs(j - c) <= radius]
        sq = sum(xm[..., j] * xm[..., j] for j in window)
        out[..., c] = xm[..., c] * (bias + alpha * sq) ** (-beta)
    return np.moveaxis(out, -1, axis)


# id: (input shape, radius, bias, alpha, beta, axis)
CASES = {
    "nhwc-beta0.75": ((2, 3, 2, 7), 2, 2.0, 0.5, 0.75, 3),
    "nchw-radius-beyond-channels": ((2, 4, 3, 3), 5, 1.0, 1.0, 0.5, 1),
    "dense-beta1": ((3, 9), 1, 1.5, 0.3, 1.0, 1),
    "seq-beta0.25": ((2, 5, 6), 3, 1.0, 0.8, 0.25, 2),
    "beta1.5": ((2, 3, 6), 1, 2.0, 0.4, 1.5, 2),
    "beta2": ((2, 3, 6), 2, 3.0, 0.2, 2.0, 2),
    "general-power": ((2, 3, 6), 2, 1.0, 0.7, 0.3, 2),
    "beta0": ((2, 3, 6), 2, 1.0, 0.7, 0.0, 2),
    "radius0-middle-axis": ((2, 5, 3), 0, 0.5, 2.0, 0.5, 1),
}


def _numeric_grad(fn, x, w, eps=1e-6):
    grad = np.zeros_like(x)
    for i in range(x.size):
        for sign in (1.0, -1.0):
            pert = x.copy()
            pert.reshape(-1)[i] += sign * eps
            grad.reshape(-1)[i] += sign * np.sum(fn(pert) * w) / (2 * eps)
    return grad


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_output_and_gradient(name, mode):
    shape, radius, bias, alpha, beta, axis = CASES[name]
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape) * 1.5 + 0.3
    w = rng.normal(size=shape)

    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = lrn(x, radius, bias, alpha, beta, axis)
        return y, tape.gradient(y, x, output_gradients=w)

    y, dx = compiled(step, mode)(tf.constant(x), tf.constant(w))

    def fwd(v):
        return np_lrn(v, radius, bias, alpha, beta, axis)

    np.testing.assert_allclose(y.numpy(), fwd(x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx.numpy(), _numeric_grad(fwd, x, w), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_float32_matches_tensorflow_op(mode):
    """Channels last in float32: TensorFlow's own LRN op and its gradient, to float32 rounding."""
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(2, 4, 4, 16)).astype("float32") * 2.0)
    w = tf.constant(rng.normal(size=(2, 4, 4, 16)).astype("float32"))

    def step(x, w, op):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = op(x)
        return y, tape.gradient(y, x, output_gradients=w)

    got = compiled(lambda x, w: step(x, w, lambda v: lrn(v, 3, 2.0, 0.3, 0.75)), mode)(x, w)
    want = step(x, w, lambda v: tf.nn.local_response_normalization(v, 3, 2.0, 0.3, 0.75))
    for a, e in zip(got, want):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_float32_statistics(dtype, mode):
    """Sums of squares of values ~300 overflow float16: the statistics stay float32."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2, 3, 8)) * 300.0).astype(dtype if dtype == "float16" else "float32")
    xh = tf.cast(tf.constant(x), dtype)
    w = tf.cast(tf.constant(rng.normal(size=(2, 3, 8))), dtype)

    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = lrn(x, 2, 1.0, 1e-3, 0.75, -1)
        return y, tape.gradient(y, x, output_gradients=w)

    y, dx = compiled(step, mode)(xh, w)
    assert y.dtype == xh.dtype and dx.dtype == xh.dtype
    exact = np_lrn(tf.cast(xh, tf.float64).numpy(), 2, 1.0, 1e-3, 0.75, -1)
    tol = 1e-3 if dtype == "float16" else 1e-2
    np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), exact, rtol=tol, atol=tol)
    assert np.isfinite(tf.cast(dx, tf.float32).numpy()).all()


@pytest.mark.parametrize("mode", MODES)
def test_second_order_gradient(mode):
    """A gradient penalty differentiates the backward pass: it must be the exact derivative."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(2, 3, 6)) * 1.5)
    w = tf.constant(rng.normal(size=(2, 3, 6)))

    def plain(v):  # the same function by autodiff of explicit per-channel window sums
        sq = tf.square(v)
        sums = tf.stack([tf.reduce_sum(sq[..., max(0, c - 2) : c + 3], -1) for c in range(6)], -1)
        return v * tf.pow(2.0 + 0.5 * sums, -0.75)

    def penalty_grad(f, x):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(f(x) * w)
            penalty = tf.reduce_sum(inner.gradient(y, x) ** 2)
        return outer.gradient(penalty, x)

    want = penalty_grad(plain, x)
    got = compiled(lambda v: penalty_grad(lambda u: lrn(u, 2, 2.0, 0.5, 0.75), v), mode)(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-9)
