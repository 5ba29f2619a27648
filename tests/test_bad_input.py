"""Bad and degenerate input, one row per kind, over every layer where the row applies.

Each row says what a layer must do with that input: raise a ``ValueError`` (or
``TypeError``) that names the argument or the received value, or give a
finite, documented result. The rows run over every descriptor case, so a layer
added later is covered without editing this file; ``applies`` decides from the
layer's own arguments (``axis``, ``groups``, ...) whether a row concerns it.

| row | input | required behaviour |
|---|---|---|
| wrong_rank | rank below the layer's minimum | error naming the received shape or rank (a wrapper: what its layer does) |
| axis_out_of_range | ``axis`` = rank, and ``-(rank + 1)`` | error naming ``axis`` and the value |
| groups_not_dividing | ``groups`` not dividing the channels | error naming ``groups`` and the value |
| unknown_channels | channel size None at build | error saying the size is unknown, or it builds and computes the reference on real input |
| integer_input | int32 input | error naming the dtype |
| nan_inf_input | a NaN and an inf in the batch | they propagate to the output; moving statistics and streamed state are not updated with non-finite values (they stay finite and usable) |
| batch_size_one | one sample, training | error naming the batch size, or finite output and state |
| unknown_config_key | an extra key in ``from_config`` | error naming the key |
| swap (model rows) | subclassed or unbuilt model | error saying why and what to do |
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

import tfnorm
from tests.descriptors import CASES
from tests.harness import built, call, params_of
from tfnorm.layers.base import init_arguments

ERRORS = (ValueError, TypeError)


# -- what a case looks like ---------------------------------------------------------------
def _takes(case, arg):
    return case.factory is None and arg in init_arguments(case.cls)


def _axes(case):
    """The case's channel (normalized) axes, non-negative, from the layer's own attributes."""
    layer = case.make()
    rank = len(case.input_shape)
    axis = getattr(layer, "axis", None)
    if axis is None:
        inner = getattr(layer, "layer", layer)
        fmt = getattr(inner, "data_format", "channels_last")
        axis = 1 if fmt == "channels_first" else -1
    axis = [axis] if isinstance(axis, int) else list(axis)
    return sorted(a % rank for a in axis)


def _min_rank(case):
    return getattr(case.make(), "min_rank", 2) or 2


def _input(case, shape=None, seed=0):
    shape = tuple(shape or case.input_shape)
    return case.input_fn(np.random.default_rng(seed), shape).astype("float32")


def _names_value(err, *needles):
    text = str(err)
    return any(n in text for n in needles)


# -- the rows -----------------------------------------------------------------------------
def wrong_rank(case):
    rank = max(1, _min_rank(case) - 1)
    shape = tuple(case.input_shape[:rank])
    layer = case.make()
    inner = getattr(layer, "layer", None)
    if isinstance(inner, keras.layers.Layer):
        # a wrapper takes the ranks its layer takes (Dense accepts a rank-1 vector)
        bare = type(inner).from_config(inner.get_config())
        try:
            expected = bare(np.zeros(shape, "float32"))
        except ERRORS:
            pass
        else:
            y = layer(np.zeros(shape, "float32"))
            assert tuple(y.shape) == tuple(expected.shape) and np.isfinite(y).all()
            return
    with pytest.raises(ERRORS) as info:
        layer(np.zeros(shape, "float32"))
    assert _names_value(info.value, str(shape), f"rank {rank}", f"ndim={rank}"), str(info.value)


def axis_out_of_range(case):
    rank = len(case.input_shape)
    for bad in (rank, -(rank + 1)):
        with pytest.raises(ERRORS) as info:
            layer = case.cls(**{**case.kwargs, "axis": bad})
            layer.build(case.input_shape)
        assert "axis" in str(info.value) and str(bad) in str(info.value), str(info.value)


def groups_not_dividing(case):
    channels = case.input_shape[_axes(case)[0]]  # grouped convolutions: the input channels
    bad = next((g for g in range(2, channels) if channels % g), channels + 1)
    with pytest.raises(ERRORS) as info:
        layer = case.cls(**{**case.kwargs, "groups": bad})
        layer(np.zeros(case.input_shape, "float32"))
    assert f"groups={bad}" in str(info.value) or (
        "groups" in str(info.value) and str(bad) in str(info.value)
    ), str(info.value)


def unknown_channels(case):
    shape = list(case.input_shape)
    shape[_axes(case)[0]] = None
    layer = case.make()
    try:
        layer(keras.Input(batch_shape=tuple(shape)))
    except ERRORS as err:
        assert re.search(r"unknown|None|defined|known", str(err)), str(err)
        return
    # it built: then it must compute the reference on real input
    case.randomize(layer, np.random.default_rng(0))
    x = _input(case)
    for training in case.training_modes:
        y = call(layer, x, training, case).numpy()
        expected = case.reference(x.astype(np.float64), params_of(layer), training)
        np.testing.assert_allclose(y, expected, atol=1e-4, rtol=1e-4)


def integer_input(case):
    layer = built(case)
    with pytest.raises(ERRORS) as info:
        call(layer, np.ones(case.input_shape, "int32"), True, case)
    assert "int32" in str(info.value), str(info.value)


def nan_inf_input(case):
    x = _input(case)
    flat = x.reshape(len(x), -1)
    flat[0, 0] = np.nan
    flat[-1, -1] = np.inf
    x = flat.reshape(x.shape)
    for training in case.training_modes:
        layer = built(case)
        y = call(layer, x, training, case).numpy()
        assert not np.isfinite(y).all(), f"NaN/inf were hidden, training={training}"
        for v in layer.weights:
            assert np.isfinite(v.numpy()).all(), (
                f"{v.path} was poisoned by a non-finite input, training={training}"
            )
        clean = call(layer, _input(case, seed=1), False, case).numpy()
        assert np.isfinite(clean).all(), "the layer is unusable after a non-finite batch"


def batch_size_one(case):
    shape = (1,) + tuple(case.input_shape[1:])
    layer = built(case)
    try:
        y = call(layer, _input(case, shape), True, case).numpy()
    except ERRORS as err:
        assert re.search(r"batch", str(err)), str(err)
        return
    assert np.isfinite(y).all()
    for v in layer.weights:
        assert np.isfinite(v.numpy()).all(), v.path


def unknown_config_key(case):
    layer = built(case)
    config = dict(layer.get_config(), not_an_argument=1)
    with pytest.raises(ERRORS) as info:
        type(layer).from_config(config)
    assert "not_an_argument" in str(info.value), str(info.value)


ROWS = {
    "wrong_rank": (wrong_rank, lambda c: True),
    "axis_out_of_range": (axis_out_of_range, lambda c: _takes(c, "axis")),
    "groups_not_dividing": (groups_not_dividing, lambda c: _takes(c, "groups")),
    "unknown_channels": (unknown_channels, lambda c: True),
    "integer_input": (integer_input, lambda c: True),
    "nan_inf_input": (nan_inf_input, lambda c: True),
    "batch_size_one": (batch_size_one, lambda c: True),
    "unknown_config_key": (unknown_config_key, lambda c: True),
}

TABLE = [
    pytest.param(row, case, id=f"{row}-{case.id}")
    for row, (_, applies) in ROWS.items()
    for case in CASES
    if applies(case)
]


@pytest.mark.parametrize("row, case", TABLE)
def test_bad_input(row, case):
    ROWS[row][0](case)


def test_every_row_applies_somewhere():
    used = {p.values[0] for p in TABLE}
    assert used == set(ROWS), set(ROWS) - used


# -- model-level rows: the swap helper --------------------------------------------------
class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(4)
        self.norm = keras.layers.BatchNormalization()

    def call(self, x):
        return self.norm(self.dense(x))


def test_swap_on_a_subclassed_model_is_refused():
    model = _Subclassed()
    model(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match=r"(?i)subclass"):
        tfnorm.swap_normalization(model, "layer")


def test_swap_on_an_unbuilt_model_is_refused():
    model = keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match=r"(?i)built|build"):
        tfnorm.swap_normalization(model, "layer")
