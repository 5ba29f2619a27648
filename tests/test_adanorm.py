"""AdaNorm and DetachNormalization: the gradients Xu et al. 2019 prescribe."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tests.descriptors.seed import adanorm_grad_reference, detach_grad_reference


def _grad(layer, x, dz):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * dz)
    return tape.gradient(loss, x).numpy()


def _finite_difference(fn, x, dz, eps=1e-6):
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        for sign in (1, -1):
            xp = x.copy()
            xp[i] += sign * eps
            out[i] += sign * np.sum(fn(xp) * dz) / (2 * eps)
    return out


def _full_adanorm(x, k, c, eps):
    """z = C (1 - k y) y with nothing detached (what AdaNorm must NOT differentiate)."""
    xc = x - x.mean(-1, keepdims=True)
    y = xc / (np.sqrt((xc**2).sum(-1, keepdims=True) / (x.shape[-1] - 1)) + eps)
    return c * (1 - k * y) * y


def test_adanorm_gradient_is_the_detached_formula_not_autodiff_of_the_forward():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6)) * 2 + 1
    dz = rng.normal(size=x.shape)
    k, c, eps = 0.3, 1.5, 1e-5
    dx = _grad(tfnorm.AdaNorm(k=k, c=c, epsilon=eps, dtype="float64"), x, dz)
    np.testing.assert_allclose(
        dx, adanorm_grad_reference(k=k, c=c, epsilon=eps)(x, {}, True, dz), rtol=1e-9, atol=1e-12
    )
    full = _finite_difference(lambda t: _full_adanorm(t, k, c, eps), x, dz)
    assert np.abs(dx - full).max() > 0.05  # detaching phi changes the gradient


def test_adanorm_with_k_zero_differentiates_mean_and_std_exactly():
    """With k = 0 nothing is detached: the gradient is the full derivative (mean, std included)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5)) + 0.5
    dz = rng.normal(size=x.shape)
    dx = _grad(tfnorm.AdaNorm(k=0.0, c=2.0, dtype="float64"), x, dz)
    np.testing.assert_allclose(
        dx,
        _finite_difference(lambda t: _full_adanorm(t, 0.0, 2.0, 1e-5), x, dz),
        rtol=1e-5,
        atol=1e-7,
    )


def test_adanorm_constant_sample_has_finite_gradient():
    x = np.full((2, 4), 3.0, "float32")
    dx = _grad(tfnorm.AdaNorm(), x, np.ones_like(x))
    assert np.isfinite(dx).all()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_adanorm_large_and_constant_half_precision_input(policy):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 8)) * 3 + 1e4
    layer = tfnorm.AdaNorm(dtype=policy)
    compute = policy.split("_")[1]
    y = layer(tf.cast(x, compute)).numpy().astype(np.float64)
    half_x = tf.cast(tf.cast(x, compute), tf.float64).numpy()
    np.testing.assert_allclose(y, tfnorm.AdaNorm(dtype="float64")(half_x).numpy(), atol=5e-2)
    constant = layer(tf.fill([2, 8], tf.constant(1e4, compute))).numpy()
    np.testing.assert_array_equal(constant, 0.0)


def test_detach_forward_is_layernorm_simple_and_gradient_is_detached():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 8)) * 3 + 2
    dz = rng.normal(size=x.shape)
    detach = tfnorm.DetachNormalization(epsilon=1e-5, dtype="float64")
    simple = tfnorm.LayerNormalization(center=False, scale=False, epsilon=1e-5, dtype="float64")
    np.testing.assert_allclose(detach(x).numpy(), simple(x).numpy(), rtol=1e-12, atol=1e-12)
    dx = _grad(detach, x, dz)
    np.testing.assert_allclose(
        dx, detach_grad_reference(epsilon=1e-5)(x, {}, True, dz), rtol=1e-12, atol=1e-12
    )
    assert np.abs(dx - _grad(simple, x, dz)).max() > 0.05


@pytest.mark.parametrize(
    "cls, kwargs, argname",
    [
        (tfnorm.AdaNorm, dict(k=-0.1), "k"),
        (tfnorm.AdaNorm, dict(c=0.0), "c"),
        (tfnorm.AdaNorm, dict(epsilon=0.0), "epsilon"),
        (tfnorm.AdaNorm, dict(axis="x"), "axis"),
        (tfnorm.DetachNormalization, dict(epsilon=-1.0), "epsilon"),
    ],
)
def test_bad_arguments_are_named(cls, kwargs, argname):
    with pytest.raises((ValueError, TypeError), match=argname):
        cls(**kwargs)
