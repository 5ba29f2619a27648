"""The generic harness: every check over every descriptor in ``tests/descriptors``."""

from __future__ import annotations

import inspect
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tests.descriptors import CASES
from tests.harness import (
    autodiff_input_grad,
    built,
    call,
    finite_difference_grads,
    params_of,
    restore,
    single_layer_model,
    state_of,
)
from tfnorm.layers.base import BASE_LAYER_KEYS, init_arguments
from tfnorm.ops import kernel

ids = [c.id for c in CASES]


def public_layer_classes():
    out = []
    for name in tfnorm.__all__:
        obj = getattr(tfnorm, name)
        if (
            inspect.isclass(obj)
            and issubclass(obj, keras.layers.Layer)
            and not inspect.isabstract(obj)
            and obj is not tfnorm.NormalizationLayer
        ):
            out.append(obj)
    return out


def test_cases_without_gradient_check_say_why():
    for c in CASES:
        if c.gradient is None:
            assert c.notes, f"{c.id} has no gradient check and no note saying why"


def test_every_public_layer_has_a_descriptor():
    covered = {c.cls for c in CASES}
    missing = [cls.__name__ for cls in public_layer_classes() if cls not in covered]
    assert not missing, f"public layers without a descriptor entry: {missing}"


@pytest.mark.parametrize("cls", public_layer_classes(), ids=lambda c: c.__name__)
def test_config_covers_every_init_argument(cls):
    case = next(c for c in CASES if c.cls is cls)
    layer = built(case)
    config = layer.get_config()
    missing = [a for a in init_arguments(cls) if a not in config]
    assert not missing, f"{cls.__name__}.get_config() lacks {missing}"
    # and no **kwargs hide anything but the base Layer's arguments
    sig = inspect.signature(cls.__init__)
    assert any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = set(config) - set(init_arguments(cls)) - BASE_LAYER_KEYS
    assert not unknown, f"config keys that __init__ does not take: {unknown}"


@pytest.mark.parametrize("cls", public_layer_classes(), ids=lambda c: c.__name__)
def test_registered_under_tfnorm_package(cls):
    assert keras.saving.get_registered_name(cls) == f"tfnorm>{cls.__name__}"
    assert keras.saving.get_registered_object(f"tfnorm>{cls.__name__}") is cls


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_output_shape_and_dtype(case):
    layer = built(case)
    x = case.input_fn(np.random.default_rng(1), case.input_shape).astype("float32")
    for training in case.training_modes:
        y = call(layer, x, training, case)
        assert tuple(y.shape) == tuple(layer.compute_output_shape(case.input_shape))
        assert y.dtype == tf.float32


MODE_CASES = [(c, t) for c in CASES for t in c.training_modes]


@pytest.mark.parametrize(
    "case, training", MODE_CASES, ids=[f"{c.id}-{'train' if t else 'infer'}" for c, t in MODE_CASES]
)
def test_matches_numpy_reference_fp32(case, training):
    layer = built(case, seed=3)
    params = params_of(layer)
    x = case.input_fn(np.random.default_rng(4), case.input_shape)
    y = call(layer, x.astype("float32"), training, case).numpy()
    expected = case.reference(x.astype("float32").astype(np.float64), params, training)
    np.testing.assert_allclose(y, expected, atol=case.atol, rtol=case.rtol)


GRAD_CASES = [c for c in CASES if c.gradient is not None]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_gradients(case):
    if case.gradient == "custom":
        x, params, dy, dx = autodiff_input_grad(case, training=case.grad_training)
        expected = case.grad_reference(x, params, case.grad_training, dy)
        np.testing.assert_allclose(dx, expected, atol=1e-8, rtol=1e-6)
        return
    results = finite_difference_grads(case, training=case.grad_training)
    if case.gradient == "fd":
        for name, auto, num in results:
            np.testing.assert_allclose(
                auto, num, atol=1e-6, rtol=1e-5, err_msg=f"{case.id}: d loss / d {name}"
            )
            assert np.abs(num).max() > 0 or np.abs(auto).max() == 0
    else:
        raise AssertionError(f"unknown gradient mode {case.gradient!r}")


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_config_round_trip(case):
    layer = built(case)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # after build, the config did not change either
    clone.build(case.input_shape)
    assert clone.get_config() == config


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_keras_save_load_identical(case, tmp_path):
    model = single_layer_model(case)
    case.randomize(model.layers[-1], np.random.default_rng(5))
    x = case.input_fn(np.random.default_rng(6), case.input_shape).astype("float32")
    before = model.predict(x, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: registration is enough
    assert type(loaded.layers[-1]) is type(model.layers[-1])
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_jit_compile_matches_eager(case):
    x = tf.constant(case.input_fn(np.random.default_rng(7), case.input_shape).astype("float32"))
    for training in case.training_modes:
        eager_layer = built(case, seed=8)
        xla_layer = built(case, seed=8)
        eager = call(eager_layer, x, training, case).numpy()
        xla = tf.function(
            lambda t, layer=xla_layer, training=training: call(layer, t, training, case),
            jit_compile=True,
        )(x)
        np.testing.assert_allclose(xla.numpy(), eager, atol=1e-5, rtol=1e-5)
        for a, b in zip(state_of(eager_layer), state_of(xla_layer)):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def _first_case_per_class_and_layout():
    seen, out = set(), []
    for c in CASES:
        key = (c.cls, c.kwargs.get("axis", -1) in (-1, None), c.kwargs.get("data_format"))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


@pytest.mark.parametrize("case", _first_case_per_class_and_layout(), ids=lambda c: c.id)
def test_kernels_as_their_own_xla_clusters_match_eager(case, monkeypatch):
    """Inside a tf.function without XLA, kernels run as their own XLA clusters.

    ``tfnorm.ops.kernel`` does that only for large tensors; forced here at any
    size, the outputs, the state and the gradients (input and weights) must
    equal the eager ones, which the other checks compare with the references.
    """
    monkeypatch.setattr(kernel, "MIN_XLA_ELEMENTS", 0)
    rng = np.random.default_rng(13)
    x = tf.constant(case.input_fn(rng, case.input_shape).astype("float32"))
    for training in case.training_modes:
        layers = [built(case, seed=14), built(case, seed=14)]
        out_shape = call(built(case, seed=14), x, False, case).shape
        dy = tf.constant(rng.normal(size=out_shape).astype("float32"))

        def step(layer, t, training=training, dy=dy):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = call(layer, t, training, case)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
            grads = tape.gradient(loss, [t] + list(layer.trainable_weights))
            return [y] + [
                tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                for g, v in zip(grads, [t] + list(layer.trainable_weights))
            ]

        eager = step(layers[0], x)
        graph = tf.function(step, jit_compile=False)(layers[1], x)
        for what, a, b in zip(
            ["output", "input gradient"]
            + [f"gradient of {v.path}" for v in layers[0].trainable_weights],
            eager,
            graph,
        ):
            np.testing.assert_allclose(
                b.numpy(), a.numpy(), atol=2e-5, rtol=2e-5, err_msg=f"{what}, training={training}"
            )
        for a, b in zip(state_of(layers[0]), state_of(layers[1])):
            np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_float32_statistics(case, policy):
    """Large inputs overflow x**2 in float16: finite, correct output proves float32 statistics."""
    rng = np.random.default_rng(9)
    x = case.input_fn(rng, case.input_shape) * case.mp_scale
    compute = policy.split("_")[1]
    tol = 3e-2 if compute == "float16" else 8e-2
    for training in case.training_modes:
        layer = built(case, seed=10, dtype=keras.DTypePolicy(policy))
        for v in layer.weights:
            assert v.dtype == "float32", f"{v.name} is {v.dtype} under {policy}"
        params = params_of(layer)
        xc = tf.cast(tf.constant(x, tf.float32), compute)
        y = call(layer, xc, training, case)
        assert y.dtype == compute
        y = tf.cast(y, tf.float32).numpy()
        assert np.isfinite(y).all(), f"{case.id} not finite under {policy}, training={training}"
        expected = case.reference(tf.cast(xc, tf.float64).numpy(), params, training)
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(y / scale, expected / scale, atol=tol, rtol=0)
        for v in layer.non_trainable_weights:
            assert np.isfinite(v.numpy()).all()


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_constant_input_is_finite(case):
    for training in case.training_modes:
        layer = built(case)
        x = np.full(case.input_shape, 2.5, "float32")
        y = call(layer, x, training, case).numpy()
        assert np.isfinite(y).all()
        for v in layer.weights:
            assert np.isfinite(v.numpy()).all()


@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_fit_step(case, jit):
    keras.utils.set_random_seed(0)
    inp = keras.Input(case.input_shape[1:])
    h = case.make()(inp)
    out = keras.layers.Dense(1)(keras.layers.Flatten()(h))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=jit)
    rng = np.random.default_rng(11)
    n = case.input_shape[0] * 2
    x = case.input_fn(rng, (n,) + tuple(case.input_shape[1:])).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    layer = model.layers[1]
    before = [v.numpy().copy() for v in layer.trainable_weights]
    hist = model.fit(x, y, batch_size=case.input_shape[0], epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(hist.history["loss"]).all()
    for b, v in zip(before, layer.trainable_weights):
        assert not np.array_equal(b, v.numpy()), f"{v.name} did not train"
    assert np.isfinite(model.predict(x, verbose=0)).all()


@pytest.mark.parametrize("case", [c for c in CASES if c.stateful], ids=lambda c: c.id)
def test_state_changes_only_in_training(case):
    layer = built(case)
    x = case.input_fn(np.random.default_rng(12), case.input_shape).astype("float32")
    s0 = state_of(layer)
    call(layer, x, False, case)
    for a, b in zip(s0, state_of(layer)):
        np.testing.assert_array_equal(a, b)
    call(layer, x, True, case)
    assert any(not np.array_equal(a, b) for a, b in zip(s0, state_of(layer)))
    restore(layer, s0)
