"""Models saved by earlier tfnorm versions still load, and compute what they computed.

The fixtures under ``tests/fixtures/v<version>/`` were written by
``tests/fixtures/make_fixtures.py`` with that version: one ``.keras`` model per
layer family and an ``.npz`` with its inputs and the outputs it gave (inference,
then one training call). A fixture is never regenerated once released; a new
version adds its own directory.
"""

from __future__ import annotations

import glob
import json
import os

import keras
import numpy as np
import pytest

import tfnorm

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _fixtures():
    out = []
    for manifest_path in sorted(glob.glob(os.path.join(HERE, "v*", "manifest.json"))):
        with open(manifest_path) as f:
            manifest = json.load(f)
        for entry in manifest["fixtures"]:
            out.append(pytest.param(os.path.dirname(manifest_path), entry, manifest["tfnorm"],
                                    id=f"v{manifest['tfnorm']}-{entry['file']}"))
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
    np.testing.assert_allclose(np.asarray(got, np.float64) / scale, want / scale,
                               atol=2e-5, rtol=0, err_msg=what)


@pytest.mark.parametrize("directory, entry, version", FIXTURES)
def test_saved_model_loads_and_computes_the_stored_outputs(directory, entry, version):
    model = keras.saving.load_model(os.path.join(directory, entry["file"]))  # no custom_objects
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
            _close(y, data[f"{mode}_y{i}"],
                   f"{entry['file']} output y{i} ({entry['layers'][i]}), training={training}")


def test_regeneration_script_reproduces_this_version(tmp_path, monkeypatch):
    """The script writes loadable fixtures whose stored outputs the loader reproduces."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures",
                                                  os.path.join(HERE, "make_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from tests.descriptors import CASES

    case = CASES[0]
    model, data = mod.build([case])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(mod.run_model(loaded, data, False)["y0"],
                                  mod.run_model(model, data, False)["y0"])
    fams = mod.families(CASES)
    classes = [c.cls for cs in fams.values() for c in cs]
    assert len(classes) == len(set(classes)) == len({c.cls for c in CASES})
