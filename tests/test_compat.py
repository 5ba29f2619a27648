"""Compatibility: with earlier tfnorm versions, and with the installed Keras and TensorFlow.

Models saved by earlier tfnorm versions still load, and compute what they
computed. The fixtures under ``tests/fixtures/v<version>/`` were written by
``tests/fixtures/make_fixtures.py`` with that version: one ``.keras`` model per
layer family and an ``.npz`` with its inputs and the outputs it gave (inference,
then one training call). A fixture is never regenerated once released; a new
version adds its own directory.

Every private Keras/TensorFlow API tfnorm uses sits behind one function of
:mod:`tfnorm._compat`; each has its test here, so a release that moves one
fails one clearly named test, and a scan checks that nothing else in the
package reaches past the public API.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm
from tfnorm import _compat

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _fixtures():
    out = []
    for manifest_path in sorted(glob.glob(os.path.join(HERE, "v*", "manifest.json"))):
        with open(manifest_path) as f:
            manifest = json.load(f)
        for entry in manifest["fixtures"]:
            out.append(
                pytest.param(
                    os.path.dirname(manifest_path),
                    entry,
                    manifest["tfnorm"],
                    id=f"v{manifest['tfnorm']}-{entry['file']}",
                )
            )
    return out


FIXTURES = _fixtures()


def _version(text):
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


def test_fixtures_exist_and_none_is_from_the_future():
    versions = {p.values[2] for p in FIXTURES}
    assert versions, "no saved-model fixtures found under tests/fixtures/"
    future = [v for v in versions if _version(v) > _version(tfnorm.__version__)]
    assert not future, f"fixtures of versions {future} newer than tfnorm {tfnorm.__version__}"


def _close(got, want, what):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(
        np.asarray(got, np.float64) / scale, want / scale, atol=2e-5, rtol=0, err_msg=what
    )


@pytest.mark.parametrize("directory, entry, version", FIXTURES)
def test_saved_model_loads_and_computes_the_stored_outputs(directory, entry, version):
    with open(os.path.join(directory, "manifest.json")) as f:
        written_by = json.load(f)["keras"]
    try:
        model = keras.saving.load_model(os.path.join(directory, entry["file"]))  # no custom_objects
    except (TypeError, ValueError) as e:
        # A .keras file is not forward-compatible: an older Keras rejects config keys that a
        # newer one writes (initializers' input_axes in 3.15, Dense's quantization_config in
        # 3.13). Only that is skipped, and only on a Keras older than the one that wrote it.
        unknown = re.search(
            r"(unexpected keyword argument '\w+'|"
            r"Unrecognized keyword arguments passed to \w+: \{[^}]*\})",
            str(e),
        )
        if unknown and _version(keras.__version__) < _version(written_by):
            pytest.skip(
                f"{entry['file']} was written by Keras {written_by}; Keras "
                f"{keras.__version__} cannot read it: {unknown.group(1)}"
            )
        raise
    data = np.load(os.path.join(directory, entry["data"]))
    names = [t.name for t in model.inputs]
    inputs = [data[n] for n in names]
    loaded = {type(layer).__name__ for layer in model.layers}
    assert set(entry["layers"]) <= loaded, f"missing layers: {set(entry['layers']) - loaded}"
    for layer in model.layers:
        if type(layer).__name__ in entry["layers"]:
            assert type(layer) is getattr(tfnorm, type(layer).__name__)
    for mode, training in (("infer", False), ("train", True)):
        out = model(inputs, training=training)
        out = out if isinstance(out, (list, tuple)) else [out]
        assert len(out) == len(entry["layers"])
        for i, y in enumerate(out):
            _close(
                y,
                data[f"{mode}_y{i}"],
                f"{entry['file']} output y{i} ({entry['layers'][i]}), training={training}",
            )


def test_regeneration_script_reproduces_this_version(tmp_path, monkeypatch):
    """The script writes loadable fixtures whose stored outputs the loader reproduces."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_fixtures", os.path.join(HERE, "make_fixtures.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from tests.descriptors import CASES

    case = CASES[0]
    model, data = mod.build([case])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        mod.run_model(loaded, data, False)["y0"], mod.run_model(model, data, False)["y0"]
    )
    fams = mod.families(CASES)
    classes = [c.cls for cs in fams.values() for c in cs]
    assert len(classes) == len(set(classes)) == len({c.cls for c in CASES})


# --------------------------------------------------------------------------------------
# tfnorm._compat: the private Keras/TensorFlow touchpoints, one test each
# --------------------------------------------------------------------------------------


@pytest.fixture
def no_fallbacks_left(monkeypatch):
    """Fallbacks simulated by a test are forgotten after it (and their caches cleared)."""
    monkeypatch.setattr(_compat, "_FALLBACKS", {})
    yield
    _compat.functional_class.cache_clear()
    _compat._xla_context_test.cache_clear()


def test_no_touchpoint_falls_back_on_the_installed_keras_and_tensorflow():
    assert keras.__version__ and tf.__version__
    _compat.functional_class()
    _compat.graph_in_xla_context(tf.compat.v1.get_default_graph())
    with _compat.no_autocast():
        pass
    assert _compat.fallbacks() == {}


def test_functional_class_is_what_keras_model_inputs_outputs_returns():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    cls = _compat.functional_class()
    assert type(model) is cls and cls is not keras.Model and issubclass(cls, keras.Model)
    assert _compat._type_of_a_functional_model() is cls  # the public fallback agrees


def test_sequential_input_layer_of_built_and_unbuilt_sequentials():
    with_input = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2)])
    layer = _compat.sequential_input_layer(with_input)
    assert isinstance(layer, keras.layers.InputLayer) and layer.name == "x"
    assert layer.output is with_input.inputs[0]
    assert layer not in with_input.layers  # Sequential.layers leaves it out

    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    assert _compat.sequential_input_layer(unbuilt) is None
    unbuilt.build((None, 5))
    assert tuple(_compat.sequential_input_layer(unbuilt).batch_shape) == (None, 5)


def test_sequential_input_layer_names_itself_when_keras_moved_it():
    with pytest.raises(
        _compat.KerasInternalsError,
        match=r"_compat.sequential_input_layer: .*Keras \d.*TensorFlow \d",
    ):
        _compat.sequential_input_layer(object())


def _nested_model():
    inner = keras.Sequential(
        [
            keras.Input((2, 3)),
            keras.layers.TimeDistributed(keras.layers.Dense(3, name="td_dense"), name="td"),
        ],
        name="inner",
    )
    inputs = keras.Input((2, 3))
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(inner(inputs)), name="outer")


def test_flatten_layers_reaches_nested_models_and_sublayers_of_custom_layers():
    model = _nested_model()
    names = [layer.name for layer in _compat.flatten_layers(model, include_self=True)]
    assert names[0] == "outer"
    assert {"inner", "td", "td_dense", "head"} <= set(names)
    assert len(names) == len(set(names))
    assert "outer" not in [
        layer.name for layer in _compat.flatten_layers(model, include_self=False)
    ]
    top = {
        layer.name for layer in _compat.flatten_layers(model, include_self=False, recursive=False)
    }
    assert "inner" in top and "td_dense" not in top


def test_flatten_layers_falls_back_to_a_walk_of_the_sublayers(no_fallbacks_left, monkeypatch):
    model = _nested_model()
    want = {id(layer) for layer in _compat.flatten_layers(model, include_self=True)}
    monkeypatch.delattr(keras.layers.Layer, "_flatten_layers")
    with pytest.warns(RuntimeWarning, match=r"_compat.flatten_layers: .*Keras \d"):
        got = _compat.flatten_layers(model, include_self=True)
    assert {id(layer) for layer in got} == want
    assert "flatten_layers" in _compat.fallbacks()


def test_direct_sublayers_of_a_sequential_and_of_a_wrapper():
    model = keras.Sequential(
        [
            keras.Input((2, 3)),
            keras.layers.TimeDistributed(keras.layers.Dense(3, name="inner"), name="td"),
        ]
    )
    sub = _compat.direct_sublayers(model)
    assert isinstance(sub[0], keras.layers.InputLayer) and sub[1].name == "td"
    assert [layer.name for layer in _compat.direct_sublayers(sub[1])] == ["inner"]
    assert _compat.direct_sublayers(object()) == []
    # the public fallback finds the same layers
    assert [layer.name for layer in _compat._public_sublayers(sub[1])] == ["inner"]


def test_optimizer_strategy_is_the_strategy_it_was_created_under():
    outside = keras.optimizers.SGD()
    assert _compat.optimizer_strategy(outside) is tf.distribute.get_strategy()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        inside = keras.optimizers.Adam()
    assert _compat.optimizer_strategy(inside) is strategy
    assert _compat.optimizer_strategy(object(), default="fallback") == "fallback"


def test_no_autocast_reads_variables_in_their_stored_dtype():
    class Probe(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(), initializer="ones")

        def call(self, inputs):
            self.seen = [tf.convert_to_tensor(self.w).dtype]
            with _compat.no_autocast():
                self.seen.append(tf.convert_to_tensor(self.w).dtype)
            self.seen.append(tf.convert_to_tensor(self.w).dtype)  # the scope is left again
            return inputs

    probe = Probe(dtype="mixed_float16")
    probe(np.ones((1, 2), np.float16))
    assert probe.seen == [tf.float16, tf.float32, tf.float16]


def test_no_autocast_falls_back_to_a_context_that_changes_nothing(no_fallbacks_left, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras.src.backend", None)
    with pytest.warns(RuntimeWarning, match=r"_compat.no_autocast: .*Keras \d"):
        context = _compat.no_autocast()
    monkeypatch.undo()
    with context:
        assert tf.constant(1.0).dtype == tf.float32


def test_graph_in_xla_context_sees_jit_compile():
    seen = {}

    @tf.function(jit_compile=True)
    def compiled(x):
        seen["xla"] = _compat.graph_in_xla_context(tf.compat.v1.get_default_graph())
        return x

    @tf.function
    def traced(x):
        seen["graph"] = _compat.graph_in_xla_context(tf.compat.v1.get_default_graph())
        return x

    compiled(tf.constant(1.0))
    traced(tf.constant(1.0))
    assert seen == {"xla": True, "graph": False}


def test_graph_in_xla_context_falls_back_to_false(no_fallbacks_left, monkeypatch):
    _compat._xla_context_test.cache_clear()
    monkeypatch.setitem(sys.modules, "tensorflow.python.ops.control_flow_util", None)
    with pytest.warns(RuntimeWarning, match=r"_compat.graph_in_xla_context: .*TensorFlow \d"):
        assert _compat.graph_in_xla_context(tf.compat.v1.get_default_graph()) is False


PACKAGE = os.path.dirname(os.path.abspath(tfnorm.__file__))
PRIVATE_API = re.compile(
    r"keras\.src|tensorflow\.python|\._layers\b|[\"']_layers[\"']|_run_through_graph"
    r"|_keras_history|_distribution_strategy|AutocastScope|_flatten_layers"
)


def test_no_private_keras_or_tensorflow_api_outside_compat():
    found = []
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith(".py") or path == os.path.join(PACKAGE, "_compat.py"):
                continue
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if PRIVATE_API.search(line):
                        found.append(f"{os.path.relpath(path, PACKAGE)}:{number}: {line.strip()}")
    assert not found, "private Keras/TensorFlow API outside tfnorm/_compat.py:\n" + "\n".join(found)
