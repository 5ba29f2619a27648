"""Summaries of a study: the table on stdout, ``results.json`` and ``results.csv``."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Dict, List, Optional, Sequence

from tfnorm.study import verdict
from tfnorm.study.train import RunResult

CSV_FIELDS = (
    "config",
    "norm",
    "placement",
    "seed",
    "epoch",
    "loss",
    "accuracy",
    "test_loss",
    "test_accuracy",
    "seconds",
)


def mean_sd(values: Sequence[float]):
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value), rounded to
    12 digits (:func:`tfnorm.study.verdict.mean_sd` unrounded).

    >>> mean_sd([0.9, 0.92, 0.94])
    (0.92, 0.02)
    """
    m, sd = verdict.mean_sd(values)
    if not math.isfinite(m):
        return m, sd
    return round(m, 12), round(sd, 12)


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
        rows.append(
            {
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
            }
        )
    return rows


def _pct(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{100 * v:.2f}"


def format_table(rows: Sequence[Dict]) -> str:
    """A Markdown table: config, test accuracy (%) mean ± sd, final train loss, s/epoch."""
    head = ("config", "params", "test accuracy % (mean ± sd)", "final train loss", "s/epoch")
    body = []
    for r in rows:
        n = len(r["seeds"])
        acc = (
            f"{_pct(r['test_accuracy_mean'])} ± {_pct(r['test_accuracy_sd'])}"
            if n > 1
            else _pct(r["test_accuracy_mean"])
        )
        loss = r["final_train_loss_mean"]
        body.append(
            (
                r["config"],
                f"{r['params']:,}",
                acc,
                "nan" if not math.isfinite(loss) else f"{loss:.4f}",
                f"{r['seconds_per_epoch']:.2f}",
            )
        )
    return markdown_table(head, body)


def _finite(obj):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(
    path: str, runs: Sequence[RunResult], settings: Dict, meta: Optional[Dict] = None
) -> str:
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
                w.writerow(
                    {
                        "config": r.config.label,
                        "norm": r.config.norm,
                        "placement": r.config.placement or "",
                        "seed": r.seed,
                        **{k: e[k] for k in CSV_FIELDS[4:]},
                    }
                )
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


# -- the experiments' sections -------------------------------------------------------------
RESULTS_CSV_FIELDS = (
    "experiment",
    "config",
    "norm",
    "placement",
    "model",
    "depth",
    "width",
    "residual",
    "batch_size",
    "dataset",
    "seed",
    "epoch",
    "loss",
    "accuracy",
    "test_loss",
    "test_accuracy",
    "seconds",
)
GRADIENT_CSV_FIELDS = (
    "experiment",
    "config",
    "model",
    "depth",
    "width",
    "batch_size",
    "seed",
    "layer",
    "grad_norm",
    "batch_dependence",
)


def markdown_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table, first column left-aligned, the others right-aligned.

    >>> print(markdown_table(["a", "b"], [["x", "1"]]))
    | a | b |
    |---|--:|
    | x | 1 |
    """
    widths = [
        max(len(str(h)), *(len(str(b[i])) for b in body)) if body else len(str(h))
        for i, h in enumerate(head)
    ]

    def line(cells):
        return (
            "| "
            + " | ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(head), sep] + [line(b) for b in body])


def _ms(m, sd, scale=100.0, digits=1) -> str:
    if m is None or not math.isfinite(m):
        return "nan"
    return f"{scale * m:.{digits}f} ± {scale * (sd or 0.0):.{digits}f}"


def _pivot(rows, row_key, col_key, cell) -> str:
    cols = list(dict.fromkeys(r[col_key] for r in rows))
    labels = list(dict.fromkeys(r[row_key] for r in rows))
    index = {(r[row_key], r[col_key]): r for r in rows}
    body = [
        [label] + [cell(index[(label, c)]) if (label, c) in index else "" for c in cols]
        for label in labels
    ]
    return markdown_table([row_key] + [f"{col_key} {c}" for c in cols], body)


def section_tables(name: str, section: Dict) -> List[str]:
    """The tables of one experiment's section (Markdown)."""
    acc = lambda r: _ms(r["test_accuracy_mean"], r["test_accuracy_sd"])  # noqa: E731
    if name == "compare":
        return [format_table(section["summary"])]
    if name == "headline":
        rows = section["summary"]
        body = [
            [
                r["config"],
                str(r["depth"]),
                _ms(r["epoch1_accuracy_mean"], r["epoch1_accuracy_sd"]),
                acc(r),
                str(len(r["seeds"])),
            ]
            for r in rows
        ]
        epochs = rows[0]["epochs"] if rows else 0
        t1 = markdown_table(
            [
                "config",
                "depth",
                "test acc % after 1 epoch",
                f"after {epochs} epoch{'s' if epochs != 1 else ''}",
                "seeds",
            ],
            body,
        )
        g = section.get("gradients", [])
        t2 = markdown_table(
            [
                "config (at init)",
                "depth",
                "gradient growth per layer",
                "batch dependence of the deepest features",
            ],
            [
                [
                    r["config"],
                    str(r["depth"]),
                    _ms(r["growth_mean"], r["growth_sd"], 1, 3),
                    _ms(r["sensitivity_mean"], r["sensitivity_sd"], 1, 3),
                ]
                for r in g
            ],
        )
        return [t1, t2]
    if name in ("depth",):
        return [_pivot(section["summary"], "config", "depth", acc)]
    if name == "batch-size":
        return [_pivot(section["summary"], "config", "batch_size", acc)]
    if name == "residual":
        rows = [
            dict(r, residual="with skips" if r["residual"] else "plain") for r in section["summary"]
        ]
        return [_pivot(rows, "config", "residual", acc)]
    if name == "har":
        return [_pivot(section["summary"], "config", "depth", acc)]
    if name == "gradients":
        deep = max((r["depth"] for r in section["growth"]), default=None)
        rows = [r for r in section["growth"] if r["depth"] == deep]
        t1 = _pivot(
            rows, "config", "batch_size", lambda r: _ms(r["growth_mean"], r["growth_sd"], 1, 3)
        )
        t2 = _pivot(
            section["sensitivity"],
            "config",
            "depth",
            lambda r: _ms(r["deepest_mean"], r["deepest_sd"], 1, 3),
        )
        return [
            f"gradient growth per layer at depth {deep}:\n" + t1,
            "batch dependence of the deepest features:\n" + t2,
        ]
    if name == "statistics":
        from tfnorm.study.experiments import EVAL_MODES

        heads = ["config"] + list(EVAL_MODES) + ["train acc (recomputed)"]
        body = [
            [r["config"]]
            + [_ms(r[m]["mean"], r[m]["sd"]) for m in EVAL_MODES]
            + [
                _ms(
                    r["train accuracy (recomputed)"]["mean"], r["train accuracy (recomputed)"]["sd"]
                )
            ]
            for r in section["evaluations"]
        ]
        return [markdown_table(heads, body)]
    return []


def format_section(name: str, section: Dict) -> str:
    """What the command prints for one experiment: question, tables, findings, answer."""
    lines = [f"## {name}: {section.get('question', '')}", ""]
    for t in section_tables(name, section):
        lines += [t, ""]
    if section.get("findings"):
        lines.append("findings (" + section.get("rule", "") + "):")
        for f in section["findings"]:
            lines.append(f"- [{'x' if f['holds'] else ' '}] {f['claim']}")
        lines.append("")
    if section.get("answer"):
        lines += [f"answer: {section['answer']}", ""]
    return "\n".join(lines)


def read_results(path: str) -> Dict:
    """An existing ``results.json`` (or an empty document when absent or of another shape)."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {"experiments": {}}
    if not isinstance(doc, dict) or not isinstance(doc.get("experiments"), dict):
        return {"experiments": {}}
    return doc


def _csv_rows(name: str, section: Dict):
    s = section.get("settings", {})
    for r in section.get("runs", []):
        if r.get("kind", "train") != "train":
            continue
        for e in r["epochs"]:
            yield {
                "experiment": name,
                "config": r["config"],
                "norm": r["norm"],
                "placement": r.get("placement") or "",
                "model": r.get("model", s.get("model")),
                "depth": r.get("depth", s.get("depth")),
                "width": r.get("width", s.get("width")),
                "residual": r.get("residual", s.get("residual", False)),
                "batch_size": r.get("batch_size", s.get("batch_size")),
                "dataset": r.get("dataset", s.get("dataset")),
                "seed": r["seed"],
                **{k: e[k] for k in CSV_FIELDS[4:]},
            }


def write_results(out: str, sections: Dict[str, Dict], meta: Dict) -> List[str]:
    """Writes (merging into an existing one) ``results.json``, and ``results.csv`` (every
    training run, every epoch) and ``gradients.csv`` (every probe, every layer) of all the
    sections it then holds. Returns the paths written."""
    json_path = os.path.join(out, "results.json")
    doc = read_results(json_path)
    doc["experiments"].update(sections)
    doc["meta"] = meta
    os.makedirs(out, exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(_finite(doc), f, indent=1, allow_nan=False)
    paths = [json_path]
    csv_path = os.path.join(out, "results.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULTS_CSV_FIELDS)
        w.writeheader()
        for name, section in doc["experiments"].items():
            for row in _csv_rows(name, section):
                w.writerow(row)
    paths.append(csv_path)
    probes = [
        (name, r)
        for name, section in doc["experiments"].items()
        for r in section.get("runs", [])
        if r.get("kind") == "probe"
    ]
    if probes:
        grad_path = os.path.join(out, "gradients.csv")
        with open(grad_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=GRADIENT_CSV_FIELDS)
            w.writeheader()
            for name, r in probes:
                sens = r.get("sensitivity") or []
                for b, norms in r["grad_norms"].items():
                    for i, g in enumerate(norms):
                        w.writerow(
                            {
                                "experiment": name,
                                "config": r["config"],
                                "model": r["model"],
                                "depth": r["depth"],
                                "width": r["width"],
                                "batch_size": b,
                                "seed": r["seed"],
                                "layer": i + 1,
                                "grad_norm": g,
                                "batch_dependence": sens[i]
                                if int(b) == r["batch_size"] and i < len(sens)
                                else "",
                            }
                        )
        paths.append(grad_path)
    return paths
