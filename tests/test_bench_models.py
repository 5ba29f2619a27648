"""``tfnorm bench --models``: whole models at the tiny size (no timing assertions).

Runs in this process (TensorFlow is already imported) at the smallest sizes
the models accept (the hidden ``--tiny`` option), forward for every model and
variant, and the training step on the transformer: the same code paths as a
full run, in seconds.
"""

from __future__ import annotations

import json

import pytest

import tfnorm
from tfnorm import cli
from tfnorm.bench import models

EXPECTED = {
    "resnet50": ["keras BN", "tfnorm BN", "keras GN(32)", "tfnorm GN(32)", "folded"],
    "mobilenetv2": ["keras BN", "tfnorm BN", "folded"],
    "transformer": ["keras LN", "tfnorm LN", "keras RMS", "tfnorm RMS"],
}
HAS_FOLD = getattr(tfnorm, "fold_normalization", None) is not None


def _run(capsys, *args):
    code = cli.main(
        ["bench", "--models", *args, "--tiny", "--repeats", "1", "--warmup", "1", "--no-progress"]
    )
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    return out


def _check_rows(rows, names, modes):
    seen = {}
    for r in rows:
        assert r["dtype"] == "float32" and r["xla"] is False and r["ms"] > 0
        seen.setdefault((r["model"], r["mode"]), []).append(r["variant"])
        if r["vs"]:
            assert r["ratio"] == pytest.approx(r["ms"] / r["vs_ms"])
        else:
            assert r["ratio"] is None
        if r["variant"] != r["original"]:
            assert r["original_ratio"] is not None
    for name in names:
        for mode in modes:
            want = [v for v in EXPECTED[name] if v != "folded" or (HAS_FOLD and mode == "forward")]
            assert seen[(name, mode)] == want, (name, mode)
    return {(r["model"], r["variant"], r["mode"]): r for r in rows}


def test_resnet50_variants_forward(capsys):
    doc = json.loads(_run(capsys, "resnet50", "--modes", "forward", "--json").out)
    assert doc["machine"]["settings"]["models"] == ["resnet50"]
    by = _check_rows(doc["rows"], ["resnet50"], ["forward"])
    skipped = {s["layer"]: s["reason"] for s in doc["skipped"]}
    if HAS_FOLD:
        assert not skipped
    else:
        assert "fold_normalization" in skipped["resnet50 folded"]
    # the swaps replaced every normalization layer, and nothing else
    counts = {
        v: by[("resnet50", v, "forward")]["norm_layers"]
        for v in ("keras BN", "tfnorm BN", "keras GN(32)", "tfnorm GN(32)")
    }
    assert counts == {
        "keras BN": {"keras.BatchNormalization": 53},
        "tfnorm BN": {"tfnorm.BatchNormalization": 53},
        "keras GN(32)": {"keras.GroupNormalization": 53},
        "tfnorm GN(32)": {"tfnorm.GroupNormalization": 53},
    }
    assert len({r["params"] for k, r in by.items() if "BN" in k[1]}) == 1


def test_mobilenet_and_transformer_forward_and_training_step(capsys, tmp_path):
    path = tmp_path / "models.json"
    out = _run(capsys, "mobilenetv2,transformer", "--save", str(path)).out
    lines = out.splitlines()
    assert lines[0].startswith("tfnorm bench --models")
    assert "warning: --repeats 1" in out and "read the ratios as rough" in out
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert lines[header].split() == [
        "model",
        "input",
        "dtype",
        "compile",
        "mode",
        "variant",
        "ms",
        "vs",
        "ratio",
        "vs",
        "original",
    ]
    body = []
    for line in lines[header + 2 :]:
        if not line.strip():
            break
        body.append(line)
    doc = json.loads(path.read_text())
    assert len(body) == len(doc["rows"])
    for line, r in zip(body, doc["rows"]):  # the table shows the saved rows, in order
        assert line.startswith(r["model"]) and f" {r['mode']} " in line
        assert f" {r['variant']} " in line and f" {r['ms']:.2f} " in line
    by = _check_rows(doc["rows"], ["mobilenetv2", "transformer"], ["forward", "train"])
    assert by[("transformer", "tfnorm RMS", "train")]["vs"] == "keras RMS"
    assert by[("transformer", "tfnorm RMS", "train")]["norm_layers"] == {
        "tfnorm.RMSNormalization": 3
    }
    assert by[("mobilenetv2", "tfnorm BN", "train")]["norm_layers"] == {
        "tfnorm.BatchNormalization": 52
    }
    # the saved run, rendered as the README's Markdown table: one row per variant
    assert cli.main(["bench", "--from", str(path), "--markdown"]) == 0
    md = capsys.readouterr().out
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| model | dtype | compile | variant | forward ms | train step ms | vs |"
    variants = {(r["model"], r["variant"]) for r in doc["rows"]}
    assert len(table) - 1 == len(variants)
    rms = next(line for line in table if "| tfnorm RMS |" in line)
    train = by[("transformer", "tfnorm RMS", "train")]
    assert f"| {train['ms']:.1f} (**{train['ratio']:.2f}×**) | keras RMS |" in rms


def test_folding_when_absent_is_reported_skipped(monkeypatch):
    size = models.TINY_SIZES["mobilenetv2"]
    if HAS_FOLD:
        built, skipped = models.build_variants("mobilenetv2", size, "float32")
        assert skipped == [] and list(built) == EXPECTED["mobilenetv2"]
        assert models.count_normalizations(built["folded"]) == {}
    monkeypatch.delattr(tfnorm, "fold_normalization", raising=False)
    built, skipped = models.build_variants("mobilenetv2", size, "float32")
    assert list(built) == ["keras BN", "tfnorm BN"]
    assert skipped == [
        {
            "layer": "mobilenetv2 folded",
            "dtype": "float32",
            "reason": f"tfnorm.fold_normalization is not in tfnorm {tfnorm.__version__}",
        }
    ]


def test_ratios_from_fixed_timings():
    size = models.TINY_SIZES["mobilenetv2"]

    class Model:
        def count_params(self):
            return 7

        layers = []

    ms = {"keras BN": 10.0, "tfnorm BN": 8.0, "folded": 5.0}
    settings = type("S", (), {"repeats": 3})()
    rows = {
        v: models.model_row(
            "mobilenetv2",
            v,
            vs,
            "keras BN",
            ms,
            size,
            "float32",
            "graph",
            "forward",
            Model(),
            settings,
        )
        for v, vs in (("keras BN", None), ("tfnorm BN", "keras BN"), ("folded", "keras BN"))
    }
    assert rows["keras BN"]["ratio"] is None and rows["keras BN"]["original_ratio"] is None
    assert rows["tfnorm BN"]["ratio"] == pytest.approx(0.8)
    assert rows["folded"]["ratio"] == pytest.approx(0.5)
    assert rows["folded"]["original_ratio"] == pytest.approx(0.5)
    lines = models.table(list(rows.values())).splitlines()
    assert lines[2].split()[-6:] == ["keras", "BN", "10.00", "-", "-", "-"]
    assert lines[3].split()[-6:] == ["BN", "8.00", "keras", "BN", "0.80", "0.80"]
    assert lines[4].split()[-6:] == ["folded", "5.00", "keras", "BN", "0.50", "0.50"]
