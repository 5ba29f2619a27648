"""Family-specific checks of the wider family: what the generic harness cannot see.

Weight normalization's data-dependent initialization (once, in graph mode too, across
save/load), wrappers that never write into the wrapped layer, spectral norm's sigma and
gradient, moving statistics of EvoNorm-B0 and switchable normalization, LRN's convention,
ScaleNorm's initial g, and argument errors.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tests.descriptors.family import conv_nd, power_iteration
from tests.harness import NoWrites

# ---------------------------------------------------------------------------
# WeightNormalization: data-dependent initialization


def _preactivation_axes(y, channels_first):
    c = 1 if channels_first else y.ndim - 1
    return tuple(a for a in range(y.ndim) if a != c)


@pytest.mark.parametrize(
    "make, shape, channels_first",
    [
        (lambda: keras.layers.Dense(4, bias_initializer="ones"), (64, 6), False),
        (lambda: keras.layers.Dense(3, use_bias=False), (16, 5, 6), False),
        (
            lambda: keras.layers.Conv2D(3, 2, padding="same", bias_initializer="ones"),
            (8, 5, 5, 2),
            False,
        ),
        (
            lambda: keras.layers.Conv1D(4, 2, groups=2, data_format="channels_first"),
            (16, 2, 7),
            True,
        ),
    ],
    ids=["dense", "dense-rank3-no-bias", "conv2d", "conv1d-channels-first"],
)
def test_data_init_gives_zero_mean_unit_variance_preactivations(make, shape, channels_first):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3.0 + 2.0).astype("float32")
    wn = tfnorm.WeightNormalization(make())
    y = wn(x, training=True).numpy()
    axes = _preactivation_axes(y, channels_first)
    np.testing.assert_allclose(y.var(axis=axes), 1.0, atol=2e-5)
    if wn.layer.use_bias:  # without a bias to shift only the scale is initialized
        np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=2e-5)
    else:
        assert np.abs(y.mean(axis=axes)).max() > 0.1
    assert float(wn.initialized.numpy()) == 1.0
    # the same batch again: no second initialization, the same (normalized) output
    np.testing.assert_allclose(wn(x, training=True).numpy(), y, atol=1e-5)


def test_data_init_only_in_training_and_only_when_asked():
    x = np.random.default_rng(1).normal(size=(32, 5)).astype("float32") * 4 + 3
    wn = tfnorm.WeightNormalization(keras.layers.Dense(3))
    wn(x)  # inference: no initialization
    assert float(wn.initialized.numpy()) == 0.0
    plain_dense = keras.layers.Dense(3)
    plain = tfnorm.WeightNormalization(plain_dense, data_init=False)
    y = plain(x, training=True).numpy()
    assert plain.initialized is None
    # g starts at ||v||: the wrapped layer's function is unchanged
    expected = x @ plain_dense.kernel.numpy() + plain_dense.bias.numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def _wn_model():
    inp = keras.Input((5,))
    out = tfnorm.WeightNormalization(keras.layers.Dense(3, activation="relu"))(inp)
    return keras.Model(inp, out)


def test_data_init_happens_once_and_survives_keras_save_load(tmp_path):
    rng = np.random.default_rng(2)
    first = (rng.normal(size=(32, 5)) * 2 + 1).astype("float32")
    other = (rng.normal(size=(32, 5)) * 9 - 4).astype("float32")
    model = _wn_model()
    wn = model.layers[-1]
    model(first, training=True)
    g, offset = wn.g.numpy().copy(), wn.offset.numpy().copy()
    model(other, training=True)  # a later batch with other statistics changes nothing
    np.testing.assert_array_equal(wn.g.numpy(), g)
    np.testing.assert_array_equal(wn.offset.numpy(), offset)

    path = os.path.join(tmp_path, "wn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    lw = loaded.layers[-1]
    assert float(lw.initialized.numpy()) == 1.0
    np.testing.assert_array_equal(lw.g.numpy(), g)
    np.testing.assert_array_equal(lw.offset.numpy(), offset)
    loaded(other, training=True)  # the loaded model does not initialize again
    np.testing.assert_array_equal(lw.g.numpy(), g)
    np.testing.assert_array_equal(loaded.predict(first, verbose=0), model.predict(first, verbose=0))


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_data_init_inside_fit_uses_the_first_batch_only(jit):
    """In a compiled train step: g = 1/sigma and b = -mu/sigma of the first batch (lr 0)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=(16, 5)) * 2 + 1, rng.normal(size=(16, 5)) * 7 - 3]).astype(
        "float32"
    )
    model = _wn_model()
    wn = model.layers[-1]
    v = wn.layer.kernel.numpy().astype(np.float64)
    bias = wn.layer.bias.numpy().astype(np.float64)
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=jit)
    model.fit(x, np.zeros((32, 3), "float32"), batch_size=16, epochs=1, shuffle=False, verbose=0)
    t = x[:16].astype(np.float64) @ (v / np.linalg.norm(v, axis=0))
    sigma = np.sqrt(t.var(axis=0) + 1e-6)
    np.testing.assert_allclose(wn.g.numpy(), 1.0 / sigma, rtol=1e-5)
    np.testing.assert_allclose(
        wn.offset.numpy() + bias, -t.mean(axis=0) / sigma, rtol=1e-5, atol=1e-6
    )
    assert float(wn.initialized.numpy()) == 1.0


# ---------------------------------------------------------------------------
# Wrappers never write into the wrapped layer


@pytest.mark.parametrize(
    "wrap",
    [
        lambda layer: tfnorm.WeightNormalization(layer),
        lambda layer: tfnorm.SpectralNormalization(layer, power_iterations=2),
    ],
    ids=["weightnorm", "spectral"],
)
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_wrapped_variables_are_never_written(wrap, policy):
    inner = keras.layers.Conv2D(3, 2, dtype=policy)
    wrapper = wrap(inner)
    x = np.random.default_rng(4).normal(size=(4, 5, 5, 2)).astype("float32")
    wrapper.build(x.shape)
    before = [v.numpy().copy() for v in inner.weights]
    with NoWrites(inner.weights):
        with tf.GradientTape() as tape:
            y = wrapper(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
        grads = tape.gradient(loss, inner.trainable_weights)
        tf.function(lambda t: wrapper(t, training=True))(x)
        tf.function(lambda t: wrapper(t, training=True), jit_compile=True)(x)
        wrapper(x, training=False)
    for b, v in zip(before, inner.weights):
        np.testing.assert_array_equal(v.numpy(), b)
    assert y.dtype == keras.DTypePolicy(policy).compute_dtype
    for g, v in zip(grads, inner.trainable_weights):  # gradients reach the stored kernel
        assert g is not None, v.name
        g = np.asarray(tf.cast(g, tf.float32))
        assert np.isfinite(g).all() and np.abs(g).max() > 0, v.name


def test_sentinel_catches_a_write():
    """The check above can fail: a write through the sentinel raises."""
    layer = keras.layers.Dense(2)
    layer.build((1, 3))
    with NoWrites(layer.weights):
        with pytest.raises(AssertionError, match="wrote into"):
            layer.kernel.assign(np.zeros((3, 2), "float32"))


# ---------------------------------------------------------------------------
# SpectralNormalization


def test_sigma_matches_largest_singular_value_dense():
    keras.utils.set_random_seed(5)
    sn = tfnorm.SpectralNormalization(keras.layers.Dense(5, use_bias=False))
    sn.build((None, 7))
    for _ in range(60):  # one power-iteration step per training call
        sn(np.zeros((1, 7), "float32"), training=True)
    w = sn.layer.kernel.numpy().astype(np.float64)
    w_eff = sn(np.eye(7, dtype="float32")).numpy()  # the kernel the layer uses: W / sigma
    sigma = np.linalg.svd(w, compute_uv=False)[0]
    np.testing.assert_allclose(w / w_eff, sigma, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.svd(w_eff, compute_uv=False)[0], 1.0, rtol=1e-5)


def test_sigma_matches_largest_singular_value_conv():
    keras.utils.set_random_seed(6)
    inner = keras.layers.Conv2D(4, (2, 3), use_bias=False)
    sn = tfnorm.SpectralNormalization(inner, power_iterations=80)
    x = np.random.default_rng(7).normal(size=(2, 6, 6, 3)).astype("float32")
    y = sn(x, training=True).numpy()
    w = inner.kernel.numpy().astype(np.float64)
    sigma = np.linalg.svd(w.reshape(-1, 4), compute_uv=False)[0]
    np.testing.assert_allclose(y, conv_nd(x.astype(np.float64), w / sigma), rtol=1e-4, atol=1e-5)


def test_u_updates_only_in_training_by_one_power_iteration():
    sn = tfnorm.SpectralNormalization(keras.layers.Dense(3), power_iterations=2)
    x = np.random.default_rng(8).normal(size=(4, 6)).astype("float32")
    sn.build(x.shape)
    u0 = sn.u.numpy().copy()
    sn(x, training=False)
    sn(x)
    np.testing.assert_array_equal(sn.u.numpy(), u0)
    sn(x, training=True)
    w = sn.layer.kernel.numpy().astype(np.float64)
    u_expected, _, _ = power_iteration(w, u0.astype(np.float64), 2)
    np.testing.assert_allclose(sn.u.numpy(), u_expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(sn.u.numpy(), u0)


def test_training_gradient_flows_through_sigma_with_u_v_constant():
    """Miyato et al. 2018, Sec. 2.2: dL/dW = (G - (sum G * W_SN) v u^T) / sigma with
    G = dL/dW_SN (here x^T dy), u and v the power-iteration vectors held constant."""
    sn = tfnorm.SpectralNormalization(
        keras.layers.Dense(4, use_bias=False, dtype="float64"), power_iterations=1, dtype="float64"
    )
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, 6))
    dy = rng.normal(size=(5, 4))
    sn.build(x.shape)
    u0 = sn.u.numpy().copy()
    w = sn.layer.kernel.numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(sn(x, training=True) * dy)
    grad = tape.gradient(loss, sn.layer.kernel).numpy()
    u, v, sigma = power_iteration(w, u0, 1)
    g_sn = x.T @ dy
    expected = (g_sn - np.sum(g_sn * w / sigma) * np.outer(v, u)) / sigma
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(grad, g_sn / sigma)  # the sigma term is there


# ---------------------------------------------------------------------------
# Moving statistics


def test_evonorm_b0_moving_variance():
    layer = tfnorm.EvoNormB0(momentum=0.8)
    x = np.random.default_rng(10).normal(size=(6, 4, 4, 3)) * 2 + 1
    layer(x.astype("float32"), training=True)
    batch_var = x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), 0.8 * 1.0 + 0.2 * batch_var, rtol=1e-5
    )
    # inference uses the moving variance: x / max(sqrt(mv + eps), v1 x + sqrt(s2_i + eps))
    y = layer(x.astype("float32"), training=False).numpy()
    mv = layer.moving_variance.numpy().astype(np.float64)
    s2i = x.var(axis=(1, 2), keepdims=True)
    expected = x / np.maximum(np.sqrt(mv + 1e-5), x + np.sqrt(s2i + 1e-5))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_switchable_moving_statistics():
    layer = tfnorm.SwitchableNormalization(momentum=0.7, axis=1)
    x = np.random.default_rng(11).normal(size=(5, 3, 4, 6)) * 3 - 2  # channels first
    y_train = layer(x.astype("float32"), training=True).numpy()
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), 0.3 * x.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), 0.7 + 0.3 * x.var(axis=(0, 2, 3)), rtol=1e-5
    )
    # momentum 0: the moving statistics are the last batch's, so inference reproduces training
    layer0 = tfnorm.SwitchableNormalization(momentum=0.0, axis=1)
    y0 = layer0(x.astype("float32"), training=True).numpy()
    np.testing.assert_allclose(y0, y_train, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        layer0(x.astype("float32"), training=False).numpy(), y0, rtol=1e-4, atol=1e-5
    )


# ---------------------------------------------------------------------------
# LocalResponseNormalization: TensorFlow's convention, PyTorch's documented


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"depth_radius": 2, "bias": 2.0, "alpha": 1e-4, "beta": 0.75},
        {"depth_radius": 1, "bias": 0.5, "alpha": 0.3, "beta": 1.0},
        {"depth_radius": 0, "alpha": 2.0, "beta": 0.25},
    ],
    ids=["defaults", "alexnet", "r1", "r0"],
)
def test_lrn_matches_tf_nn_local_response_normalization(kwargs):
    x = np.random.default_rng(12).normal(size=(2, 3, 4, 9)).astype("float32") * 2
    y = tfnorm.LocalResponseNormalization(**kwargs)(x).numpy()
    tf_kwargs = {"depth_radius": 5, "bias": 1.0, "alpha": 1.0, "beta": 0.5, **kwargs}
    np.testing.assert_allclose(
        y, tf.nn.local_response_normalization(x, **tf_kwargs).numpy(), rtol=2e-6, atol=1e-7
    )


def _torch_lrn(x, size, alpha, beta, k):
    """torch.nn.LocalResponseNorm as documented, channels first:
    b_c = a_c (k + alpha/n sum_{c' = max(0, c - n/2)}^{min(N - 1, c + n/2)} a_{c'}^2)^-beta."""
    out = np.empty_like(x)
    ch = x.shape[1]
    for c in range(ch):
        lo, hi = max(0, c - size // 2), min(ch - 1, c + size // 2)
        s = (x[:, lo : hi + 1] ** 2).sum(axis=1)
        out[:, c] = x[:, c] * (k + alpha / size * s) ** -beta
    return out


def test_lrn_docstring_explains_pytorch_alpha_over_n():
    doc = tfnorm.LocalResponseNormalization.__doc__
    assert "PyTorch" in doc and "alpha / n" in doc
    x = np.random.default_rng(13).normal(size=(2, 7, 3, 3)) * 2
    size, alpha, beta, k = 5, 1e-2, 0.75, 2.0
    # the conversion the docstring gives
    layer = tfnorm.LocalResponseNormalization(
        depth_radius=(size - 1) // 2, bias=k, alpha=alpha / size, beta=beta, axis=1
    )
    np.testing.assert_allclose(
        layer(x.astype("float32")).numpy(),
        _torch_lrn(x, size, alpha, beta, k),
        rtol=1e-5,
        atol=1e-6,
    )
    # and without it the two conventions differ
    same_numbers = tfnorm.LocalResponseNormalization(
        depth_radius=2, bias=k, alpha=alpha, beta=beta, axis=1
    )
    assert not np.allclose(
        same_numbers(x.astype("float32")).numpy(), _torch_lrn(x, size, alpha, beta, k), rtol=1e-3
    )


# ---------------------------------------------------------------------------
# ScaleNorm, FRN, DyT specifics


@pytest.mark.parametrize(
    "shape, axis, d", [((2, 16), -1, 16), ((2, 3, 4, 5), [2, 3], 20), ((2, 9, 3), 1, 9)]
)
def test_scale_norm_g_initialised_to_sqrt_d(shape, axis, d):
    layer = tfnorm.ScaleNormalization(axis=axis)
    x = np.random.default_rng(14).normal(size=shape).astype("float32")
    y = layer(x).numpy()
    assert layer.g.shape == ()
    np.testing.assert_allclose(float(layer.g.numpy()), np.sqrt(d), rtol=1e-7)
    axes = tuple(a % len(shape) for a in ([axis] if isinstance(axis, int) else axis))
    # at initialisation the output has unit root mean square over the normalized axes
    np.testing.assert_allclose(np.sqrt((y**2).mean(axis=axes)), 1.0, rtol=1e-5)


def test_frn_learned_epsilon_trains_and_starts_small():
    layer = tfnorm.FilterResponseNormalization(learned_epsilon=True)
    x = np.random.default_rng(15).normal(size=(2, 1, 1, 4)).astype("float32")  # 1x1 spatial
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * np.arange(8.0, dtype="float32").reshape(2, 1, 1, 4))
    assert float(layer.learned_eps.numpy()) == pytest.approx(1e-4)
    grad = tape.gradient(loss, layer.learned_eps)
    assert grad is not None and float(grad) != 0.0


def test_dynamic_tanh_alpha_starts_at_alpha_init():
    layer = tfnorm.DynamicTanh(alpha_init=0.2)
    y = layer(np.array([[1.0, -2.0]], "float32")).numpy()
    assert float(layer.alpha.numpy()) == pytest.approx(0.2)
    np.testing.assert_allclose(y, np.tanh(0.2 * np.array([[1.0, -2.0]])), rtol=1e-6)


def test_weight_standardized_conv_swaps_in_for_conv2d():
    """Same weights as a Conv2D; the output is the Conv2D's with standardized filters."""
    x = np.random.default_rng(16).normal(size=(2, 6, 6, 3)).astype("float32")
    conv = keras.layers.Conv2D(4, 3, padding="same")
    conv.build(x.shape)
    ws = tfnorm.WeightStandardizedConv2D(4, 3, padding="same")
    ws.build(x.shape)
    ws.set_weights(conv.get_weights())
    w = conv.kernel.numpy().astype(np.float64)
    w_hat = (w - w.mean(axis=(0, 1, 2))) / np.sqrt(w.var(axis=(0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(
        ws(x).numpy(), conv_nd(x.astype(np.float64), w_hat, padding="same"), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(ws.kernel.numpy(), conv.kernel.numpy())  # stored kernel untouched


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "make, pattern",
    [
        (
            lambda: tfnorm.WeightNormalization(keras.layers.Embedding(3, 2)),
            r"wraps keras.layers Dense, Conv1D, Conv2D, Conv3D, SimpleRNN, LSTM, GRU.*Embedding",
        ),
        (
            lambda: tfnorm.SpectralNormalization(tfnorm.WeightStandardizedConv2D(3, 2)),
            r"received layer=.*WeightStandardizedConv2D",
        ),
        (
            lambda: tfnorm.WeightNormalization(keras.layers.Conv2DTranspose(3, 2)),
            r"Conv2DTranspose",
        ),
        (
            lambda: tfnorm.WeightNormalization(keras.layers.Dense(3), data_init="yes"),
            r"data_init must be True or False, received data_init='yes'",
        ),
        (
            lambda: tfnorm.SpectralNormalization(keras.layers.Dense(3), power_iterations=0),
            r"power_iterations must be an integer in \[1, 1000\], received power_iterations=0",
        ),
        (
            lambda: tfnorm.WeightStandardizedConv2D(3, 2, epsilon=0),
            r"epsilon must be a finite positive",
        ),
        (
            lambda: tfnorm.FilterResponseNormalization(epsilon=0),
            r"epsilon must be a finite positive",
        ),
        (lambda: tfnorm.FilterResponseNormalization(axis=[1, 2]), r"single channel axis"),
        (lambda: tfnorm.FilterResponseNormalization(learned_epsilon=1), r"learned_epsilon=1"),
        (lambda: tfnorm.EvoNormB0(momentum=2), r"momentum must be a number in \[0, 1\].*2"),
        (lambda: tfnorm.EvoNormS0(groups=0), r"groups must be an integer >= 1"),
        (lambda: tfnorm.SwitchableNormalization(epsilon=-1), r"epsilon.*received epsilon=-1"),
        (lambda: tfnorm.LocalResponseNormalization(depth_radius=-1), r"depth_radius.*>= 0.*-1"),
        (
            lambda: tfnorm.LocalResponseNormalization(beta=-0.5),
            r"beta must be a finite non-negative.*-0.5",
        ),
        (lambda: tfnorm.LocalResponseNormalization(alpha="big"), r"alpha must be a number.*'big'"),
        (lambda: tfnorm.PixelNormalization(epsilon=0), r"epsilon must be a finite positive"),
        (lambda: tfnorm.ScaleNormalization(epsilon=-1e-5), r"epsilon must be a finite positive"),
        (lambda: tfnorm.DynamicTanh(alpha_init="0.5"), r"alpha_init must be a finite number"),
    ],
)
def test_construction_errors(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


@pytest.mark.parametrize(
    "make, shape, pattern",
    [
        (lambda: tfnorm.FilterResponseNormalization(), (4, 8), r"rank >= 3 .* shape \(4, 8\)"),
        (lambda: tfnorm.EvoNormB0(), (4, 8), r"rank >= 3"),
        (lambda: tfnorm.SwitchableNormalization(), (4, 8), r"rank >= 3"),
        (
            lambda: tfnorm.EvoNormS0(groups=3),
            (2, 4, 4, 8),
            r"groups=3 must divide the 8 channels.*groups=2.*groups=4",
        ),
        (lambda: tfnorm.TLU(axis=2), (2, 3), r"axis=2 is out of range"),
        (lambda: tfnorm.LocalResponseNormalization(axis=0), (2, 3), r"batch axis"),
    ],
)
def test_build_errors(make, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        make().build(shape)


def test_wrapper_config_rejects_unknown_keys():
    config = tfnorm.SpectralNormalization(keras.layers.Dense(2)).get_config()
    config["power_iteration"] = 3
    with pytest.raises(ValueError, match=r"'power_iteration' \(did you mean 'power_iterations'"):
        tfnorm.SpectralNormalization.from_config(config)
