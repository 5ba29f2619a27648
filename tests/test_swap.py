"""swap_normalization: rewriting the normalization layers of built Keras models.

Small models check exact numbers against NumPy written from the layers'
equations; keras.applications models (weights=None, no download) check that
real graphs are rewritten completely, run, and save/load.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math

import keras
import numpy as np
import pytest

import tfnorm
from tfnorm.swap import SwapReport, default_match

RNG = np.random.default_rng(5)


# --------------------------------------------------------------------------------------
# utilities
# --------------------------------------------------------------------------------------


def walk(model):
    """Every operation of ``model``: layers, keras.ops nodes, input layers, nested models
    (and their contents), and sublayers of custom layers."""
    seen, out = set(), []

    def visit(op):
        if id(op) in seen:
            return
        seen.add(id(op))
        out.append(op)
        if isinstance(op, keras.Sequential):
            children = list(op._layers)
        elif isinstance(op, keras.Model):
            children = list(op.operations)
        elif isinstance(op, keras.layers.Layer):
            children = op._flatten_layers(include_self=False, recursive=True)
        else:
            children = []
        for child in children:
            visit(child)

    visit(model)
    return out


def layers_by_path(model, prefix=""):
    """``{"nested/.../name": layer}`` for every non-model, non-input layer."""
    out = {}
    ops = model.layers
    for layer in ops:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            out.update(layers_by_path(layer, f"{prefix}{layer.name}/"))
        else:
            out[prefix + layer.name] = layer
    return out


def _digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def snapshot(model):
    """Configs, variable checksums, graph nodes and flags of every object in ``model``."""
    state = {
        "model_config": json.dumps(model.get_config(), sort_keys=True, default=str),
        "n_objects": len(walk(model)),
    }
    for op in walk(model):
        entry = {
            "class": type(op),
            "name": op.name,
            "nodes": len(getattr(op, "_inbound_nodes", [])),
            "outbound": len(getattr(op, "_outbound_nodes", [])),
        }
        if isinstance(op, keras.layers.Layer):
            entry["config"] = json.dumps(op.get_config(), sort_keys=True, default=str)
            entry["trainable"] = op.trainable
            entry["built"] = op.built
            entry["variables"] = [(v.path, _digest(v.numpy())) for v in op.variables]
        state[id(op)] = entry
    return state


def assert_nothing_shared(old, new):
    old_ops, new_ops = walk(old), walk(new)
    shared = {id(o) for o in old_ops} & {id(o) for o in new_ops}
    assert not shared, [o.name for o in old_ops if id(o) in shared]
    old_vars = {id(v) for o in old_ops if isinstance(o, keras.layers.Layer) for v in o.variables}
    new_vars = {id(v) for o in new_ops if isinstance(o, keras.layers.Layer) for v in o.variables}
    assert not old_vars & new_vars


def randomize(model):
    """Non-trivial values for every normalization weight (positive: variances stay valid)."""
    for layer in layers_by_path(model).values():
        if default_match(layer):
            for v in layer.weights:
                v.assign(RNG.uniform(0.5, 1.5, size=v.shape).astype("float32"))
    return model


def count(model, cls):
    return sum(isinstance(layer, cls) for layer in layers_by_path(model).values())


def predict(model, x):
    return np.asarray(model(x, training=False))


def np_bn(x, gamma, beta, mean, var, eps):
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def np_dense(x, layer):
    kernel, bias = (v.numpy().astype(np.float64) for v in layer.weights)
    return x @ kernel + bias


def bn_params(layer):
    return [v.numpy().astype(np.float64) for v in layer.weights]


def mlp(n_bn=3, width=6, keras_bn=True):
    bn = keras.layers.BatchNormalization if keras_bn else tfnorm.BatchNormalization
    layers = [keras.Input((5,))]
    for i in range(n_bn):
        layers += [keras.layers.Dense(width, name=f"dense_{i}"), bn(name=f"bn_{i}")]
    layers.append(keras.layers.Dense(3, name="head"))
    return randomize(keras.Sequential(layers, name="mlp"))


def x_of(shape):
    return RNG.normal(size=shape).astype("float32")


# --------------------------------------------------------------------------------------
# exact numbers on small models
# --------------------------------------------------------------------------------------


def test_bn_to_tfnorm_bn_carries_every_statistic_and_keeps_predictions():
    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, name="d1")(inputs)
    h = keras.layers.BatchNormalization(epsilon=1e-3, name="bn")(h)
    outputs = keras.layers.Dense(3, name="d2")(h)
    old = randomize(keras.Model(inputs, outputs))
    new = tfnorm.swap_normalization(old, "batch")

    assert isinstance(new.get_layer("bn"), tfnorm.BatchNormalization)
    (record,) = new.swap_report
    assert record.carried == (
        ("gamma", "gamma"),
        ("beta", "beta"),
        ("moving_mean", "moving_mean"),
        ("moving_variance", "moving_variance"),
    )
    assert record.fresh == () and record.dropped == ()

    x = x_of((4, 5))
    gamma, beta, mean, var = bn_params(old.get_layer("bn"))
    expected = np_dense(
        np_bn(np_dense(x.astype(np.float64), old.get_layer("d1")), gamma, beta, mean, var, 1e-3),
        old.get_layer("d2"),
    )
    np.testing.assert_allclose(predict(new, x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predict(new, x), predict(old, x), rtol=1e-6, atol=1e-6)


def test_remove_with_keep_first_one_leaves_exactly_the_first_bn():
    old = mlp(n_bn=3)
    new = tfnorm.swap_normalization(old, None, keep_first=1)

    assert isinstance(new, keras.Sequential)
    bns = [l for l in new.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert [l.name for l in bns] == ["bn_0"]
    assert [l.name for l in new.layers] == ["dense_0", "bn_0", "dense_1", "dense_2", "head"]
    assert [(r.path, r.action) for r in new.swap_report] == [
        ("bn_0", "kept"),
        ("bn_1", "removed"),
        ("bn_2", "removed"),
    ]
    assert new.swap_report[1].dropped == ("gamma", "beta", "moving_mean", "moving_variance")

    x = x_of((4, 5))
    h = np_dense(x.astype(np.float64), old.get_layer("dense_0"))
    h = np_bn(h, *bn_params(old.get_layer("bn_0")), old.get_layer("bn_0").epsilon)
    h = np_dense(np_dense(h, old.get_layer("dense_1")), old.get_layer("dense_2"))
    expected = np_dense(h, old.get_layer("head"))
    np.testing.assert_allclose(predict(new, x), expected, rtol=1e-5, atol=1e-5)


def np_group_norm(x, gamma, beta, groups, eps):
    n, h, w, c = x.shape
    xg = x.reshape(n, h, w, groups, c // groups)
    mean = xg.mean(axis=(1, 2, 4), keepdims=True)
    var = xg.var(axis=(1, 2, 4), keepdims=True)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(n, h, w, c)
    return y * gamma + beta


def test_gamma_beta_carried_into_group_norm_and_moving_statistics_dropped():
    inputs = keras.Input((4, 4, 8))
    h = keras.layers.BatchNormalization(name="bn")(inputs)
    outputs = keras.layers.ReLU(name="relu")(h)
    old = randomize(keras.Model(inputs, outputs))
    new = tfnorm.swap_normalization(old, "group", to_kwargs={"groups": 4})

    gn = new.get_layer("bn")
    assert isinstance(gn, tfnorm.GroupNormalization) and gn.groups == 4
    old_gamma, old_beta, _, _ = bn_params(old.get_layer("bn"))
    np.testing.assert_array_equal(gn.gamma.numpy(), old_gamma.astype(np.float32))
    np.testing.assert_array_equal(gn.beta.numpy(), old_beta.astype(np.float32))
    (record,) = new.swap_report
    assert record.carried == (("gamma", "gamma"), ("beta", "beta"))
    assert record.dropped == ("moving_mean", "moving_variance")

    x = x_of((2, 4, 4, 8)) * 2 + 1
    expected = np.maximum(np_group_norm(x.astype(np.float64), old_gamma, old_beta, 4, 1e-3), 0)
    np.testing.assert_allclose(predict(new, x), expected, rtol=1e-5, atol=1e-5)


def test_gamma_goes_to_a_weight_named_scale():
    inputs = keras.Input((6,))
    outputs = keras.layers.LayerNormalization(name="ln")(inputs)
    old = randomize(keras.Model(inputs, outputs))
    new = tfnorm.swap_normalization(old, keras.layers.RMSNormalization)

    rms = new.get_layer("ln")
    assert type(rms) is keras.layers.RMSNormalization
    np.testing.assert_array_equal(rms.scale.numpy(), old.get_layer("ln").gamma.numpy())
    (record,) = new.swap_report
    assert record.carried == (("scale", "gamma"),) and record.dropped == ("beta",)


def test_moving_statistics_go_to_a_layer_that_keeps_them():
    old = mlp(n_bn=1)
    new = tfnorm.swap_normalization(
        old, tfnorm.BatchNormalization, to_kwargs={"renorm": True, "epsilon": 1e-3}
    )
    new_bn, old_bn = new.get_layer("bn_0"), old.get_layer("bn_0")
    np.testing.assert_array_equal(new_bn.moving_mean.numpy(), old_bn.moving_mean.numpy())
    np.testing.assert_array_equal(new_bn.moving_variance.numpy(), old_bn.moving_variance.numpy())
    (record,) = new.swap_report
    assert dict(record.carried) == {
        "gamma": "gamma",
        "beta": "beta",
        "moving_mean": "moving_mean",
        "moving_variance": "moving_variance",
    }
    # renorm's moving standard deviation (Keras' layout) has no counterpart in a plain BN
    assert record.fresh == ("moving_stddev", "renorm_mean", "renorm_stddev")


def test_weights_of_another_shape_start_fresh_and_say_why():
    inputs = keras.Input((4, 4, 8))
    outputs = keras.layers.BatchNormalization(name="bn")(inputs)
    old = randomize(keras.Model(inputs, outputs))
    new = tfnorm.swap_normalization(old, "layer", to_kwargs={"axis": [1, 2, 3]})

    ln = new.get_layer("bn")
    assert ln.gamma.shape == (4, 4, 8)
    np.testing.assert_array_equal(ln.gamma.numpy(), np.ones((4, 4, 8), np.float32))
    np.testing.assert_array_equal(ln.beta.numpy(), np.zeros((4, 4, 8), np.float32))
    (record,) = new.swap_report
    assert record.carried == () and record.fresh == ("gamma", "beta")
    assert "shapes differ" in record.note


def test_same_class_replacement_matches_weights_by_name():
    old = mlp(n_bn=1, keras_bn=False)
    new = tfnorm.swap_normalization(old, "batch", to_kwargs={"momentum": 0.5})
    assert new.get_layer("bn_0").momentum == 0.5
    for v_new, v_old in zip(new.get_layer("bn_0").weights, old.get_layer("bn_0").weights):
        np.testing.assert_array_equal(v_new.numpy(), v_old.numpy())


def test_untouched_layers_are_exact_copies():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Dropout(0.3, seed=3, name="drop")(h)
    h = keras.layers.Flatten(name="flat")(h)
    outputs = keras.layers.Dense(2, name="dense")(h)
    old = randomize(keras.Model(inputs, outputs))
    new = tfnorm.swap_normalization(old, "instance")

    for name in ("conv", "drop", "dense"):
        old_vars, new_vars = old.get_layer(name).variables, new.get_layer(name).variables
        assert len(old_vars) == len(new_vars) > 0
        for a, b in zip(old_vars, new_vars):
            assert a is not b
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_copy_weights_false_starts_everything_fresh():
    old = mlp(n_bn=1)
    new = tfnorm.swap_normalization(old, "batch", copy_weights=False)
    assert not np.array_equal(
        new.get_layer("dense_0").kernel.numpy(), old.get_layer("dense_0").kernel.numpy()
    )
    np.testing.assert_array_equal(new.get_layer("bn_0").gamma.numpy(), np.ones(6, np.float32))
    (record,) = new.swap_report
    assert record.carried == () and "moving_mean" in record.fresh


# --------------------------------------------------------------------------------------
# the input model is never modified, and nothing is shared
# --------------------------------------------------------------------------------------


def _mixed_model():
    inner = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(6, name="inner_dense"),
            keras.layers.BatchNormalization(name="inner_bn"),
        ],
        name="inner",
    )
    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, name="d1")(inputs)
    shared_bn = keras.layers.BatchNormalization(name="shared_bn")
    a = shared_bn(h)
    b = shared_bn(keras.ops.relu(h) * 2.0)
    h = keras.layers.Add(name="add")([inner(a), inner(b)])
    h = keras.layers.LayerNormalization(name="ln")(h)
    outputs = keras.layers.Dense(2, name="head")(h)
    return randomize(keras.Model(inputs, outputs, name="mixed"))


@pytest.mark.parametrize(
    "to, kwargs",
    [
        ("group", {"to_kwargs": {"groups": 2}}),
        (None, {"keep_first": 1}),
        (lambda old: tfnorm.RMSNormalization(), {}),
        ("batch", {"copy_weights": False}),
    ],
    ids=["name", "remove", "callable", "no-copy"],
)
def test_input_model_is_never_modified_and_shares_nothing(to, kwargs):
    old = _mixed_model()
    x = x_of((3, 5))
    before, y_before = snapshot(old), predict(old, x)
    new = tfnorm.swap_normalization(old, to, **kwargs)
    assert snapshot(old) == before
    assert_nothing_shared(old, new)

    # training the new model leaves the old one as it was
    new.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    new.fit(x, np.ones((3, 2), np.float32), epochs=1, verbose=0)
    assert snapshot(old) == before
    np.testing.assert_array_equal(predict(old, x), y_before)


def test_shared_layer_gets_one_replacement_used_at_both_call_sites():
    old = _mixed_model()
    new = tfnorm.swap_normalization(old, "group", to_kwargs={"groups": 3})
    gn = new.get_layer("shared_bn")
    assert isinstance(gn, tfnorm.GroupNormalization)
    assert len(gn._inbound_nodes) == 2
    assert sum(l is gn for l in new.layers) == 1
    assert [r.path for r in new.swap_report].count("shared_bn") == 1


def test_nested_model_is_rewritten_once_and_stays_shared():
    old = _mixed_model()
    new = tfnorm.swap_normalization(old, "rms")
    inner = new.get_layer("inner")
    assert isinstance(inner, keras.Sequential) and inner is not old.get_layer("inner")
    assert len(inner._inbound_nodes) == 2
    assert isinstance(inner.get_layer("inner_bn"), tfnorm.RMSNormalization)
    assert [r.path for r in new.swap_report] == ["shared_bn", "inner/inner_bn", "ln"]
    # the new model computes what its layers say: same inner model at both sites
    x = x_of((3, 5))
    y = predict(new, x)
    assert np.isfinite(y).all() and y.shape == (3, 2)


def test_keep_first_counts_in_topological_order_through_nested_models():
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.BatchNormalization(name="b"),
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(name="c"),
        ],
        name="inner",
    )
    inputs = keras.Input((4,))
    h = keras.layers.BatchNormalization(name="a")(inputs)
    h = inner(keras.layers.Dense(4)(h))
    outputs = keras.layers.BatchNormalization(name="d")(h)
    old = keras.Model(inputs, outputs)

    new = tfnorm.swap_normalization(old, "layer", keep_first=2)
    assert [(r.path, r.action) for r in new.swap_report] == [
        ("a", "kept"),
        ("inner/b", "kept"),
        ("inner/c", "replaced"),
        ("d", "replaced"),
    ]
    assert type(new.get_layer("a")) is keras.layers.BatchNormalization
    assert type(new.get_layer("inner").get_layer("b")) is keras.layers.BatchNormalization
    assert isinstance(new.get_layer("inner").get_layer("c"), tfnorm.LayerNormalization)
    assert isinstance(new.get_layer("d"), tfnorm.LayerNormalization)


def test_keras_ops_in_the_graph_are_recreated_and_multiple_inputs_work():
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    h = keras.ops.relu(a) + keras.ops.exp(b)
    outputs = keras.layers.BatchNormalization(name="bn")(h)
    old = randomize(keras.Model({"a": a, "b": b}, outputs))
    new = tfnorm.swap_normalization(old, None)
    assert count(new, keras.layers.BatchNormalization) == 0
    xa, xb = x_of((2, 3)), x_of((2, 3))
    y = predict(new, {"a": xa, "b": xb})
    np.testing.assert_allclose(y, np.maximum(xa, 0) + np.exp(xb), rtol=1e-6)
    assert_nothing_shared(old, new)


def test_replacement_inherits_name_dtype_policy_and_trainable():
    inputs = keras.Input((4,))
    frozen = keras.layers.BatchNormalization(name="frozen", dtype="mixed_float16")
    frozen.trainable = False
    outputs = frozen(inputs)
    old = keras.Model(inputs, outputs)
    new = tfnorm.swap_normalization(old, "layer")
    layer = new.get_layer("frozen")
    assert layer.dtype_policy.name == "mixed_float16"
    assert layer.trainable is False
    new2 = tfnorm.swap_normalization(old, "layer", to_kwargs={"trainable": True})
    assert new2.get_layer("frozen").trainable is True


# --------------------------------------------------------------------------------------
# forms of `to` and `match`
# --------------------------------------------------------------------------------------


def test_to_forms_name_class_partial_and_callable_agree():
    old = mlp(n_bn=2, width=8)
    by_name = tfnorm.swap_normalization(old, "group", to_kwargs={"groups": 2})
    by_class = tfnorm.swap_normalization(old, tfnorm.GroupNormalization, to_kwargs={"groups": 2})
    by_partial = tfnorm.swap_normalization(
        old, functools.partial(tfnorm.GroupNormalization, groups=2)
    )
    by_callable = tfnorm.swap_normalization(
        old, lambda layer: tfnorm.GroupNormalization(groups=2, name=f"gn_{layer.name}")
    )
    x = x_of((4, 5))
    reference = predict(by_name, x)
    for model in (by_class, by_partial, by_callable):
        assert count(model, tfnorm.GroupNormalization) == 2
        np.testing.assert_allclose(predict(model, x), reference, rtol=1e-6, atol=1e-6)
    assert [r.new_name for r in by_callable.swap_report] == ["gn_bn_0", "gn_bn_1"]
    assert [r.new_name for r in by_name.swap_report] == ["bn_0", "bn_1"]


def test_callable_chooses_arguments_per_layer():
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.Conv2D(12, 1)(inputs)
    h = keras.layers.BatchNormalization(name="bn12")(h)
    h = keras.layers.Conv2D(8, 1)(h)
    outputs = keras.layers.BatchNormalization(name="bn8")(h)
    old = keras.Model(inputs, outputs)
    new = tfnorm.swap_normalization(
        old, lambda layer: tfnorm.GroupNormalization(groups=math.gcd(32, layer.input.shape[-1]))
    )
    groups = {r.path: layers_by_path(new)[r.new_name].groups for r in new.swap_report}
    assert groups == {"bn12": 4, "bn8": 8}


@pytest.mark.parametrize(
    "match, expected",
    [
        (keras.layers.BatchNormalization, {"kbn"}),
        ((keras.layers.LayerNormalization, "rms"), {"kln", "trms"}),
        ("batch", {"kbn", "tbn"}),
        ("LayerNormalization", {"kln", "tln"}),
        (lambda layer: layer.name.startswith("t"), {"tbn", "tln", "trms", "tgn"}),
        (None, {"kbn", "kln", "kunit", "tbn", "tln", "trms", "tgn"}),
    ],
    ids=["class", "tuple", "name-twins", "class-name", "predicate", "default"],
)
def test_match_forms(match, expected):
    layers = [
        keras.layers.BatchNormalization(name="kbn"),
        keras.layers.LayerNormalization(name="kln"),
        keras.layers.UnitNormalization(name="kunit"),
        keras.layers.Dense(4, name="dense"),
        keras.layers.SpectralNormalization(keras.layers.Dense(4), name="spectral"),
        tfnorm.BatchNormalization(name="tbn"),
        tfnorm.LayerNormalization(name="tln"),
        tfnorm.RMSNormalization(name="trms"),
        tfnorm.GroupNormalization(groups=2, name="tgn"),
    ]
    old = keras.Sequential([keras.Input((4,))] + layers)
    new = tfnorm.swap_normalization(old, None, match=match)
    assert {r.path for r in new.swap_report} == expected
    assert {l.name for l in new.layers} == {l.name for l in layers} - expected


def test_default_match_follows_the_registry(monkeypatch):
    class Halve(tfnorm.NormalizationLayer):  # a family added later
        def call(self, inputs):
            return inputs * 0.5

    class Threshold(tfnorm.NormalizationLayer):  # shares the base, is not a normalization
        def call(self, inputs):
            return keras.ops.maximum(inputs, 0.0)

    def model():
        return keras.Sequential(
            [
                keras.Input((3,)),
                Halve(name="halve"),
                Threshold(name="threshold"),
                keras.layers.Dense(2),
            ]
        )

    with pytest.warns(UserWarning, match="no layer"):
        assert len(tfnorm.swap_normalization(model(), None).swap_report) == 0
    monkeypatch.setitem(tfnorm.registry._REGISTRY, "halve", Halve)
    new = tfnorm.swap_normalization(model(), None)
    assert [r.path for r in new.swap_report] == ["halve"]
    assert [type(l).__name__ for l in new.layers] == ["Threshold", "Dense"]
    everything = tfnorm.swap_normalization(model(), None, match=tfnorm.NormalizationLayer)
    assert [type(l).__name__ for l in everything.layers] == ["Dense"]


def test_default_match_leaves_wrappers_and_preprocessing_alone():
    class KernelNorm(tfnorm.LayerNormalization):  # a registered class wrapping a layer
        def __init__(self, layer, **kwargs):
            super().__init__(**kwargs)
            self.layer = layer

    assert default_match(tfnorm.LayerNormalization())
    assert not default_match(KernelNorm(keras.layers.Dense(2)))
    assert not default_match(keras.layers.SpectralNormalization(keras.layers.Dense(2)))
    assert not default_match(keras.layers.Normalization())
    assert not default_match(keras.Sequential([keras.layers.BatchNormalization()]))


# --------------------------------------------------------------------------------------
# report, verbose, warnings
# --------------------------------------------------------------------------------------


def test_verbose_prints_the_report_table(capsys):
    old = mlp(n_bn=2)
    new = tfnorm.swap_normalization(old, "layer", keep_first=1, verbose=True)
    out = capsys.readouterr().out
    assert isinstance(new.swap_report, SwapReport)
    assert out.strip() == str(new.swap_report).strip()
    lines = out.strip().splitlines()
    assert lines[0] == "swap_normalization: 1 replaced, 0 removed, 1 kept"
    row = next(line for line in lines if "bn_1" in line)
    assert "keras.layers.BatchNormalization" in row and "tfnorm.LayerNormalization" in row
    assert "carried gamma, beta" in row and "dropped moving_mean, moving_variance" in row
    assert "(kept)" in next(line for line in lines if "bn_0" in line)
    assert len(new.swap_report.replaced) == 1 and len(new.swap_report.kept) == 1
    tfnorm.swap_normalization(old, "layer")
    assert capsys.readouterr().out == ""


def test_no_match_warns_and_returns_a_copy():
    old = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    with pytest.warns(UserWarning, match="no layer .* matched"):
        new = tfnorm.swap_normalization(old, "group")
    assert new is not old and len(new.swap_report) == 0
    np.testing.assert_array_equal(
        new.get_layer("d").kernel.numpy(), old.get_layer("d").kernel.numpy()
    )


def test_normalization_inside_a_custom_layer_is_reported_and_warned():
    old = keras.Sequential(
        [
            keras.Input((2, 3)),
            keras.layers.TimeDistributed(
                keras.layers.BatchNormalization(name="inner_bn"), name="td"
            ),
        ]
    )
    with pytest.warns(UserWarning, match="inner_bn"):
        new = tfnorm.swap_normalization(old, "layer")
    (record,) = new.swap_report
    assert record.action == "kept" and record.path == "td/inner_bn"
    assert "cannot be rewritten" in record.note


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x):
        return self.bn(x)


class FunctionalSubclass(keras.Model):
    def __init__(self):
        inputs = keras.Input((3,))
        super().__init__(inputs, keras.layers.BatchNormalization()(inputs))


def test_subclassed_model_is_refused_with_what_to_do():
    model = Subclassed()
    model(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"subclassed keras.Model \(Subclassed\).*functional API"):
        tfnorm.swap_normalization(model, "group")


def test_functional_subclass_is_refused_with_a_way_out():
    model = FunctionalSubclass()
    with pytest.raises(ValueError, match=r"keras.Model\(model.inputs, model.outputs\)"):
        tfnorm.swap_normalization(model, "layer")
    new = tfnorm.swap_normalization(keras.Model(model.inputs, model.outputs), "layer")
    assert len(new.swap_report.replaced) == 1


def test_nested_subclassed_model_is_refused_naming_it():
    sub = Subclassed(name="custom_block")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, sub(inputs))
    with pytest.raises(ValueError, match="nested model 'custom_block'.*subclassed"):
        tfnorm.swap_normalization(model, "layer")


def test_unbuilt_sequential_is_refused_with_what_to_do():
    model = keras.Sequential([keras.layers.Dense(3), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match=r"unbuilt Sequential.*keras.Input\(shape=...\)"):
        tfnorm.swap_normalization(model, "layer")
    model.build((None, 4))
    assert len(tfnorm.swap_normalization(model, "layer").swap_report.replaced) == 1


def test_a_layer_is_not_a_model():
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        tfnorm.swap_normalization(keras.layers.BatchNormalization(), "layer")


def _param(id_, error, pattern, **kwargs):
    return pytest.param(kwargs, error, pattern, id=id_)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        _param("to-unknown-name", ValueError, r"to='grup'.*Did you mean 'group'", to="grup"),
        _param("to-int", TypeError, r"to must be .*received to=42", to=42),
        _param(
            "to-not-a-layer-class",
            TypeError,
            r"to must be a keras Layer class",
            to=keras.optimizers.SGD,
        ),
        _param(
            "to-partial-positional",
            TypeError,
            r"to=.*positional",
            to=functools.partial(tfnorm.GroupNormalization, 4),
        ),
        _param(
            "to-returns-none",
            TypeError,
            r"returned None for layer 'bn_0'.*to=None",
            to=lambda old: None,
        ),
        _param("to-returns-str", TypeError, r"returned str for layer 'bn_0'", to=lambda old: "gn"),
        _param(
            "to-returns-old-layer",
            ValueError,
            r"layer of the original model \('bn_0'\)",
            to=lambda old: old,
        ),
        _param(
            "to_kwargs-not-dict",
            TypeError,
            r"to_kwargs must be a dict",
            to="group",
            to_kwargs=[("groups", 2)],
        ),
        _param(
            "to_kwargs-invalid-value",
            ValueError,
            r"to_kwargs=\{'groups': 0\} are not valid arguments for GroupNormalization",
            to="group",
            to_kwargs={"groups": 0},
        ),
        _param(
            "to_kwargs-unknown-key",
            ValueError,
            r"to_kwargs=.*grops",
            to="group",
            to_kwargs={"grops": 2},
        ),
        _param("to_kwargs-name", ValueError, r"sets 'name'", to="group", to_kwargs={"name": "gn"}),
        _param(
            "to_kwargs-with-callable",
            TypeError,
            r"to_kwargs goes with a registry name or a layer class",
            to=lambda old: tfnorm.LayerNormalization(),
            to_kwargs={"axis": -1},
        ),
        _param(
            "to_kwargs-with-none",
            TypeError,
            r"to=None .* takes no to_kwargs",
            to=None,
            to_kwargs={"groups": 2},
        ),
        _param("match-int", TypeError, r"match must be .*received match=42", to="layer", match=42),
        _param(
            "match-unknown-name",
            ValueError,
            r"match='nope' is not a known normalization",
            to="layer",
            match="nope",
        ),
        _param(
            "match-tuple-item",
            TypeError,
            r"match=.* holds 3",
            to="layer",
            match=(keras.layers.BatchNormalization, 3),
        ),
        _param("match-empty", ValueError, r"match=\(\) matches nothing", to="layer", match=()),
        _param(
            "match-not-layer-class",
            TypeError,
            r"match must name keras Layer classes",
            to="layer",
            match=int,
        ),
        _param(
            "keep_first-negative",
            ValueError,
            r"keep_first must be an integer >= 0",
            to="layer",
            keep_first=-1,
        ),
        _param("keep_first-float", ValueError, r"keep_first=1.5", to="layer", keep_first=1.5),
        _param("keep_first-bool", ValueError, r"keep_first=True", to="layer", keep_first=True),
        _param(
            "copy_weights-str",
            TypeError,
            r"copy_weights must be True or False",
            to="layer",
            copy_weights="yes",
        ),
        _param(
            "verbose-none", TypeError, r"verbose must be True or False", to="layer", verbose=None
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, error, pattern):
    model = mlp(n_bn=2)
    with pytest.raises(error, match=pattern):
        tfnorm.swap_normalization(model, **kwargs)


def test_one_layer_returned_for_two_places_is_refused():
    shared = tfnorm.LayerNormalization()
    with pytest.raises(ValueError, match="same LayerNormalization object for 'bn_0' and 'bn_1'"):
        tfnorm.swap_normalization(mlp(n_bn=2), lambda old: shared)


# --------------------------------------------------------------------------------------
# keras.applications (weights=None: nothing is downloaded)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50():
    return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)


@pytest.fixture(scope="module")
def mobilenet_v2():
    return keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=10)


def saved_and_loaded(model, tmp_path):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    return keras.saving.load_model(path)


def test_resnet50_every_batch_norm_to_group_norm_32(resnet50, tmp_path):
    old_bns = [l for l in resnet50.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(old_bns) == 53
    before = snapshot(resnet50)

    new = tfnorm.swap_normalization(resnet50, "group", to_kwargs={"groups": 32})

    assert snapshot(resnet50) == before
    assert_nothing_shared(resnet50, new)
    assert count(new, keras.layers.BatchNormalization) == 0
    gns = [l for l in new.layers if isinstance(l, tfnorm.GroupNormalization)]
    assert len(gns) == 53 and {g.groups for g in gns} == {32}
    assert [g.name for g in gns] == [b.name for b in old_bns]
    assert [l.name for l in new.layers] == [l.name for l in resnet50.layers]
    assert len(new.swap_report.replaced) == 53
    assert all(r.carried == (("gamma", "gamma"), ("beta", "beta")) for r in new.swap_report)
    # every other layer is an exact copy
    for name, layer in layers_by_path(resnet50).items():
        if not isinstance(layer, keras.layers.BatchNormalization):
            for a, b in zip(layer.weights, new.get_layer(name).weights):
                assert _digest(a.numpy()) == _digest(b.numpy()), name

    x = x_of((2, 64, 64, 3))
    y = predict(new, x)
    assert y.shape == (2, 10) and np.isfinite(y).all()
    loaded = saved_and_loaded(new, tmp_path)
    assert count(loaded, tfnorm.GroupNormalization) == 53
    np.testing.assert_allclose(predict(loaded, x), y, rtol=1e-6, atol=1e-6)


def test_mobilenet_v2_groups_that_do_not_divide_are_named(mobilenet_v2):
    with pytest.raises(
        ValueError,
        match=(
            r"'expanded_conv_project_BN' \(input shape \(None, 32, 32, 16\)\).*"
            r"groups=32 must divide the 16 channels.*groups=16.*callable to="
        ),
    ):
        tfnorm.swap_normalization(mobilenet_v2, "group", to_kwargs={"groups": 32})


def test_mobilenet_v2_with_groups_chosen_per_layer(mobilenet_v2, tmp_path):
    before = snapshot(mobilenet_v2)

    def group_norm(old):
        return tfnorm.GroupNormalization(groups=math.gcd(32, old.input.shape[-1]))

    new = tfnorm.swap_normalization(mobilenet_v2, group_norm)
    assert snapshot(mobilenet_v2) == before
    assert count(new, keras.layers.BatchNormalization) == 0
    assert count(new, tfnorm.GroupNormalization) == 52 == len(new.swap_report.replaced)
    for record in new.swap_report:
        old_channels = mobilenet_v2.get_layer(record.path).input.shape[-1]
        assert new.get_layer(record.new_name).groups == math.gcd(32, old_channels)

    x = x_of((2, 64, 64, 3))
    y = predict(new, x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(predict(saved_and_loaded(new, tmp_path), x), y, rtol=1e-6, atol=1e-6)


def test_application_inside_a_model_with_a_nested_sequential(tmp_path):
    stem = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(3, 1, name="mix"),
            keras.layers.BatchNormalization(name="stem_bn"),
        ],
        name="stem",
    )
    base = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, include_top=False, pooling="avg"
    )
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(4, name="head")(base(stem(inputs)))
    old = keras.Model(inputs, outputs, name="transfer")
    n_bn = count(old, keras.layers.BatchNormalization)
    before = snapshot(old)

    one_bn = tfnorm.swap_normalization(old, None, keep_first=1)

    assert snapshot(old) == before
    assert_nothing_shared(old, one_bn)
    assert isinstance(one_bn.get_layer("stem"), keras.Sequential)
    assert [
        p
        for p, l in layers_by_path(one_bn).items()
        if isinstance(l, keras.layers.BatchNormalization)
    ] == ["stem/stem_bn"]
    assert len(one_bn.swap_report.removed) == n_bn - 1
    assert one_bn.swap_report[0].path == "stem/stem_bn"
    assert one_bn.swap_report[1].path.startswith(base.name + "/")

    x = x_of((2, 32, 32, 3))
    y = predict(one_bn, x)
    assert y.shape == (2, 4) and np.isfinite(y).all()
    loaded = saved_and_loaded(one_bn, tmp_path)
    np.testing.assert_allclose(predict(loaded, x), y, rtol=1e-6, atol=1e-6)
    assert count(loaded, keras.layers.BatchNormalization) == 1


# --------------------------------------------------------------------------------------
# what the rewrite keeps of the model itself
# --------------------------------------------------------------------------------------


def _squared_error(y_true, y_pred):  # a plain function: not serializable by name
    return keras.ops.mean((y_true - y_pred) ** 2)


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_compiled_model_with_a_custom_loss_gives_an_uncompiled_copy(kind):
    old = mlp(n_bn=1) if kind == "sequential" else _mixed_model()
    old.compile(optimizer=keras.optimizers.SGD(0.1), loss=_squared_error)
    new = tfnorm.swap_normalization(old, "layer")
    assert old.compiled and not new.compiled
    assert len(new.swap_report.replaced) >= 1


def test_frozen_model_stays_frozen_and_keeps_its_name():
    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(4)(inputs))
    old = keras.Model(inputs, outputs, name="frozen_model", trainable=False)
    new = tfnorm.swap_normalization(old, "rms")
    assert new.name == "frozen_model" and new.trainable is False
    assert new.trainable_weights == []


def test_inputs_keep_their_layer_names_sparsity_and_optional_flag():
    dense = keras.Input((3,))  # unnamed: named by its InputLayer
    sparse = keras.Input((3,), sparse=True, name="sparse_in")
    extra = keras.Input((3,), name="extra", optional=True)
    h = keras.layers.Dense(3, name="d")(keras.ops.add(dense, keras.layers.Dense(3)(sparse)))
    try:
        old = keras.Model([dense, sparse, extra], keras.layers.BatchNormalization(name="bn")(h))
    except ValueError as e:  # Keras 3.10 to 3.13 refuse an input that the outputs do not use
        if "not connected to" not in str(e):
            raise
        pytest.skip(f"Keras {keras.__version__} refuses a model with an unused input: {e}")
    new = tfnorm.swap_normalization(old, "layer")
    old_inputs = [l for l in old.layers if isinstance(l, keras.layers.InputLayer)]
    new_inputs = [l for l in new.layers if isinstance(l, keras.layers.InputLayer)]
    assert [l.name for l in new_inputs] == [l.name for l in old_inputs]
    assert [t.sparse for t in new.inputs] == [False, True, False]
    assert [l.optional for l in new_inputs] == [False, False, True]


def test_nested_functional_subclass_is_refused_naming_it():
    inner = FunctionalSubclass()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, inner(inputs))
    pattern = rf"nested model '{inner.name}'.*keras.Model\(model.inputs"
    with pytest.raises(ValueError, match=pattern):
        tfnorm.swap_normalization(model, "layer")


def test_sequential_replacement_that_cannot_be_built_is_named():
    old = keras.Sequential(
        [
            keras.Input((4, 4, 6)),
            keras.layers.Conv2D(6, 1, name="conv"),
            keras.layers.BatchNormalization(name="bn6"),
        ]
    )
    with pytest.raises(
        ValueError,
        match=r"replacing BatchNormalization 'bn6' \(input shape "
        r"\(None, 4, 4, 6\)\) with GroupNormalization failed",
    ):
        tfnorm.swap_normalization(old, keras.layers.GroupNormalization, to_kwargs={"groups": 4})
