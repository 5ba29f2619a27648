"""``model.export()`` of every descriptor, served in a fresh process that cannot import tfnorm."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.descriptors import CASES
from tests.harness import single_layer_model

CHUNK = 10
chunks = [CASES[i : i + CHUNK] for i in range(0, len(CASES), CHUNK)]


@pytest.mark.parametrize("chunk", range(len(chunks)), ids=lambda i: f"cases{i * CHUNK}-")
def test_exported_savedmodel_serves_without_tfnorm(chunk, tmp_path):
    manifest, expected = [], {}
    for case in chunks[chunk]:
        model = single_layer_model(case)
        case.randomize(model.layers[-1], np.random.default_rng(21))
        x = case.input_fn(np.random.default_rng(22), case.input_shape).astype("float32")
        expected[case.id] = model.predict(x, verbose=0)
        d = os.path.join(tmp_path, case.id)
        model.export(d, verbose=False)
        np.savez(d + "-in.npz", x=x)
        manifest.append(
            {"id": case.id, "model": d, "inputs": d + "-in.npz", "output": d + "-out.npy"}
        )
    with open(tmp_path / "manifest.json", "w") as f:
        json.dump(manifest, f)
    script = os.path.join(os.path.dirname(__file__), "serve_without_tfnorm.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, script, str(tmp_path / "manifest.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    failures = []
    for entry in manifest:
        served = np.load(entry["output"])
        try:
            np.testing.assert_allclose(served, expected[entry["id"]], atol=1e-6, rtol=1e-6)
        except AssertionError as err:
            failures.append(f"{entry['id']}: {err}")
    assert not failures, "\n".join(failures)
