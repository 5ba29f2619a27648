"""Models saved by TensorFlow Addons load as tfnorm layers: ``tfnorm.compat.tfa_objects()``.

The fixtures under ``tests/fixtures/tfa/`` were written by TF-Addons 0.23 on
TensorFlow 2.15 (``make_tfa_fixtures.py`` beside them): trained models in
Keras 2's HDF5 format, with the inputs and the outputs TF-Addons computed.
The weights are compared with the values in the files, read with h5py.
"""

import json
import os
import warnings

import h5py
import keras
import numpy as np
import pytest

import tfnorm
import tfnorm.compat
from tfnorm.compat import _unit_gain_u

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "tfa")

# fixture -> {layer name: tfnorm class it must load as}
FIXTURES = {
    "group": {"gn": tfnorm.GroupNormalization, "gn_instance": tfnorm.GroupNormalization},
    "group_channels_first": {"gn_axis1": tfnorm.GroupNormalization},
    "instance": {"in": tfnorm.InstanceNormalization},
    "weight": {
        "wn_conv": tfnorm.WeightNormalization,
        "wn_dense": tfnorm.WeightNormalization,
        "wn_dense_nobias": tfnorm.WeightNormalization,
    },
    "frn": {
        "frn_learned": tfnorm.FilterResponseNormalization,
        "tlu_affine": tfnorm.TLU,
        "frn": tfnorm.FilterResponseNormalization,
        "tlu": tfnorm.TLU,
    },
    "spectral_embedding": {"sn_embedding": tfnorm.SpectralNormalization},
}


def load(name, **kwargs):
    kwargs.setdefault("compile", False)  # Keras 3 cannot read a Keras 2 training config
    return keras.saving.load_model(
        os.path.join(HERE, name + ".h5"), custom_objects=tfnorm.compat.tfa_objects(), **kwargs
    )


def saved(name):
    data = np.load(os.path.join(HERE, name + ".npz"))
    return data["x"], data["y"]


def saved_weights(name, layer):
    """``{weight name without the layer prefix: value}`` as TF-Addons wrote them."""
    with h5py.File(os.path.join(HERE, name + ".h5")) as f:
        group = f["model_weights"][layer]
        out = {}
        for w in group.attrs["weight_names"]:
            w = w.decode() if isinstance(w, bytes) else w
            out[w.split("/", 1)[-1].split(":")[0]] = np.asarray(group[w])
        return out


def outputs(model, x):
    return np.asarray(model([x], training=False))


def test_manifest_names_the_writer():
    with open(os.path.join(HERE, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["tensorflow_addons"] == "0.23.0"
    assert manifest["tensorflow"].startswith("2.15")


def test_mapping_covers_every_tfa_normalization_class():
    assert sorted(tfnorm.compat.tfa_objects()) == [
        "Addons>FilterResponseNormalization",
        "Addons>GroupNormalization",
        "Addons>InstanceNormalization",
        "Addons>SpectralNormalization",
        "Addons>TLU",
        "Addons>WeightNormalization",
    ]
    a, b = tfnorm.compat.tfa_objects(), tfnorm.compat.tfa_objects()
    a.clear()
    assert len(b) == 6  # a new dict each call


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_loads_as_tfnorm_layers_with_the_saved_outputs(name):
    model = load(name)
    for layer_name, cls in FIXTURES[name].items():
        assert type(model.get_layer(layer_name)) is cls, layer_name
    x, y = saved(name)
    got = outputs(model, x)
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5 * np.abs(y).max())


def test_group_keeps_weights_and_translates_groups():
    model = load("group")
    gn, inst = model.get_layer("gn"), model.get_layer("gn_instance")
    assert (gn.groups, gn.epsilon) == (4, 1e-5)
    assert inst.groups == 8  # TF-Addons saved groups=-1 as the channel count
    want = saved_weights("group", "gn")
    np.testing.assert_array_equal(gn.gamma.numpy(), want["gamma"])
    np.testing.assert_array_equal(gn.beta.numpy(), want["beta"])
    assert np.ptp(want["gamma"]) > 0.1  # distinct per channel: a mixed-up order would show
    assert gn.axis == -1
    assert load("group_channels_first").get_layer("gn_axis1").axis == 1


def test_frn_and_tlu_move_into_tfnorm_layout():
    model = load("frn")
    frn, tlu = model.get_layer("frn_learned"), model.get_layer("tlu_affine")
    want = saved_weights("frn", "frn_learned")
    assert frn.gamma.shape == (4,) and frn.learned_epsilon
    np.testing.assert_array_equal(frn.gamma.numpy(), want["gamma"].reshape(-1))
    np.testing.assert_array_equal(frn.beta.numpy(), want["beta"].reshape(-1))
    np.testing.assert_array_equal(frn.learned_eps.numpy(), want["learned_epsilon"][0])
    want = saved_weights("frn", "tlu_affine")
    assert tlu.axis == [1, 2, 3] and tlu.affine
    np.testing.assert_array_equal(tlu.tau.numpy(), want["tau"])
    np.testing.assert_array_equal(tlu.alpha.numpy(), want["alpha"])
    assert np.ptp(want["tau"][..., 0]) > 0  # TF-Addons' tau differs from position to position


def test_weight_normalization_keeps_direction_length_and_bias():
    model = load("weight")
    for layer_name in ("wn_conv", "wn_dense", "wn_dense_nobias"):
        wn, want = model.get_layer(layer_name), saved_weights("weight", layer_name)
        np.testing.assert_array_equal(wn.g.numpy(), want["g"])
        np.testing.assert_array_equal(wn.layer.kernel.numpy(), want["kernel"])
        if "bias" in want:
            np.testing.assert_array_equal(wn.layer.bias.numpy(), want["bias"])
        if wn.data_init:  # initialized by TF-Addons: never again
            assert bool(want["initialized"]) and float(wn.initialized.numpy()) == 1.0
            assert wn.offset is None or not np.any(wn.offset.numpy())
    # the effective kernel is the paper's g v / ||v||, in NumPy
    wn, want = model.get_layer("wn_conv"), saved_weights("weight", "wn_conv")
    v = want["kernel"].astype(np.float64)
    w = want["g"] * v / np.sqrt((v**2).sum(axis=(0, 1, 2)))
    np.testing.assert_allclose(wn.remove().kernel.numpy(), w, rtol=1e-5, atol=1e-6)


def test_spectral_normalization_keeps_the_saved_inference_kernel():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load("spectral")
    conv, dense = model.get_layer("sn_conv"), model.get_layer("sn_dense")
    assert dense.power_iterations == 2
    for layer in (conv, dense):  # the stored kernels are TF-Addons' kernels
        want = saved_weights("spectral", layer.name)
        np.testing.assert_array_equal(layer.layer.kernel.numpy(), want["kernel"])
        np.testing.assert_array_equal(layer.layer.bias.numpy(), want["bias"])
    # TF-Addons used its kernel as stored in inference: gain 1 keeps it exactly
    want = saved_weights("spectral", "sn_dense")["kernel"]
    np.testing.assert_allclose(dense.remove().kernel.numpy(), want, rtol=2e-6, atol=1e-7)
    # sn_conv's kernel (after the last gradient step) has all singular values below 1: no u
    # gives it gain 1, the top singular vector gives the nearest, and a warning says by how much
    want = saved_weights("spectral", "sn_conv")["kernel"]
    top = np.linalg.svd(want.reshape(-1, 4).astype(np.float64), compute_uv=False)[0]
    assert top < 1.0
    np.testing.assert_allclose(conv.remove().kernel.numpy(), want / top, rtol=2e-6, atol=1e-7)
    messages = [str(w.message) for w in caught if "sn_conv" in str(w.message)]
    assert len(messages) == 1 and f"{top:.6g}" in messages[0]


def test_unit_gain_u_gives_gain_one():
    rng = np.random.default_rng(0)
    for shape in [(64, 3), (3, 7), (3, 3, 4, 5), (10, 4)]:
        w = rng.normal(size=shape)
        m = w.reshape(-1, shape[-1])
        s = np.linalg.svd(m, compute_uv=False)
        w = w / s[0] * 1.01  # top singular value just above 1, as after normalization
        u0 = rng.normal(size=shape[-1])
        u = _unit_gain_u(w, u0)
        assert abs(np.linalg.norm(u) - 1) < 1e-12
        assert abs(np.linalg.norm(w.reshape(-1, shape[-1]) @ u) - 1) < 1e-10


def test_recurrent_weight_normalization_is_refused_clearly():
    with pytest.raises(ValueError, match=r"LSTM 'lstm'.*recurrent kernel.*input kernel"):
        load("weight_rnn")


def test_training_config_of_keras_2_needs_compile_false():
    # Keras 3 cannot read Keras 2's training config; with compile=False the model loads
    with pytest.raises(TypeError, match="could not be deserialized"):
        load("group", compile=True)
    load("group", compile=False)


def test_loaded_model_trains_saves_and_reloads_without_custom_objects(tmp_path):
    model = load("frn")
    x, _ = saved("frn")
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(x, np.zeros_like(outputs(model, x)), epochs=1, verbose=0)
    path = str(tmp_path / "frn.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    assert type(again.get_layer("tlu")) is tfnorm.TLU
    np.testing.assert_array_equal(outputs(again, x), outputs(model, x))
    assert not any(hasattr(layer, "_tfa_slots") for layer in again.layers)


@pytest.mark.parametrize(
    "name,config,match",
    [
        ("GroupNormalization", {"groups": 2, "virtual": 1}, r"key\(s\) \['virtual'\]"),
        ("FilterResponseNormalization", {"axis": [1, 3]}, r"axis=\[1, 3\]"),
        (
            "FilterResponseNormalization",
            {
                "learned_epsilon": True,
                "learned_epsilon_constraint": {"class_name": "NonNeg", "config": {}},
            },
            "learned_epsilon_constraint",
        ),
    ],
)
def test_untranslatable_configs_name_the_key(name, config, match):
    cls = tfnorm.compat.tfa_objects()["Addons>" + name]
    with pytest.raises(ValueError, match=match):
        cls.from_config(config)
