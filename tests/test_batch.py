"""BatchNormalization specifics: moving statistics, masks, ghost batches, renorm state."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import tfnorm


def test_moving_statistics_follow_the_momentum_update():
    rng = np.random.default_rng(0)
    layer = tfnorm.BatchNormalization(momentum=0.8)
    mm, mv = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = rng.normal(size=(10, 4, 3)) * 2 + 1
        layer(x.astype("float32"), training=True)
        m = x.mean(axis=(0, 1))
        v = x.var(axis=(0, 1))
        mm = 0.8 * mm + 0.2 * m
        mv = 0.8 * mv + 0.2 * v
    np.testing.assert_allclose(layer.moving_mean.numpy(), mm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), mv, rtol=1e-5, atol=1e-6)


def test_masked_statistics_ignore_padded_steps():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 6, 4)) + 0.5
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = False
    mask[2, 1:] = False
    x_pad = x.copy()
    x_pad[~mask] = 1e3  # garbage in padded steps must not matter
    layer = tfnorm.BatchNormalization(momentum=0.0, epsilon=1e-5, center=False, scale=False)
    y = layer(x_pad.astype("float32"), training=True, mask=mask).numpy()
    valid = x[mask]
    m, v = valid.mean(0), valid.var(0)
    np.testing.assert_allclose(y[mask], (valid - m) / np.sqrt(v + 1e-5), atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), m, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), v, rtol=1e-5, atol=1e-5)


def test_mask_from_an_embedding_reaches_the_layer():
    tokens = np.array([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]])
    inp = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(10, 4, mask_zero=True)(inp)
    bn = tfnorm.BatchNormalization(momentum=0.0)
    out = bn(h)
    model = keras.Model(inp, out)
    model(tokens, training=True)
    emb = model.layers[1].embeddings.numpy()
    valid = emb[tokens[tokens > 0]]
    np.testing.assert_allclose(bn.moving_mean.numpy(), valid.mean(0), rtol=1e-5, atol=1e-6)


def test_ghost_batches_update_moving_stats_with_mean_of_sub_batch_statistics():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 3)) * 3
    layer = tfnorm.BatchNormalization(virtual_batch_size=4, momentum=0.0)
    layer(x.astype("float32"), training=True)
    parts = np.split(x, 2)
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), np.mean([p.mean(0) for p in parts], 0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), np.mean([p.var(0) for p in parts], 0), rtol=1e-5, atol=1e-6
    )
    # inference ignores virtual batches
    y = layer(x.astype("float32"), training=False).numpy()
    expect = (x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy() + 1e-3)
    np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5)


def test_renorm_tracks_mean_and_stddev_with_renorm_momentum():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 2)) * 2 + 3
    layer = tfnorm.BatchNormalization(renorm=True, renorm_momentum=0.5, momentum=0.9)
    layer(x.astype("float32"), training=True)
    m, s = x.mean(0), np.sqrt(x.var(0) + 1e-3)
    np.testing.assert_allclose(layer.renorm_mean.numpy(), 0.5 * m, rtol=1e-5)
    np.testing.assert_allclose(layer.renorm_stddev.numpy(), 0.5 * 1.0 + 0.5 * s, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * m, rtol=1e-5)


def test_frozen_layer_uses_moving_statistics_even_in_training():
    layer = tfnorm.BatchNormalization()
    x = np.random.default_rng(4).normal(size=(4, 3)).astype("float32") + 5
    layer.build(x.shape)
    layer.trainable = False
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-3), rtol=1e-6)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), 0)


def test_matches_keras_batch_normalization_as_a_second_check():
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(8, 4, 4, 3)) * 2 + 1).astype("float32")
    ours, theirs = tfnorm.BatchNormalization(), keras.layers.BatchNormalization()
    for training in (True, False):
        np.testing.assert_allclose(
            ours(x, training=training), theirs(x, training=training), atol=1e-5, rtol=1e-5
        )
    np.testing.assert_allclose(
        ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-6
    )


def test_large_mean_input_keeps_precision():
    # mean 1e4, std 1: the two-pass moments keep full float32 precision
    rng = np.random.default_rng(6)
    x = rng.normal(size=(64, 8)) + 1e4
    y = tfnorm.LayerNormalization(epsilon=1e-5)(tf.constant(x, tf.float32)).numpy()
    xf = x.astype(np.float32).astype(np.float64)
    ref = (xf - xf.mean(1, keepdims=True)) / np.sqrt(xf.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, ref, atol=5e-3)
