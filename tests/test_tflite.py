"""TFLite: which layers convert with ``tf.lite.TFLiteConverter``, and do they compute the same.

Every descriptor case (inference mode) goes through the converter and the
TFLite interpreter, and its output is compared with Keras'. To keep this fast,
all cases are first converted together as one many-input model with builtin
ops only; when that fails, each case is converted alone, with builtin ops and
then with ``SELECT_TF_OPS``, to say which layer needs what.

``EXPECTED`` lists the layers that do not convert with builtin ops alone; every
other layer must. The README's TFLite table is this list.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from tests.descriptors import CASES

BUILTIN, SELECT, NONE = "builtin", "select", "none"
# Layer class name (or case id, for one configuration) -> how it converts, when that is not
# builtin ops only.
EXPECTED = {
    # Keras' own Conv1D with data_format="channels_first" does not convert (a transpose the
    # converter rejects), wrapped or not.
    "weightnorm-conv1d-channels-first-data-init": NONE,
}


def _convert(model, mode):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == SELECT:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    return converter.convert()


def _interpret(flat, inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_content=flat)
    runner = interpreter.get_signature_runner()
    return runner(**inputs)


def _model(indexed_cases):
    """One input ``x{i}`` and output ``y{i}`` per ``(i, case)``, weights randomized.

    Returns ``(model, inputs by name, Keras outputs by name)``.
    """
    inputs, outputs, data = [], [], {}
    for i, case in indexed_cases:
        inp = keras.Input(case.input_shape[1:], name=f"x{i}")
        layer = case.make()
        y = layer(inp)
        case.randomize(layer, np.random.default_rng(41 + i))
        inputs.append(inp)
        outputs.append(keras.layers.Identity(name=f"y{i}")(y))
        data[f"x{i}"] = case.input_fn(np.random.default_rng(42 + i), case.input_shape).astype(
            "float32"
        )
    model = keras.Model(inputs, outputs)
    expected = model([tf.constant(data[k.name]) for k in inputs], training=False)
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    expected = dict(zip([f"y{i}" for i, _ in indexed_cases], [np.asarray(e) for e in expected]))
    return model, data, expected


def _outputs_by_name(result, names):
    """The interpreter's outputs keyed like Keras'; TFLite may rename them (output_0, ...)."""
    if set(names) <= set(result):
        return result
    keys = sorted(result, key=lambda k: int(k.rsplit("_", 1)[-1]) if k[-1].isdigit() else k)
    return dict(zip(names, (result[k] for k in keys)))


def _compare(got, want):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(got) / scale, want / scale, atol=1e-5, rtol=0)


def _first_error_line(err):
    lines = [ln for ln in str(err).splitlines() if "error" in ln.lower()] or str(err).splitlines()
    return (lines[0] if lines else type(err).__name__)[:300]


def _expected(case):
    return EXPECTED.get(case.id, EXPECTED.get(case.cls.__name__, BUILTIN))


def _convert_group(indexed_cases, mode, modes, errors):
    """Converts the cases as one model with ``mode``; False when the converter refuses."""
    cases = [c for _, c in indexed_cases]
    model, data, expected = _model(indexed_cases)
    try:
        flat = _convert(model, mode)
    except Exception as err:  # the converter's own error types vary
        for case in cases:
            errors[case.id] = f"{mode}: {_first_error_line(err)}"
        return False
    result = _outputs_by_name(_interpret(flat, data), list(expected))
    for i, case in indexed_cases:
        modes[case.id] = mode
        try:
            _compare(result[f"y{i}"], expected[f"y{i}"])
        except AssertionError as err:
            errors[case.id] = f"{mode}: output differs from Keras: {err}"
            modes[case.id] = "wrong output"
    return True


def _convert_single(indexed_case, modes, errors):
    for mode in (BUILTIN, SELECT):
        if _convert_group([indexed_case], mode, modes, errors):
            return
    modes[indexed_case[1].id] = NONE


def test_tflite_conversion_of_every_case():
    modes, errors = {}, {}
    indexed = list(enumerate(CASES))
    builtin = [(i, c) for i, c in indexed if _expected(c) == BUILTIN]
    # the cases expected to convert with builtin ops go through the converter together
    if builtin and not _convert_group(builtin, BUILTIN, modes, errors):
        by_class = {}
        for i, c in builtin:
            by_class.setdefault(c.cls, []).append((i, c))
        for group in by_class.values():  # find the culprits
            if not _convert_group(group, BUILTIN, modes, errors):
                for item in group:
                    _convert_single(item, modes, errors)
    for item in indexed:
        if _expected(item[1]) != BUILTIN:
            _convert_single(item, modes, errors)
    wrong = []
    for case in CASES:
        want = _expected(case)
        if modes[case.id] != want:
            wrong.append(
                f"{case.id}: converts with {modes[case.id]!r}, the table says {want!r}"
                f" ({errors.get(case.id, 'no error')})"
            )
    assert not wrong, "\n".join(wrong)


def test_expected_table_names_public_layers_or_cases():
    names = {c.cls.__name__ for c in CASES} | {c.id for c in CASES}
    assert set(EXPECTED) <= names, set(EXPECTED) - names
    assert set(EXPECTED.values()) <= {SELECT, NONE}


def test_interpreter_matches_keras_for_a_conv_model():
    """A small CNN with tfnorm layers between convolutions, the way it would be deployed."""
    import tfnorm

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3), name="x0"),
            keras.layers.Conv2D(8, 3),
            tfnorm.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(8, 3),
            tfnorm.GroupNormalization(groups=4),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
            tfnorm.LayerNormalization(),
        ]
    )
    bn = model.layers[1]
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    x = np.random.default_rng(0).normal(size=(5, 12, 12, 3)).astype("float32")
    result = _interpret(_convert(model, BUILTIN), {"x0": x})
    (got,) = result.values()
    _compare(got, np.asarray(model(x, training=False)))
