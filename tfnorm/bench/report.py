"""Formatting ``tfnorm bench`` results: machine description, table, JSON, goals."""

from __future__ import annotations

import datetime
import os
import platform
from typing import List, Optional


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict:
    import keras
    import tensorflow as tf

    import tfnorm

    gpus = []
    for dev in tf.config.list_physical_devices("GPU"):
        try:
            name = tf.config.experimental.get_device_details(dev).get("device_name", dev.name)
        except Exception:  # pragma: no cover - depends on the driver
            name = dev.name
        gpus.append(name)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": cores,
        "gpus": gpus,
        "device": gpus[0] if gpus else "CPU",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tfnorm": tfnorm.__version__,
    }


def _fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def _shape(row) -> str:
    return "x".join(str(d) for d in row["shape"])


COLUMNS = ("layer", "vs", "shape", "dtype", "compile", "mode",
           "tfnorm ms", "base ms", "ratio", "goal", "floor ms", "of floor", "GB/s")


def table(rows: List[dict]) -> str:
    """A fixed-width table, one row per configuration."""
    body = []
    for r in rows:
        goal = "-"
        if r["goal_ratio"] is not None:
            goal = f"<={r['goal_ratio']:g} " + ("ok" if r["goal_met"] else "MISS")
        body.append((
            r["layer"], r["baseline"] or "-", _shape(r),
            {"float32": "fp32", "bfloat16": "bf16"}.get(r["dtype"], r["dtype"]),
            "XLA" if r["xla"] else "no XLA", r["mode"],
            _fmt(r["tfnorm_ms"]), _fmt(r["baseline_ms"]), _fmt(r["ratio"]), goal,
            _fmt(r["floor_ms"]), _fmt(r["floor_fraction"]), _fmt(r["gbps"], ".1f"),
        ))
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c)
              for i, c in enumerate(COLUMNS)]
    numeric = set(range(6, len(COLUMNS))) - {9}

    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(COLUMNS), line(["-" * w for w in widths])]
    out.extend(line(b) for b in body)
    return "\n".join(out)


def goals(rows: List[dict]) -> List[str]:
    """One line per goal: how many rows meet it."""
    lines = []
    with_goal = [r for r in rows if r["goal_ratio"] is not None]
    by_layer = {}
    for r in with_goal:
        by_layer.setdefault((r["layer"], r["baseline"], r["goal_ratio"]), []).append(r)
    for (layer, base, goal), rs in by_layer.items():
        met = sum(1 for r in rs if r["goal_met"])
        worst = max(rs, key=lambda r: r["ratio"])
        lines.append(f"{layer} <= {goal:g}x {base}: {met}/{len(rs)} rows "
                     f"(worst {worst['ratio']:.2f}: {_shape(worst)} {worst['dtype']} "
                     f"{'XLA' if worst['xla'] else 'no XLA'} {worst['mode']})")
    for mode, need in (("forward", 0.8), ("train", 0.5)):
        rs = [r for r in rows if r["mode"] == mode and r.get("floor_goal", True)]
        if rs:
            met = sum(1 for r in rs if r["floor_fraction"] >= need)
            lines.append(f"{mode} >= {need:g} of the floor: {met}/{len(rs)} rows "
                         "(layers without a matmul or convolution)")
    return lines


def text(meta: dict, rows: List[dict], skipped: List[dict], command: Optional[str] = None) -> str:
    head = [
        f"tfnorm bench  {meta['date']}",
        f"machine: {meta['cpu']}, {meta['cores']} cores; device: {meta['device']}; "
        f"TensorFlow {meta['tensorflow']}, Keras {meta['keras']}, tfnorm {meta['tfnorm']}",
    ]
    if command:
        head.append(f"command: {command}")
    s = meta["settings"]
    head.append(
        f"median of {s['repeats']} interleaved runs after {s['warmup']} warm-up; "
        "ratio = tfnorm / baseline (same run); floor = x*2 under the same compile setting "
        f"(train: x{s['train_floor_passes']}); of floor = floor / tfnorm; "
        "GB/s counts x and y (train: also dy and dx) once")
    parts = ["\n".join(head), "", table(rows)]
    g = goals(rows)
    if g:
        parts += ["", "goals:"] + [f"  {x}" for x in g]
    if skipped:
        parts += ["", "skipped:"]
        for s_ in skipped:
            where = " ".join(str(s_[k]) for k in ("shape", "dtype", "compile", "mode") if k in s_)
            parts.append(f"  {s_['layer']}{' ' + where if where else ''}: {s_['reason']}")
    return "\n".join(parts)
