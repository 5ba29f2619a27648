"""The base vocabulary (``tfnorm/layers/base.py``) as every public layer uses it.

* Flags follow one rule: a real ``bool`` (NumPy's too); anything else is an
  error naming the argument, for every flag argument of every public class,
  found from the signatures (so a flag added later is covered the day it is).
* The checks made on every call live in the base ``__call__``: an integer
  input and an input of another rank than the built one are errors naming the
  shapes, for every descriptor case.
* Initializer, regularizer and constraint arguments name themselves when
  Keras cannot interpret them.
* OnlineNormalization takes the gamma/beta initializer, regularizer and
  constraint arguments the other affine layers take.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

import tfnorm
from tests.descriptors import CASES
from tests.harness import built, call
from tfnorm.layers.base import ArgumentTypeError, check_bool


def _public_classes():
    return [
        obj
        for obj in (getattr(tfnorm, n) for n in tfnorm.__all__)
        if inspect.isclass(obj)
        and issubclass(obj, keras.layers.Layer)
        and obj is not tfnorm.NormalizationLayer
    ]


def _required(cls):
    """The smallest arguments that construct ``cls`` (wrappers need a layer)."""
    kind = tfnorm.traits(cls).kind
    if kind == "wrapper":
        return {"layer": keras.layers.Dense(2)}
    params = inspect.signature(cls.__init__).parameters
    need = {}
    if "filters" in params:
        need.update(filters=2, kernel_size=1)
    if "units" in params:
        need["units"] = 2
    return need


def _flags(cls):
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if isinstance(p.default, bool)]


FLAG_CASES = [(cls, flag) for cls in _public_classes() for flag in _flags(cls)]


def test_every_public_class_with_flags_is_covered():
    assert {c for c, _ in FLAG_CASES} >= {
        tfnorm.BatchNormalization,
        tfnorm.LayerNormalization,
        tfnorm.CosineDense,
        tfnorm.WeightNormalization,
    }


@pytest.mark.parametrize("cls, flag", FLAG_CASES, ids=[f"{c.__name__}-{f}" for c, f in FLAG_CASES])
@pytest.mark.parametrize("bad", ["false", None, 1, 0.0, [1, 2]], ids=repr)
def test_flags_take_only_booleans(cls, flag, bad):
    with pytest.raises(
        ArgumentTypeError,
        match=rf"{flag} must be True or False, received "
        rf"{flag}={bad!r}".replace("[", r"\["),
    ):
        cls(**_required(cls), **{flag: bad})


@pytest.mark.parametrize("cls, flag", FLAG_CASES, ids=[f"{c.__name__}-{f}" for c, f in FLAG_CASES])
def test_flags_accept_python_and_numpy_booleans(cls, flag):
    for value in (True, False, np.bool_(True)):
        layer = cls(**_required(cls), **{flag: value})
        assert getattr(layer, flag) is bool(value)


def test_config_strings_are_not_booleans():
    # Keras wraps the error of the constructor in a TypeError that quotes it
    with pytest.raises(TypeError, match=r"center must be True or False, received center='false'"):
        tfnorm.LayerNormalization.from_config({"center": "false"})


def test_check_bool_error_is_both_type_and_value_error():
    for kind in (TypeError, ValueError):
        with pytest.raises(kind):
            check_bool("flag", "yes")


# ---------------------------------------------------------------------------
# Checks on every call


def _other_rank_shape(case):
    """The case's input shape with one more axis of size 2 before the last."""
    shape = tuple(case.input_shape)
    return shape[:-1] + (2,) + shape[-1:]


def _dense_like(case):
    """Layers that, like keras Dense, work on the last axis at any rank."""
    layer = built(case)
    inner = getattr(layer, "layer", None)
    return isinstance(layer, tfnorm.CosineDense) or isinstance(inner, keras.layers.Dense)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_built_layer_refuses_an_input_of_another_rank(case):
    layer = built(case)
    x = np.random.default_rng(0).normal(size=_other_rank_shape(case)).astype("float32")
    if _dense_like(case):
        assert call(layer, x, False, case).shape[:-1] == x.shape[:-1]
        return
    with pytest.raises(ValueError) as err:
        call(layer, x, False, case)
    message = str(err.value)
    assert f"built for inputs of rank {len(case.input_shape)}" in message, message
    assert f"received an input of shape {x.shape}" in message, message
    if hasattr(layer, "axis"):
        assert f"axis={layer.axis!r}" in message, message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_an_integer_input_is_refused_before_anything_runs(case):
    layer = built(case)
    x = np.ones(case.input_shape, np.int32)
    with pytest.raises(
        ValueError,
        match=r"received an input of dtype int32; normalization needs "
        r"a float input",
    ):
        call(layer, x, False, case)


def test_the_rank_check_also_runs_in_a_graph():
    import tensorflow as tf

    ln = tfnorm.LayerNormalization()
    ln(np.random.rand(2, 4, 4).astype("float32"))

    @tf.function
    def f(x):
        return ln(x)

    with pytest.raises(
        ValueError,
        match=r"built for inputs of rank 3 \(shape \(2, 4, 4\)\) with "
        r"axis=-1, received an input of shape \(2, 3, 4, 4\)",
    ):
        f(tf.zeros([2, 3, 4, 4]))


def test_cosine_dense_runs_at_any_rank_like_dense():
    layer = tfnorm.CosineDense(3)
    layer(np.ones((2, 4), "float32"))
    assert tuple(layer(np.ones((2, 5, 4), "float32")).shape) == (2, 5, 3)


# ---------------------------------------------------------------------------
# Keras objects name their argument


@pytest.mark.parametrize(
    "cls, argument",
    [
        (tfnorm.LayerNormalization, "gamma_initializer"),
        (tfnorm.BatchNormalization, "moving_variance_initializer"),
        (tfnorm.RMSNormalization, "gamma_regularizer"),
        (tfnorm.OnlineNormalization, "beta_constraint"),
        (tfnorm.TLU, "tau_initializer"),
        (tfnorm.CosineDense, "kernel_constraint"),
    ],
)
def test_uninterpretable_keras_objects_name_the_argument(cls, argument):
    need = {"units": 2} if cls is tfnorm.CosineDense else {}
    with pytest.raises(ValueError, match=rf"{argument}=-1 is not a valid "):
        cls(**need, **{argument: -1})


# ---------------------------------------------------------------------------
# OnlineNormalization's affine arguments


def test_online_normalization_gamma_beta_initializers_regularizers_and_constraints():
    layer = tfnorm.OnlineNormalization(
        gamma_initializer=keras.initializers.Constant(2.0),
        beta_initializer=keras.initializers.Constant(0.5),
        gamma_regularizer=keras.regularizers.L2(0.1),
        beta_constraint=keras.constraints.NonNeg(),
        ecm=None,
    )
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    y = np.asarray(layer(x))  # inference: (x - 0) / sqrt(1 + eps) * 2 + 0.5
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5) * 2.0 + 0.5, rtol=1e-6)
    # L2(0.1) on gamma = 2 for 3 channels
    np.testing.assert_allclose(float(sum(layer.losses)), 0.1 * 3 * 4.0, rtol=1e-6)
    assert isinstance(layer.beta.constraint, keras.constraints.NonNeg)
    config = layer.get_config()
    again = tfnorm.OnlineNormalization.from_config(config)
    assert again.get_config() == config
    assert config["gamma_initializer"]["config"]["value"] == 2.0


# ---------------------------------------------------------------------------
# One constructor for the weight-standardized convolutions


def test_weight_standardized_convolutions_share_one_constructor():
    inits = {
        tfnorm.WeightStandardizedConv1D.__init__,
        tfnorm.WeightStandardizedConv2D.__init__,
        tfnorm.WeightStandardizedConv3D.__init__,
    }
    assert len(inits) == 1
    for cls, keras_cls, rank in (
        (tfnorm.WeightStandardizedConv1D, keras.layers.Conv1D, 1),
        (tfnorm.WeightStandardizedConv2D, keras.layers.Conv2D, 2),
        (tfnorm.WeightStandardizedConv3D, keras.layers.Conv3D, 3),
    ):
        ours = cls(4, 3, name="c").get_config()
        theirs = keras_cls(4, 3, name="c").get_config()
        assert ours.pop("epsilon") == 1e-5
        assert ours == theirs, cls
        assert ours["strides"] == (1,) * rank
