"""recompute_batch_statistics: exact population statistics, layer by layer, in place.

The expected statistics are computed here in NumPy (float64) from the inputs
each layer receives, obtained independently of the function under test: by a
NumPy forward pass written from the layer equations, or by sub-models
``keras.Model(model.input, layer.input)`` evaluated after the recompute (so
with the earlier layers holding their new statistics, as the layer-by-layer
definition asks).
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tfnorm.recompute import LayerStatistics, RecomputeReport

RTOL = 1e-5


def rng(seed=0):
    return np.random.default_rng(seed)


def f32(a):
    return np.asarray(a, dtype=np.float32)


def np_stats(a, kept):
    """Population mean and variance of ``a`` (float64) over every axis not in ``kept``."""
    a = np.asarray(a, dtype=np.float64)
    reduce = tuple(i for i in range(a.ndim) if i not in kept)
    return a.mean(reduce), a.var(reduce)


def assert_stats(layer, inputs, kept=(-1,), rtol=RTOL, mean=True):
    kept = tuple(k % np.ndim(inputs) for k in kept)
    m, v = np_stats(inputs, kept)
    if mean:
        np.testing.assert_allclose(
            layer.moving_mean.numpy(),
            m,
            rtol=rtol,
            atol=rtol * np.sqrt(v.max()),
            err_msg=layer.name,
        )
    np.testing.assert_allclose(layer.moving_variance.numpy(), v, rtol=rtol, err_msg=layer.name)
    return m, v


def warm_up(model, x, steps=3, batch=16):
    """A few training-mode calls: the moving averages move, but stay far from the truth."""
    for i in range(steps):
        model(x[i * batch : (i + 1) * batch], training=True)


def randomize(model, seed=1):
    """Non-trivial weights: gamma/beta and kernels random, moving statistics wrong."""
    r = rng(seed)
    for v in model.variables:
        name = v.name
        if "variance" in name or "stddev" in name:
            v.assign(f32(r.uniform(0.2, 3.0, v.shape)))
        elif name in ("gamma", "v1"):
            v.assign(f32(r.uniform(0.5, 1.5, v.shape)))
        else:
            v.assign(f32(r.normal(0.0, 0.7, v.shape)))


def input_of(model, layer, x):
    """What reaches ``layer`` (a direct child of the functional ``model``) at inference."""
    return keras.Model(model.input, layer.input)(x, training=False).numpy()


def variables_bytes(variables):
    return [v.numpy().tobytes() for v in variables]


# --------------------------------------------------------------------------------------
# A NumPy reference: Dense -> BN -> ReLU chains
# --------------------------------------------------------------------------------------


def dense_chain(bn_classes, widths=(6, 5, 4), din=5):
    inp = keras.Input((din,))
    h = inp
    for i, (cls, w) in enumerate(zip(bn_classes, widths)):
        h = keras.layers.Dense(w, name=f"dense{i}")(h)
        h = cls(name=f"bn{i}")(h)
        h = keras.layers.ReLU()(h)
    return keras.Model(inp, h)


def numpy_chain(model, x, n_layers, sequential=True):
    """Expected moving statistics of every BN of :func:`dense_chain`, in NumPy.

    ``sequential=True``: each BN's statistics are those of its inputs when the
    earlier BNs normalize with their new statistics (the definition). ``False``:
    the one-pass shortcut, every input taken with the old statistics in place.
    """
    h = np.asarray(x, np.float64)
    out = []
    for i in range(n_layers):
        dense, bn = model.get_layer(f"dense{i}"), model.get_layer(f"bn{i}")
        h = h @ dense.kernel.numpy().astype(np.float64) + dense.bias.numpy()
        m, v = h.mean(0), h.var(0)
        out.append((m, v))
        if not sequential:
            m = bn.moving_mean.numpy().astype(np.float64)
            v = bn.moving_variance.numpy().astype(np.float64)
        h = (h - m) / np.sqrt(v + bn.epsilon) * bn.gamma.numpy() + bn.beta.numpy()
        h = np.maximum(h, 0.0)
    return out


BN_MIX = [
    tfnorm.BatchNormalization,
    keras.layers.BatchNormalization,
    lambda name: tfnorm.BatchNormalization(renorm=True, name=name),
]


def test_dense_chain_matches_numpy_layer_by_layer():
    x = f32(rng(0).normal(1.5, 2.0, size=(300, 5)))
    model = dense_chain(BN_MIX)
    randomize(model)
    warm_up(model, x)
    sequential = numpy_chain(model, x, 3, sequential=True)
    one_pass = numpy_chain(model, x, 3, sequential=False)  # with the stale statistics

    report = tfnorm.recompute_batch_statistics(model, x, batch_size=64)

    for i, (m, v) in enumerate(sequential):
        bn = model.get_layer(f"bn{i}")
        np.testing.assert_allclose(bn.moving_mean.numpy(), m, rtol=RTOL, atol=1e-6)
        np.testing.assert_allclose(bn.moving_variance.numpy(), v, rtol=RTOL)
    # the order matters: after the first layer, the one-pass answer is far off
    for (_, v), (_, v1) in zip(sequential[1:], one_pass[1:]):
        assert np.max(np.abs(v1 - v) / v) > 0.05
    # renorm: renorm_mean is the mean, renorm_stddev sqrt(var + epsilon)
    bn2 = model.get_layer("bn2")
    m, v = sequential[2]
    np.testing.assert_allclose(bn2.renorm_mean.numpy(), m, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(bn2.renorm_stddev.numpy(), np.sqrt(v + bn2.epsilon), rtol=RTOL)

    assert isinstance(report, RecomputeReport) and len(report) == 3
    assert [r.name for r in report] == ["bn0", "bn1", "bn2"]
    assert [r.layer_class for r in report] == [
        tfnorm.BatchNormalization,
        keras.layers.BatchNormalization,
        tfnorm.BatchNormalization,
    ]
    # renorm keeps the paper's moving standard deviation (the Keras weight layout)
    assert report[2].variables == (
        "moving_mean",
        "moving_variance",
        "moving_stddev",
        "renorm_mean",
        "renorm_stddev",
    )
    assert all(
        isinstance(r, LayerStatistics) and r.samples == 300 and r.positions == 300 and r.calls == 1
        for r in report
    )
    assert report.samples == 300 and report.batches == 5
    assert all(r.variance_change > 0.01 and r.mean_change > 0.01 for r in report)
    text = str(report)
    assert "bn1" in text and "keras.layers.BatchNormalization" in text and "300" in text


def test_keras_renorm_keeps_its_stddev_consistent():
    x = f32(rng(2).normal(0.5, 3.0, size=(128, 4)))
    inp = keras.Input((4,))
    bn = keras.layers.BatchNormalization(renorm=True)
    model = keras.Model(inp, bn(keras.layers.Dense(3)(inp)))
    warm_up(model, x)
    tfnorm.recompute_batch_statistics(model, x)
    m, v = assert_stats(bn, input_of(model, bn, x))
    for attr in ("moving_stddev", "renorm_stddev"):
        np.testing.assert_allclose(getattr(bn, attr).numpy(), np.sqrt(v + bn.epsilon), rtol=RTOL)
    np.testing.assert_allclose(bn.renorm_mean.numpy(), m, rtol=RTOL, atol=1e-6)


# --------------------------------------------------------------------------------------
# Images: every layer kind and layout, against sub-model inputs
# --------------------------------------------------------------------------------------


def conv_model(norm, channels_first=False):
    fmt = "channels_first" if channels_first else "channels_last"
    shape = (3, 6, 6) if channels_first else (6, 6, 3)
    inp = keras.Input(shape)
    h = keras.layers.Conv2D(4, 3, padding="same", data_format=fmt)(inp)
    n1 = norm()
    h = keras.layers.ReLU()(n1(h))
    h = keras.layers.Conv2D(5, 3, data_format=fmt)(h)
    n2 = norm()
    return keras.Model(inp, n2(h)), (n1, n2)


CONV_CASES = {
    "tfnorm_bn": (lambda: tfnorm.BatchNormalization(), False, (-1,), True),
    "keras_bn": (lambda: keras.layers.BatchNormalization(), False, (-1,), True),
    "tfnorm_bn_channels_first": (lambda: tfnorm.BatchNormalization(axis=1), True, (1,), True),
    "keras_bn_channels_first": (lambda: keras.layers.BatchNormalization(axis=1), True, (1,), True),
    "ghost_bn": (lambda: tfnorm.BatchNormalization(virtual_batch_size=4), False, (-1,), True),
    "renorm_bn": (
        lambda: tfnorm.BatchNormalization(renorm=True, renorm_clipping={"rmax": 2}),
        False,
        (-1,),
        True,
    ),
    "switchable": (lambda: tfnorm.SwitchableNormalization(), False, (-1,), True),
    "switchable_channels_first": (lambda: tfnorm.SwitchableNormalization(axis=1), True, (1,), True),
    "evonorm_b0": (lambda: tfnorm.EvoNormB0(), False, (-1,), False),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_image_layers_match_numpy(case):
    norm, channels_first, kept, has_mean = CONV_CASES[case]
    model, layers = conv_model(norm, channels_first)
    shape = (64,) + tuple(model.input.shape[1:])
    x = f32(rng(3).normal(0.7, 1.3, size=shape))
    randomize(model)
    warm_up(model, x)
    before = [layer.moving_variance.numpy().copy() for layer in layers]

    report = tfnorm.recompute_batch_statistics(model, x, batch_size=24)

    for layer, old in zip(layers, before):
        m, v = assert_stats(layer, input_of(model, layer, x), kept, mean=has_mean)
        assert not np.allclose(old, v, rtol=1e-2)
        if getattr(layer, "renorm", False):
            np.testing.assert_allclose(
                layer.renorm_stddev.numpy(), np.sqrt(v + layer.epsilon), rtol=RTOL
            )
    assert [r.positions for r in report] == [64 * 36, 64 * 16]  # 6x6, then 4x4
    if not has_mean:
        assert report[0].variables == ("moving_variance",) and report[0].mean_change is None


def test_inference_output_is_normalized_afterwards():
    x = f32(rng(4).normal(3.0, 2.5, size=(200, 6, 6, 3)))
    model, (n1, n2) = conv_model(lambda: tfnorm.BatchNormalization(epsilon=1e-6))
    warm_up(model, x)
    # gamma = 1, beta = 0: after the recompute the outputs are standardized over the data
    tfnorm.recompute_batch_statistics(model, x)
    for layer, out in (
        (n1, keras.Model(model.input, n1.output)(x).numpy()),
        (n2, model(x, training=False).numpy()),
    ):
        m, v = np_stats(out, (3,))
        moving = layer.moving_variance.numpy().astype(np.float64)
        np.testing.assert_allclose(m, 0.0, atol=1e-5)
        np.testing.assert_allclose(v, moving / (moving + layer.epsilon), rtol=1e-5)


# --------------------------------------------------------------------------------------
# Model structures
# --------------------------------------------------------------------------------------


def test_nested_models_are_recursed_in_call_order():
    inner = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, name="inner_dense"),
            keras.layers.BatchNormalization(name="inner_bn"),
            keras.layers.ReLU(),
        ],
        name="inner",
    )
    inp = keras.Input((4,))
    h = tfnorm.BatchNormalization(name="outer_bn0")(keras.layers.Dense(6)(inp))
    h = inner(h)
    out = tfnorm.BatchNormalization(name="outer_bn1")(keras.layers.Dense(3)(h))
    model = keras.Model(inp, out)
    x = f32(rng(5).normal(-1.0, 2.0, size=(150, 4)))
    randomize(model)
    warm_up(model, x)

    report = tfnorm.recompute_batch_statistics(model, x, batch_size=40)

    assert [r.path for r in report] == ["outer_bn0", "inner/inner_bn", "outer_bn1"]
    bn0, bn1 = model.get_layer("outer_bn0"), model.get_layer("outer_bn1")
    inner_bn = inner.get_layer("inner_bn")
    assert_stats(bn0, input_of(model, bn0, x))
    into_inner = keras.Model(model.input, bn0.output)(x)  # what the outer graph feeds inner
    assert_stats(inner_bn, inner.get_layer("inner_dense")(into_inner).numpy())
    assert_stats(bn1, input_of(model, bn1, x))


def test_shared_layer_pools_every_call():
    dense = keras.layers.Dense(4)
    bn = tfnorm.BatchNormalization(name="shared_bn")
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], keras.layers.Concatenate()([bn(dense(a)), bn(dense(b))]))
    r = rng(6)
    x1 = f32(r.normal(0.0, 1.0, size=(90, 3)))
    x2 = f32(r.normal(4.0, 3.0, size=(90, 3)))
    randomize(model)

    report = tfnorm.recompute_batch_statistics(model, ([x1, x2], np.zeros(90)), batch_size=32)

    pre = np.concatenate([dense(x1).numpy(), dense(x2).numpy()])
    assert_stats(bn, pre)
    assert report[0].calls == 2 and report[0].samples == 180 and report[0].positions == 180


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(5)
        self.bn1 = tfnorm.BatchNormalization()
        self.d2 = keras.layers.Dense(3)
        self.bn2 = keras.layers.BatchNormalization()
        self.unused = tfnorm.BatchNormalization(name="unused")  # never called

    def call(self, x, training=None):
        h = keras.ops.relu(self.bn1(self.d1(x), training=training))
        return self.bn2(self.d2(h), training=training)


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer")  # the unused layer
def test_unbuilt_subclassed_model():
    model = SubclassedNet()
    x = f32(rng(7).normal(2.0, 1.0, size=(100, 4)))
    report = tfnorm.recompute_batch_statistics(model, x, batch_size=30)  # builds it
    assert len(report) == 2 and report.not_called == ("unused",)
    assert "not called by the forward pass" in str(report)
    h1 = model.d1(x).numpy()
    m, v = assert_stats(model.bn1, h1)
    z = np.maximum((h1 - m) / np.sqrt(v + model.bn1.epsilon), 0.0)
    assert_stats(model.bn2, model.d2(f32(z)).numpy(), rtol=1e-4)
    for layer in (model.bn1, model.bn2):  # the wrappers are gone
        assert "call" not in vars(layer)


def test_masked_positions_are_left_out():
    r = rng(8)
    x = f32(r.normal(2.0, 1.5, size=(40, 7, 3)))
    lengths = r.integers(1, 8, size=40)
    valid = np.arange(7)[None, :] < lengths[:, None]
    x[~valid] = 0.0  # padding, masked by the Masking layer
    inp = keras.Input((7, 3))
    h = keras.layers.Masking(0.0)(inp)
    bn_a = tfnorm.BatchNormalization()
    bn_b = keras.layers.BatchNormalization()
    model = keras.Model(inp, bn_b(bn_a(h)))

    report = tfnorm.recompute_batch_statistics(model, x, batch_size=16)

    sel = x[valid]  # (positions, C)
    m, v = assert_stats(bn_a, sel, kept=(1,))
    after_a = (sel - m) / np.sqrt(v + bn_a.epsilon)
    assert_stats(bn_b, after_a, kept=(1,))
    assert [rec.positions for rec in report] == [int(valid.sum())] * 2


def test_keras_style_mask_with_channels_not_last():
    """A (batch, time) mask from Masking, read by BatchNormalization(axis=1) as the layer reads
    it in training: the leading axes, broadcast over the last (not over the channel axis)."""
    r = rng(12)
    x = f32(r.normal(1.0, 2.0, size=(30, 6, 4)))  # (N, T, C); axis=1 normalizes per step
    lengths = r.integers(1, 7, size=30)
    valid = np.arange(6)[None, :] < lengths[:, None]  # (N, T)
    x[~valid] = 0.0
    inp = keras.Input((6, 4))
    bn = tfnorm.BatchNormalization(axis=1)
    model = keras.Model(inp, bn(keras.layers.Masking(0.0)(inp)))

    tfnorm.recompute_batch_statistics(model, x, batch_size=8)

    want_m = np.array([x[valid[:, t], t].mean() for t in range(6)])
    want_v = np.array([x[valid[:, t], t].var() for t in range(6)])
    np.testing.assert_allclose(bn.moving_mean.numpy(), want_m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), want_v, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# What must not change
# --------------------------------------------------------------------------------------


def test_weights_other_variables_and_optimizer_untouched():
    inp = keras.Input((5,))
    h = keras.layers.Dense(5, trainable=False)(inp)  # frozen: non-trainable, not statistics
    h = tfnorm.BatchNormalization()(keras.layers.Dense(6)(h))
    h = keras.layers.BatchNormalization()(keras.layers.Dense(4, activation="relu")(h))
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    r = rng(9)
    x = f32(r.normal(size=(96, 5)))
    model.fit(x, f32(r.normal(size=(96, 1))), batch_size=32, epochs=1, verbose=0)
    stats = {id(layer.moving_mean) for layer in model.layers if hasattr(layer, "moving_mean")}
    stats |= {
        id(layer.moving_variance) for layer in model.layers if hasattr(layer, "moving_variance")
    }
    others = [v for v in model.variables if id(v) not in stats]
    assert any(not v.trainable for v in others)  # the frozen Dense layer's
    trainable = variables_bytes(model.trainable_variables)
    other = variables_bytes(others)
    optimizer = variables_bytes(model.optimizer.variables)
    moving = variables_bytes([v for v in model.variables if id(v) in stats])

    tfnorm.recompute_batch_statistics(model, x)

    assert variables_bytes(model.trainable_variables) == trainable
    assert variables_bytes(others) == other
    assert variables_bytes(model.optimizer.variables) == optimizer
    assert all(
        a != b
        for a, b in zip(variables_bytes([v for v in model.variables if id(v) in stats]), moving)
    )


def test_model_restored_when_data_changes_between_passes():
    counter = itertools.count()

    def gen():  # one batch more on every pass
        for _ in range(next(counter) + 2):
            yield np.ones((4, 3), np.float32) * 2.0

    ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec((None, 3)))
    model = dense_chain([tfnorm.BatchNormalization] * 2, widths=(4, 4), din=3)
    before = variables_bytes(model.variables)
    with pytest.raises(ValueError, match="same samples on every pass"):
        tfnorm.recompute_batch_statistics(model, ds)
    assert variables_bytes(model.variables) == before
    assert all("call" not in vars(layer) for layer in model.layers)


# --------------------------------------------------------------------------------------
# Kinds of data
# --------------------------------------------------------------------------------------


def _small_model():
    model = dense_chain(
        [tfnorm.BatchNormalization, keras.layers.BatchNormalization], widths=(5, 4), din=3
    )
    randomize(model, seed=11)
    return model


def _stats_of(model):
    return [
        np.concatenate(
            [
                model.get_layer(f"bn{i}").moving_mean.numpy(),
                model.get_layer(f"bn{i}").moving_variance.numpy(),
            ]
        )
        for i in range(2)
    ]


X = f32(rng(10).normal(0.5, 2.0, size=(130, 3)))
Y = np.zeros((130, 1), np.float32)


def _reference(x):
    model = _small_model()
    expected = numpy_chain(model, x, 2)
    return [np.concatenate(mv) for mv in expected]


def _batched(x, size):
    return [x[i : i + size] for i in range(0, len(x), size)]


DATA_KINDS = {
    "array": (lambda: X, {}, 130, 5),
    "array_batch_size": (lambda: X, {"batch_size": 7}, 130, 19),
    "tensor": (lambda: tf.constant(X), {"batch_size": 50}, 130, 3),
    "tuple_xy": (lambda: (X, Y), {"batch_size": 50}, 130, 3),
    "tuple_xyw": (lambda: (X, Y, np.ones(130)), {}, 130, 5),
    "dataset_xy": (lambda: tf.data.Dataset.from_tensor_slices((X, Y)).batch(20), {}, 130, 7),
    "dataset_x": (lambda: tf.data.Dataset.from_tensor_slices(X).batch(64), {}, 130, 3),
    "generator_xy": (lambda: ((b, b[:, :1]) for b in _batched(X, 25)), {}, 130, 6),
    "generator_x": (lambda: iter(_batched(X, 40)), {}, 130, 4),
    "list_of_batches": (lambda: _batched(X, 60), {}, 130, 3),
    # steps: exactly the first batches
    "array_steps": (lambda: X, {"batch_size": 20, "steps": 3}, 60, 3),
    "array_default_batch_steps": (lambda: X, {"steps": 2}, 64, 2),
    "dataset_steps": (
        lambda: tf.data.Dataset.from_tensor_slices((X, Y)).batch(30),
        {"steps": 2},
        60,
        2,
    ),
    "infinite_dataset_steps": (
        lambda: tf.data.Dataset.from_tensor_slices(X).batch(45).repeat(),
        {"steps": 2},
        90,
        2,
    ),
    "infinite_generator_steps": (lambda: itertools.cycle(_batched(X, 50)), {"steps": 2}, 100, 2),
}


@pytest.mark.parametrize("kind", sorted(DATA_KINDS))
def test_every_kind_of_data(kind):
    make, kwargs, samples, batches = DATA_KINDS[kind]
    model = _small_model()
    report = tfnorm.recompute_batch_statistics(model, make(), **kwargs)
    assert report.samples == samples and report.batches == batches
    assert [r.samples for r in report] == [samples, samples]
    for got, want in zip(_stats_of(model), _reference(X[:samples])):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6)


def test_run_eagerly_and_unbuilt_sequential():
    model = keras.Sequential(
        [
            keras.layers.Dense(5, name="dense0"),
            tfnorm.BatchNormalization(name="bn0"),
            keras.layers.ReLU(),
            keras.layers.Dense(4, name="dense1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(),
        ]
    )
    model.compile(loss="mse", run_eagerly=True)  # the passes run eagerly
    report = tfnorm.recompute_batch_statistics(model, (X, Y), batch_size=40)
    assert report.samples == 130 and len(report) == 2
    for got, want in zip(_stats_of(model), [np.concatenate(mv) for mv in numpy_chain(model, X, 2)]):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6)


def test_dict_inputs():
    inp = {"a": keras.Input((2,), name="a"), "b": keras.Input((1,), name="b")}
    h = keras.layers.Concatenate()([inp["a"], inp["b"]])
    bn = tfnorm.BatchNormalization()
    model = keras.Model(inp, bn(h))
    data = {"a": X[:, :2], "b": X[:, 2:]}
    tfnorm.recompute_batch_statistics(model, (data, Y), batch_size=33)
    assert_stats(bn, X)


def test_generator_is_read_once():
    calls = []

    def gen():
        calls.append(1)
        yield from _batched(X, 26)

    model = _small_model()
    tfnorm.recompute_batch_statistics(model, gen())
    assert len(calls) == 1


def test_model_without_statistics_layers_gives_an_empty_report():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2), tfnorm.GroupNormalization(groups=1)]
    )
    consumed = []

    def gen():
        consumed.append(1)
        yield X

    report = tfnorm.recompute_batch_statistics(model, gen())
    assert len(report) == 0 and not consumed
    assert "no layer keeps batch statistics" in str(report)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def _endless():
    while True:
        yield X[:1]


BAD = {
    "layer_not_model": (
        lambda: tfnorm.BatchNormalization(),
        X,
        {},
        TypeError,
        r"model must be a keras\.Model.*BatchNormalization",
    ),
    "batch_size_zero": (_small_model, X, {"batch_size": 0}, ValueError, r"batch_size=0"),
    "batch_size_negative": (_small_model, X, {"batch_size": -4}, ValueError, r"batch_size=-4"),
    "batch_size_float": (_small_model, X, {"batch_size": 2.5}, ValueError, r"batch_size=2\.5"),
    "batch_size_bool": (_small_model, X, {"batch_size": True}, ValueError, r"batch_size=True"),
    "steps_zero": (_small_model, X, {"steps": 0}, ValueError, r"steps=0"),
    "steps_string": (_small_model, X, {"steps": "3"}, ValueError, r"steps='3'"),
    "data_none": (_small_model, None, {}, TypeError, r"data must be.*NoneType"),
    "data_string": (_small_model, "x.npy", {}, TypeError, r"data must be.*str"),
    "data_number": (_small_model, 3.0, {}, TypeError, r"data must be.*float"),
    "empty_array": (
        _small_model,
        np.zeros((0, 3), np.float32),
        {},
        ValueError,
        r"data holds no samples.*\(0, 3\)",
    ),
    "empty_generator": (_small_model, iter(()), {}, ValueError, r"data gave no batches"),
    "empty_dataset": (
        _small_model,
        tf.data.Dataset.from_tensor_slices(X).batch(4).take(0),
        {},
        ValueError,
        r"data gave no batches",
    ),
    "infinite_dataset": (
        _small_model,
        tf.data.Dataset.from_tensor_slices(X).batch(4).repeat(),
        {},
        ValueError,
        r"infinite tf\.data\.Dataset.*steps=",
    ),
    "batch_size_with_dataset": (
        _small_model,
        tf.data.Dataset.from_tensor_slices(X).batch(4),
        {"batch_size": 8},
        ValueError,
        r"batch_size=8 applies to array data only.*Dataset",
    ),
    "batch_size_with_generator": (
        _small_model,
        iter(_batched(X, 4)),
        {"batch_size": 8},
        ValueError,
        r"batch_size=8 applies to array data only",
    ),
    "arrays_of_different_lengths": (
        _small_model,
        ({"a": X, "b": X[:5]}, Y),
        {},
        ValueError,
        r"different numbers of samples \[5, 130\]",
    ),
    "long_tuple_element": (_small_model, iter([(X, Y, Y, Y)]), {}, ValueError, r"tuple of 4 items"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case):
    make_model, data, kwargs, error, match = BAD[case]
    with pytest.raises(error, match=match):
        tfnorm.recompute_batch_statistics(make_model(), data, **kwargs)


def test_endless_generator_without_steps(monkeypatch):
    from tfnorm.recompute import data as recompute

    monkeypatch.setattr(recompute, "_MAX_UNBOUNDED_BATCHES", 50)
    with pytest.raises(ValueError, match=r"without running out, and steps=None.*steps="):
        tfnorm.recompute_batch_statistics(_small_model(), _endless())


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [tfnorm.BatchNormalization, keras.layers.BatchNormalization], ids=["tfnorm", "keras"]
)
def test_large_offset_keeps_the_variance(cls):
    x = f32(1e4 + rng(12).normal(0.0, 1.0, size=(3000, 2)) * np.array([1.0, 0.01]))
    bn = cls()
    model = keras.Sequential([keras.Input((2,)), bn])
    tfnorm.recompute_batch_statistics(model, x, batch_size=16)
    m, v = np_stats(x, (1,))
    np.testing.assert_allclose(bn.moving_mean.numpy(), m, rtol=1e-7)
    np.testing.assert_allclose(bn.moving_variance.numpy(), v, rtol=1e-4)


def test_non_finite_channel_keeps_its_statistics():
    x = f32(rng(13).normal(size=(50, 3)))
    x[7, 1] = np.nan
    bn = tfnorm.BatchNormalization()
    model = keras.Sequential([keras.Input((3,)), bn])
    report = tfnorm.recompute_batch_statistics(model, x)
    assert report[0].unchanged_channels == 1
    assert bn.moving_variance.numpy()[1] == 1.0 and bn.moving_mean.numpy()[1] == 0.0
    np.testing.assert_allclose(bn.moving_variance.numpy()[[0, 2]], x[:, [0, 2]].var(0), rtol=RTOL)
    assert "1 channel(s) kept" in str(report)


class CallCounter(keras.layers.Layer):
    """Changes a variable on every call, inference included (not batch statistics)."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, x):
        self.count.assign_add(1.0)
        return x


def test_other_variables_changed_by_inference_are_put_back():
    counter = CallCounter()
    bn = tfnorm.BatchNormalization()
    model = keras.Sequential([keras.Input((3,)), counter, bn])
    with pytest.warns(RuntimeWarning, match=r"changed variable\(s\).*count.*put back"):
        tfnorm.recompute_batch_statistics(model, X)
    assert counter.count.numpy() == 0.0
    assert_stats(bn, X)
