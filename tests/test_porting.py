"""Behaviours a user porting from Keras or TF-Addons expects, each checked against NumPy and
against the peer where one is installed.

* ``GroupNormalization(groups=-1)``: one group per channel, as in Keras 3 and TF-Addons;
  the config keeps ``-1`` after build.
* ``TLU(affine=True)``: TF-Addons' TLU-affine, ``max(x, alpha * x + tau)``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm


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
    with pytest.raises(ValueError, match=rf"groups must be an integer >= 1, received "
                                         rf"groups={groups!r}"):
        tfnorm.GroupNormalization(groups=groups)


def test_tlu_affine_is_max_of_x_and_a_learned_line():
    x = np.linspace(-2, 2, 24).reshape(2, 3, 4)
    layer = tfnorm.TLU(affine=True, tau_initializer=keras.initializers.Constant(0.25),
                       alpha_initializer=keras.initializers.Constant(0.5))
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
