"""Behaviours a user porting from Keras or TF-Addons expects, each checked against NumPy and
against the peer where one is installed.

* ``GroupNormalization(groups=-1)``: one group per channel, as in Keras 3 and TF-Addons;
  the config keeps ``-1`` after build.
* ``TLU(affine=True)``: TF-Addons' TLU-affine, ``max(x, alpha * x + tau)``.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm

# keras.layers.BatchNormalization has renorm from Keras 3.14 on
needs_keras_renorm = pytest.mark.skipif(
    "renorm" not in inspect.signature(keras.layers.BatchNormalization).parameters,
    reason=f"Keras {keras.__version__}'s BatchNormalization has no renorm to compare with",
)


def _instance_norm(x, epsilon):
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    return (x - mu) / np.sqrt(var + epsilon)


def test_group_norm_minus_one_is_one_group_per_channel():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 6)) * 3 + 1
    layer = tfnorm.GroupNormalization(groups=-1, epsilon=1e-3)
    y = layer(x.astype("float32")).numpy()
    np.testing.assert_allclose(y, _instance_norm(x, 1e-3), rtol=1e-5, atol=2e-5)
    assert layer.groups == -1 and layer.get_config()["groups"] == -1  # build keeps the argument
    again = tfnorm.GroupNormalization.from_config(layer.get_config())
    np.testing.assert_array_equal(again(x.astype("float32")).numpy(), y)


def test_group_norm_minus_one_matches_keras():
    x = np.random.default_rng(1).normal(size=(3, 4, 4, 8)).astype("float32")
    ours = tfnorm.GroupNormalization(groups=-1)
    theirs = keras.layers.GroupNormalization(groups=-1)
    ours.build(x.shape)
    theirs.build(x.shape)
    rng = np.random.default_rng(2)
    weights = [rng.uniform(0.5, 1.5, size=w.shape).astype("float32") for w in ours.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [0, -2, 2.0, "all"])
def test_group_norm_other_groups_values_are_errors(groups):
    with pytest.raises(
        ValueError,
        match=rf"groups must be an integer >= 1, received "
        rf"groups={groups!r}",
    ):
        tfnorm.GroupNormalization(groups=groups)


def test_tlu_affine_is_max_of_x_and_a_learned_line():
    x = np.linspace(-2, 2, 24).reshape(2, 3, 4)
    layer = tfnorm.TLU(
        affine=True,
        tau_initializer=keras.initializers.Constant(0.25),
        alpha_initializer=keras.initializers.Constant(0.5),
    )
    y = layer(x.astype("float32")).numpy()
    np.testing.assert_allclose(y, np.maximum(x, 0.5 * x + 0.25), rtol=1e-6)
    assert [w.name for w in layer.weights] == ["tau", "alpha"]
    assert layer.alpha.shape == (4,)


def test_tlu_affine_gradients_follow_the_active_side():
    x = tf.constant([[-2.0, 1.0]])
    layer = tfnorm.TLU(affine=True, alpha_initializer=keras.initializers.Constant(0.5))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    dx, dtau, dalpha = tape.gradient(y, [x, layer.tau, layer.alpha])
    # x = -2: the line 0.5 x = -1 is above x, so dy/dx = alpha, dy/dtau = 1, dy/dalpha = x
    # x = 1: x is above the line 0.5, so dy/dx = 1 and the line gets nothing
    np.testing.assert_allclose(dx.numpy(), [[0.5, 1.0]])
    np.testing.assert_allclose(dtau.numpy(), [1.0, 0.0])
    np.testing.assert_allclose(dalpha.numpy(), [-2.0, 0.0])


def test_tlu_without_affine_has_no_alpha_and_keeps_its_config():
    layer = tfnorm.TLU()
    layer(np.zeros((1, 3), "float32"))
    assert layer.alpha is None and [w.name for w in layer.weights] == ["tau"]
    config = layer.get_config()
    assert config["affine"] is False
    assert tfnorm.TLU.from_config(config).get_config() == config


# ---------------------------------------------------------------------------
# Batch renormalization: the paper's moving standard deviation, Keras' weight layout


def _renorm_pair(**kwargs):
    ours = tfnorm.BatchNormalization(renorm=True, **kwargs)
    theirs = keras.layers.BatchNormalization(renorm=True, **kwargs)
    return ours, theirs


@needs_keras_renorm
def test_renorm_weight_layout_is_keras():
    ours, theirs = _renorm_pair()
    ours.build((None, 3))
    theirs.build((None, 3))
    assert (
        [w.name for w in ours.weights]
        == [w.name for w in theirs.weights]
        == [
            "gamma",
            "beta",
            "moving_mean",
            "moving_variance",
            "moving_stddev",
            "renorm_mean",
            "renorm_stddev",
        ]
    )


def test_renorm_moving_statistics_follow_ioffe_2017_algorithm_1():
    """moving mean and moving sigma_B = sqrt(var_B + eps) with momentum; variance derived."""
    rng = np.random.default_rng(5)
    eps, mom, rmom = 1e-3, 0.8, 0.6
    layer = tfnorm.BatchNormalization(renorm=True, momentum=mom, renorm_momentum=rmom, epsilon=eps)
    mu, sigma, r_mu, r_sigma = np.zeros(3), np.ones(3), np.zeros(3), np.ones(3)
    for step in range(4):
        x = rng.normal(size=(4, 3)) * (step + 1) + step
        layer(x.astype("float32"), training=True)
        m, s = x.mean(0), np.sqrt(x.var(0) + eps)
        mu, sigma = mom * mu + (1 - mom) * m, mom * sigma + (1 - mom) * s
        r_mu, r_sigma = rmom * r_mu + (1 - rmom) * m, rmom * r_sigma + (1 - rmom) * s
    np.testing.assert_allclose(layer.moving_mean.numpy(), mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_stddev.numpy(), sigma, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), sigma**2 - eps, rtol=1e-5)
    np.testing.assert_allclose(layer.renorm_mean.numpy(), r_mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.renorm_stddev.numpy(), r_sigma, rtol=1e-5)


@needs_keras_renorm
@pytest.mark.parametrize("batch", [4, 8, 32])
def test_renorm_trained_on_small_batches_infers_like_keras(batch):
    rng = np.random.default_rng(batch)
    # rmin given: with rmax alone tfnorm clips r to [1/rmax, rmax] as the paper does, Keras
    # to (-inf, rmax]
    ours, theirs = _renorm_pair(
        momentum=0.9, renorm_clipping={"rmax": 3.0, "rmin": 1 / 3.0, "dmax": 5.0}
    )
    theirs.build((None, 6))
    ours.build((None, 6))
    start = [
        w + rng.uniform(0.5, 1.5, size=w.shape).astype("float32") * (i < 2)
        for i, w in enumerate(theirs.get_weights())
    ]
    theirs.set_weights(start)
    ours.set_weights(start)  # the Keras weights, as they are
    for _ in range(30):
        x = (rng.normal(size=(batch, 6)) * 2 + 1).astype("float32")
        np.testing.assert_allclose(
            ours(x, training=True).numpy(), theirs(x, training=True).numpy(), rtol=2e-5, atol=2e-5
        )
    x = (rng.normal(size=(64, 6)) * 2 + 1).astype("float32")
    np.testing.assert_allclose(
        ours(x, training=False).numpy(), theirs(x, training=False).numpy(), rtol=2e-5, atol=2e-5
    )
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_renorm_saved_by_0_1_0_loads_with_its_moving_variance(tmp_path):
    import os

    here = os.path.join(os.path.dirname(__file__), "fixtures", "v0.1.0")
    model = keras.saving.load_model(os.path.join(here, "renorm.keras"))
    bn = next(layer for layer in model.layers if isinstance(layer, tfnorm.BatchNormalization))
    np.testing.assert_allclose(
        bn.moving_stddev.numpy() ** 2 - bn.epsilon, bn.moving_variance.numpy(), rtol=1e-5
    )
    assert not np.allclose(bn.moving_variance.numpy(), 1.0)  # trained before it was saved
    # and once migrated it saves and loads in the new layout
    path = str(tmp_path / "again.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


@needs_keras_renorm
def test_swapping_a_keras_renorm_batch_norm_carries_every_statistic():
    rng = np.random.default_rng(11)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(5),
            keras.layers.BatchNormalization(renorm=True, momentum=0.5),
        ]
    )
    for _ in range(3):
        model(rng.normal(size=(8, 5)).astype("float32") * 3 + 1, training=True)
    new = tfnorm.swap_normalization(model, "batch", to_kwargs={"renorm": True, "momentum": 0.5})
    old_bn, new_bn = model.layers[1], new.layers[1]
    for name in ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev"):
        np.testing.assert_array_equal(
            getattr(new_bn, name).numpy(), getattr(old_bn, name).numpy(), err_msg=name
        )
    x = rng.normal(size=(16, 5)).astype("float32")
    np.testing.assert_allclose(
        new(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-5, atol=1e-5
    )
