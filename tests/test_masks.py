"""Masks as Keras produces them (``Masking``, ``Embedding(mask_zero=True)``) and as tfnorm documents them."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm

EPS = 1e-3
MOMENTUM = 0.5


def _np_batch_norm(x, weights, axis, gamma, beta, eps=EPS):
    """Reference: per-channel statistics over the positions where ``weights`` (broadcast to x) is 1."""
    x = x.astype(np.float64)
    w = np.broadcast_to(weights, x.shape).astype(np.float64)
    axis = axis % x.ndim
    red = tuple(i for i in range(x.ndim) if i != axis)
    count = w.sum(red, keepdims=True)
    mean = (w * x).sum(red, keepdims=True) / count
    var = (w * (x - mean) ** 2).sum(red, keepdims=True) / count
    shape = [1] * x.ndim
    shape[axis] = -1
    y = gamma.reshape(shape) * (x - mean) / np.sqrt(var + eps) + beta.reshape(shape)
    return y, mean.ravel(), var.ravel()


def _keras_weights(mask):
    """Keras reads a mask of the leading axes: broadcast over the last axis."""
    return np.asarray(mask)[..., None]


def _padded_sequences(rng, n=3, t=6, c=4, lengths=(6, 4, 1)):
    x = rng.normal(size=(n, t, c)) * 2 + 1
    mask = np.zeros((n, t), bool)
    for i, length in enumerate(lengths):
        mask[i, :length] = True
    x[~mask] = 0.0  # what Masking(0.0) recognizes as padding
    return x.astype("float32"), mask


def _affine(rng, channels):
    return rng.normal(size=channels) + 1.0, rng.normal(size=channels)


def _set_affine(layer, gamma, beta):
    layer.gamma.assign(gamma.astype("float32"))
    layer.beta.assign(beta.astype("float32"))


def _check_layer(layer, y, x, weights, axis, gamma, beta):
    ref, mean, var = _np_batch_norm(x, weights, axis, gamma, beta)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), MOMENTUM * mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), MOMENTUM + (1 - MOMENTUM) * var, rtol=1e-4, atol=1e-5
    )


def _channels_first_bn(rng, channels):
    """A built ``BatchNormalization(axis=1)`` with random gamma and beta: ``(layer, gamma, beta)``."""
    gamma, beta = _affine(rng, channels)
    layer = tfnorm.BatchNormalization(axis=1, momentum=MOMENTUM, epsilon=EPS)
    return layer, gamma, beta


def _check_masked_training_call(rng, x, mask, weights):
    """One training call of a channels-first BN with ``mask`` against NumPy (``weights``)."""
    layer, gamma, beta = _channels_first_bn(rng, x.shape[1])
    layer.build(x.shape)
    _set_affine(layer, gamma, beta)
    y = layer(x, training=True, mask=mask)
    _check_layer(layer, y, x, weights, 1, gamma, beta)


def _masking_model(layer, shape):
    inp = keras.Input(shape)
    return keras.Model(inp, layer(keras.layers.Masking(0.0)(inp)))


# --- Keras-produced masks ---------------------------------------------------------


@pytest.mark.parametrize("axis", [-1, 1])
def test_masking_layer_mask_matches_numpy_and_keras(axis):
    rng = np.random.default_rng(0)
    x, mask = _padded_sequences(rng)
    channels = x.shape[axis]
    gamma, beta = _affine(rng, channels)

    outputs = {}
    for cls in (tfnorm.BatchNormalization, keras.layers.BatchNormalization):
        layer = cls(axis=axis, momentum=MOMENTUM, epsilon=EPS)
        model = _masking_model(layer, x.shape[1:])
        _set_affine(layer, gamma, beta)
        outputs[cls] = model(x, training=True).numpy()
        _check_layer(layer, outputs[cls], x, _keras_weights(mask), axis, gamma, beta)
    np.testing.assert_allclose(
        outputs[tfnorm.BatchNormalization],
        outputs[keras.layers.BatchNormalization],
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("axis", [-1, 1])
def test_embedding_mask_zero_matches_numpy_and_keras(axis):
    tokens = np.array([[3, 4, 5, 2, 8], [6, 7, 0, 0, 0], [9, 1, 2, 0, 0]])
    rng = np.random.default_rng(1)
    table = rng.normal(size=(10, 3)).astype("float32")
    x = table[tokens]
    mask = tokens > 0
    channels = x.shape[axis]
    gamma, beta = _affine(rng, channels)

    outputs = {}
    for cls in (tfnorm.BatchNormalization, keras.layers.BatchNormalization):
        inp = keras.Input((5,), dtype="int32")
        emb = keras.layers.Embedding(10, 3, mask_zero=True)
        layer = cls(axis=axis, momentum=MOMENTUM, epsilon=EPS)
        model = keras.Model(inp, layer(emb(inp)))
        emb.embeddings.assign(table)
        _set_affine(layer, gamma, beta)
        outputs[cls] = model(tokens, training=True).numpy()
        _check_layer(layer, outputs[cls], x, _keras_weights(mask), axis, gamma, beta)
    np.testing.assert_allclose(
        outputs[tfnorm.BatchNormalization],
        outputs[keras.layers.BatchNormalization],
        rtol=1e-4,
        atol=1e-4,
    )


def test_keras_mask_on_a_4d_input_with_a_middle_channel_axis():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3, 5, 2)).astype("float32")
    mask = rng.random((4, 3, 5)) > 0.3
    mask[0] = True
    _check_masked_training_call(rng, x, mask, _keras_weights(mask))


def test_keras_mask_with_unknown_sizes_in_a_traced_call():
    rng = np.random.default_rng(3)
    x, mask = _padded_sequences(rng)
    layer, gamma, beta = _channels_first_bn(rng, 6)
    layer.build(x.shape)
    _set_affine(layer, gamma, beta)

    @tf.function(
        input_signature=[tf.TensorSpec((None, 6, None)), tf.TensorSpec((None, 6), tf.bool)]
    )
    def step(a, m):
        return layer(a, training=True, mask=m)

    y = step(x, mask)
    _check_layer(layer, y, x, _keras_weights(mask), 1, gamma, beta)


# --- tfnorm's own convention: the input's shape without the channel axis ---------


def test_channels_first_mask_without_the_channel_axis_still_works():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 4, 6)).astype("float32")  # (N, C, T)
    mask = np.ones((3, 6), bool)  # (N, T)
    mask[1, 3:] = False
    mask[2, 1:] = False
    x[~np.broadcast_to(mask[:, None, :], x.shape)] = 1e3  # padded garbage must not count
    _check_masked_training_call(rng, x, mask, mask[:, None, :])


def test_a_shape_that_fits_both_readings_is_read_the_tfnorm_way():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4, 4)).astype("float32")
    mask = rng.random((3, 4)) > 0.4
    mask[0] = True
    _check_masked_training_call(rng, x, mask, mask[:, None, :])


def test_unknown_sizes_pick_the_reading_the_run_time_shapes_fit():
    rng = np.random.default_rng(6)
    layer = tfnorm.BatchNormalization(axis=1, momentum=0.0, epsilon=EPS, center=False, scale=False)
    layer.build((None, 4, None))

    @tf.function(input_signature=[tf.TensorSpec((None, 4, None)), tf.TensorSpec((None, None))])
    def step(a, m):
        return layer(a, training=True, mask=m)

    x = rng.normal(size=(3, 4, 6)).astype("float32")
    for mask in (rng.random((3, 6)) > 0.3, rng.random((3, 4)) > 0.3):  # tfnorm's, Keras'
        mask[0] = True
        weights = mask[:, None, :] if mask.shape[1] == 6 else mask[:, :, None]
        y = step(x, mask.astype("float32"))
        ref, mean, var = _np_batch_norm(x, weights, 1, np.ones(4), np.zeros(4))
        np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"mask"):
        step(x, np.ones((3, 5), "float32"))


# --- mask values -------------------------------------------------------------------


def test_a_float_mask_is_read_as_nonzero_means_kept_like_keras():
    rng = np.random.default_rng(7)
    x, mask = _padded_sequences(rng)
    values = np.where(mask, rng.choice([1.0, 0.5, -2.0], size=mask.shape), 0.0).astype("float32")
    results = []
    for m in (mask, mask.astype("float32"), mask.astype("int32"), values):
        layer = tfnorm.BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
        results.append(layer(x, training=True, mask=m).numpy())
        _check_layer(layer, results[-1], x, _keras_weights(mask), -1, np.ones(4), np.zeros(4))
    if tuple(int(p) for p in keras.__version__.split(".")[:2]) < (3, 15):
        pytest.skip(
            f"Keras {keras.__version__} weights the statistics by a float mask's values (3.15 "
            "reads nonzero as kept); tfnorm's reading was checked above"
        )
    keras_bn = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    np.testing.assert_allclose(
        results[-1], keras_bn(x, training=True, mask=values).numpy(), rtol=1e-4, atol=1e-4
    )


def test_a_non_numeric_mask_is_rejected():
    layer = tfnorm.BatchNormalization()
    with pytest.raises(ValueError, match=r"mask must be boolean or numeric.*string"):
        layer(np.ones((2, 5, 3), "float32"), training=True, mask=tf.constant([["a"] * 5] * 2))


# --- shapes that fit no convention -------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_a_mask_of_another_shape_names_the_shapes(training):
    layer = tfnorm.BatchNormalization()
    x = np.ones((3, 6, 4), "float32")
    with pytest.raises(
        ValueError,
        match=r"mask of shape \(3, 5\).*input of shape \(3, 6, 4\)"
        r".*\(3, 6\)",
    ):
        layer(x, training=training, mask=np.ones((3, 5), bool))
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.zeros(4))


def test_a_channels_first_mask_of_another_shape_lists_both_readings():
    layer = tfnorm.BatchNormalization(axis=1)
    x = np.ones((3, 4, 6), "float32")
    with pytest.raises(
        ValueError,
        match=r"mask of shape \(3, 5\).*input of shape \(3, 4, 6\)"
        r".*\(3, 6\).*\(3, 4\)",
    ):
        layer(x, training=True, mask=np.ones((3, 5), bool))


def test_a_static_mismatch_fails_while_tracing():
    layer = tfnorm.BatchNormalization(axis=1)
    layer.build((None, 4, 6))

    @tf.function(input_signature=[tf.TensorSpec((None, 4, 6)), tf.TensorSpec((None, 5), tf.bool)])
    def step(a, m):
        return layer(a, training=True, mask=m)

    with pytest.raises(ValueError, match=r"mask of shape \(None, 5\)"):
        step.get_concrete_function()


def test_a_mask_of_full_rank_is_rejected():
    layer = tfnorm.BatchNormalization()
    with pytest.raises(ValueError, match=r"mask must have rank 2.*\(2, 5, 3\)"):
        layer(np.ones((2, 5, 3), "float32"), training=True, mask=np.ones((2, 5, 3), bool))


def test_mask_with_ghost_batches_stays_an_error():
    layer = tfnorm.BatchNormalization(virtual_batch_size=2)
    with pytest.raises(ValueError, match=r"mask cannot be combined with virtual_batch_size=2"):
        layer(np.ones((4, 6, 3), "float32"), training=True, mask=np.ones((4, 6), bool))


# --- per-sample layers pass the mask on --------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: tfnorm.LayerNormalization(),
        lambda: tfnorm.GroupNormalization(groups=2),
        lambda: tfnorm.InstanceNormalization(),
    ],
)
def test_per_sample_layers_pass_the_mask_through(make):
    rng = np.random.default_rng(8)
    x, mask = _padded_sequences(rng)
    inp = keras.Input(x.shape[1:])
    h = make()(keras.layers.Masking(0.0)(inp))
    bn = tfnorm.BatchNormalization(momentum=0.0, center=False, scale=False)
    model = keras.Model(inp, bn(h))
    model(x, training=True)
    assert getattr(h, "_keras_mask", None) is not None


# --- group and instance normalization over time ignore padded steps ----------------


def _np_group_norm(x, keep, channel_axis, groups, gamma, beta, eps=EPS):
    """Reference: per sample and channel group, over the kept positions only."""
    x = np.moveaxis(x.astype(np.float64), channel_axis, -1)  # (N, ..., C)
    w = np.asarray(keep, np.float64)[..., None]  # (N, ..., 1)
    n, c = x.shape[0], x.shape[-1]
    xg = x.reshape(n, -1, groups, c // groups)
    wg = np.broadcast_to(w.reshape(n, -1, 1, 1), xg.shape)
    count = wg.sum((1, 3), keepdims=True)
    mean = (wg * xg).sum((1, 3), keepdims=True) / count
    var = (wg * (xg - mean) ** 2).sum((1, 3), keepdims=True) / count
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape) * gamma + beta
    return np.moveaxis(y, -1, channel_axis)


@pytest.mark.parametrize(
    "make,groups",
    [
        (lambda: tfnorm.GroupNormalization(groups=2, epsilon=EPS), 2),
        (lambda: tfnorm.InstanceNormalization(epsilon=EPS), 4),
    ],
)
def test_group_and_instance_norm_over_time_ignore_padded_steps(make, groups):
    rng = np.random.default_rng(9)
    x, mask = _padded_sequences(rng)
    gamma, beta = _affine(rng, 4)
    layer = make()
    model = _masking_model(layer, x.shape[1:])
    _set_affine(layer, gamma, beta)
    y = model(x).numpy()
    ref = _np_group_norm(x, mask, -1, groups, gamma, beta)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_instance_norm_channels_first_with_a_mask_ignores_padded_garbage():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(3, 4, 6)).astype("float32")  # (N, C, T)
    mask = np.ones((3, 6), bool)
    mask[1, 2:] = False
    x[~np.broadcast_to(mask[:, None, :], x.shape)] = np.inf  # padded garbage must not count
    layer = tfnorm.InstanceNormalization(axis=1, epsilon=EPS)
    y = layer(x, mask=mask).numpy()
    ref = _np_group_norm(np.where(np.isinf(x), 0, x), mask, 1, 4, np.ones(4), np.zeros(4))
    keep = np.broadcast_to(mask[:, None, :], x.shape)
    np.testing.assert_allclose(y[keep], ref[keep], rtol=1e-4, atol=1e-4)


def test_group_norm_rejects_a_mask_of_another_shape():
    layer = tfnorm.GroupNormalization(groups=2)
    with pytest.raises(
        ValueError,
        match=r"mask of shape \(3, 5\).*input of shape \(3, 6, 4\)"
        r".*\(3, 6\)",
    ):
        layer(np.ones((3, 6, 4), "float32"), mask=np.ones((3, 5), bool))
