"""Bad input to the core layers: a clear error naming the argument and the value."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfnorm


@pytest.mark.parametrize(
    "make, shape, pattern",
    [
        (
            lambda: tfnorm.GroupNormalization(groups=5),
            (2, 4, 4, 64),
            r"groups=5 must divide the 64 channels.*groups=4.*groups=8",
        ),
        (lambda: tfnorm.LayerNormalization(axis=3), (2, 5, 6), r"axis=3 is out of range .* rank 3"),
        (lambda: tfnorm.BatchNormalization(axis=-4), (2, 5, 6), r"axis=-4 is out of range"),
        (lambda: tfnorm.RMSNormalization(axis=0), (2, 5), r"axis=0 names the batch axis"),
        (lambda: tfnorm.LayerNormalization(axis=[1, 1]), (2, 5, 6), r"repeats an axis"),
        (lambda: tfnorm.InstanceNormalization(), (2, 5), r"rank >= 3 .* shape \(2, 5\)"),
        (lambda: tfnorm.GroupNormalization(groups=2), (4,), r"rank >= 2"),
        (lambda: tfnorm.BatchNormalization(), (None, None), r"size is unknown"),
    ],
)
def test_build_errors(make, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        make().build(shape)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (
            lambda: tfnorm.GroupNormalization(groups=0),
            r"groups must be an integer >= 1, received groups=0",
        ),
        (lambda: tfnorm.GroupNormalization(groups=2.5), r"received groups=2.5"),
        (
            lambda: tfnorm.BatchNormalization(momentum=1.5),
            r"momentum must be a number in \[0, 1\].*1.5",
        ),
        (
            lambda: tfnorm.BatchNormalization(epsilon=-1),
            r"epsilon must be a finite positive number.*-1",
        ),
        (
            lambda: tfnorm.BatchNormalization(virtual_batch_size=0),
            r"virtual_batch_size.*received.*0",
        ),
        (
            lambda: tfnorm.BatchNormalization(renorm=True, renorm_clipping={"rmx": 3}),
            r"unknown key\(s\) \['rmx'\]",
        ),
        (
            lambda: tfnorm.BatchNormalization(renorm=True, renorm_clipping={"rmax": 0.5}),
            r"rmax.*>= 1",
        ),
        (lambda: tfnorm.LayerNormalization(epsilon=0), r"epsilon must be a finite positive number"),
        (
            lambda: tfnorm.InstanceNormalization(axis=[1, 2]),
            r"single channel axis, received axis=\[1, 2\]",
        ),
    ],
)
def test_construction_errors(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


@pytest.mark.parametrize("bad", ["x", 1.5, None, True])
def test_axis_type_errors(bad):
    with pytest.raises(TypeError, match=r"axis must be an int or a list of ints"):
        tfnorm.LayerNormalization(axis=bad)


@pytest.mark.parametrize(
    "cls",
    [
        tfnorm.BatchNormalization,
        tfnorm.LayerNormalization,
        tfnorm.RMSNormalization,
        tfnorm.GroupNormalization,
        tfnorm.InstanceNormalization,
    ],
)
def test_integer_input_is_rejected(cls):
    layer = cls(groups=1) if cls is tfnorm.GroupNormalization else cls()
    with pytest.raises(ValueError, match=r"dtype int32.*float"):
        layer(np.ones((2, 3, 4), "int32"))


def test_unknown_config_key_is_named():
    config = tfnorm.GroupNormalization(groups=4).get_config()
    config["group"] = 4
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['group'\].*did you mean 'groups'"):
        tfnorm.GroupNormalization.from_config(config)


def test_unknown_key_in_saved_model_config(tmp_path):
    config = tfnorm.LayerNormalization().get_config()
    config["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        keras.saving.deserialize_keras_object(
            {
                "module": None,
                "class_name": "tfnorm>LayerNormalization",
                "config": config,
                "registered_name": "tfnorm>LayerNormalization",
            }
        )


def test_ghost_batch_must_divide_batch():
    layer = tfnorm.BatchNormalization(virtual_batch_size=4)
    with pytest.raises(ValueError, match=r"batch size 6 is not a multiple of virtual_batch_size=4"):
        layer(np.ones((6, 3), "float32"), training=True)


def test_mask_rank_is_checked():
    layer = tfnorm.BatchNormalization()
    with pytest.raises(ValueError, match=r"mask must have rank 2"):
        layer(np.ones((2, 5, 3), "float32"), training=True, mask=np.ones((2, 5, 3), bool))


def test_build_does_not_rewrite_arguments():
    layer = tfnorm.GroupNormalization(groups=4, axis=-1)
    before = layer.get_config()
    layer.build((2, 8, 8, 16))
    assert layer.get_config() == before and layer.axis == -1
