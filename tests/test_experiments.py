"""``tfnorm study --experiment ...``: the rule, the measurements at init, the analyses, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfnorm
from tfnorm import cli
from tfnorm.study import diagnostics, models, plot, report, verdict
from tfnorm.study import experiments as ex
from tfnorm.study.models import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the rule ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "a, b, differs, direction",
    [
        ([0.10, 0.12, 0.11], [0.70, 0.60, 0.65], True, "lower"),
        ([0.90, 0.91], [0.80, 0.81], True, "higher"),
        ([0.90, 0.95], [0.93, 0.96], False, "same"),  # intervals overlap
        ([0.9], [0.1], False, "same"),  # one seed: never a finding
        ([0.5, float("nan")], [0.1, 0.1], False, "same"),  # a diverged run
    ],
)
def test_a_difference_counts_only_beyond_the_spread_over_seeds(a, b, differs, direction):
    c = verdict.compare(a, b)
    assert c["differs"] is differs and c["direction"] == direction
    if all(map(math.isfinite, a)) and len(a) > 1:
        assert c["mean_a"] == pytest.approx(np.mean(a)) and c["sd_a"] == pytest.approx(
            np.std(a, ddof=1)
        )
        # the stated rule, computed independently
        gap = abs(np.mean(a) - np.mean(b))
        assert differs == bool(gap > np.std(a, ddof=1) + np.std(b, ddof=1))


def test_describe_says_when_there_is_no_difference():
    text = verdict.describe("x", "y", verdict.compare([0.5, 0.52], [0.51, 0.5]))
    assert text.startswith("x and y do not differ by this rule (")


# -- measurements at initialization -----------------------------------------------------------
def test_growth_rate_recovers_a_geometric_series_and_trims_the_ends():
    norms = [1.3**k for k in range(12, 0, -1)]
    assert diagnostics.growth_rate(norms) == pytest.approx(1.3, rel=1e-9)
    spoiled = [100.0] + norms[1:-1] + [1e-6]  # wild first and last layers
    assert diagnostics.growth_rate(spoiled, trim=1) == pytest.approx(1.3, rel=1e-9)
    assert diagnostics.THEORY_GROWTH == pytest.approx(1.2112, abs=1e-4)


def _numpy_kernel_gradients(weights, x, y):
    """Cross-entropy gradients of a Dense-ReLU stack with a Dense classifier, by hand."""
    kernels, biases = weights[0::2], weights[1::2]
    h = [x.reshape(len(x), -1).astype(np.float64)]
    pre = []
    for i, (w, b) in enumerate(zip(kernels, biases)):
        z = h[-1] @ w + b
        pre.append(z)
        h.append(np.maximum(z, 0) if i < len(kernels) - 1 else z)
    logits = h[-1]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = p
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)
    grads = []
    for i in range(len(kernels) - 1, -1, -1):
        grads.append(h[i].T @ delta)
        delta = (delta @ kernels[i].T) * (pre[i - 1] > 0) if i > 0 else None
    return [np.linalg.norm(g) for g in grads[::-1]][:-1]  # hidden layers only


def test_gradient_norms_match_a_numpy_backward_pass():
    keras.utils.set_random_seed(3)
    model = models.build_model(Config("none"), "mlp", (4, 4, 1), 3, depth=3, width=5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4, 4, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    got = diagnostics.gradient_norms(model, x, y)
    want = _numpy_kernel_gradients([w.astype(np.float64) for w in model.get_weights()], x, y)
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.fixture(scope="module")
def digits():
    from tfnorm.study import data

    return data.prepare("mnist10k", train_size=1024, test_size=200)


def test_bn_after_every_layer_explodes_at_the_mean_field_rate_and_one_bn_does_not(digits):
    rates = {}
    for cfg in (ex.EVERY, ex.FIRST, ex.PLAIN):
        keras.utils.set_random_seed(0)
        model = models.build_model(cfg, "mlp", digits.input_shape, 10, depth=24, width=128)
        n = diagnostics.gradient_norms(model, digits.x_train[:512], digits.y_train[:512])
        rates[cfg.label] = diagnostics.growth_rate(n, trim=1)
    # Yang et al. 2019: sqrt(pi / (pi - 1)) per layer at large batch (finite width: a few % off)
    assert rates["batch@every"] == pytest.approx(diagnostics.THEORY_GROWTH, rel=0.05)
    assert rates["batch@first"] < 1.05 and rates["none"] < 1.05


def test_batch_dependence_is_zero_without_batch_statistics_and_compounds_with_them(digits):
    out = {}
    for cfg in (ex.EVERY, ex.FIRST, ex.PLAIN, Config("layer", "every")):
        keras.utils.set_random_seed(1)
        model = models.build_model(cfg, "mlp", digits.input_shape, 10, depth=12, width=64)
        out[cfg.label] = diagnostics.batch_sensitivity(
            model, digits.x_train[:128], probes=8, trials=2
        )
    assert out["none"].shape == (12,)
    np.testing.assert_allclose(out["none"], 0.0, atol=1e-6)
    np.testing.assert_allclose(out["layer@every"], 0.0, atol=1e-5)  # per-sample statistics
    assert out["batch@every"][-1] > 3 * out["batch@every"][0]  # compounds with depth
    assert out["batch@every"][-1] > 3 * out["batch@first"][-1]
    with pytest.raises(ValueError, match=r"len\(x\)=6, probes=8"):
        diagnostics.batch_sensitivity(model, digits.x_train[:6], probes=8)


# -- the networks -----------------------------------------------------------------------------
def test_residual_mlp_adds_identity_skips_after_the_first_layer():
    model = models.build_model(ex.EVERY, "mlp", (28, 28, 1), 10, depth=4, width=8, residual=True)
    adds = [l for l in model.layers if isinstance(l, keras.layers.Add)]
    assert [a.name for a in adds] == ["skip_2", "skip_3", "skip_4"]
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    # the skip really is an identity: zero the kernels of layers 2..4, then the output is
    # the classifier applied to relu(norm(dense_1(x))) plus 3 x relu(norm(0)) = relu(beta)
    plain = models.build_model(ex.EVERY, "mlp", (28, 28, 1), 10, depth=1, width=8)
    for name in ("dense_1", "norm_1", "logits"):
        plain.get_layer(name).set_weights(model.get_layer(name).get_weights())
    for i in (2, 3, 4):
        layer = model.get_layer(f"dense_{i}")
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    np.testing.assert_allclose(model(x, training=False), plain(x, training=False), atol=1e-5)


def test_input_global_is_one_batch_norm_over_the_whole_input():
    model = models.build_model(ex.GLOBAL_INPUT, "cnn1d", (100, 6), 4, depth=2, width=8)
    norm = model.get_layer("input_norm")
    assert isinstance(norm, tfnorm.BatchNormalization) and tuple(norm.moving_mean.shape) == (1,)
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(5, 100, 6)).astype(np.float32)
    x[..., 3] *= 50  # one loud sensor: a global z-score keeps it loud
    probe = keras.Model(model.input, model.get_layer("back_to_input_shape").output)
    y = np.asarray(probe(x, training=True), np.float64)
    z = (x - x.mean()) / np.sqrt(x.var() + norm.epsilon)
    np.testing.assert_allclose(y, z, rtol=1e-4, atol=1e-4)
    per_sensor = models.build_model(ex.INPUT, "cnn1d", (100, 6), 4, depth=2, width=8)
    assert tuple(per_sensor.get_layer("input_norm").moving_mean.shape) == (6,)
    with pytest.raises(ValueError, match=r"rank 2 per sample .*received input_shape=\(28, 28, 1\)"):
        models.build_model(ex.PLAIN, "cnn1d", (28, 28, 1), 4, depth=2, width=8)


def test_options_reach_the_normalization_layer_and_the_label():
    cfg = Config("batch", "every", (("momentum", 0.9),))
    assert cfg.label == "batch@every[momentum=0.9]"
    model = models.build_model(cfg, "mlp", (4, 4, 1), 3, depth=2, width=4)
    assert [l.momentum for l in model.layers if isinstance(l, tfnorm.BatchNormalization)] == [
        0.9,
        0.9,
    ]


# -- the plans --------------------------------------------------------------------------------
def test_full_grids_are_larger_and_options_override_them():
    for name, e in ex.EXPERIMENTS.items():
        default, full = e.plan(ex.Options()), e.plan(ex.Options(full=True))
        assert len(full) >= len(default) > 0, name
        assert all(j.experiment == name for j in default)
    depth = ex.EXPERIMENTS["depth"]
    assert sorted({j.settings.depth for j in depth.plan(ex.Options())}) == [2, 4, 8, 16, 32]
    assert 64 in {j.settings.depth for j in depth.plan(ex.Options(full=True))}
    jobs = depth.plan(ex.Options(depths=[3, 5], seeds=1, epochs=2))
    assert sorted({j.settings.depth for j in jobs}) == [3, 5]
    assert {j.seed for j in jobs} == {0} and {j.settings.epochs for j in jobs} == {2}
    assert {j.config.label for j in jobs} == {
        "batch@every",
        "batch@first",
        "batch@input",
        "none",
        "layer@every",
        "group@every",
        "online@every",
    }
    sizes = ex.EXPERIMENTS["batch-size"].plan(ex.Options(batch_sizes=[2, 16]))
    assert sorted({j.settings.batch_size for j in sizes}) == [2, 16]
    har = ex.EXPERIMENTS["har"].plan(ex.Options())
    assert {j.dataset for j in har} == {"basicmotions"} and {j.settings.model for j in har} == {
        "cnn1d"
    }
    assert {j.config.label for j in har} == {
        "batch@input-global",
        "batch@input",
        "batch@every",
        "none",
    }


# -- the analyses, on records made up to show a known answer ------------------------------------
def _record(config, depth, accs, experiment="headline", **extra):
    norm, _, placement = config.partition("@")
    return {
        "experiment": experiment,
        "kind": "train",
        "config": config,
        "norm": norm,
        "placement": placement or None,
        "model": "mlp",
        "width": 128,
        "depth": depth,
        "seed": extra.pop("seed", 0),
        "batch_size": 64,
        "residual": False,
        "dataset": "mnist10k",
        "test_accuracy": accs[-1],
        "seconds_per_epoch": 1.0,
        "epochs": [
            {
                "epoch": i + 1,
                "test_accuracy": a,
                "loss": 1.0,
                "accuracy": a,
                "test_loss": 1.0,
                "seconds": 1.0,
            }
            for i, a in enumerate(accs)
        ],
        **extra,
    }


def _probe(config, depth, growth, seed):
    norms = [growth ** (depth - 1 - i) for i in range(depth)]
    return {
        "experiment": "headline",
        "kind": "probe",
        "config": config,
        "depth": depth,
        "model": "mlp",
        "width": 128,
        "seed": seed,
        "batch_size": 64,
        "grad_norms": {"64": norms},
        "growth": {"64": growth + 0.001 * seed},
        "sensitivity": [0.1] * depth,
    }


def _headline_records(deep_every):
    recs = []
    for seed, jitter in enumerate((0.0, 0.01, -0.01)):
        for label in ("batch@every", "batch@first", "batch@input", "none"):
            shallow = 0.95 + jitter
            deep = (deep_every if label == "batch@every" else 0.90) + jitter
            recs.append(_record(label, 4, [shallow - 0.1, shallow], seed=seed))
            recs.append(_record(label, 32, [deep - 0.2, deep], seed=seed))
            recs.append(_probe(label, 32, 1.21 if label == "batch@every" else 0.98, seed))
    return recs


def test_headline_answer_is_computed_from_the_numbers():
    harmed = ex.EXPERIMENTS["headline"].analyze(_headline_records(0.20), ex.Options())
    assert harmed["answer"].startswith(
        "Yes, and the harm grows with depth: at depth 32 BN after "
        "every layer reached 20.0 ± 1.0 %, lower than BN after the first"
    )
    assert (
        "Measured at initialization: with BN after every layer the gradients grow 1.2"
        in harmed["answer"]
    )
    claims = {f["claim"].split(":")[0]: f for f in harmed["findings"]}
    assert claims["depth 32"]["holds"] and claims["depth 32"]["numbers"][
        "difference"
    ] == pytest.approx(-0.7)
    same = ex.EXPERIMENTS["headline"].analyze(_headline_records(0.90), ex.Options())
    assert same["answer"].startswith(
        "Not in this run: at depth 32 BN after every layer reached "
        "90.0 ± 1.0 %, not lower than any other placement"
    )
    assert "Measured at initialization" not in same["answer"]
    # each finding's verdict is the rule applied to the numbers it carries
    for f in harmed["findings"] + same["findings"]:
        n = f["numbers"]
        if "mean_a" in n and "config" not in n:
            assert f["holds"] == (abs(n["mean_a"] - n["mean_b"]) > n["sd_a"] + n["sd_b"])


def test_residual_answer_names_the_cause_only_when_the_skips_remove_the_gap():
    recs = []
    for seed, j in enumerate((0.0, 0.01, -0.01)):
        for label, plain, res in (
            ("batch@every", 0.2, 0.95),
            ("batch@first", 0.9, 0.95),
            ("none", 0.9, 0.5),
        ):
            recs.append(_record(label, 32, [plain + j], "residual", seed=seed))
            recs.append(_record(label, 32, [res + j], "residual", seed=seed, residual=True))
    out = ex.EXPERIMENTS["residual"].analyze(recs, ex.Options())
    assert out["answer"].startswith("With identity skip connections the harm disappears")
    for r in recs:
        if r["residual"] and r["config"] == "batch@every":
            r["epochs"][-1]["test_accuracy"] = 0.3
    out = ex.EXPERIMENTS["residual"].analyze(recs, ex.Options())
    assert out["answer"].startswith("Skip connections do not remove the harm")


# -- every experiment end to end, tiny ---------------------------------------------------------
TINY = {
    "headline": dict(depths=[2, 6], seeds=2, epochs=2),
    "depth": dict(depths=[2, 4], seeds=2, epochs=1),
    "gradients": dict(depths=[4, 8], batch_sizes=[8, 64], seeds=2),
    "batch-size": dict(batch_sizes=[4, 32], depth=2, seeds=2, epochs=1, train_size=128),
    "statistics": dict(depth=3, seeds=2, epochs=1),
    "residual": dict(depth=4, seeds=2, epochs=1),
    "har": dict(depth=2, seeds=2, epochs=3),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ex.EXPERIMENTS))
def test_each_experiment_runs_analyses_and_draws_its_figure(name, tmp_path):
    import matplotlib.image

    assert set(TINY) == set(ex.EXPERIMENTS)
    kw = dict(TINY[name])
    if name != "har" and "train_size" not in kw:
        kw.update(train_size=256, test_size=100)
    opts = ex.Options(**kw)
    jobs = ex.EXPERIMENTS[name].plan(opts)
    records = ex.run_jobs(jobs)
    assert len(records) == len(jobs)
    section = ex.EXPERIMENTS[name].analyze(records, opts)
    assert section["answer"] and section["findings"]
    for f in section["findings"]:
        assert isinstance(f["holds"], bool) and f["claim"]
    for r in records:
        if r["kind"] == "train":
            assert all(0 <= e["test_accuracy"] <= 1 for e in r["epochs"])
        else:
            assert all(np.isfinite(v) for v in r["growth"].values())
    if name == "statistics":
        for r in records:
            assert set(r["evaluations"]) == set(ex.EVAL_MODES)
    section["question"] = ex.EXPERIMENTS[name].question
    text = report.format_section(name, section)
    assert text.startswith(f"## {name}: ") and "answer: " in text
    path = plot.plot_experiment(name, section, records, str(tmp_path / f"{name}.png"))
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 500


# -- the command line ---------------------------------------------------------------------------
def run_cli(argv, capsys):
    rc = cli.main(["study", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--experiment", "depht"], ["unknown experiment 'depht'", "depth", "compare"]),
        (["--experiment", "depth", "--norms", "batch"], ["--norms and --placement", "compare"]),
        (["--depths", "2,x"], ["--depths takes comma-separated integers", "2,x"]),
        (["--batch-sizes", "0,4"], ["--batch-sizes takes integers >= 1", "0,4"]),
        (["--experiment", "depth", "--model", "cnn1d"], ["unknown model 'cnn1d'", "mlp, cnn"]),
        (
            ["--experiment", "depth", "--dataset", "tfds:mnist"],
            ["--dataset applies to --experiment compare"],
        ),
        (["--seeds", "0"], ["--seeds must be >= 1"]),
    ],
)
def test_bad_experiment_options_are_one_line_exit_2(argv, words, capsys, tmp_path):
    rc, out, err = run_cli([*argv, "--out", str(tmp_path / "o")], capsys)
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("tfnorm study: error: ")
    for w in words:
        assert w in line
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written


def test_out_that_is_a_file_is_refused_before_training(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    rc, out, err = run_cli(["--experiment", "gradients", "--out", str(f)], capsys)
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert f"--out {f} is not a writable directory" in line and out == ""


def test_progress_estimates_the_time_left():
    import io

    from tfnorm.study.train import Progress, format_duration

    p = Progress(3, stream=io.StringIO(), dynamic=False, total_cost=4.0)
    p._t0 -= 10.0  # ten seconds ago
    assert p.timing(1.0) == "  [10s elapsed, about 30s left]"
    assert p.timing(3.0) == "  [10s elapsed]"
    assert format_duration(59.6) == "1m00s" and format_duration(7200) == "2h00m"


def test_results_merge_sections_and_csv_holds_every_epoch(tmp_path):
    recs = _headline_records(0.2)
    section = ex.EXPERIMENTS["headline"].analyze(recs, ex.Options())
    section["runs"] = recs
    report.write_results(str(tmp_path), {"headline": section}, {"date": "d1"})
    report.write_results(str(tmp_path), {"other": {"runs": []}}, {"date": "d2"})
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc["experiments"]) == {"headline", "other"} and doc["meta"]["date"] == "d2"
    import csv

    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    trains = [r for r in recs if r["kind"] == "train"]
    assert len(rows) == sum(len(r["epochs"]) for r in trains)
    with open(tmp_path / "gradients.csv") as f:
        grads = list(csv.DictReader(f))
    assert len(grads) == sum(len(r["grad_norms"]["64"]) for r in recs if r["kind"] == "probe")


@pytest.mark.slow
def test_default_command_runs_the_headline_and_prints_a_computed_answer(tmp_path):
    out = tmp_path / "study"
    argv = [
        sys.executable,
        "-m",
        "tfnorm",
        "study",
        "--depths",
        "2,6",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--train-size",
        "256",
        "--test-size",
        "100",
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        argv,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "-- headline: May too much batch normalization hurt learning?" in proc.stdout
    assert "answer: " in proc.stdout and "left]" in proc.stdout  # progress with a time estimate
    doc = json.loads((out / "results.json").read_text())
    section = doc["experiments"]["headline"]
    assert section["answer"] in proc.stdout
    assert section["meta"]["command"].startswith("tfnorm study --depths 2,6")
    with open(out / "headline.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # --summarize prints the stored answer again, training nothing
    proc2 = subprocess.run(
        [sys.executable, "-m", "tfnorm", "study", "--summarize", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert proc2.returncode == 0 and section["answer"] in proc2.stdout
