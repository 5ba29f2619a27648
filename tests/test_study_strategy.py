"""``tfnorm study --strategy mirrored|multiworker``: the study across replicas and workers.

One run with two logical CPU devices and one with two worker processes on
127.0.0.1 train the same tiny study; both split every global batch the same
way (replica k takes slice k) with synchronized batch normalization, so they
must report the same numbers. The test starts and stops every process itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from tests.test_distributed import ROOT, _env, _free_ports
from tfnorm import cli

TINY = [
    "study",
    "--norms",
    "batch",
    "--placement",
    "every",
    "--epochs",
    "2",
    "--seeds",
    "1",
    "--train-size",
    "256",
    "--test-size",
    "128",
    "--batch-size",
    "32",
    "--depth",
    "2",
    "--width",
    "16",
]
TIMEOUT_S = 300


def _run_all(commands, tmp_path):
    procs = []
    for name, argv, env in commands:
        log = open(tmp_path / f"{name}.log", "w")
        procs.append(
            (
                name,
                log,
                subprocess.Popen(
                    [sys.executable, "-m", "tfnorm"] + argv,
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
            )
        )
    deadline = time.monotonic() + TIMEOUT_S
    codes = {}
    try:
        for name, _, proc in procs:
            try:
                codes[name] = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[name] = "timeout"
    finally:
        for _, log, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            log.close()
    return codes


def test_study_under_mirrored_and_multiworker_strategies(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    commands = [
        ("mirrored", TINY + ["--strategy", "mirrored", "--out", str(tmp_path / "m")], _env())
    ]
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        commands.append(
            (
                f"worker{i}",
                TINY + ["--strategy", "multiworker", "--out", str(tmp_path / f"w{i}")],
                _env(TF_CONFIG=tf_config),
            )
        )
    codes = _run_all(commands, tmp_path)
    for name, code in codes.items():
        assert code == 0, f"{name}: {code}\n" + (tmp_path / f"{name}.log").read_text()[-3000:]
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in codes}
    assert "strategy: mirrored, 2 replicas in sync" in logs["mirrored"]
    assert "strategy: multiworker, 2 replicas in sync" in logs["worker0"]
    results = {}
    for name, out, strategy in (
        ("mirrored", "m", "mirrored"),
        ("worker0", "w0", "multiworker"),
        ("worker1", "w1", "multiworker"),
    ):
        with open(tmp_path / out / "results.json") as f:
            doc = json.load(f)["experiments"]["compare"]
        assert doc["settings"]["strategy"] == strategy
        results[name] = {r["config"]: r for r in doc["runs"]}
    assert set(results["mirrored"]) == {"batch@every"}
    for config, run in results["mirrored"].items():
        for other in ("worker0", "worker1"):
            theirs = results[other][config]
            for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
                np.testing.assert_allclose(
                    [e[key] for e in theirs["epochs"]],
                    [e[key] for e in run["epochs"]],
                    rtol=1e-4,
                    atol=1e-6,
                    err_msg=f"{config} {key}: {other} vs mirrored",
                )
        assert np.isfinite([e["loss"] for e in run["epochs"]]).all()


def test_study_rejects_an_unknown_strategy(capsys):
    assert cli.main(TINY + ["--strategy", "ring"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ring'" in err[0] and "mirrored, multiworker" in err[0]


def test_study_batch_size_must_split_over_the_replicas(tmp_path):
    argv = TINY[:]
    argv[argv.index("--batch-size") + 1] = "33"
    proc = subprocess.run(
        [sys.executable, "-m", "tfnorm"]
        + argv
        + ["--strategy", "mirrored", "--out", str(tmp_path)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("tfnorm study: error")]
    assert lines and "--batch-size 33" in lines[0] and "2 replicas" in lines[0]
