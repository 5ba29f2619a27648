"""``tfnorm study``: configurations, models, training, reports, the command line."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfnorm
from tfnorm import cli
from tfnorm.study import data as study_data
from tfnorm.study import models, plot, report, train
from tfnorm.study.models import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ start-up lines (absl) are not ours; everything else on stderr is.
TF_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} )")


def our_lines(stderr: str):
    return [ln for ln in stderr.splitlines() if ln.strip() and not TF_LOG.match(ln)]


# -- configurations -------------------------------------------------------------------
def test_default_design_puts_batch_everywhere_and_the_others_after_every_layer():
    configs, skipped = models.expand_configs(["batch", "layer", "none"])
    assert [c.label for c in configs] == [
        "batch@every",
        "batch@first",
        "batch@input",
        "layer@every",
        "none",
    ]
    assert not skipped


def test_explicit_placements_apply_to_every_norm_and_none_is_one_config():
    configs, _ = models.expand_configs(["none", "group", "batch"], ["input", "every"])
    assert [c.label for c in configs] == [
        "none",
        "group@input",
        "group@every",
        "batch@input",
        "batch@every",
    ]


def test_cosine_has_no_input_placement():
    configs, skipped = models.expand_configs(["cosine"], ["every", "input"])
    assert [c.label for c in configs] == ["cosine@every"]
    assert len(skipped) == 1 and "cosine@input" in skipped[0]


def test_default_norms_are_the_available_ones_in_order():
    names = models.default_norms()
    valid = set(models.valid_norms())
    assert names == [n for n in models.DEFAULT_NORMS if n in valid]
    assert names[0] == "batch" and names[-1] == "none"
    assert {"batch", "layer", "group", "none"} <= set(names)


def test_unknown_names_are_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown norm 'bogus'; valid: .*batch.*none"):
        models.check_norms(["batch", "bogus"])
    with pytest.raises(
        ValueError, match=r"unknown placement 'everywhere'; valid: every, first, input"
    ):
        models.check_placements(["every", "everywhere"])
    with pytest.raises(ValueError, match=r"unknown model 'rnn'; valid: mlp, cnn"):
        models.check_model("rnn")
    assert models.check_norms(["batch", "GroupNormalization", "batch"]) == [
        "batch",
        "GroupNormalization",
    ]


@pytest.mark.parametrize(
    "channels, groups",
    [(128, 32), (64, 16), (32, 8), (16, 4), (12, 3), (784, 28), (3, 1), (1, 1), (7, 1)],
)
def test_choose_groups_divides_and_keeps_groups_of_four(channels, groups):
    assert models.choose_groups(channels) == groups
    assert channels % groups == 0


# -- models ---------------------------------------------------------------------------
def norm_layers(model):
    return [l for l in model.layers if isinstance(l, tfnorm.NormalizationLayer)]


def kernel_layers(model):
    return [
        l
        for l in model.layers
        if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D)) and l.name != "logits"
    ]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("placement, count", [("every", 4), ("first", 1), ("input", 1)])
def test_placement_decides_where_the_norms_go(kind, placement, count):
    model = models.build_model(Config("batch", placement), kind, (28, 28, 1), 10, depth=4, width=8)
    norms = norm_layers(model)
    assert len(norms) == count
    assert all(isinstance(n, tfnorm.BatchNormalization) for n in norms)
    hidden = kernel_layers(model)
    assert len(hidden) == 4 and all(not isinstance(l, keras.layers.Add) for l in model.layers)
    # each norm sits right after a hidden layer (or on the input), followed by ReLU
    for n in norms:
        src = n._inbound_nodes[0].parent_nodes[0].operation
        dst = n._outbound_nodes[0].operation
        if placement == "input":
            assert isinstance(src, (keras.layers.Flatten, keras.layers.InputLayer))
            assert dst is hidden[0]
        else:
            assert src in hidden
            assert isinstance(dst, keras.layers.ReLU)
    if placement == "first":
        assert norms[0]._inbound_nodes[0].parent_nodes[0].operation is hidden[0]
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_none_has_no_normalization_and_plain_stack(kind):
    model = models.build_model(Config("none"), kind, (28, 28, 1), 10, depth=5, width=8)
    assert not norm_layers(model)
    assert len(kernel_layers(model)) == 5
    assert len([l for l in model.layers if isinstance(l, keras.layers.ReLU)]) == 5


def test_cnn_downsamples_twice():
    model = models.build_model(Config("none"), "cnn", (28, 28, 1), 10, depth=6, width=8)
    convs = kernel_layers(model)
    assert [c.strides for c in convs] == [(1, 1), (2, 2), (1, 1), (2, 2), (1, 1), (1, 1)]
    assert convs[-1].output.shape[1:3] == (7, 7)


def test_group_norm_gets_groups_that_divide_the_width_and_the_input():
    model = models.build_model(Config("group", "every"), "mlp", (28, 28, 1), 10, depth=2, width=48)
    assert [n.groups for n in norm_layers(model)] == [12, 12]
    model = models.build_model(Config("group", "input"), "mlp", (28, 28, 1), 10, depth=2, width=48)
    assert [n.groups for n in norm_layers(model)] == [28]  # 784 flattened pixels
    model = models.build_model(Config("group", "input"), "cnn", (28, 28, 1), 10, depth=2, width=8)
    assert [n.groups for n in norm_layers(model)] == [1]


def test_every_registry_norm_builds_or_is_refused_before_training():
    shapes = {"mlp": (12, 12, 1), "cnn": (12, 12, 1), "cnn1d": (12, 3)}
    assert set(shapes) == set(models.MODELS)
    refused = set()
    for name in tfnorm.available():
        for kind in models.MODELS:
            x = np.random.default_rng(0).random((4,) + shapes[kind], dtype=np.float32)
            for placement in models.ALL_PLACEMENTS:
                cfg = Config(name, placement)
                try:
                    models.preflight([cfg], kind, shapes[kind], 3, depth=2, width=8)
                except ValueError as err:  # e.g. an image-only layer in the MLP
                    assert str(err).startswith(f"{cfg.label} cannot be built into the {kind} (")
                    assert "\n" not in str(err)
                    refused.add(name)
                    continue
                if placement == "every":
                    model = models.build_model(cfg, kind, shapes[kind], 3, depth=2, width=8)
                    y = np.asarray(model(x, training=True))
                    assert y.shape == (4, 3) and np.isfinite(y).all(), cfg.label
    # the study's own comparisons always build, in both networks
    assert not refused & {"batch", "layer", "group", "rms", "online", "adanorm"}


def test_cosine_config_uses_cosine_layers_in_place_of_dense_and_conv():
    if not models.cosine_available():
        pytest.fail("tfnorm.CosineDense / tfnorm.CosineConv2D are not there yet")
    mlp = models.build_model(Config("cosine", "every"), "mlp", (28, 28, 1), 10, depth=3, width=8)
    names = [type(l).__name__ for l in mlp.layers]
    assert names.count("CosineDense") == 3 and names.count("Dense") == 1  # the classifier
    cnn = models.build_model(Config("cosine", "first"), "cnn", (28, 28, 1), 10, depth=3, width=8)
    names = [type(l).__name__ for l in cnn.layers]
    assert names.count("CosineConv2D") == 1 and names.count("Conv2D") == 2
    assert not norm_layers(mlp) and not norm_layers(cnn)


# -- data -----------------------------------------------------------------------------
def test_prepare_scales_and_subsamples_stratified():
    d = study_data.prepare("mnist10k", train_size=500, test_size=100)
    assert d.x_train.shape == (500, 28, 28, 1) and d.x_test.shape == (100, 28, 28, 1)
    assert d.x_train.dtype == np.float32 and 0.0 == d.x_train.min() and d.x_train.max() == 1.0
    assert np.bincount(d.y_test, minlength=10).min() >= 9  # about 10 of each digit
    assert d.input_shape == (28, 28, 1) and d.num_classes == 10
    again = study_data.prepare("mnist10k", train_size=500, test_size=100)
    np.testing.assert_array_equal(d.x_train, again.x_train)


def test_prepare_reads_a_tfds_dataset_offline(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=30):
        d = study_data.prepare("tfds:cifar10", data_dir=str(tmp_path), train_size=20)
    assert d.x_train.shape == (20, 32, 32, 3) and d.x_test.shape == (30, 32, 32, 3)
    assert d.x_train.dtype == np.float32 and d.x_train.max() <= 1.0 and d.num_classes == 10
    model = models.build_model(Config("batch", "every"), "cnn", d.input_shape, d.num_classes, 2, 8)
    assert model(d.x_train[:2]).shape == (2, 10)


# -- training -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return study_data.prepare("mnist10k", train_size=256, test_size=128)


TINY = train.TrainSettings(model="mlp", depth=2, width=16, epochs=2, batch_size=64)


def test_train_run_records_every_epoch(tiny):
    r = train.train_run(tiny, Config("batch", "every"), seed=0, settings=TINY)
    assert [e["epoch"] for e in r.epochs] == [1, 2]
    for e in r.epochs:
        assert set(e) == {"epoch", "loss", "accuracy", "test_loss", "test_accuracy", "seconds"}
        assert all(math.isfinite(v) for v in e.values())
        assert 0 <= e["test_accuracy"] <= 1 and e["seconds"] > 0
    assert r.epochs[1]["loss"] < r.epochs[0]["loss"]  # it learns
    assert r.params == 784 * 16 + 16 + 4 * 16 + 16 * 16 + 16 + 4 * 16 + 16 * 10 + 10
    assert r.test_accuracy == r.epochs[-1]["test_accuracy"]
    assert r.seconds_per_epoch == r.epochs[1]["seconds"]


def test_seeds_make_runs_repeatable_and_distinct_with_or_without_model_reuse(tiny):
    s = train.TrainSettings(
        model="cnn", depth=1, width=4, epochs=1, batch_size=64, optimizer="nadam"
    )  # Nadam: optimizer state that does not start at 0
    cfg = Config("batch", "every")
    alone = train.train_run(tiny, cfg, seed=3, settings=s)
    cache = train.CompiledModels()
    other = train.train_run(tiny, cfg, seed=4, settings=s, cache=cache)
    first_model = cache.model
    reused = train.train_run(tiny, cfg, seed=3, settings=s, cache=cache)
    assert cache.model is first_model  # the compiled model was reused...
    keys = ("loss", "accuracy", "test_loss", "test_accuracy")
    # ...and seed 3 gave the same run as when trained alone in a fresh model
    np.testing.assert_allclose(
        [reused.epochs[0][k] for k in keys], [alone.epochs[0][k] for k in keys], rtol=1e-6
    )
    assert alone.epochs[0]["loss"] != other.epochs[0]["loss"]
    assert alone.model is not None and reused.model is None


def test_optimizers_and_unknown_optimizer():
    assert isinstance(train.make_optimizer("momentum", 0.1), keras.optimizers.SGD)
    assert isinstance(train.make_optimizer("adamw", 0.1), keras.optimizers.AdamW)
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; valid: .*adam"):
        train.make_optimizer("adamm", 0.1)


def test_progress_one_line_per_run_in_logs_and_redrawn_on_a_terminal():
    cfg = Config("batch", "every")
    res = train.RunResult(
        cfg,
        0,
        10,
        [
            {
                "epoch": 1,
                "loss": 0.5,
                "accuracy": 0.8,
                "test_loss": 0.6,
                "test_accuracy": 0.75,
                "seconds": 1.5,
            }
        ],
    )
    log = io.StringIO()
    p = train.Progress(2, stream=log, dynamic=False)
    prefix = p.start(cfg, 0)
    p.update(prefix, 1, 1, 0.5, {"loss": 0.5, "accuracy": 0.8})
    p.finish(prefix, res)
    assert (
        log.getvalue()
        == "[1/2] batch@every    seed 0  loss 0.5000  test acc 0.7500  1.50 s/epoch\n"
    )
    tty = io.StringIO()
    p = train.Progress(2, stream=tty, dynamic=True)
    prefix = p.start(cfg, 1)
    p.update(prefix, 1, 3, 0.5, {"loss": 0.25, "accuracy": 0.9})
    p.finish(prefix, res)
    out = tty.getvalue()
    assert out.startswith("\r[1/2] batch@every    seed 1  epoch 1/3 [")
    assert "loss 0.2500 acc 0.9000" in out and out.endswith("\n") and out.count("\n") == 1


# -- reports --------------------------------------------------------------------------
def fake_runs():
    rng = np.random.default_rng(0)
    runs = []
    for cfg in (Config("batch", "every"), Config("none")):
        for seed in range(3):
            epochs = [
                {
                    "epoch": i + 1,
                    "loss": float(rng.uniform(0.1, 1)),
                    "accuracy": float(rng.uniform(0.5, 1)),
                    "test_loss": float(rng.uniform(0.1, 1)),
                    "test_accuracy": float(rng.uniform(0.5, 1)),
                    "seconds": float(rng.uniform(0.5, 2)),
                }
                for i in range(4)
            ]
            runs.append(train.RunResult(cfg, seed, 1234, epochs))
    return runs


def test_summary_is_mean_and_sample_sd_over_seeds():
    runs = fake_runs()
    rows = report.summarize(runs)
    assert [r["config"] for r in rows] == ["batch@every", "none"]
    accs = [r.epochs[-1]["test_accuracy"] for r in runs[:3]]
    assert rows[0]["test_accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert rows[0]["test_accuracy_sd"] == pytest.approx(np.std(accs, ddof=1), abs=1e-12)
    losses = [r.epochs[-1]["loss"] for r in runs[3:]]
    assert rows[1]["final_train_loss_mean"] == pytest.approx(np.mean(losses), abs=1e-12)
    spe = [np.median([e["seconds"] for e in r.epochs[1:]]) for r in runs[:3]]
    assert rows[0]["seconds_per_epoch"] == pytest.approx(np.mean(spe), abs=1e-12)
    assert rows[0]["seeds"] == [0, 1, 2]


def test_table_shows_percent_mean_sd_loss_and_time():
    runs = fake_runs()
    rows = report.summarize(runs)
    table = report.format_table(rows).splitlines()
    assert table[0].startswith("| config") and "test accuracy % (mean ± sd)" in table[0]
    assert set(table[1]) <= set("|-:")
    assert len(table) == 4
    m, sd = rows[1]["test_accuracy_mean"] * 100, rows[1]["test_accuracy_sd"] * 100
    assert f"{m:.2f} ± {sd:.2f}" in table[3] and table[3].startswith("| none")
    assert f"{rows[1]['final_train_loss_mean']:.4f}" in table[3]


def test_json_and_csv_hold_every_run_and_epoch(tmp_path):
    runs = fake_runs()
    runs[0].epochs[-1]["loss"] = float("nan")  # a diverged run stays valid JSON
    report.write_json(str(tmp_path / "r.json"), runs, {"epochs": 4}, {"date": "x"})
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["settings"] == {"epochs": 4} and doc["meta"] == {"date": "x"}
    assert len(doc["runs"]) == 6 and all(len(r["epochs"]) == 4 for r in doc["runs"])
    assert doc["runs"][0]["epochs"][-1]["loss"] is None
    assert doc["runs"][4]["config"] == "none" and doc["runs"][4]["placement"] is None
    assert [s["config"] for s in doc["summary"]] == ["batch@every", "none"]
    report.write_csv(str(tmp_path / "r.csv"), runs)
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and tuple(rows[0]) == report.CSV_FIELDS
    assert rows[5]["config"] == "batch@every" and rows[5]["seed"] == "1" and rows[5]["epoch"] == "2"
    assert float(rows[5]["test_accuracy"]) == runs[1].epochs[1]["test_accuracy"]


def test_plot_writes_a_png_with_both_panels(tmp_path):
    import matplotlib.image

    path = plot.plot_study(fake_runs(), str(tmp_path / "s.png"), title="t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 600
    acc = plot.curves(fake_runs(), "test_accuracy")
    assert acc["none"].shape == (3, 4)


# -- the command line -----------------------------------------------------------------
def run_cli(argv, capsys):
    rc = cli.main(["study", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    "argv, bad, valid",
    [
        (["--norms", "batch,bogus"], "'bogus'", "batch"),
        (
            ["--norms", "batch", "--placement", "every,everywhere"],
            "'everywhere'",
            "every, first, input",
        ),
        (["--model", "rnn"], "'rnn'", "mlp, cnn"),
        (["--dataset", "mnist60k"], "'mnist60k'", "mnist10k"),
        (["--optimizer", "adamm"], "'adamm'", "sgd"),
        (["--norms", "batch", "--epochs", "0"], "--epochs 0", ">= 1"),
        (["--norms", ""], "--norms is empty", "batch,none"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, bad, valid, capsys, tmp_path):
    rc, out, err = run_cli([*argv, "--out", str(tmp_path)], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfnorm study: error: ")
    assert bad in lines[0] and valid in lines[0]
    assert "Traceback" not in err + out
    assert not os.listdir(tmp_path)  # nothing trained, nothing written


def test_tfds_name_not_available_offline_suggests_data_dir_or_the_default(capsys, tmp_path):
    rc, out, err = run_cli(
        [
            "--dataset",
            "tfds:mnist",
            "--data-dir",
            str(tmp_path / "none"),
            "--norms",
            "none",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert "not available offline" in line and "--data-dir" in line and "mnist10k" in line


def test_unknown_tfds_name_exit_code_2(capsys, tmp_path):
    rc, _, err = run_cli(
        [
            "--dataset",
            "tfds:no_such_dataset_zz",
            "--data-dir",
            str(tmp_path),
            "--norms",
            "none",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "no_such_dataset_zz" in err


@pytest.mark.slow
def test_unknown_norm_in_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tfnorm", "study", "--norms", "bacth"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert our_lines(proc.stderr) == [
        "tfnorm study: error: unknown norm 'bacth'; valid: " + ", ".join(models.valid_norms())
    ]
    assert proc.stdout == ""


@pytest.mark.slow
def test_end_to_end_python_m_tfnorm_study(tmp_path):
    out = tmp_path / "study"
    argv = [
        sys.executable,
        "-m",
        "tfnorm",
        "study",
        "--norms",
        "batch,none",
        "--placement",
        "first",
        "--depth",
        "2",
        "--width",
        "16",
        "--train-size",
        "300",
        "--test-size",
        "100",
        "--epochs",
        "2",
        "--seeds",
        "2",
        "--batch-size",
        "50",
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        argv,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not our_lines(proc.stderr), proc.stderr[-3000:]
    labels = ["batch@first", "none"]
    stdout = proc.stdout
    # one progress line per run, then the table
    assert len(re.findall(r"^\[[1-4]/4\] ", stdout, flags=re.M)) == 4
    table = [ln for ln in stdout.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(labels)
    for label, row in zip(labels, table[1:]):
        assert row.startswith(f"| {label} ")
        assert re.search(r"\d+\.\d\d ± \d+\.\d\d", row)
    doc = json.loads((out / "results.json").read_text())["experiments"]["compare"]
    assert doc["settings"]["configs"] == labels and doc["settings"]["seeds"] == [0, 1]
    assert doc["meta"]["command"].startswith("tfnorm study --norms batch,none --placement")
    assert len(doc["runs"]) == 4 and all(len(r["epochs"]) == 2 for r in doc["runs"])
    for r in doc["runs"]:
        assert 0 <= r["test_accuracy"] <= 1 and r["final_train_loss"] > 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["config"] for r in rows} == set(labels)
    with open(out / "study.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the table's numbers are the JSON's
    s0 = doc["summary"][0]
    assert f"{100 * s0['test_accuracy_mean']:.2f} ± {100 * s0['test_accuracy_sd']:.2f}" in table[1]


def test_study_is_a_registered_subcommand():
    assert "study" in cli.SUBCOMMANDS
    parser = cli.build_parser()
    args = parser.parse_args(["study"])
    assert args.norms is None and args.placement is None and args.experiment is None
    assert args.dataset == "mnist10k" and not args.full
    from tfnorm.study import cli as study_cli

    assert study_cli.experiments_of(args) == ["headline"]
    assert study_cli.experiments_of(parser.parse_args(["study", "--norms", "batch"])) == ["compare"]
    assert study_cli.experiments_of(parser.parse_args(["study", "--placement", "first"])) == [
        "compare"
    ]
    all_ = study_cli.experiments_of(parser.parse_args(["study", "--experiment", "depth,all"]))
    assert all_[0] == "depth" and set(all_) == {
        "headline",
        "depth",
        "gradients",
        "batch-size",
        "statistics",
        "residual",
        "har",
    }
