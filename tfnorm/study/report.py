"""Summaries of a study: the table on stdout, ``results.json`` and ``results.csv``."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Dict, List, Optional, Sequence

from tfnorm.study.train import RunResult

CSV_FIELDS = ("config", "norm", "placement", "seed", "epoch", "loss", "accuracy",
              "test_loss", "test_accuracy", "seconds")


def mean_sd(values: Sequence[float]):
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value).

    >>> mean_sd([0.9, 0.92, 0.94])
    (0.92, 0.02)
    """
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return round(m, 12), 0.0
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return round(m, 12), round(math.sqrt(var), 12)


def summarize(runs: Sequence[RunResult]) -> List[Dict]:
    """One row per configuration (in first-seen order), aggregated over seeds."""
    groups: Dict[str, List[RunResult]] = {}
    for r in runs:
        groups.setdefault(r.config.label, []).append(r)
    rows = []
    for label, rs in groups.items():
        acc_m, acc_sd = mean_sd([r.test_accuracy for r in rs])
        loss_m, loss_sd = mean_sd([r.final_train_loss for r in rs])
        spe_m, _ = mean_sd([r.seconds_per_epoch for r in rs])
        rows.append({
            "config": label,
            "norm": rs[0].config.norm,
            "placement": rs[0].config.placement,
            "seeds": [r.seed for r in rs],
            "params": rs[0].params,
            "test_accuracy_mean": acc_m,
            "test_accuracy_sd": acc_sd,
            "final_train_loss_mean": loss_m,
            "final_train_loss_sd": loss_sd,
            "seconds_per_epoch": spe_m,
        })
    return rows


def _pct(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{100 * v:.2f}"


def format_table(rows: Sequence[Dict]) -> str:
    """A Markdown table: config, test accuracy (%) mean ± sd, final train loss, s/epoch."""
    head = ("config", "params", "test accuracy % (mean ± sd)", "final train loss", "s/epoch")
    body = []
    for r in rows:
        n = len(r["seeds"])
        acc = f"{_pct(r['test_accuracy_mean'])} ± {_pct(r['test_accuracy_sd'])}" if n > 1 \
            else _pct(r["test_accuracy_mean"])
        loss = r["final_train_loss_mean"]
        body.append((r["config"], f"{r['params']:,}", acc,
                     "nan" if not math.isfinite(loss) else f"{loss:.4f}",
                     f"{r['seconds_per_epoch']:.2f}"))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    right = (False, True, True, True, True)

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w)
                                 for c, w, r in zip(cells, widths, right)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2))
                         for w, r in zip(widths, right)) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def _finite(obj):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str, runs: Sequence[RunResult], settings: Dict,
               meta: Optional[Dict] = None) -> str:
    """``results.json``: settings, machine, per-configuration summary, every run and epoch."""
    doc = {
        "settings": settings,
        "meta": meta or {},
        "summary": summarize(runs),
        "runs": [r.to_dict() for r in runs],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_finite(doc), f, indent=1, allow_nan=False)
    return path


def write_csv(path: str, runs: Sequence[RunResult]) -> str:
    """``results.csv``: one row per run per epoch."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in runs:
            for e in r.epochs:
                w.writerow({"config": r.config.label, "norm": r.config.norm,
                            "placement": r.config.placement or "", "seed": r.seed,
                            **{k: e[k] for k in CSV_FIELDS[4:]}})
    return path


def machine_info() -> Dict:
    """Where the numbers come from: date, CPU, versions."""
    import datetime
    import platform

    import keras
    import tensorflow as tf

    import tfnorm

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tfnorm": tfnorm.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }
