"""OnlineNormalization against the per-sample algorithm of Chiley et al. 2019, step by step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tests.descriptors.seed import OnlineNormNumpy
from tfnorm.ops.scan import linear_recurrence

STATE = ("streaming_mean", "streaming_variance", "u_control", "v_control")


def _layer_state(layer):
    return {name: getattr(layer, name).numpy() for name in STATE}


def _train_step(layer, x, dz):
    """One eager training step: forward, backward; returns z, dx, dgamma, dbeta."""
    x = tf.constant(x)
    if not layer.built:
        layer.build(x.shape)
    params = [w for w in (layer.gamma, layer.beta) if w is not None]
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = layer(x, training=True)
        loss = tf.reduce_sum(z * dz)
    grads = tape.gradient(loss, [x] + params)
    it = iter(grads[1:])
    dgamma = next(it).numpy() if layer.gamma is not None else None
    dbeta = next(it).numpy() if layer.beta is not None else None
    return z.numpy(), grads[0].numpy(), dgamma, dbeta


def _check_steps(kwargs, shape, steps, dtype, tol, seed=0):
    rng = np.random.default_rng(seed)
    layer = tfnorm.OnlineNormalization(**kwargs, dtype=dtype)
    layer.build(shape)
    channels = shape[kwargs.get("axis", -1)]
    if layer.gamma is not None:
        layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
        layer.beta.assign(rng.uniform(-0.5, 0.5, channels))
    ref = OnlineNormNumpy(channels, params={w.name: w.numpy() for w in layer.weights}, **kwargs)
    for step in range(steps):
        x = (rng.normal(size=shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype(dtype)
        dz = rng.normal(size=shape).astype(dtype)
        z, dx, dgamma, dbeta = _train_step(layer, x, dz)
        z_ref = ref.forward(x.astype(np.float64))
        dx_ref, dgamma_ref, dbeta_ref = ref.backward(dz.astype(np.float64))
        msg = f"step {step}"
        np.testing.assert_allclose(z, z_ref, rtol=tol, atol=tol, err_msg=msg)
        np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol, err_msg=msg)
        if dgamma_ref is not None:
            np.testing.assert_allclose(dgamma, dgamma_ref, rtol=tol, atol=tol * 10, err_msg=msg)
            np.testing.assert_allclose(dbeta, dbeta_ref, rtol=tol, atol=tol * 10, err_msg=msg)
        for name, value in _layer_state(layer).items():
            np.testing.assert_allclose(
                value, ref.state()[name], rtol=tol, atol=tol, err_msg=f"{msg}: {name}"
            )
    return layer, ref


CONFIGS = {
    "dense-ac": (dict(alpha_fwd=0.9, alpha_bkw=0.8, clamp_value=2.0), (8, 5)),
    "conv2d-ls": (dict(alpha_fwd=0.95, ecm="ls"), (4, 3, 3, 4)),
    "channels-first-none": (dict(axis=1, ecm=None, alpha_fwd=0.9, alpha_bkw=0.9), (4, 3, 5, 2)),
    "sequence-no-affine": (dict(center=False, scale=False, alpha_bkw=0.5), (5, 6, 3)),
    "conv3d-defaults": (dict(), (3, 2, 2, 3, 2)),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_successive_batches_match_per_sample_algorithm_float64(name):
    kwargs, shape = CONFIGS[name]
    _check_steps(kwargs, shape, steps=3, dtype="float64", tol=1e-9)


@pytest.mark.parametrize("name", ["dense-ac", "conv2d-ls"])
def test_successive_batches_match_per_sample_algorithm_float32(name):
    kwargs, shape = CONFIGS[name]
    _check_steps(kwargs, shape, steps=3, dtype="float32", tol=2e-4)


@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 4, 3)], ids=["dense", "conv"])
def test_trains_at_batch_size_one(shape):
    layer, ref = _check_steps(
        dict(alpha_fwd=0.8, alpha_bkw=0.7), shape, steps=6, dtype="float64", tol=1e-9
    )
    # the stream of six single samples moved the statistics away from their start
    assert np.abs(layer.streaming_mean.numpy()).min() > 0
    assert np.abs(layer.u_control.numpy()).min() > 0


def test_batch_equals_the_same_samples_streamed_one_by_one():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3, 3, 2)) + 1.0
    dz = rng.normal(size=x.shape)
    whole = tfnorm.OnlineNormalization(alpha_fwd=0.8, alpha_bkw=0.7, dtype="float64")
    single = tfnorm.OnlineNormalization(alpha_fwd=0.8, alpha_bkw=0.7, dtype="float64")
    z, dx, _, _ = _train_step(whole, x, dz)
    parts = [_train_step(single, x[i : i + 1], dz[i : i + 1]) for i in range(len(x))]
    np.testing.assert_allclose(z, np.concatenate([p[0] for p in parts]), atol=1e-12)
    np.testing.assert_allclose(dx, np.concatenate([p[1] for p in parts]), atol=1e-12)
    for name, value in _layer_state(whole).items():
        np.testing.assert_allclose(value, _layer_state(single)[name], atol=1e-12)


def test_inference_uses_streamed_statistics_and_leaves_them():
    rng = np.random.default_rng(4)
    layer = tfnorm.OnlineNormalization(alpha_fwd=0.7, ecm=None, dtype="float64")
    for _ in range(3):
        _train_step(layer, rng.normal(size=(4, 5, 3)) * 2 + 1, rng.normal(size=(4, 5, 3)))
    state = _layer_state(layer)
    assert abs(state["streaming_mean"]).min() > 0.1  # moved from 0 toward the data mean
    layer.gamma.assign(rng.uniform(0.5, 1.5, 3))
    layer.beta.assign(rng.uniform(-1, 1, 3))
    x = rng.normal(size=(4, 5, 3))
    y = layer(x, training=False).numpy()
    expected = (x - state["streaming_mean"]) / np.sqrt(
        state["streaming_variance"] + 1e-5
    ) * layer.gamma.numpy() + layer.beta.numpy()
    np.testing.assert_allclose(y, expected, atol=1e-12)
    # each sample on its own: inference does not mix the batch
    np.testing.assert_allclose(layer(x[1:2], training=False).numpy(), y[1:2], atol=1e-12)
    for name, value in _layer_state(layer).items():
        np.testing.assert_array_equal(value, state[name])


def _fit_model(mode, policy=None):
    """A model whose loss gradient at the layer output is known in closed form."""
    keras.utils.set_random_seed(0)
    dtype = keras.DTypePolicy(policy) if policy else None
    inp = keras.Input((4, 4, 3))
    layer = tfnorm.OnlineNormalization(alpha_fwd=0.9, alpha_bkw=0.8, dtype=dtype)
    out = keras.layers.Flatten(dtype=dtype)(layer(inp))
    model = keras.Model(inp, out)
    # learning rate 0: the weights stay put, only the layer's state evolves
    optimizer = keras.optimizers.SGD(0.0)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer, "mse", jit_compile=(mode == "xla"), run_eagerly=(mode == "eager"))
    return model, layer


def _fit_reference(x, y, batch, scale=1.0, backward_passes=1):
    ref = OnlineNormNumpy(3, alpha_fwd=0.9, alpha_bkw=0.8)
    for i in range(0, len(x), batch):
        z = ref.forward(x[i : i + batch].astype(np.float64))
        flat = z.reshape(len(z), -1)
        # mse: mean over the 48 features, then over the batch
        dz = 2.0 * (flat - y[i : i + batch]) / (flat.shape[1] * len(z)) * scale
        for _ in range(backward_passes):
            ref.backward(dz.reshape(z.shape))
    return ref.state()


@pytest.mark.parametrize("mode", ["graph", "xla", "eager", "graph-plain-ops"])
def test_fit_advances_the_state_exactly_once_per_step(mode, monkeypatch):
    """The layer is the model's first layer: only its gamma/beta put it on the tape."""
    if mode == "graph-plain-ops":  # no compiled kernels inside the graph
        monkeypatch.setenv("TFNORM_XLA_KERNELS", "0")
    model, layer = _fit_model(mode)
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(12, 4, 4, 3)) * 1.5 + 0.5).astype("float32")
    y = rng.normal(size=(12, 48)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    expected = _fit_reference(x, y, 4)
    for name, value in _layer_state(layer).items():
        np.testing.assert_allclose(value, expected[name], rtol=2e-5, atol=1e-6, err_msg=name)
    # a control process run twice per step, or never, would be told apart
    twice = _fit_reference(x, y, 4, backward_passes=2)
    assert not np.allclose(twice["u_control"], expected["u_control"], rtol=1e-3)
    assert not np.allclose(twice["v_control"], expected["v_control"], rtol=1e-3)
    assert np.abs(expected["u_control"]).min() > 1e-4


def test_fit_with_a_partial_last_batch_and_predict():
    """The last batch of 2 retraces with an unknown batch size (the while-loop scan)."""
    model, layer = _fit_model("xla")
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(10, 4, 4, 3)) + 0.5).astype("float32")
    y = rng.normal(size=(10, 48)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    expected = _fit_reference(x, y, 4)
    for name, value in _layer_state(layer).items():
        np.testing.assert_allclose(value, expected[name], rtol=2e-5, atol=1e-6, err_msg=name)
    before = _layer_state(layer)
    model.predict(x, verbose=0)
    for name, value in _layer_state(layer).items():
        np.testing.assert_array_equal(value, before[name])


def test_mixed_float16_fit_keeps_float32_state():
    model, layer = _fit_model("graph", policy="mixed_float16")
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(8, 4, 4, 3)) * 1.5 + 0.5).astype("float32")
    y = rng.normal(size=(8, 48)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for w in layer.weights:
        assert w.dtype == "float32", w.name
    # u and v are in units of the scaled loss's gradient
    scale = float(model.optimizer.dynamic_scale.numpy())
    expected = _fit_reference(x, y, 4, scale=scale)
    for name, value in _layer_state(layer).items():
        np.testing.assert_allclose(
            value, expected[name], rtol=2e-2, atol=2e-2 * np.abs(expected[name]).max(), err_msg=name
        )


def test_non_finite_gradient_leaves_the_control_state_of_its_channel():
    rng = np.random.default_rng(8)
    layer = tfnorm.OnlineNormalization()
    layer.build((4, 3))
    layer.u_control.assign([0.1, 0.2, 0.3])
    layer.v_control.assign([0.4, 0.5, 0.6])
    dz = rng.normal(size=(4, 3)).astype("float32")
    dz[2, 1] = np.inf  # a loss-scaling overflow in channel 1
    _train_step(layer, rng.normal(size=(4, 3)).astype("float32"), dz)
    u, v = layer.u_control.numpy(), layer.v_control.numpy()
    assert (u[1], v[1]) == (np.float32(0.2), np.float32(0.5))
    assert u[0] != np.float32(0.1) and v[2] != np.float32(0.6)


def test_non_finite_input_leaves_the_streamed_statistics_of_its_channel():
    x = np.random.default_rng(10).normal(size=(4, 3, 2)).astype("float32")
    x[1, 2, 0] = np.nan
    layer = tfnorm.OnlineNormalization(alpha_fwd=0.5)
    z = layer(x, training=True).numpy()
    # it propagates: to its own entry, then through the stream to every later sample
    assert np.isnan(z[1, 2, 0]) and np.isnan(z[2:, :, 0]).all()
    assert np.isfinite(z[:1, :, 0]).all() and np.isfinite(z[:, :, 1]).all()
    np.testing.assert_array_equal(layer.streaming_mean.numpy()[0], 0.0)
    np.testing.assert_array_equal(layer.streaming_variance.numpy()[0], 1.0)
    assert layer.streaming_mean.numpy()[1] != 0.0


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_unknown_batch_size_matches_eager(jit):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(7, 3, 2)) + 0.5
    dz = rng.normal(size=x.shape)
    eager = tfnorm.OnlineNormalization(alpha_fwd=0.8, alpha_bkw=0.7, dtype="float64")
    traced = tfnorm.OnlineNormalization(alpha_fwd=0.8, alpha_bkw=0.7, dtype="float64")
    expected = _train_step(eager, x, dz)[:2]
    traced.build(x.shape)

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 2], tf.float64)], jit_compile=jit)
    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            z = traced(t, training=True)
            loss = tf.reduce_sum(z * dz)
        return z, tape.gradient(loss, t)

    for got, want in zip(step(tf.constant(x)), expected):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    for name, value in _layer_state(traced).items():
        np.testing.assert_allclose(value, _layer_state(eager)[name], atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 64, 100])
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_linear_recurrence_matches_a_loop(n, static):
    rng = np.random.default_rng(n)
    a = rng.uniform(-1.5, 1.5, size=(n, 3))  # time-varying, signs and zeros' neighbourhood
    b = rng.normal(size=(n, 3))
    h0 = rng.normal(size=(1, 3))

    def loop(a):
        h, before = h0[0].copy(), []
        for t in range(n):
            before.append(h.copy())
            h = a[t] * h + b[t]
        return np.array(before), h[None]

    for coef, coef_np in [(tf.constant(a), a), (0.93, np.full_like(a, 0.93))]:
        if static:
            before, last = linear_recurrence(coef, tf.constant(b), tf.constant(h0))
        else:
            run = tf.function(
                lambda bt, coef=coef: linear_recurrence(coef, bt, tf.constant(h0)),
                input_signature=[tf.TensorSpec([None, 3], tf.float64)],
            )
            before, last = run(tf.constant(b))
        want_before, want_last = loop(coef_np)
        np.testing.assert_allclose(before.numpy(), want_before, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(last.numpy(), want_last, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "kwargs, argname",
    [
        (dict(ecm="clamp"), "ecm"),
        (dict(alpha_fwd=1.5), "alpha_fwd"),
        (dict(alpha_bkw=-0.1), "alpha_bkw"),
        (dict(axis=[1, 2]), "axis"),
        (dict(epsilon=0.0), "epsilon"),
        (dict(clamp_value=0), "clamp_value"),
        (dict(ls_epsilon=-1.0), "ls_epsilon"),
    ],
)
def test_bad_arguments_are_named(kwargs, argname):
    with pytest.raises(ValueError, match=argname):
        tfnorm.OnlineNormalization(**kwargs)


def test_batch_axis_as_channel_axis_is_refused():
    with pytest.raises(ValueError, match="batch axis"):
        tfnorm.OnlineNormalization(axis=0)(np.zeros((2, 3), "float32"))


def test_registry_short_names():
    assert type(tfnorm.get("online", alpha_fwd=0.9)) is tfnorm.OnlineNormalization
    assert type(tfnorm.get("adanorm")) is tfnorm.AdaNorm
    assert type(tfnorm.get("detach")) is tfnorm.DetachNormalization
    with pytest.raises(ValueError, match="cosine"):
        tfnorm.get("cosine")  # cosine layers replace Dense/Conv, they are not a norm name


_DISTRIBUTED = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tfnorm
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 2)).astype("float32") + 1.0
    dz = rng.normal(size=(8, 3, 2)).astype("float32")
    with strategy.scope():
        layer = tfnorm.OnlineNormalization(alpha_fwd=0.8, alpha_bkw=0.7)
        layer.build((None, 3, 2))
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, dz)).batch(8))

    @tf.function
    def step(xb, db):
        def replica(xr, dr):
            with tf.GradientTape() as tape:
                tape.watch(xr)
                loss = tf.reduce_sum(layer(xr, training=True) * dr)
            return tape.gradient(loss, xr)
        return strategy.run(replica, args=(xb, db))

    for xb, db in data:
        step(xb, db)
    out = {w.name: w.numpy().tolist() for w in layer.non_trainable_weights}
    json.dump({"state": out, "x": x.tolist(), "dz": dz.tolist()}, sys.stdout)
""")


def test_distributed_replicas_stream_their_own_samples_and_average_the_state(tmp_path):
    """Two CPU replicas (a fresh process: logical devices must precede TF's start)."""
    script = tmp_path / "dist.py"
    script.write_text(_DISTRIBUTED)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    x, dz = np.array(result["x"]), np.array(result["dz"])
    states = []
    for shard in (slice(0, 4), slice(4, 8)):
        ref = OnlineNormNumpy(2, alpha_fwd=0.8, alpha_bkw=0.7)
        ref.forward(x[shard])
        ref.backward(dz[shard])
        states.append(ref.state())
    for name in STATE:
        expected = (states[0][name] + states[1][name]) / 2
        np.testing.assert_allclose(
            result["state"][name], expected, rtol=1e-5, atol=1e-6, err_msg=name
        )
