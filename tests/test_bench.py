"""``tfnorm bench`` runs end to end and prints well-formed output (no timing assertions).

The command runs in a subprocess, as a user would start it, on tiny tensors
(the hidden ``--tiny`` option) so that the whole file takes seconds.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from tfnorm import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROW_FIELDS = {
    "layer": str,
    "short_name": str,
    "shape_name": str,
    "shape": list,
    "dtype": str,
    "compile": str,
    "xla": bool,
    "mode": str,
    "tfnorm_ms": float,
    "floor_ms": float,
    "floor_fraction": float,
    "gbps": float,
    "repeats": int,
}
OPTIONAL_FIELDS = (
    "baseline",
    "baseline_ms",
    "ratio",
    "goal_ratio",
    "goal_met",
    "baseline_floor_fraction",
    "baseline_gbps",
    "twin",
    "peers",
    "fastest_peer",
    "peer_ratio",
)


def _bench(*args, timeout=240):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tfnorm",
            "bench",
            "--quick",
            "--tiny",
            "--repeats",
            "2",
            "--warmup",
            "1",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = _bench("--layers", "batch,group", "--save", str(path))
    return proc, path


def test_table_is_well_formed(table_run):
    proc, _ = table_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("tfnorm bench")
    assert any(line.startswith("machine:") and "cores" in line for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("layer "))
    for column in ("tfnorm ms", "base ms", "ratio", "floor ms", "of floor", "GB/s"):
        assert column in lines[header]
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    rows = []
    for line in lines[header + 2 :]:
        if not line.strip():
            break
        rows.append(line.split())
    # 2 layers x (forward, train) x (no XLA, XLA), fp32 only under --quick
    assert len(rows) == 8
    assert {r[0] for r in rows} == {"BatchNormalization", "GroupNormalization"}
    for r in rows:
        for cell in r[-3:]:  # floor ms, of floor, GB/s
            float(cell)
        assert r[-4].startswith("<=") or r[-4] == "-"  # the goal, without a verdict
        assert "MISS" not in r and "ok" not in r
    # --quick: a warning instead of ok/MISS marks; the goals are listed, not judged
    warning = next(line for line in lines if line.startswith("warning: --quick: 2 repeats"))
    assert "noise" in warning and "not judged" in warning
    assert "goals (not judged, see the warning):" in lines
    # progress went to stderr, one line per configuration
    assert "[  8/8]" in proc.stderr


def test_saved_json_matches_the_table(table_run):
    proc, path = table_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(path.read_text())
    assert len(doc["rows"]) == 8
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu"]


def test_json_output(tmp_path):
    proc = _bench("--layers", "rms", "--modes", "train", "--compile", "xla", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)  # stdout holds nothing but the JSON document
    assert set(doc) >= {"machine", "command", "rows", "skipped", "warnings"}
    assert doc["warnings"] and doc["warnings"][0].startswith("warning: --quick")
    assert "warning: --quick" in proc.stderr  # the JSON on stdout stays clean
    for key in ("date", "cpu", "cores", "device", "tensorflow", "keras", "tfnorm", "settings"):
        assert key in doc["machine"]
    assert doc["machine"]["settings"]["quick"] is True
    (row,) = doc["rows"]
    for key, kind in ROW_FIELDS.items():
        assert isinstance(row[key], kind), (key, row[key])
    for key in OPTIONAL_FIELDS:
        assert key in row
    assert row["layer"] == "RMSNormalization" and row["baseline"] == "keras"
    assert row["mode"] == "train" and row["xla"] is True and row["dtype"] == "float32"
    assert row["tfnorm_ms"] > 0 and row["baseline_ms"] > 0 and row["floor_ms"] > 0
    assert row["ratio"] == pytest.approx(row["tfnorm_ms"] / row["baseline_ms"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["bench", "--shapes", "huge"], "--shapes"),
        (["bench", "--dtypes", "int8"], "--dtypes"),
        (["bench", "--repeats", "0"], "--repeats"),
    ],
)
def test_bad_options_are_one_line_errors(argv, needle, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_unknown_layer_is_a_usage_error(capsys):
    assert cli.main(["bench", "--layers", "nosuchnorm", "--tiny"]) == 2
    err = capsys.readouterr().err
    assert "nosuchnorm" in err and "batch" in err


def _meta(quick, repeats):
    return {
        "date": "2026-01-01",
        "cpu": "test CPU",
        "cores": 2,
        "device": "CPU",
        "load": 3.0,
        "tensorflow": "2.21",
        "keras": "3",
        "tfnorm": "0",
        "settings": {"quick": quick, "repeats": repeats, "warmup": 1, "train_floor_passes": 3},
    }


def _goal_row(ratio, goal=0.8):
    return {
        "layer": "LayerNormalization",
        "baseline": "keras",
        "shape": [16, 256, 1024],
        "dtype": "float32",
        "xla": False,
        "mode": "forward",
        "tfnorm_ms": 4.0 * ratio,
        "baseline_ms": 4.0,
        "ratio": ratio,
        "goal_ratio": goal,
        "goal_met": ratio <= goal,
        "floor_ms": 1.0,
        "floor_fraction": 1.0 / (4.0 * ratio),
        "gbps": 1.0,
        "floor_goal": True,
    }


@pytest.mark.parametrize(
    "quick, repeats, judged",
    [
        (False, 15, True),
        (True, 5, False),
        (True, 15, False),
        (False, 5, False),
    ],
)
def test_goals_are_judged_only_by_full_runs(quick, repeats, judged):
    from tfnorm.bench import report

    rows = [_goal_row(0.5), _goal_row(0.95)]
    out = report.text(_meta(quick, repeats), rows, [])
    table_lines = [line for line in out.splitlines() if line.startswith("LayerNormalization")]
    assert len(table_lines) == 2
    if judged:
        assert "warning:" not in out
        assert "<=0.8 ok" in table_lines[0] and "<=0.8 MISS" in table_lines[1]
        assert "LayerNormalization <= 0.8x keras: 1/2 rows (worst 0.95" in out
    else:
        verdicts = [line for line in out.splitlines() if not line.startswith("warning: ")]
        assert not any("MISS" in line or " ok" in line for line in verdicts)
        warning = next(line for line in out.splitlines() if line.startswith("warning: "))
        assert f"{'--quick' if quick else f'--repeats {repeats}'}: {repeats} repeats" in warning
        assert "load 3.0 on 2 cores" in warning and "noise" in warning
        assert "LayerNormalization <= 0.8x keras: ratios 0.50-0.95 over 2 rows" in out


def test_a_sample_starts_with_one_untimed_call():
    """The first call of a sample (caches still holding the other timers' data) is not timed."""
    import time

    from tfnorm.bench import sampling

    calls = []

    def fn():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)  # a slow first call: were it timed, the sample would be >= 16 ms

    seconds = sampling.sample(fn, 3, lambda out: out)
    assert len(calls) == 4
    assert seconds < 0.01


def _bench_command(*args):
    """``tfnorm bench ARGS`` as given (without the quick, tiny settings of :func:`_bench`)."""
    return subprocess.run(
        [sys.executable, "-m", "tfnorm", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_saved_run_renders_as_markdown_computed_from_its_rows(table_run):
    proc, path = table_run
    assert proc.returncode == 0, proc.stderr
    rendered = _bench_command("--from", str(path), "--markdown")
    assert rendered.returncode == 0, rendered.stderr
    lines = rendered.stdout.strip().splitlines()
    doc = json.load(open(path))
    assert lines[0].startswith(f"`{doc['command']}`, {doc['machine']['date'][:10]}")
    table = [line for line in lines if line.startswith("|")]
    header, separator, body = _cells(table[0]), _cells(table[1]), table[2:]
    assert len(separator) == len(header) == 9 and set(separator) == {"---"}
    assert all(len(_cells(row)) == len(header) for row in body)
    # each cell is tfnorm / baseline = ratio of the saved row
    groups = {}
    for r in doc["rows"]:
        groups.setdefault((r["layer"], r["dtype"]), {})[(r["compile"], r["mode"])] = r
    assert len(body) == len(groups)
    for row in body:
        cells = _cells(row)
        by = groups[(cells[0], {"fp32": "float32", "bf16": "bfloat16"}[cells[3]])]
        r = by[("xla", "forward")]
        assert cells[6].endswith(f"= **{r['ratio']:.2f}×**"), (cells[6], r["ratio"])
        train = by[("xla", "train")]
        assert cells[8] == f"{r['floor_fraction']:.2f} / {train['floor_fraction']:.2f}"


def test_from_refuses_run_flags_and_a_file_it_cannot_read(table_run, tmp_path):
    _, path = table_run
    proc = _bench_command("--from", str(path), "--layers", "group")
    assert proc.returncode == 2 and "--from renders a saved run; --layers" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    proc = _bench_command("--from", str(bad))
    assert proc.returncode == 2 and "not a run saved by tfnorm bench --save" in proc.stderr


@pytest.mark.parametrize(
    "saved", sorted(glob.glob(os.path.join(ROOT, "docs", "bench", "*.json"))), ids=os.path.basename
)
def test_readme_benchmark_tables_are_the_rendered_saved_runs(saved):
    """The README's benchmark tables are ``tfnorm bench --from RUN --markdown``, verbatim."""
    proc = _bench_command("--from", saved, "--markdown")
    assert proc.returncode == 0, proc.stderr[-3000:]
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert f"`tfnorm bench --from docs/bench/{os.path.basename(saved)} --markdown`" in readme
    assert proc.stdout.strip() in readme
