"""Half precision: every layer under ``mixed_float16`` and ``mixed_bfloat16``.

``test_layers.py`` compares every case with its reference for inputs of
magnitude 300. Here: inputs of magnitude 1e4 (x**2 = 1e8 overflows float16,
whose largest value is 65504, so a finite, correct output means float32
statistics) and constant inputs of that size, the dtype of the output and of
every weight and piece of streamed state, and a few steps of loss-scaled
training of a small model with each family.
"""

from __future__ import annotations

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tests.descriptors import CASES
from tests.harness import built, call, params_of
from tfnorm import distribute

ids = [c.id for c in CASES]
POLICIES = ["mixed_float16", "mixed_bfloat16"]
MAGNITUDE = 1e4
# float16 keeps ~3 significant digits, bfloat16 ~2: tolerances on outputs scaled to max 1
TOLERANCE = {"float16": 3e-2, "bfloat16": 8e-2}


def _large_input(case, rng):
    x = case.input_fn(rng, case.input_shape)
    return x / np.abs(x).max() * MAGNITUDE


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_magnitude_1e4_and_constant_input(case, policy):
    compute = policy.split("_")[1]
    rng = np.random.default_rng(31)
    x = tf.cast(tf.constant(_large_input(case, rng), tf.float32), compute)
    const = tf.cast(tf.fill(case.input_shape, MAGNITUDE), compute)
    for training in case.training_modes:
        layer = built(case, seed=32, dtype=keras.DTypePolicy(policy))
        params = params_of(layer)
        y = call(layer, x, training, case)
        assert y.dtype == compute, f"output is {y.dtype.name} under {policy}"
        y = tf.cast(y, tf.float32).numpy()
        assert np.isfinite(y).all(), f"not finite for |x| = {MAGNITUDE:g}, training={training}"
        expected = case.reference(tf.cast(x, tf.float64).numpy(), params, training)
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(
            y / scale,
            expected / scale,
            atol=TOLERANCE[compute],
            rtol=0,
            err_msg=f"training={training}",
        )
        params = params_of(layer)
        yc = call(layer, const, training, case)
        assert yc.dtype == compute
        yc = tf.cast(yc, tf.float32).numpy()
        assert np.isfinite(yc).all(), "constant input not finite"
        expected = case.reference(np.full(case.input_shape, MAGNITUDE), params, training)
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(
            yc / scale,
            expected / scale,
            atol=TOLERANCE[compute],
            rtol=0,
            err_msg=f"constant input, training={training}",
        )
        for v in layer.weights:  # statistics, streamed state and parameters stay float32
            assert v.dtype == "float32", f"{v.path} is {v.dtype} under {policy}"
            assert np.isfinite(v.numpy()).all(), f"{v.path} not finite after training={training}"


def _families():
    """One model per family (layer module): one branch per layer class (its first case)."""
    groups, seen = collections.OrderedDict(), set()
    for case in CASES:
        if case.cls not in seen:
            seen.add(case.cls)
            groups.setdefault(case.cls.__module__.rsplit(".", 1)[-1], []).append(case)
    return groups


FAMILIES = _families()
BATCH = 8


def _family_model(cases, policy):
    inputs, branches = [], []
    for case in cases:
        inp = keras.Input(case.input_shape[1:])
        h = case.make(dtype=keras.DTypePolicy(policy))(inp)
        branches.append(keras.layers.Flatten(dtype=policy)(h))
        inputs.append(inp)
    h = branches[0] if len(branches) == 1 else keras.layers.Concatenate(dtype=policy)(branches)
    out = keras.layers.Dense(1, dtype=policy)(h)
    out = keras.layers.Activation("linear", dtype="float32")(out)
    return keras.Model(inputs, out)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_loss_scaled_training_has_no_nan(family):
    cases = FAMILIES[family]
    keras.utils.set_random_seed(0)
    model = _family_model(cases, "mixed_float16")
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01))
    model.compile(optimizer, "mse", run_eagerly=True)
    rng = np.random.default_rng(33)
    n = 12 * BATCH  # the first steps at the initial scale 2**15 overflow and are skipped
    xs = [
        case.input_fn(rng, (n,) + tuple(case.input_shape[1:])).astype("float32") for case in cases
    ]
    y = rng.normal(size=(n, 1)).astype("float32")
    before = [v.numpy().copy() for v in model.trainable_weights]
    hist = model.fit(xs, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    for v in model.weights:
        assert np.isfinite(v.numpy()).all(), f"{v.path} not finite after loss-scaled training"
    assert 0 < float(optimizer.dynamic_scale) <= optimizer.initial_scale
    moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_weights)]
    assert any(moved), "no weight changed: every step was skipped"
    preds = model.predict(xs, verbose=0)
    assert preds.dtype == np.float32 and np.isfinite(preds).all()


def test_distributed_loop_scales_the_loss():
    """``tfnorm.distribute.train`` with a LossScaleOptimizer under mixed_float16.

    The optimizer divides the gradients by its scale, so the loop must multiply
    the loss by it: the steps then equal plain SGD's (no overflow here), where a
    loop that forgot would move the weights 2**15 times less.
    """
    policy = keras.DTypePolicy("mixed_float16")
    rng = np.random.default_rng(34)
    x = (rng.normal(size=(64, 6)) * 1e3).astype("float32")
    y = rng.integers(0, 3, 64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    runs = []
    for optimizer in (
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05)),
        keras.optimizers.SGD(0.05),
    ):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(16, dtype=policy),
                tfnorm.BatchNormalization(synchronized=True, dtype=policy),
                keras.layers.Dense(3, dtype=policy),
            ]
        )
        start = [v.numpy().copy() for v in model.trainable_weights]
        hist = distribute.train(
            model, x, y, loss=loss, optimizer=optimizer, batch_size=16, epochs=2, verbose=0
        )
        assert np.isfinite(hist["loss"]).all()
        for v in model.weights:
            assert np.isfinite(v.numpy()).all(), v.path
        runs.append([v.numpy() - s for v, s in zip(model.trainable_weights, start)])
    scaled, plain = (np.concatenate([d.ravel() for d in run]) for run in runs)
    assert np.abs(plain).max() > 1e-3
    # float16 gradients: agreement to a few per cent of the largest step
    np.testing.assert_allclose(scaled / np.abs(plain).max(), plain / np.abs(plain).max(), atol=3e-2)
