"""WeightNormalization over recurrent layers, SpectralNormalization over every Keras layer with a
kernel or embeddings, and ``remove()``.

Each output is checked against NumPy written from the papers' formulas (weight norm:
``w = g v / ||v||`` per unit over the fan-in; spectral norm: ``W / sigma`` with ``sigma`` from
Miyato et al.'s power iteration from the stored ``u``) with the layer's operation also in NumPy
(transposed, depthwise and separable convolutions as sums over kernel offsets, the SimpleRNN,
LSTM and GRU recurrences step by step). Then: gradients reach the stored kernels, the wrapped
layer's variables are never written, config and ``.keras`` round trips, ``remove()``.
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

L = keras.layers


def _sig(t):
    return 1.0 / (1.0 + np.exp(-t))


# ---------------------------------------------------------------------------
# NumPy operations


def conv_transpose_valid(x, w, strides):
    """A 'valid' transposed convolution, channels_last: the adjoint of the convolution with
    kernel ``w`` (shape ``(*k, filters, in)``), i.e. ``y[i*s + k] += x[i] @ w[k].T``."""
    r = w.ndim - 2
    s = (strides,) * r if np.isscalar(strides) else tuple(strides)
    k, n = w.shape[:r], x.shape[1:-1]
    out = [(n[i] - 1) * s[i] + k[i] for i in range(r)]
    y = np.zeros((x.shape[0], *out, w.shape[-2]))
    for off in np.ndindex(*k):
        idx = tuple(slice(off[i], off[i] + (n[i] - 1) * s[i] + 1, s[i]) for i in range(r))
        y[(slice(None),) + idx + (slice(None),)] += x @ w[off].T
    return y


def depthwise(x, w, **conv):
    """Depthwise convolution: channel c convolved with w[..., c, m] gives channel c*mult + m."""
    r = w.ndim - 2
    grouped = w.reshape(w.shape[:r] + (1, w.shape[-2] * w.shape[-1]))
    return conv_nd(x, grouped, groups=w.shape[-2], **conv)


def recurrence(kind, x, kernel, recurrent, bias, units, return_sequences=False, go_backwards=False):
    """SimpleRNN / LSTM / GRU (reset_after=True) on (batch, time, features), zero initial
    state; the final output, or the outputs in processing order."""
    h = np.zeros((x.shape[0], units))
    c = np.zeros_like(h)
    steps = range(x.shape[1])[::-1] if go_backwards else range(x.shape[1])
    outs = []
    for t in steps:
        xt = x[:, t]
        if kind == "simple":
            h = np.tanh(xt @ kernel + bias + h @ recurrent)
        elif kind == "lstm":  # gates i, f, c, o
            i, f, g, o = np.split(xt @ kernel + h @ recurrent + bias, 4, axis=1)
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
        else:  # gru, gates z, r, h; reset applied after the recurrent matmul
            xz, xr, xh = np.split(xt @ kernel + bias[0], 3, axis=1)
            rz, rr, rh = np.split(h @ recurrent + bias[1], 3, axis=1)
            z, r = _sig(xz + rz), _sig(xr + rr)
            h = z * h + (1 - z) * np.tanh(xh + r * rh)
        outs.append(h)
    return np.stack(outs, 1) if return_sequences else h


# ---------------------------------------------------------------------------
# SpectralNormalization over the new layer types


def _randomize(layer, rng):
    for v in layer.weights:
        v.assign(rng.uniform(-0.8, 0.8, size=v.shape).astype(v.dtype))


def _np_weights(layer):
    return {v.name: v.numpy().astype(np.float64) for v in layer.weights}


# (id, layer factory, input, numpy op(x, kernels dict) before bias)
_SN_CASES = [
    (
        "conv1d-transpose",
        lambda: L.Conv1DTranspose(3, 3, strides=2),
        (2, 4, 2),
        lambda x, k: conv_transpose_valid(x, k["kernel"], 2),
    ),
    (
        "conv2d-transpose",
        lambda: L.Conv2DTranspose(3, (2, 3), strides=(2, 1), activation="relu"),
        (2, 3, 3, 2),
        lambda x, k: conv_transpose_valid(x, k["kernel"], (2, 1)),
    ),
    (
        "conv3d-transpose",
        lambda: L.Conv3DTranspose(2, 2, use_bias=False),
        (1, 2, 2, 2, 2),
        lambda x, k: conv_transpose_valid(x, k["kernel"], 1),
    ),
    (
        "depthwise1d",
        lambda: L.DepthwiseConv1D(2, depth_multiplier=3),
        (2, 5, 2),
        lambda x, k: depthwise(x, k["kernel"]),
    ),
    (
        "depthwise2d",
        lambda: L.DepthwiseConv2D((2, 2), depth_multiplier=2, padding="same"),
        (2, 4, 4, 3),
        lambda x, k: depthwise(x, k["kernel"], padding="same"),
    ),
    (
        "separable1d",
        lambda: L.SeparableConv1D(4, 2, depth_multiplier=2),
        (2, 5, 3),
        lambda x, k: depthwise(x, k["depthwise_kernel"]) @ k["pointwise_kernel"][0],
    ),
    (
        "separable2d",
        lambda: L.SeparableConv2D(3, 2, strides=2),
        (2, 4, 4, 2),
        lambda x, k: depthwise(x, k["depthwise_kernel"], strides=2) @ k["pointwise_kernel"][0, 0],
    ),
]
_KERNEL_NAMES = {"separable": ("depthwise_kernel", "pointwise_kernel")}


def _kernel_names(case_id):
    return _KERNEL_NAMES.get(case_id[:9], ("kernel",))


def _u_names(names):
    return ["u"] if len(names) == 1 else ["u_depthwise", "u_pointwise"]


def _sn_reference(case_id, op, x, p, steps, training):
    """W / sigma for each kernel (sigma: Alg. 1 from the stored u, or ||W u|| in inference),
    then the op, the bias and the activation."""
    names = _kernel_names(case_id)
    normalized = {}
    for name, u_name in zip(names, _u_names(names)):
        w = p[name]
        w2 = w.reshape(-1, w.shape[-1])
        if training:
            _, _, sigma = power_iteration(w2, p[u_name], steps)
        else:
            sigma = np.linalg.norm(w2 @ (p[u_name] / np.linalg.norm(p[u_name])))
        normalized[name] = w / sigma
    y = op(x, normalized)
    if "bias" in p:
        y = y + p["bias"]
    return y


@pytest.mark.parametrize("case_id, make, shape, op", _SN_CASES, ids=[c[0] for c in _SN_CASES])
def test_spectral_matches_numpy(case_id, make, shape, op):
    rng = np.random.default_rng(1)
    sn = tfnorm.SpectralNormalization(make(), power_iterations=2)
    sn.build(shape)
    _randomize(sn.layer, rng)
    x = rng.normal(size=shape)
    p = _np_weights(sn)
    relu = getattr(sn.layer, "activation", None) is keras.activations.relu
    for training in (True, False):
        if not training:  # training stored the new u; inference uses it as is (||W u||)
            p = _np_weights(sn)
        y = sn(x.astype("float32"), training=training).numpy()
        ref = _sn_reference(case_id, op, x, p, 2, training)
        np.testing.assert_allclose(y, np.maximum(ref, 0) if relu else ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.Conv2DTranspose(4, 3), (1, 3, 3, 5)),
        (lambda: L.DepthwiseConv2D(2, depth_multiplier=3), (1, 3, 3, 2)),
        (lambda: L.SeparableConv1D(3, 2, depth_multiplier=2), (1, 4, 3)),
        (lambda: L.Embedding(7, 5), None),
    ],
    ids=["conv2d-transpose", "depthwise2d", "separable1d", "embedding"],
)
def test_spectral_sigma_is_the_largest_singular_value(make, shape):
    """After enough power iteration each kernel, as the (-1, last axis) matrix Keras uses,
    has largest singular value 1 once divided by the layer's sigma (compared with NumPy's SVD)."""
    keras.utils.set_random_seed(2)
    sn = tfnorm.SpectralNormalization(make(), power_iterations=60)
    x = np.array([[1, 2]]) if shape is None else np.zeros(shape, "float32")
    for _ in range(5):  # 300 steps: close singular values converge slowly
        sn(x, training=True)
    for name, value in sn._effective().items():
        w = getattr(sn.layer, name).numpy().astype(np.float64)
        w2 = w.reshape(-1, w.shape[-1])
        sigma = np.linalg.svd(w2, compute_uv=False)[0]
        np.testing.assert_allclose(value.numpy().astype(np.float64), w / sigma, rtol=1e-4)


def test_spectral_embedding_matches_numpy():
    rng = np.random.default_rng(3)
    sn = tfnorm.SpectralNormalization(L.Embedding(6, 4), power_iterations=3)
    idx = np.array([[0, 5, 2], [3, 3, 1]])
    sn.build(idx.shape)
    _randomize(sn.layer, rng)
    p = _np_weights(sn)
    w = p["embeddings"]
    _, _, sigma = power_iteration(w, p["u"], 3)  # rows: the vocabulary, columns: output_dim
    y = sn(idx, training=True)
    assert y.dtype == tf.float32
    np.testing.assert_allclose(y.numpy(), (w / sigma)[idx], rtol=2e-5, atol=2e-6)
    p = _np_weights(sn)
    sigma = np.linalg.norm(w @ (p["u"] / np.linalg.norm(p["u"])))
    np.testing.assert_allclose(sn(idx).numpy(), (w / sigma)[idx], rtol=2e-5, atol=2e-6)


def test_spectral_embedding_keeps_the_mask():
    emb = L.Embedding(5, 3, mask_zero=True)
    sn = tfnorm.SpectralNormalization(emb)
    idx = np.array([[0, 2, 4]])
    np.testing.assert_array_equal(sn.compute_mask(idx), [[False, True, True]])
    inp = keras.Input((3,), dtype="int32")
    lstm = L.LSTM(2, go_backwards=True)
    model = keras.Model(inp, lstm(sn(inp)))  # the mask reaches the LSTM as from the Embedding
    want = lstm(sn(idx), mask=idx != 0).numpy()
    np.testing.assert_allclose(model(idx).numpy(), want, rtol=1e-6)
    assert not np.allclose(lstm(tf.identity(sn(idx))).numpy(), want)  # without the mask


# ---------------------------------------------------------------------------
# WeightNormalization over recurrent layers

# (id, layer factory, numpy kind, recurrence options)
_RNN_CASES = [
    ("simplernn", lambda: L.SimpleRNN(3), "simple", {}),
    ("lstm", lambda: L.LSTM(3), "lstm", {}),
    (
        "lstm-sequences-backwards",
        lambda: L.LSTM(2, return_sequences=True, go_backwards=True),
        "lstm",
        {"return_sequences": True, "go_backwards": True},
    ),
    ("lstm-implementation1", lambda: L.LSTM(2, implementation=1), "lstm", {}),
    ("gru", lambda: L.GRU(3, return_sequences=True), "gru", {"return_sequences": True}),
]


@pytest.mark.parametrize("case_id, make, kind, opts", _RNN_CASES, ids=[c[0] for c in _RNN_CASES])
def test_weightnorm_recurrent_matches_numpy(case_id, make, kind, opts):
    rng = np.random.default_rng(4)
    wn = tfnorm.WeightNormalization(make(), data_init=False)
    x = rng.normal(size=(2, 4, 3))
    wn.build(x.shape)
    _randomize(wn.layer, rng)
    wn.g.assign(rng.uniform(0.5, 2.0, size=wn.g.shape).astype("float32"))
    cell = wn.layer.cell
    v = cell.kernel.numpy().astype(np.float64)
    w = wn.g.numpy() * v / np.linalg.norm(v, axis=0)  # per column: one gate of one unit
    ref = recurrence(
        kind,
        x,
        w,
        cell.recurrent_kernel.numpy().astype(np.float64),
        cell.bias.numpy().astype(np.float64),
        cell.units,
        **opts,
    )
    for training in (False, True):
        np.testing.assert_allclose(
            wn(x.astype("float32"), training=training).numpy(), ref, rtol=2e-5, atol=2e-6
        )
    y = tf.function(lambda t: wn(t), jit_compile=True)(x.astype("float32"))
    np.testing.assert_allclose(y.numpy(), ref, rtol=2e-5, atol=2e-6)


def test_weightnorm_recurrent_starts_as_the_plain_layer_masks_and_states_included():
    """g starts at ||v||: the wrapper is the wrapped LSTM's function, mask and initial state
    passed on, states returned."""
    rng = np.random.default_rng(5)
    lstm = L.LSTM(3, return_state=True)
    wn = tfnorm.WeightNormalization(lstm, data_init=False)
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    state = [rng.normal(size=(2, 3)).astype("float32") for _ in range(2)]
    got = wn(x, mask=mask, initial_state=state)
    want = lstm(x, mask=mask, initial_state=state)
    assert len(got) == 3
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # a mask from an Embedding(mask_zero=True) upstream reaches the wrapped layer
    inp = keras.Input((4,), dtype="int32")
    emb = L.Embedding(6, 4, mask_zero=True)
    gru = L.GRU(2)
    wrapped = keras.Model(inp, tfnorm.WeightNormalization(gru, data_init=False)(emb(inp)))
    plain = keras.Model(inp, gru(emb(inp)))
    idx = np.array([[1, 2, 0, 0], [3, 4, 5, 1]])
    np.testing.assert_allclose(wrapped(idx).numpy(), plain(idx).numpy(), rtol=1e-5, atol=1e-6)


def test_weightnorm_recurrent_mixed_precision():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    wn32 = tfnorm.WeightNormalization(L.GRU(3), data_init=False)
    wn16 = tfnorm.WeightNormalization(L.GRU(3, dtype="mixed_float16"), data_init=False)
    wn32.build(x.shape)
    wn16.build(x.shape)
    wn16.set_weights(wn32.get_weights())
    y = wn16(x, training=True)
    assert y.dtype == tf.float16
    assert wn16.g.dtype == "float32" and wn16.layer.cell.kernel.dtype == "float32"
    np.testing.assert_allclose(y.numpy().astype(np.float32), wn32(x).numpy(), atol=5e-3)


# ---------------------------------------------------------------------------
# Gradients reach the stored kernels; the wrapped layer's variables are never written


def _wn_rnn(layer):
    return tfnorm.WeightNormalization(layer, data_init=False)


_ALL = [
    ("wn-simplernn", lambda: _wn_rnn(L.SimpleRNN(2)), (2, 3, 2)),
    ("wn-lstm", lambda: _wn_rnn(L.LSTM(2, dropout=0.3)), (2, 3, 2)),
    ("wn-gru", lambda: _wn_rnn(L.GRU(2, reset_after=False)), (2, 3, 2)),
    (
        "sn-conv2d-transpose",
        lambda: tfnorm.SpectralNormalization(L.Conv2DTranspose(2, 2, strides=2)),
        (2, 3, 3, 2),
    ),
    (
        "sn-conv1d-transpose",
        lambda: tfnorm.SpectralNormalization(L.Conv1DTranspose(2, 2)),
        (2, 3, 2),
    ),
    (
        "sn-depthwise2d",
        lambda: tfnorm.SpectralNormalization(L.DepthwiseConv2D(2, depth_multiplier=2)),
        (2, 3, 3, 2),
    ),
    (
        "sn-separable2d",
        lambda: tfnorm.SpectralNormalization(L.SeparableConv2D(3, 2, activation="relu")),
        (2, 3, 3, 2),
    ),
    ("sn-embedding", lambda: tfnorm.SpectralNormalization(L.Embedding(5, 3)), (2, 3)),
    ("sn-dense", lambda: tfnorm.SpectralNormalization(L.Dense(3)), (2, 4)),
    ("wn-conv2d", lambda: tfnorm.WeightNormalization(L.Conv2D(2, 2)), (2, 3, 3, 2)),
]


def _input(wrapper, shape, rng):
    if isinstance(wrapper.layer, L.Embedding):
        return rng.integers(0, wrapper.layer.input_dim, size=shape)
    return rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("case_id, make, shape", _ALL, ids=[c[0] for c in _ALL])
def test_gradients_reach_the_stored_kernels_and_nothing_is_written(case_id, make, shape):
    rng = np.random.default_rng(7)
    wrapper = make()
    x = _input(wrapper, shape, rng)
    wrapper.build(x.shape)
    inner = wrapper.layer
    _randomize(inner, rng)
    before = [v.numpy().copy() for v in inner.weights]
    with NoWrites(inner.weights):
        with tf.GradientTape() as tape:
            y = wrapper(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * rng.normal(size=y.shape))
        grads = tape.gradient(loss, inner.trainable_weights)
        tf.function(lambda t: wrapper(t, training=True))(x)
        wrapper(x, training=False)
    for b, v in zip(before, inner.weights):
        np.testing.assert_array_equal(v.numpy(), b)
    for g, v in zip(grads, inner.trainable_weights):
        assert g is not None, v.name
        g = np.asarray(tf.convert_to_tensor(g))
        assert np.isfinite(g).all() and np.abs(g).max() > 0, v.name


def test_spectral_gradient_of_a_new_type_matches_finite_differences():
    """The inference gradient with respect to the stored kernel is that of y(W / ||W u||)."""
    rng = np.random.default_rng(8)
    sn = tfnorm.SpectralNormalization(L.Conv1DTranspose(2, 2, use_bias=False, dtype="float64"))
    x = rng.normal(size=(1, 3, 2))
    sn.build(x.shape)
    kernel = sn.layer.kernel
    dy = rng.normal(size=sn(x).shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(sn(x) * dy)
    g = tape.gradient(loss, kernel).numpy()
    u = sn.u.numpy() / np.linalg.norm(sn.u.numpy())

    def f(w):
        return np.sum(conv_transpose_valid(x, w / np.linalg.norm(w.reshape(-1, 2) @ u), 1) * dy)

    w0, num = kernel.numpy(), np.zeros_like(kernel.numpy())
    for i in np.ndindex(*w0.shape):
        e = np.zeros_like(w0)
        e[i] = 1e-6
        num[i] = (f(w0 + e) - f(w0 - e)) / 2e-6
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------
# config and .keras round trips


@pytest.mark.parametrize("case_id, make, shape", _ALL[:8], ids=[c[0] for c in _ALL[:8]])
def test_config_and_keras_file_round_trip(case_id, make, shape, tmp_path):
    rng = np.random.default_rng(9)
    wrapper = make()
    x = _input(wrapper, shape, rng)
    dtype = "int32" if isinstance(wrapper.layer, L.Embedding) else "float32"
    inp = keras.Input(shape[1:], dtype=dtype)
    model = keras.Model(inp, wrapper(inp))
    _randomize(wrapper.layer, rng)
    model(x, training=True)  # moves u (spectral norm)
    clone = type(wrapper).from_config(wrapper.get_config())
    assert clone.get_config() == wrapper.get_config()
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)
    assert type(loaded.layers[-1]) is type(wrapper)
    assert type(loaded.layers[-1].layer) is type(wrapper.layer)


# ---------------------------------------------------------------------------
# remove()

_REMOVE = _ALL + [
    ("wn-dense-data-init", lambda: tfnorm.WeightNormalization(L.Dense(3)), (6, 4)),
    (
        "wn-conv1d-causal",
        lambda: tfnorm.WeightNormalization(L.Conv1D(2, 2, padding="causal"), data_init=False),
        (2, 5, 3),
    ),
    (
        "sn-conv2d",
        lambda: tfnorm.SpectralNormalization(L.Conv2D(3, 2), power_iterations=3),
        (2, 4, 4, 2),
    ),
    ("sn-separable1d", lambda: tfnorm.SpectralNormalization(L.SeparableConv1D(2, 2)), (2, 4, 3)),
]


@pytest.mark.parametrize("case_id, make, shape", _REMOVE, ids=[c[0] for c in _REMOVE])
def test_remove_gives_a_plain_layer_with_the_inference_function(case_id, make, shape):
    rng = np.random.default_rng(10)
    wrapper = make()
    x = _input(wrapper, shape, rng)
    wrapper.build(x.shape)
    _randomize(wrapper.layer, rng)
    wrapper(x, training=True)  # data_init sets g and the offset, spectral norm moves u
    if hasattr(wrapper, "g"):
        wrapper.g.assign(rng.uniform(0.5, 2.0, size=wrapper.g.shape).astype("float32"))
    before = [v.numpy().copy() for v in wrapper.weights]
    with NoWrites(wrapper.weights):
        plain = wrapper.remove()
    for b, v in zip(before, wrapper.weights):  # neither the wrapper nor the wrapped changed
        np.testing.assert_array_equal(v.numpy(), b)
    assert type(plain) is type(wrapper.layer) and plain is not wrapper.layer
    assert len(plain.weights) == len(wrapper.layer.weights)
    assert not any(p is v for p in plain.weights for v in wrapper.layer.weights)
    want = keras.tree.flatten(wrapper(x, training=False))
    got = keras.tree.flatten(plain(x, training=False))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_remove_holds_the_effective_kernel():
    """The removed Dense's kernel is g v / ||v|| and its bias the bias plus the offset."""
    rng = np.random.default_rng(11)
    wn = tfnorm.WeightNormalization(L.Dense(3))
    x = rng.normal(size=(8, 4)).astype("float32")
    wn(x, training=True)
    v = wn.layer.kernel.numpy().astype(np.float64)
    plain = wn.remove()
    np.testing.assert_allclose(
        plain.kernel.numpy(), wn.g.numpy() * v / np.linalg.norm(v, axis=0), rtol=1e-6
    )
    np.testing.assert_allclose(
        plain.bias.numpy(), wn.layer.bias.numpy() + wn.offset.numpy(), rtol=1e-6, atol=1e-7
    )
    rnn = tfnorm.WeightNormalization(L.SimpleRNN(2), data_init=False)
    rnn.build((1, 3, 4))
    rnn.g.assign([2.0, 0.5])
    v = rnn.layer.cell.kernel.numpy().astype(np.float64)
    plain = rnn.remove()
    np.testing.assert_allclose(
        plain.cell.kernel.numpy(), [2.0, 0.5] * v / np.linalg.norm(v, axis=0), rtol=1e-6
    )
    np.testing.assert_array_equal(
        plain.cell.recurrent_kernel.numpy(), rnn.layer.cell.recurrent_kernel.numpy()
    )


def test_remove_needs_a_built_wrapper():
    with pytest.raises(ValueError, match="remove.. needs a built wrapper"):
        tfnorm.SpectralNormalization(L.Dense(2)).remove()


# ---------------------------------------------------------------------------
# What stays unsupported


@pytest.mark.parametrize(
    "make, pattern",
    [
        (
            lambda: tfnorm.WeightNormalization(L.Embedding(3, 2)),
            r"WeightNormalization wraps keras.layers Dense, Conv1D, Conv2D, Conv3D, SimpleRNN, LSTM, "
            r"GRU \(with their own call\), received layer=.*Embedding",
        ),
        (lambda: tfnorm.WeightNormalization(L.Conv2DTranspose(3, 2)), r"type Conv2DTranspose"),
        (
            lambda: tfnorm.SpectralNormalization(L.LSTM(3)),
            r"SpectralNormalization wraps keras.layers Dense, .*Conv2DTranspose.*DepthwiseConv2D.*"
            r"SeparableConv2D, Embedding .*type LSTM",
        ),
        (lambda: tfnorm.WeightNormalization(L.RNN(L.LSTMCell(2))), r"type RNN"),
        (
            lambda: tfnorm.WeightNormalization(L.LSTM(3), data_init=True),
            r"feed-forward layers.*data_init=False",
        ),
        (lambda: _wn_rnn(L.GRU(3, stateful=True)), r"stateful=False"),
        (lambda: _wn_rnn(L.LSTM(3, use_cudnn=True)), r"use_cudnn=True"),
    ],
    ids=[
        "wn-embedding",
        "wn-conv-transpose",
        "sn-lstm",
        "wn-generic-rnn",
        "wn-rnn-data-init",
        "wn-stateful",
        "wn-cudnn",
    ],
)
def test_unsupported_layers_are_rejected(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_recurrent_layers_take_data_init_false():
    """The default data_init=True is refused for a recurrent layer, with the fix in the message."""
    with pytest.raises(ValueError, match=r"wrap LSTM 'lstm_x' with data_init=False"):
        tfnorm.WeightNormalization(L.LSTM(2, name="lstm_x"))
    wn = tfnorm.WeightNormalization(L.LSTM(2), data_init=False)
    assert wn.get_config()["data_init"] is False


def test_remove_refuses_a_lora_layer_that_the_wrapper_still_runs():
    dense = L.Dense(2)
    dense.build((1, 3))
    dense.enable_lora(1)
    wn = tfnorm.WeightNormalization(dense, data_init=False)
    wn(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="has LoRA enabled"):
        wn.remove()
