"""``tfnorm demo``: its summary is computed from the run, and the run shows the lag it names."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tfnorm import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_summary_names_the_lag_only_when_recomputing_closes_a_gap():
    lag = demo.summary([("batch", 0.2, 0.9, 0.99)], 100)
    assert "0.99**100 = 36.6%" in lag and "moving-average lag" in lag
    caught_up = demo.summary([("batch", 0.93, 0.94, 0.9)], 1000)
    assert "caught up" in caught_up and "lag" not in caught_up
    assert "no moving averages" in demo.summary([("layer", 0.9, None, None)], 10)


@pytest.mark.slow
def test_demo_run_shows_batch_norms_moving_average_lag():
    proc = subprocess.run(
        [sys.executable, "-m", "tfnorm", "demo", "--norms", "batch,group"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    batch = re.search(
        r"^batch: ([\d.]+)% in inference mode with its moving averages, ([\d.]+)% once",
        proc.stdout,
        re.M,
    )
    assert batch, proc.stdout
    with_moving, recomputed = float(batch.group(1)), float(batch.group(2))
    group = float(re.search(r"^group: ([\d.]+)% \(no moving averages", proc.stdout, re.M).group(1))
    # one epoch (125 steps at momentum 0.99) leaves the moving averages far from the statistics
    assert recomputed > with_moving + 30, proc.stdout
    assert "0.99**125 = 28.5%" in proc.stdout and "moving-average lag" in proc.stdout
    # the network itself learned: recomputed BN is as good as group normalization, within 5 points
    assert recomputed > 85 and abs(recomputed - group) < 5, proc.stdout
