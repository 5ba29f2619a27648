"""fold_normalization: inference-time normalizations folded into the neighbouring linear layers.

Every fold is checked against the unfolded model's inference outputs (moving
statistics, gamma and beta randomized, so that a fold that drops or misplaces
any of them shows), and the folded weights against NumPy written from the
equations. Tolerances are relative to the size of the outputs: float32
arithmetic in another order, not a loosened comparison. keras.applications
models (weights=None, no download) check real graphs, saving, SavedModel
export served without tfnorm, and TFLite conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfnorm
from tests.test_swap import Subclassed
from tests.test_tflite import BUILTIN, _convert, _interpret
from tfnorm.fold import FoldReport

RNG = np.random.default_rng(11)
BATCH_NORMS = (keras.layers.BatchNormalization, tfnorm.BatchNormalization)
# |folded - original| <= TOL * max|original|: float32 rounding of a reordered sum
TOL = 1e-5


# --------------------------------------------------------------------------------------
# utilities
# --------------------------------------------------------------------------------------


def x_of(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def predict(model, x):
    return np.asarray(model(x, training=False))


def randomize_bn(bn, rng=RNG):
    """Moving statistics, gamma and beta far from their initial values."""
    c = bn.moving_mean.shape[0]
    bn.moving_mean.assign(rng.normal(0.0, 1.0, c).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.2, 4.0, c).astype("float32"))
    if getattr(bn, "gamma", None) is not None:
        bn.gamma.assign((rng.uniform(0.3, 2.0, c) * rng.choice([-1, 1], c)).astype("float32"))
    if getattr(bn, "beta", None) is not None:
        bn.beta.assign(rng.normal(0.0, 1.0, c).astype("float32"))


def randomize_all_bn(model, rng=RNG):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, BATCH_NORMS):
            randomize_bn(layer, rng)
    return model


def randomize_biases(model, rng=RNG):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "bias", None) is not None and not isinstance(layer, BATCH_NORMS):
            layer.bias.assign(rng.normal(0.0, 0.5, layer.bias.shape).astype("float32"))


def snapshot(model):
    """Every variable's bytes, and the model's config: a bit-for-bit picture."""
    values = [
        (v.path, v.dtype, hashlib.sha256(np.ascontiguousarray(v.numpy()).tobytes()).hexdigest())
        for v in model.weights
    ]
    return values, json.dumps(model.get_config(), sort_keys=True, default=str)


def count(model, classes):
    return sum(
        isinstance(layer, classes)
        for layer in model._flatten_layers(include_self=False, recursive=True)
    )


def assert_same_function(old, new, x, tol=TOL):
    want, got = predict(old, x), predict(new, x)
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    assert scale > 1e-3, "outputs too small to tell anything"
    err = float(np.abs(got - want).max())
    assert err <= tol * scale, f"max |folded - original| = {err:.3g} for outputs up to {scale:.3g}"
    return err / scale


def fold_checked(model, x):
    """Folds ``model``, checking that the input model is left bit-for-bit as it was and
    shares nothing with the result."""
    before = snapshot(model)
    y_before = predict(model, x)
    new = tfnorm.fold_normalization(model)
    assert snapshot(model) == before
    np.testing.assert_array_equal(predict(model, x), y_before)
    old_ids = {id(v) for v in model.weights}
    assert not old_ids & {id(v) for v in new.weights}
    old_layers = {id(layer) for layer in model._flatten_layers()}
    assert not old_layers & {id(layer) for layer in new._flatten_layers()}
    assert isinstance(new.fold_report, FoldReport)
    return new


def record(new, path):
    (found,) = [r for r in new.fold_report if r.path == path]
    return found


# --------------------------------------------------------------------------------------
# BatchNormalization after a linear layer
# --------------------------------------------------------------------------------------


def _after(linear, shape, bn):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, bn(linear(inputs)))
    randomize_bn(bn)
    randomize_biases(model)
    return model


AFTER = {
    "dense": (lambda: keras.layers.Dense(5, name="lin"), (6,), -1),
    "dense-rank3": (lambda: keras.layers.Dense(5, name="lin"), (3, 6), -1),
    "conv1d": (lambda: keras.layers.Conv1D(4, 3, name="lin"), (9, 3), -1),
    "conv1d-causal": (lambda: keras.layers.Conv1D(4, 3, padding="causal", name="lin"), (9, 3), -1),
    "conv2d": (lambda: keras.layers.Conv2D(4, 3, padding="same", name="lin"), (7, 7, 3), -1),
    "conv2d-groups": (lambda: keras.layers.Conv2D(6, 3, groups=3, name="lin"), (7, 7, 3), -1),
    "conv2d-strided": (
        lambda: keras.layers.Conv2D(4, 3, strides=2, dilation_rate=1, name="lin"),
        (8, 8, 3),
        -1,
    ),
    "conv3d": (lambda: keras.layers.Conv3D(3, 2, name="lin"), (5, 5, 5, 2), -1),
    "depthwise2d": (
        lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="lin"),
        (7, 7, 3),
        -1,
    ),
    "depthwise1d": (
        lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=3, name="lin"),
        (9, 2),
        -1,
    ),
    "conv2d-channels-first": (
        lambda: keras.layers.Conv2D(4, 3, data_format="channels_first", name="lin"),
        (3, 7, 7),
        1,
    ),
    "conv1d-channels-first": (
        lambda: keras.layers.Conv1D(4, 3, data_format="channels_first", name="lin"),
        (3, 9),
        1,
    ),
    "conv2d-no-bias": (
        lambda: keras.layers.Conv2D(4, 3, use_bias=False, name="lin"),
        (7, 7, 3),
        -1,
    ),
    "depthwise-no-bias": (
        lambda: keras.layers.DepthwiseConv2D(3, use_bias=False, name="lin"),
        (7, 7, 3),
        -1,
    ),
    "dense-no-bias": (lambda: keras.layers.Dense(5, use_bias=False, name="lin"), (6,), -1),
}


@pytest.mark.parametrize("bn_cls", BATCH_NORMS, ids=["keras-bn", "tfnorm-bn"])
@pytest.mark.parametrize("case", sorted(AFTER))
def test_batch_norm_after_a_linear_layer_folds_into_it(case, bn_cls):
    make, shape, axis = AFTER[case]
    model = _after(make(), shape, bn_cls(axis=axis, name="bn"))
    x = x_of((2,) + shape)
    new = fold_checked(model, x)

    assert count(new, BATCH_NORMS) == 0
    assert [type(layer) for layer in new.layers[1:]] == [type(model.get_layer("lin"))]
    r = record(new, "bn")
    assert (r.action, r.new_name, r.old_class) == ("folded", "lin", bn_cls)
    assert "kernel and bias" in r.note
    assert new.get_layer("lin").use_bias
    assert_same_function(model, new, x)


@pytest.mark.parametrize(
    "center, scale",
    [(False, True), (True, False), (False, False)],
    ids=["no-center", "no-scale", "neither"],
)
@pytest.mark.parametrize("bn_cls", BATCH_NORMS, ids=["keras-bn", "tfnorm-bn"])
def test_batch_norm_without_gamma_or_beta_folds(bn_cls, center, scale):
    bn = bn_cls(center=center, scale=scale, epsilon=0.01, name="bn")
    model = _after(keras.layers.Conv2D(4, 3, name="lin"), (6, 6, 3), bn)
    assert (getattr(bn, "beta", None) is None) == (not center)
    assert (getattr(bn, "gamma", None) is None) == (not scale)
    x = x_of((2, 6, 6, 3))
    new = fold_checked(model, x)
    assert record(new, "bn").action == "folded"
    assert_same_function(model, new, x)


def test_dense_then_batch_norm_matches_numpy_from_the_equations():
    bn = keras.layers.BatchNormalization(epsilon=0.05, name="bn")
    model = _after(keras.layers.Dense(3, name="lin"), (4,), bn)
    old = model.get_layer("lin")
    w, b = old.kernel.numpy().astype(np.float64), old.bias.numpy().astype(np.float64)
    mean, var = bn.moving_mean.numpy().astype(np.float64), bn.moving_variance.numpy()
    gamma, beta = bn.gamma.numpy().astype(np.float64), bn.beta.numpy().astype(np.float64)
    s = gamma / np.sqrt(var.astype(np.float64) + 0.05)

    new = tfnorm.fold_normalization(model).get_layer("lin")
    np.testing.assert_allclose(new.kernel.numpy(), w * s, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(new.bias.numpy(), (b - mean) * s + beta, rtol=1e-6, atol=1e-7)
    x = x_of((5, 4)).astype(np.float64)
    reference = gamma * (x @ w + b - mean) / np.sqrt(var + 0.05) + beta
    np.testing.assert_allclose(
        predict(tfnorm.fold_normalization(model), x.astype("float32")),
        reference,
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("bn_cls", BATCH_NORMS, ids=["keras-bn", "tfnorm-bn"])
def test_batch_renorm_folds_with_the_statistics_inference_uses(bn_cls):
    bn = bn_cls(renorm=True, renorm_clipping={"rmax": 3.0, "dmax": 5.0}, momentum=0.5, name="bn")
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, bn(keras.layers.Conv2D(4, 3, name="lin")(inputs)))
    for seed in range(4):  # the layer keeps moving_stddev and moving_variance itself
        model(x_of((8, 6, 6, 3), seed) * 3.0 + 2.0, training=True)
    bn.gamma.assign(RNG.uniform(0.5, 2.0, 4).astype("float32"))
    bn.beta.assign(RNG.normal(0, 1, 4).astype("float32"))
    std, var = bn.moving_stddev.numpy(), bn.moving_variance.numpy()
    assert not np.allclose(std, 1.0) and not np.allclose(bn.moving_mean.numpy(), 0.0)
    if bn_cls is tfnorm.BatchNormalization:  # the moving variance follows the stddev
        np.testing.assert_allclose(var, np.maximum(std * std - bn.epsilon, 0), rtol=1e-5)
    x = x_of((2, 6, 6, 3)) * 3.0 + 2.0
    new = fold_checked(model, x)
    assert record(new, "bn").action == "folded" and count(new, BATCH_NORMS) == 0
    assert_same_function(model, new, x)


def test_folded_weights_are_computed_in_float64():
    inputs = keras.Input((6,), dtype="float64")
    bn = keras.layers.BatchNormalization(dtype="float64", name="bn")
    dense = keras.layers.Dense(5, dtype="float64", name="lin")
    model = keras.Model(inputs, bn(dense(inputs)))
    randomize_bn(bn)
    randomize_biases(model)
    x = x_of((4, 6)).astype("float64")
    new = fold_checked(model, x)
    assert new.get_layer("lin").kernel.dtype == "float64"
    assert_same_function(model, new, x, tol=1e-12)  # float32 arithmetic would be ~1e-7 off


def test_mixed_precision_layers_keep_float32_variables():
    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, dtype="mixed_float16", name="lin")
    bn = keras.layers.BatchNormalization(dtype="mixed_float16", name="bn")
    model = keras.Model(inputs, bn(conv(inputs)))
    randomize_bn(bn)
    x = x_of((2, 6, 6, 3))
    new = fold_checked(model, x)
    folded = new.get_layer("lin")
    assert folded.dtype_policy.name == "mixed_float16" and folded.kernel.dtype == "float32"
    assert_same_function(model, new, x, tol=2e-3)  # float16 outputs: 2**-11 rounding


# --------------------------------------------------------------------------------------
# BatchNormalization in front of a Dense
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bn_cls", BATCH_NORMS, ids=["keras-bn", "tfnorm-bn"])
@pytest.mark.parametrize(
    "shape, use_bias, activation",
    [((6,), True, "relu"), ((3, 6), True, None), ((6,), False, "tanh")],
    ids=["rank2-relu", "rank3", "no-bias-tanh"],
)
def test_batch_norm_before_a_dense_folds_into_its_rows(bn_cls, shape, use_bias, activation):
    inputs = keras.Input(shape)
    bn = bn_cls(name="bn")
    dense = keras.layers.Dense(4, use_bias=use_bias, activation=activation, name="head")
    model = keras.Model(inputs, dense(bn(inputs)))
    randomize_bn(bn)
    randomize_biases(model)
    x = x_of((3,) + shape)
    new = fold_checked(model, x)
    r = record(new, "bn")
    assert (r.action, r.new_name) == ("folded", "head") and "kernel rows" in r.note
    assert count(new, BATCH_NORMS) == 0
    assert new.get_layer("head").get_config()["activation"] == (activation or "linear")
    assert_same_function(model, new, x)


def test_batch_norm_before_a_dense_matches_numpy():
    inputs = keras.Input((3,))
    bn = keras.layers.BatchNormalization(epsilon=0.1, name="bn")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(bn(inputs)))
    randomize_bn(bn)
    randomize_biases(model)
    f64 = lambda v: v.numpy().astype(np.float64)  # noqa: E731
    s = f64(bn.gamma) / np.sqrt(f64(bn.moving_variance) + 0.1)
    t = f64(bn.beta) - f64(bn.moving_mean) * s
    w, b = f64(model.get_layer("head").kernel), f64(model.get_layer("head").bias)
    head = tfnorm.fold_normalization(model).get_layer("head")
    np.testing.assert_allclose(head.kernel.numpy(), s[:, None] * w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(head.bias.numpy(), b + t @ w, rtol=1e-6, atol=1e-7)


def test_normalizations_on_both_sides_of_a_dense_fold_into_it_together():
    inputs = keras.Input((5,))
    bn0, bn1 = keras.layers.BatchNormalization(name="bn0"), tfnorm.BatchNormalization(name="bn1")
    model = keras.Model(inputs, bn1(keras.layers.Dense(4, use_bias=False, name="d")(bn0(inputs))))
    randomize_bn(bn0)
    randomize_bn(bn1)
    x = x_of((4, 5))
    new = fold_checked(model, x)
    assert [(r.path, r.action, r.new_name) for r in new.fold_report] == [
        ("bn0", "folded", "d"),
        ("bn1", "folded", "d"),
    ]
    assert [type(layer).__name__ for layer in new.layers] == ["InputLayer", "Dense"]
    assert_same_function(model, new, x)


def test_a_batch_norm_between_two_dense_goes_into_the_one_before_it():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, name="d1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, name="d2"),
        ]
    )
    randomize_all_bn(model)
    x = x_of((4, 5))
    new = fold_checked(model, x)
    assert record(new, "bn").new_name == "d1"
    assert_same_function(model, new, x)


# --------------------------------------------------------------------------------------
# weight-based normalizations
# --------------------------------------------------------------------------------------


def _wrapped(wrapper, shape):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, wrapper(inputs))
    randomize_biases(model)
    for seed in range(3):  # data-dependent init / power iteration: state away from its start
        model(x_of((8,) + shape, seed) * 2.0 + 1.0, training=True)
    return model


WRAPPED = {
    "wn-dense": (lambda: tfnorm.WeightNormalization(keras.layers.Dense(4), name="w"), (6,)),
    "wn-conv2d": (
        lambda: tfnorm.WeightNormalization(keras.layers.Conv2D(4, 3), name="w"),
        (7, 7, 3),
    ),
    "wn-conv2d-no-data-init": (
        lambda: tfnorm.WeightNormalization(
            keras.layers.Conv2D(4, 3, padding="same"), data_init=False, name="w"
        ),
        (7, 7, 3),
    ),
    "sn-dense": (lambda: tfnorm.SpectralNormalization(keras.layers.Dense(4), name="w"), (6,)),
    "sn-conv2d": (
        lambda: tfnorm.SpectralNormalization(keras.layers.Conv2D(4, 3), name="w"),
        (7, 7, 3),
    ),
}


@pytest.mark.parametrize("case", sorted(WRAPPED))
def test_kernel_wrappers_become_the_plain_layer(case):
    make, shape = WRAPPED[case]
    model = _wrapped(make(), shape)
    wrapper = model.get_layer("w")
    x = x_of((3,) + shape, 7)
    new = fold_checked(model, x)
    plain = new.get_layer("w")
    assert type(plain) is type(wrapper.layer)
    assert count(new, (tfnorm.WeightNormalization, tfnorm.SpectralNormalization)) == 0
    r = record(new, "w")
    assert (r.action, r.new_class, r.old_class) == ("replaced", type(wrapper.layer), type(wrapper))
    assert "remove()" in r.note
    assert_same_function(model, new, x)


def test_spectral_normalization_uses_the_stored_u_in_inference():
    model = _wrapped(
        tfnorm.SpectralNormalization(keras.layers.Dense(3, use_bias=False), name="w"), (5,)
    )
    wrapper = model.get_layer("w")
    wrapper.u.assign(RNG.normal(size=3).astype("float32"))  # not a converged estimate
    w = wrapper.layer.kernel.numpy().astype(np.float64)
    u = wrapper.u.numpy().astype(np.float64)
    u = u / np.linalg.norm(u)
    sigma = np.linalg.norm(w @ u)  # inference: sigma = ||W u||, u as stored (not updated)
    assert not np.isclose(sigma, np.linalg.svd(w, compute_uv=False)[0], rtol=1e-2)
    new = tfnorm.fold_normalization(model)
    np.testing.assert_allclose(new.get_layer("w").kernel.numpy(), w / sigma, rtol=1e-5, atol=1e-7)
    assert_same_function(model, new, x_of((4, 5)))


def test_weight_normalization_data_init_offset_goes_into_the_bias():
    model = _wrapped(tfnorm.WeightNormalization(keras.layers.Dense(3), name="w"), (5,))
    wrapper = model.get_layer("w")
    assert float(wrapper.initialized.numpy()) == 1.0
    v = wrapper.layer.kernel.numpy().astype(np.float64)
    g = wrapper.g.numpy().astype(np.float64)
    bias = wrapper.layer.bias.numpy().astype(np.float64) + wrapper.offset.numpy()
    plain = tfnorm.fold_normalization(model).get_layer("w")
    np.testing.assert_allclose(
        plain.kernel.numpy(), g * v / np.linalg.norm(v, axis=0), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(plain.bias.numpy(), bias, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_weight_standardized_convolutions_become_keras_convolutions(rank):
    cls = getattr(tfnorm, f"WeightStandardizedConv{rank}D")
    shape = (6,) * rank + (3,)
    inputs = keras.Input(shape)
    ws = cls(4, 3, epsilon=1e-3, padding="same", name="ws")
    model = keras.Model(inputs, ws(inputs))
    ws.kernel.assign(ws.kernel.numpy() * 3.0 + 0.2)  # filters with a mean and a spread
    randomize_biases(model)
    x = x_of((2,) + shape)
    new = fold_checked(model, x)
    conv = new.get_layer("ws")
    assert type(conv) is getattr(keras.layers, f"Conv{rank}D")
    r = record(new, "ws")
    assert r.action == "replaced" and "epsilon=0.001" in r.note
    k = ws.kernel.numpy().astype(np.float64)
    axes = tuple(range(rank + 1))
    standardized = (k - k.mean(axes)) / np.sqrt(k.var(axes) + 1e-3)
    np.testing.assert_allclose(conv.kernel.numpy(), standardized, rtol=1e-6, atol=1e-6)
    ws_config = ws.get_config()
    assert set(ws_config) - set(conv.get_config()) == {"epsilon"}
    assert all(ws_config[k] == v for k, v in conv.get_config().items())
    assert_same_function(model, new, x)


@pytest.mark.parametrize(
    "make",
    [
        lambda: tfnorm.WeightStandardizedConv2D(4, 3, name="lin"),
        lambda: tfnorm.WeightNormalization(keras.layers.Conv2D(4, 3), name="lin"),
        lambda: tfnorm.SpectralNormalization(keras.layers.Conv2D(4, 3, use_bias=False), name="lin"),
    ],
    ids=["ws", "wn", "sn"],
)
def test_batch_norm_after_a_weight_normalized_layer_folds_into_its_replacement(make):
    bn = tfnorm.BatchNormalization(name="bn")
    model = _after(make(), (7, 7, 3), bn)
    model(x_of((4, 7, 7, 3)), training=True)  # WN data init, SN power iteration
    randomize_bn(bn)
    x = x_of((2, 7, 7, 3), 3)
    new = fold_checked(model, x)
    assert [type(layer) for layer in new.layers[1:]] == [keras.layers.Conv2D]
    assert [r.action for r in new.fold_report] == ["replaced", "folded"]
    assert "which replaces" in record(new, "bn").note
    assert_same_function(model, new, x)


# --------------------------------------------------------------------------------------
# what is not folded
# --------------------------------------------------------------------------------------


def _assert_kept(model, x, path, *patterns):
    new = fold_checked(model, x)
    r = record(new, path)
    assert r.action == "kept", r
    for pattern in patterns:
        assert pattern in r.note, r.note
    assert type(new.get_layer(path)) is type(model.get_layer(path))
    assert_same_function(model, new, x, tol=0.0)  # every weight copied: the same numbers
    return new


def test_batch_norm_before_a_same_padded_convolution_is_kept():
    inputs = keras.Input((6, 6, 3))
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", name="c")(bn(inputs)))
    randomize_bn(bn)
    new = _assert_kept(model, x_of((2, 6, 6, 3)), "bn", "padding='same'", "zeros", "borders")
    assert isinstance(new.get_layer("bn"), keras.layers.BatchNormalization)


def test_batch_norm_before_a_valid_convolution_is_kept():
    inputs = keras.Input((6, 6, 3))
    bn = tfnorm.BatchNormalization(name="bn")
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c")(bn(inputs)))
    randomize_bn(bn)
    _assert_kept(model, x_of((2, 6, 6, 3)), "bn", "only into a Dense")


def test_batch_norm_after_a_convolution_with_an_activation_is_kept():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c"),
            keras.layers.BatchNormalization(name="bn"),
        ]
    )
    randomize_all_bn(model)
    _assert_kept(model, x_of((2, 6, 6, 3)), "bn", "activation='relu'")


def test_batch_norm_whose_input_is_read_elsewhere_is_kept():
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(4, 3, name="c")(inputs)
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, keras.layers.Add(name="add")([bn(h), h]))
    randomize_bn(bn)
    _assert_kept(model, x_of((2, 6, 6, 3)), "bn", "also read by 'add'")


def test_batch_norm_whose_input_is_also_a_model_output_is_kept():
    inputs = keras.Input((5,))
    h = keras.layers.Dense(4, name="d")(inputs)
    bn = tfnorm.BatchNormalization(name="bn")
    model = keras.Model(inputs, [bn(h), h])
    randomize_bn(bn)
    new = fold_checked(model, x_of((2, 5)))
    assert record(new, "bn").action == "kept"
    assert "model's outputs" in record(new, "bn").note


def test_shared_batch_norm_and_shared_dense_are_kept():
    inputs = keras.Input((5,))
    dense = keras.layers.Dense(5, name="shared_dense")
    bn_a, bn_b = (
        keras.layers.BatchNormalization(name="bn_a"),
        keras.layers.BatchNormalization(name="bn_shared"),
    )
    h = bn_a(dense(inputs))  # dense is called twice
    h = dense(h)
    out = keras.layers.Add()([bn_b(h), bn_b(inputs)])  # bn_b is called twice
    model = keras.Model(inputs, out)
    randomize_bn(bn_a)
    randomize_bn(bn_b)
    new = fold_checked(model, x_of((2, 5)))
    assert "called at 2 places" in record(new, "bn_a").note
    assert "called at 2 places (a shared layer)" in record(new, "bn_shared").note
    assert_same_function(model, new, x_of((2, 5)), tol=0.0)


def test_batch_norm_called_with_training_true_is_kept():
    inputs = keras.Input((5,))
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, bn(keras.layers.Dense(4, name="d")(inputs), training=True))
    new = fold_checked(model, x_of((8, 5)))
    assert "training=True" in record(new, "bn").note


def test_batch_norm_on_the_wrong_axis_is_kept():
    inputs = keras.Input((3, 6))
    bn = tfnorm.BatchNormalization(axis=1, name="bn")
    model = keras.Model(inputs, bn(keras.layers.Dense(4, name="d")(inputs)))
    randomize_bn(bn)
    _assert_kept(model, x_of((2, 3, 6)), "bn", "axis 1", "on axis 2")


@pytest.mark.parametrize(
    "norm",
    [
        lambda: keras.layers.LayerNormalization(name="norm"),
        lambda: tfnorm.LayerNormalization(name="norm"),
        lambda: tfnorm.GroupNormalization(groups=2, name="norm"),
    ],
    ids=["keras-ln", "tfnorm-ln", "tfnorm-gn"],
)
def test_run_time_normalizations_are_kept_with_the_reason(norm):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d"), norm()])
    for v in model.get_layer("norm").weights:
        v.assign(RNG.normal(1.0, 0.5, v.shape).astype("float32"))
    new = _assert_kept(model, x_of((3, 6)), "norm", "statistics from each input at run time")
    assert type(new.get_layer("norm")) is type(model.get_layer("norm"))


def test_kept_wrapper_says_why():
    inputs = keras.Input((5,))
    dense = keras.layers.Dense(3)
    dense.build((None, 5))
    dense.enable_lora(2)
    wrapper = tfnorm.WeightNormalization(dense, data_init=False, name="w")
    model = keras.Model(inputs, wrapper(inputs))
    new = fold_checked(model, x_of((2, 5)))
    r = record(new, "w")
    assert r.action == "kept" and "LoRA" in r.note
    assert isinstance(new.get_layer("w"), tfnorm.WeightNormalization)


def test_normalization_inside_a_custom_layer_is_listed():
    model = keras.Sequential(
        [
            keras.Input((2, 3)),
            keras.layers.TimeDistributed(
                keras.layers.BatchNormalization(name="inner_bn"), name="td"
            ),
        ]
    )
    new = fold_checked(model, x_of((2, 2, 3)))
    r = record(new, "td/inner_bn")
    assert r.action == "kept" and "copied whole" in r.note


# --------------------------------------------------------------------------------------
# model structure
# --------------------------------------------------------------------------------------


def test_nested_models_are_folded_inside():
    block = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3, name="c"),
            keras.layers.BatchNormalization(name="bn"),
        ],
        name="block",
    )
    inner_in = keras.Input((64,))
    inner_bn = tfnorm.BatchNormalization(name="bn2")
    head = keras.Model(inner_in, keras.layers.Dense(2, name="d")(inner_bn(inner_in)), name="head")
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Flatten(name="flat")(block(inputs))
    outer_bn = keras.layers.BatchNormalization(name="outer_bn")  # follows a nested model
    model = keras.Model(inputs, head(outer_bn(h)))
    randomize_all_bn(model)
    x = x_of((2, 6, 6, 3))
    new = fold_checked(model, x)
    assert [(r.path, r.action) for r in new.fold_report] == [
        ("block/bn", "folded"),
        ("outer_bn", "kept"),
        ("head/bn2", "folded"),
    ]
    assert "follows Flatten 'flat'" in record(new, "outer_bn").note
    assert "feeds 'head', not a Dense" in record(new, "outer_bn").note
    assert [type(layer) for layer in new.get_layer("block").layers] == [keras.layers.Conv2D]
    assert isinstance(new.get_layer("block"), keras.Sequential)
    assert_same_function(model, new, x)


def test_a_nested_model_used_twice_is_folded_once_and_stays_shared():
    block = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(5, name="d"),
            keras.layers.BatchNormalization(name="bn"),
        ],
        name="block",
    )
    inputs = keras.Input((5,))
    model = keras.Model(inputs, block(block(inputs)))
    randomize_all_bn(model)
    x = x_of((3, 5))
    new = fold_checked(model, x)
    assert [(r.path, r.action) for r in new.fold_report] == [("block/bn", "folded")]
    (new_block,) = [layer for layer in new.layers if isinstance(layer, keras.Sequential)]
    assert [type(layer) for layer in new_block.layers] == [keras.layers.Dense]
    assert_same_function(model, new, x)


def test_a_batch_norm_shared_across_model_levels_is_listed_once_and_kept():
    bn = keras.layers.BatchNormalization(name="bn")
    block = keras.Sequential([keras.Input((5,)), keras.layers.Dense(5, name="d"), bn], name="block")
    inputs = keras.Input((5,))
    model = keras.Model(inputs, bn(keras.layers.Dense(5, name="e")(block(inputs))))
    randomize_bn(bn)
    x = x_of((3, 5))
    new = fold_checked(model, x)
    (r,) = new.fold_report
    assert r.path == "block/bn" and r.action == "kept" and "called at 2 places" in r.note
    assert_same_function(model, new, x, tol=0.0)


def test_keras_ops_in_the_graph_and_several_inputs():
    a, b = keras.Input((5,), name="a"), keras.Input((5,), name="b")
    bn = keras.layers.BatchNormalization(name="bn")
    h = bn(keras.layers.Dense(4, name="d")(a))
    model = keras.Model([a, b], keras.ops.tanh(h) + keras.layers.Dense(4, name="e")(b))
    randomize_bn(bn)
    x = [x_of((2, 5), 1), x_of((2, 5), 2)]
    new = fold_checked(model, x)
    assert record(new, "bn").action == "folded"
    assert [t.name for t in new.inputs] == ["a", "b"]
    assert_same_function(model, new, x)


def test_verbose_prints_the_report_table(capsys):
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, name="d"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.LayerNormalization(name="ln"),
        ]
    )
    new = tfnorm.fold_normalization(model, verbose=True)
    out = capsys.readouterr().out
    assert out.strip() == str(new.fold_report)
    assert out.startswith("fold_normalization: 1 folded, 0 replaced, 1 kept")
    assert "into d" in out and "(kept)" in out
    assert new.fold_report.folded == (record(new, "bn"),)


@pytest.mark.parametrize(
    "args, kwargs, error, pattern",
    [
        (("model",), {}, TypeError, r"model must be a keras.Model .*received model='model'"),
        ((keras.layers.Dense(2),), {}, TypeError, r"model must be a keras.Model.*Dense layer"),
        ((keras.Sequential([keras.layers.Dense(2)]),), {}, ValueError, r"unbuilt Sequential"),
        (
            (keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),),
            {"verbose": "yes"},
            TypeError,
            r"verbose must be True or False, received verbose='yes'",
        ),
        (
            (keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),),
            {"verbose": 1},
            TypeError,
            r"verbose must be True or False, received verbose=1",
        ),
    ],
    ids=["string", "layer", "unbuilt", "verbose-string", "verbose-int"],
)
def test_bad_arguments_are_named(args, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        tfnorm.fold_normalization(*args, **kwargs)


def test_subclassed_model_is_refused_naming_fold_normalization():
    model = Subclassed()
    model(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"subclassed keras.Model.*fold_normalization cannot"):
        tfnorm.fold_normalization(model)


# --------------------------------------------------------------------------------------
# keras.applications (weights=None: nothing is downloaded)
# --------------------------------------------------------------------------------------

APPLICATIONS = {
    "resnet50": (keras.applications.ResNet50, 53),
    "mobilenet_v2": (keras.applications.MobileNetV2, 52),
}


def _application(name):
    """The network with logits out (the softmax would hide differences) and random BN state."""
    ctor, _ = APPLICATIONS[name]
    model = ctor(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    return randomize_all_bn(model, np.random.default_rng(3))


def _serve_without_tfnorm(model_dir, x, tmp_path):
    np.savez(tmp_path / "in.npz", x=x)
    manifest = [
        {
            "model": str(model_dir),
            "inputs": str(tmp_path / "in.npz"),
            "output": str(tmp_path / "out.npy"),
        }
    ]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    script = os.path.join(os.path.dirname(__file__), "serve_without_tfnorm.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, script, str(tmp_path / "manifest.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return np.load(tmp_path / "out.npy")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_application_folds_completely_and_exports(name, tmp_path):
    model = _application(name)
    n_bn = APPLICATIONS[name][1]
    assert count(model, keras.layers.BatchNormalization) == n_bn
    x = x_of((2, 32, 32, 3), 4)
    new = fold_checked(model, x)

    assert count(new, BATCH_NORMS) == 0
    assert len(new.fold_report.folded) == n_bn and not new.fold_report.kept
    assert len(new.layers) == len(model.layers) - n_bn
    relative = assert_same_function(model, new, x)
    print(f"{name}: {n_bn} folded, max |diff| / max |output| = {relative:.2e}")
    y = predict(new, x)

    path = tmp_path / f"{name}.keras"
    new.save(path)
    np.testing.assert_allclose(
        predict(keras.saving.load_model(path), x), y, rtol=1e-6, atol=1e-6 * float(np.abs(y).max())
    )

    new.export(tmp_path / "saved", verbose=False)
    served = _serve_without_tfnorm(tmp_path / "saved", x, tmp_path)
    np.testing.assert_allclose(served, y, rtol=1e-5, atol=1e-5 * float(np.abs(y).max()))

    flat = _convert(new, BUILTIN)
    out = _interpret(flat, {new.inputs[0].name: x})
    (lite,) = out.values()
    np.testing.assert_allclose(lite, y, rtol=1e-4, atol=TOL * float(np.abs(y).max()))
