"""The registry: ``tfnorm.get(name, **kwargs)`` and ``tfnorm.available()``."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

import tfnorm
from tfnorm import registry
from tfnorm.layers import registration

# The short names published so far: code outside tfnorm calls them, so none may go away.
PUBLISHED = (
    "batch",
    "layer",
    "rms",
    "group",
    "instance",
    "online",
    "adanorm",
    "detach",
    "frn",
    "evonorm_b0",
    "evonorm_s0",
    "switchable",
    "lrn",
    "pixel",
    "scale",
    "dyt",
)


def _public_layer_classes():
    return [
        obj
        for obj in (getattr(tfnorm, n) for n in tfnorm.__all__)
        if inspect.isclass(obj)
        and issubclass(obj, keras.layers.Layer)
        and obj is not tfnorm.NormalizationLayer
    ]


def test_available_lists_every_published_name_sorted():
    names = tfnorm.available()
    missing = sorted(set(PUBLISHED) - set(names))
    assert not missing, f"names missing from tfnorm.available(): {missing}"
    assert names == sorted(names)


@pytest.mark.parametrize("cls", _public_layer_classes(), ids=lambda c: c.__name__)
def test_every_public_layer_has_a_short_name_and_traits(cls):
    traits = tfnorm.traits(cls)
    assert traits is not None, f"{cls.__name__} has no @register(name)"
    assert tfnorm.registry.resolve(traits.name) is cls
    assert traits.kind in registration.KINDS
    assert (traits.name in tfnorm.available()) == (traits.kind == "normalization")
    assert traits.name in tfnorm.available(None)
    params = inspect.signature(cls.__init__).parameters
    # what the traits declare is what the constructor takes
    assert traits.groups == ("groups" in params and traits.kind == "normalization"), cls
    assert traits.synchronized == ("synchronized" in params), cls


@pytest.mark.parametrize("name", sorted(tfnorm.available(None)))
def test_short_and_class_names_build_the_public_class(name):
    cls = tfnorm.registry.resolve(name)
    assert getattr(tfnorm, cls.__name__) is cls
    assert tfnorm.traits(cls).name == name
    needs = (
        {"layer": keras.layers.Dense(2)}
        if tfnorm.traits(cls).kind == "wrapper"
        else {"filters": 2, "kernel_size": 1}
        if "conv" in name
        else {"units": 2}
        if name == "cosine_dense"
        else {}
    )
    for alias in (name, cls.__name__, cls.__name__.lower(), name.upper(), name.replace("_", "-")):
        assert type(tfnorm.get(alias, **needs)) is cls, alias


def test_batch_statistics_trait_matches_the_batch_dependence_of_the_output():
    """A layer with batch statistics: a sample's training output changes with its companions."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4, 4, 8)).astype("float32")
    other = np.concatenate([x[:1], rng.normal(size=(7, 4, 4, 8)).astype("float32")])
    for name in tfnorm.available():
        cls = tfnorm.registry.resolve(name)
        kw = {"groups": 4} if tfnorm.traits(cls).groups else {}
        layer = cls(**kw)
        layer.build(x.shape)
        first = np.asarray(layer(x, training=True))[0]
        if name == "online":  # streamed: the first sample sees only the state before it
            continue
        layer = cls(**kw)
        layer.build(x.shape)
        second = np.asarray(layer(other, training=True))[0]
        depends = not np.allclose(first, second, rtol=1e-5, atol=1e-6)
        assert depends == tfnorm.traits(cls).batch_statistics, name


@pytest.mark.parametrize(
    "name, kwargs, attr",
    [
        ("group", {"groups": 4}, "groups"),
        ("evonorm_s0", {"groups": 2}, "groups"),
        ("evonorm_b0", {"momentum": 0.9}, "momentum"),
        ("lrn", {"depth_radius": 2}, "depth_radius"),
        ("frn", {"learned_epsilon": True}, "learned_epsilon"),
        ("dyt", {"alpha_init": 0.25}, "alpha_init"),
        ("scale", {"epsilon": 1e-6}, "epsilon"),
    ],
)
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
    assert isinstance(
        tfnorm.get(keras.layers.LayerNormalization, epsilon=1e-4), keras.layers.LayerNormalization
    )
    with pytest.raises(TypeError, match="keras Layer subclass"):
        tfnorm.get(dict)


def test_get_accepts_a_callable():
    def make(**kwargs):
        return tfnorm.DynamicTanh(**kwargs)

    layer = tfnorm.get(make, alpha_init=0.3)
    assert isinstance(layer, tfnorm.DynamicTanh) and layer.alpha_init == 0.3
    with pytest.raises(TypeError, match="returned int, not a keras Layer"):
        tfnorm.get(lambda: 3)


@pytest.mark.parametrize(
    "name, close",
    [
        ("swichable", ["switchable"]),
        ("evonorm", ["evonorm_b0", "evonorm_s0"]),
        ("GroupNorm", ["group"]),
        ("pixle", ["pixel"]),
    ],
)
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


# ---------------------------------------------------------------------------
# tfnorm.register: one decorator for serialization, tfnorm.get, swap and the study


def _scoped_register(monkeypatch):
    """Registrations made in a test are undone after it."""
    monkeypatch.setattr(registration, "_CLASSES", dict(registration._CLASSES))
    monkeypatch.setattr(registration, "_TRAITS", dict(registration._TRAITS))
    monkeypatch.setattr(registry, "_REGISTRY", registration._CLASSES)


def test_register_puts_a_user_layer_into_get_swap_and_the_study(monkeypatch):
    _scoped_register(monkeypatch)
    from tfnorm.study import models

    @tfnorm.register("centre_only", groups=True)
    class CentreOnly(keras.layers.Layer):
        def __init__(self, groups=1, **kwargs):
            super().__init__(**kwargs)
            self.groups = groups

        def call(self, x):
            return x - keras.ops.mean(x, axis=-1, keepdims=True)

        def get_config(self):
            return {**super().get_config(), "groups": self.groups}

    assert keras.saving.get_registered_name(CentreOnly) == "Custom>CentreOnly"
    assert tfnorm.traits(CentreOnly) == registration.Traits("centre_only", groups=True)
    assert type(tfnorm.get("centre_only")) is CentreOnly
    assert "centre_only" in tfnorm.available()
    # the study gives a layer with the groups trait a valid groups value
    assert "centre_only" in models.valid_norms()
    assert models.make_norm("centre_only", channels=12).groups == models.choose_groups(12)
    # swap's default matching finds it
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6), CentreOnly()])
    new = tfnorm.swap_normalization(model, "layer")
    assert [type(layer).__name__ for layer in new.layers] == ["Dense", "LayerNormalization"]


def test_register_refuses_bad_names_kinds_and_non_layers(monkeypatch):
    _scoped_register(monkeypatch)
    with pytest.raises(ValueError, match=r"name must be a lower-case identifier.*'My Norm'"):
        tfnorm.register("My Norm")
    with pytest.raises(ValueError, match=r"kind must be one of .*received kind='norm'"):
        tfnorm.register("x", kind="norm")
    with pytest.raises(TypeError, match=r"groups must be True or False, received groups=1"):
        tfnorm.register("x", groups=1)
    with pytest.raises(TypeError, match=r"decorates a keras Layer subclass"):
        tfnorm.register("x")(dict)
    with pytest.raises(ValueError, match=r"name='group' is taken by .*GroupNormalization"):

        @tfnorm.register("group")
        class Other(keras.layers.Layer):
            pass


def test_available_filters_by_kind():
    assert "tlu" in tfnorm.available("activation") and "tlu" not in tfnorm.available()
    assert {"weight", "spectral"} <= set(tfnorm.available("wrapper"))
    assert set(tfnorm.available()) | set(tfnorm.available("layer")) | set(
        tfnorm.available("activation")
    ) | set(tfnorm.available("wrapper")) == set(tfnorm.available(None))
    with pytest.raises(ValueError, match=r"kind must be one of .*received kind='norms'"):
        tfnorm.available("norms")


def _readme_layer_rows():
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


@pytest.mark.parametrize("cls", _public_layer_classes(), ids=lambda c: c.__name__)
def test_every_public_layer_has_a_readme_row_with_its_short_name(cls):
    rows = [r.split("|") for r in _readme_layer_rows()]
    mine = [r for r in rows if f"`{cls.__name__}`" in r[1]]
    assert mine, f"README's layer table has no row for {cls.__name__}"
    assert f"`{tfnorm.traits(cls).name}`" in mine[0][2], (cls.__name__, mine[0][2])
