"""Cosine layers: bounded, invariant as a cosine must be, equal to the Keras twins rescaled."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfnorm

LAYERS = {
    "dense": (lambda **kw: tfnorm.CosineDense(4, **kw), (3, 10)),
    "conv1d": (lambda **kw: tfnorm.CosineConv1D(4, 3, padding="same", **kw), (2, 9, 3)),
    "conv2d": (lambda **kw: tfnorm.CosineConv2D(4, (3, 2), **kw), (2, 6, 5, 3)),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize(
    "kw",
    [{}, {"use_bias": True}, {"centered": True, "use_bias": True}],
    ids=["plain", "bias", "centered-bias"],
)
def test_outputs_are_cosines_within_bounds(name, kw):
    make, shape = LAYERS[name]
    layer = make(**kw)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 1e3 + 50).astype("float32")
    layer.build(shape)
    if layer.bias is not None:
        layer.bias.assign(rng.normal(size=layer.bias.shape) * 3)
    y = layer(x).numpy()
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0 + 1e-6
    # a filter equal to an input vector gives a cosine of 1 (dense: the first input row)
    if name == "dense" and not kw:
        layer.kernel.assign(np.repeat(x[:1].T, 4, axis=1))
        np.testing.assert_allclose(layer(x).numpy()[0], 1.0, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_plain_cosine_is_invariant_to_input_scale(name):
    make, shape = LAYERS[name]
    layer = make()
    x = np.random.default_rng(1).normal(size=shape).astype("float32") + 0.2
    np.testing.assert_allclose(layer(x * 37.0).numpy(), layer(x).numpy(), atol=2e-6)


@pytest.mark.parametrize("name", ["dense", "conv2d"])  # conv2d: "valid", no zero padding
def test_centered_cosine_is_invariant_to_input_shift(name):
    make, shape = LAYERS[name]
    layer = make(centered=True)
    x = np.random.default_rng(2).normal(size=shape).astype("float32")
    np.testing.assert_allclose(layer(x + 5.0).numpy(), layer(x).numpy(), atol=5e-5)
    assert not np.allclose(make()(x + 5.0).numpy(), make()(x).numpy(), atol=1e-2)


@pytest.mark.parametrize("name", ["dense", "conv1d", "conv2d"])  # conv1d: "same" padding
def test_centered_cosine_of_a_large_offset_in_float16(name):
    """A common offset of 1e4 must not cancel the centred sums nor swamp the float16 product."""
    make, shape = LAYERS[name]
    rng = np.random.default_rng(6)
    x = (rng.normal(size=shape) * 50 + 1e4).astype("float16")  # float16 spacing at 1e4: 8
    exact = make(centered=True, dtype="float64")
    half = make(centered=True, dtype="mixed_float16")
    exact.build(shape)
    half.build(shape)
    half.set_weights(exact.get_weights())
    expected = exact(x.astype(np.float64)).numpy()
    assert np.abs(expected).max() > 0.3  # a real signal, not only epsilon
    y = half(x).numpy().astype(np.float64)
    np.testing.assert_allclose(y, expected, atol=3e-2)


def test_dense_equals_keras_dense_divided_by_the_norms():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 7)).astype("float32")
    cos = tfnorm.CosineDense(3, epsilon=1e-12)
    dense = keras.layers.Dense(3, use_bias=False)
    cos.build(x.shape)
    dense.build(x.shape)
    dense.kernel.assign(cos.kernel.numpy())
    w = cos.kernel.numpy()
    norms = np.linalg.norm(x, axis=1, keepdims=True) * np.linalg.norm(w, axis=0)
    expected = dense(x).numpy() / norms
    np.testing.assert_allclose(cos(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_conv2d_equals_keras_conv_divided_by_the_norms():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    cos = tfnorm.CosineConv2D(4, 3, strides=2, padding="same", epsilon=1e-12)
    conv = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False)
    cos.build(x.shape)
    conv.build(x.shape)
    conv.kernel.assign(cos.kernel.numpy())
    # patch norms from a Keras conv of x**2 with a ones kernel
    ones = keras.layers.Conv2D(
        1, 3, strides=2, padding="same", use_bias=False, kernel_initializer="ones"
    )
    patch = np.sqrt(ones(x**2).numpy())
    w = np.linalg.norm(cos.kernel.numpy().reshape(-1, 4), axis=0)
    np.testing.assert_allclose(cos(x).numpy(), conv(x).numpy() / patch / w, rtol=1e-4, atol=1e-5)


def test_compute_output_shape_for_every_padding():
    x = np.zeros((2, 11, 3), "float32")
    for padding in ("valid", "same", "causal"):
        for strides, dilation in ((1, 1), (3, 1), (1, 2)):
            layer = tfnorm.CosineConv1D(
                2, 4, strides=strides, padding=padding, dilation_rate=dilation
            )
            assert tuple(layer(x).shape) == layer.compute_output_shape(x.shape), (
                padding,
                strides,
                dilation,
            )


def test_channels_first_matches_channels_last():
    x = np.random.default_rng(5).normal(size=(2, 7, 6, 3)).astype("float32")
    last = tfnorm.CosineConv2D(2, 3, centered=True, data_format="channels_last")
    first = tfnorm.CosineConv2D(2, 3, centered=True, data_format="channels_first")
    last.build(x.shape)
    first.build((2, 3, 7, 6))
    first.kernel.assign(last.kernel.numpy())
    y = first(np.transpose(x, (0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(np.transpose(y, (0, 2, 3, 1)), last(x).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "factory, argname",
    [
        (lambda: tfnorm.CosineDense(0), "units"),
        (lambda: tfnorm.CosineDense(3, epsilon=0.0), "epsilon"),
        (lambda: tfnorm.CosineConv2D(3, (3, 3, 3)), "kernel_size"),
        (lambda: tfnorm.CosineConv2D(3, 3, padding="causal"), "padding"),
        (lambda: tfnorm.CosineConv1D(3, 3, padding="full"), "padding"),
        (lambda: tfnorm.CosineConv2D(3, 3, strides=2, dilation_rate=2), "dilation_rate"),
        (lambda: tfnorm.CosineConv1D(3, 3, data_format="NCW"), "data_format"),
        (lambda: tfnorm.CosineConv1D(0, 3), "filters"),
    ],
)
def test_bad_arguments_are_named(factory, argname):
    with pytest.raises(ValueError, match=argname):
        factory()


def test_wrong_input_rank_is_explained():
    with pytest.raises(ValueError, match="rank 4"):
        tfnorm.CosineConv2D(2, 3)(np.zeros((2, 5, 3), "float32"))
