"""Every constructor argument of every public class, walked from the signatures.

:data:`ARGUMENTS` is the table of what each argument name accepts (the layers'
shared vocabulary, :mod:`tfnorm.layers.base`); :data:`BAD` gives, per kind,
values that kind never accepts. The test walks ``__init__`` of every public
class: an argument missing from the table fails the suite the day it is added,
and every bad value must raise a ValueError/TypeError naming the argument, at
construction or at build, never be accepted silently.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import tfnorm
from tfnorm.layers.base import init_arguments

#: argument name -> kind (what it accepts)
ARGUMENTS = {
    # flags: True or False only
    **{
        k: "flag"
        for k in (
            "center",
            "scale",
            "renorm",
            "synchronized",
            "centered",
            "use_bias",
            "affine",
            "data_init",
            "learned_epsilon",
        )
    },
    # finite numbers > 0 (or >= 0 where zero has a meaning)
    **{k: "positive" for k in ("epsilon", "c", "ls_epsilon", "clamp_value")},
    **{k: "non_negative" for k in ("k", "bias", "alpha", "beta")},
    **{k: "unit_interval" for k in ("momentum", "renorm_momentum", "alpha_fwd", "alpha_bkw")},
    "alpha_init": "finite",
    # integers
    **{k: "count" for k in ("units", "filters", "virtual_batch_size", "depth_radius")},
    "power_iterations": "bounded_count",
    "groups": "groups",
    "axis": "axis",
    # Keras objects
    **{
        f"{p}_{k}": k
        for p in (
            "beta",
            "gamma",
            "tau",
            "alpha",
            "kernel",
            "bias",
            "moving_mean",
            "moving_variance",
        )
        for k in ("initializer", "regularizer", "constraint")
    },
    "activity_regularizer": "regularizer",
    "activation": "activation",
    "layer": "layer",
    # convolution geometry, checked as keras.layers.Conv* checks it
    **{k: "conv_tuple" for k in ("kernel_size", "strides", "dilation_rate")},
    "padding": "choice",
    "data_format": "choice",
    "ecm": "choice",
    "renorm_clipping": "clipping",
}

_NUMBER_JUNK = ["abc", None, [1.0], True, math.nan, math.inf]
BAD = {
    "flag": ["abc", "false", None, 1, 0.5, [1], math.nan],
    "positive": [-1.0] + _NUMBER_JUNK,
    "non_negative": [-1.0] + _NUMBER_JUNK,
    "unit_interval": [-0.1, 1.5] + _NUMBER_JUNK,
    "finite": ["abc", None, True, math.nan, math.inf, -math.inf],
    "count": [-1, 1.5, "abc", True, math.inf],
    "bounded_count": [0, 1.5, "abc", True, 10**30],
    "groups": [0, -2, 1.5, "abc", True],
    "axis": ["abc", 1.5, [1.5], True],
    "initializer": [-1, "no_such_initializer", 3.5],
    "regularizer": [-1, "no_such_regularizer"],
    "constraint": [-1, "no_such_constraint"],
    "activation": ["no_such_activation", 3],
    "layer": ["abc", 3, None],
    "conv_tuple": ["abc", -1, 1.5],
    "choice": ["no_such_choice", 3],
    "clipping": ["abc", {"rmax": -1.0}, {"no_such_key": 1.0}],
}

# what a class needs besides the argument under test, and an input to build it on
_REQUIRED = {
    "WeightNormalization": lambda: {"layer": keras.layers.Dense(3)},
    "SpectralNormalization": lambda: {"layer": keras.layers.Dense(3)},
    "CosineDense": lambda: {"units": 3},
}
_CONV = {"filters": 2, "kernel_size": 2}
_INPUTS = {
    "CosineDense": (2, 4),
    "WeightNormalization": (2, 4),
    "SpectralNormalization": (2, 4),
    "CosineConv1D": (2, 6, 4),
    "WeightStandardizedConv1D": (2, 6, 4),
    "WeightStandardizedConv3D": (1, 4, 4, 4, 4),
}


def _classes():
    return [
        getattr(tfnorm, n) for n in tfnorm.layers.__all__ if isinstance(getattr(tfnorm, n), type)
    ]


def _cases():
    out = []
    for cls in _classes():
        for arg in init_arguments(cls):
            kind = ARGUMENTS.get(arg)
            for value in BAD.get(kind, [None]):
                out.append(pytest.param(cls, arg, value, id=f"{cls.__name__}-{arg}-{value!r}"))
    return out


def test_every_argument_is_in_the_table():
    missing = sorted(
        {
            f"{cls.__name__}({arg})"
            for cls in _classes()
            for arg in init_arguments(cls)
            if arg not in ARGUMENTS
        }
    )
    assert not missing, f"classify these arguments in ARGUMENTS: {missing}"


@pytest.mark.parametrize("cls,arg,value", _cases())
def test_bad_value_is_refused_naming_the_argument(cls, arg, value):
    name = cls.__name__
    kwargs = (
        _REQUIRED[name]()
        if name in _REQUIRED
        else (dict(_CONV) if "kernel_size" in init_arguments(cls) else {})
    )
    if arg == "renorm_clipping":
        kwargs["renorm"] = True
    kwargs[arg] = value
    shape = _INPUTS.get(name, (2, 4, 4, 4))
    with pytest.raises((ValueError, TypeError)) as err:
        layer = cls(**kwargs)
        out = layer(np.random.default_rng(0).normal(size=shape).astype("float32"), training=True)
        if not np.all(np.isfinite(np.asarray(out))):  # a bad value must not mean NaN output
            raise AssertionError(f"{name}({arg}={value!r}) accepted, gives non-finite output")
    assert arg in str(err.value), f"the error does not name {arg!r}: {err.value}"
