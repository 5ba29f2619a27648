"""The registry: ``tfnorm.get(name, **kwargs)`` and ``tfnorm.available()``."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfnorm
from tfnorm import registry

# Every short name the study runner and the swap helper may ask for, with its class.
REQUIRED = {
    "batch": "BatchNormalization",
    "layer": "LayerNormalization",
    "rms": "RMSNormalization",
    "group": "GroupNormalization",
    "instance": "InstanceNormalization",
    "online": "OnlineNormalization",
    "adanorm": "AdaNorm",
    "detach": "DetachNormalization",
    "frn": "FilterResponseNormalization",
    "evonorm_b0": "EvoNormB0",
    "evonorm_s0": "EvoNormS0",
    "switchable": "SwitchableNormalization",
    "lrn": "LocalResponseNormalization",
    "pixel": "PixelNormalization",
    "scale": "ScaleNormalization",
    "dyt": "DynamicTanh",
}


def test_available_lists_every_required_name_sorted():
    names = tfnorm.available()
    missing = sorted(set(REQUIRED) - set(names))
    assert not missing, f"names missing from tfnorm.available(): {missing}"
    assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_short_and_class_names_build_the_public_class(name):
    cls = getattr(tfnorm, REQUIRED[name])
    layer = tfnorm.get(name)
    assert type(layer) is cls
    for alias in (cls.__name__, cls.__name__.lower(), name.upper(), name.replace("_", "-")):
        assert type(tfnorm.get(alias)) is cls, alias


@pytest.mark.parametrize("name, kwargs, attr", [
    ("group", {"groups": 4}, "groups"),
    ("evonorm_s0", {"groups": 2}, "groups"),
    ("evonorm_b0", {"momentum": 0.9}, "momentum"),
    ("lrn", {"depth_radius": 2}, "depth_radius"),
    ("frn", {"learned_epsilon": True}, "learned_epsilon"),
    ("dyt", {"alpha_init": 0.25}, "alpha_init"),
    ("scale", {"epsilon": 1e-6}, "epsilon"),
])
def test_get_passes_keyword_arguments(name, kwargs, attr):
    layer = tfnorm.get(name, **kwargs)
    assert getattr(layer, attr) == kwargs[attr]


def test_registry_layers_run():
    x = np.random.default_rng(0).normal(size=(4, 3, 3, 8)).astype("float32")
    for name in ("frn", "evonorm_b0", "switchable", "lrn", "pixel", "scale", "dyt"):
        y = tfnorm.get(name)(x, training=True)
        assert tuple(y.shape) == x.shape and np.isfinite(y.numpy()).all(), name
    y = tfnorm.get("evonorm_s0", groups=4)(x)
    assert np.isfinite(y.numpy()).all()


def test_get_accepts_a_class():
    layer = tfnorm.get(tfnorm.PixelNormalization, epsilon=1e-6)
    assert isinstance(layer, tfnorm.PixelNormalization) and layer.epsilon == 1e-6
    assert isinstance(tfnorm.get(keras.layers.LayerNormalization, epsilon=1e-4),
                      keras.layers.LayerNormalization)
    with pytest.raises(TypeError, match="keras Layer subclass"):
        tfnorm.get(dict)


def test_get_accepts_a_callable():
    def make(**kwargs):
        return tfnorm.DynamicTanh(**kwargs)

    layer = tfnorm.get(make, alpha_init=0.3)
    assert isinstance(layer, tfnorm.DynamicTanh) and layer.alpha_init == 0.3
    with pytest.raises(TypeError, match="returned int, not a keras Layer"):
        tfnorm.get(lambda: 3)


@pytest.mark.parametrize("name, close", [
    ("swichable", ["switchable"]),
    ("evonorm", ["evonorm_b0", "evonorm_s0"]),
    ("GroupNorm", ["group"]),
    ("pixle", ["pixel"]),
])
def test_unknown_name_lists_close_matches(name, close):
    with pytest.raises(ValueError) as err:
        tfnorm.get(name)
    message = str(err.value)
    assert f"name={name!r}" in message
    hint = message.split("Did you mean", 1)
    assert len(hint) == 2, message
    for c in close:
        assert repr(c) in hint[1].split("Available")[0], message
    assert "Available: " in message and "dyt" in message


def test_unknown_name_without_close_match_still_lists_names():
    with pytest.raises(ValueError, match=r"unknown normalization name='zzzz'\. Available: "):
        tfnorm.get("zzzz")


def test_register_name_adds_and_refuses_non_layers(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_name("my_norm", keras.layers.LayerNormalization)
    assert "my_norm" in tfnorm.available()
    assert isinstance(tfnorm.get("my_norm"), keras.layers.LayerNormalization)
    with pytest.raises(TypeError, match="keras Layer subclass"):
        registry.register_name("bad", object)
