"""Formatting ``tfnorm bench`` results: machine description, table, JSON, goals."""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
from typing import List, Optional, Sequence


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
        "load": load_average(),
    }


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - not on Unix
        return None


def _fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def _shape(row) -> str:
    return "x".join(str(d) for d in row["shape"])


COLUMNS = (
    "layer",
    "vs",
    "shape",
    "dtype",
    "compile",
    "mode",
    "tfnorm ms",
    "base ms",
    "ratio",
    "goal",
    "floor ms",
    "of floor",
    "GB/s",
)
# Fewer repeats than this (or --quick) and a goal's ok/MISS would judge noise.
MIN_JUDGED_REPEATS = 10
DTYPE_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def render(columns, body, left=()) -> str:
    """A fixed-width table; columns whose index is in ``left`` are left-aligned, the rest right."""
    widths = [
        max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)
    ]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(b) for b in body)
    return "\n".join(out)


def judged(settings: dict, min_repeats: int = MIN_JUDGED_REPEATS) -> bool:
    """Whether goals get an ok/MISS verdict: not under ``--quick``, not with few repeats."""
    return not settings.get("quick") and settings.get("repeats", 0) >= min_repeats


GOALS_NOT_JUDGED = "goals are listed but not judged (no ok/MISS)"
FULL_RUN = "`tfnorm bench --dtypes float32 --repeats 11`"


def quick_warning(
    meta: dict,
    min_repeats: int = MIN_JUDGED_REPEATS,
    consequence: str = GOALS_NOT_JUDGED,
    remedy: str = FULL_RUN,
) -> Optional[str]:
    """The warning printed instead of ok/MISS marks; None when the run is long enough to judge.

    >>> meta = {"cores": 2, "load": 1.5, "settings": {"quick": True, "repeats": 5}}
    >>> print(quick_warning(meta))  # doctest: +NORMALIZE_WHITESPACE
    warning: --quick: 5 repeats per configuration on a machine with load 1.5 on 2 cores
    measure the machine's noise as much as the layers, so goals are listed but not judged
    (no ok/MISS). For figures to rely on: at least 10 repeats without --quick, e.g.
    `tfnorm bench --dtypes float32 --repeats 11`, on an idle machine.
    >>> quick_warning({"cores": 2, "settings": {"quick": False, "repeats": 15}}) is None
    True
    """
    s = meta["settings"]
    if judged(s, min_repeats):
        return None
    load = meta.get("load")
    where = (
        f"a machine with load {load:.1f} on {meta['cores']} cores"
        if load is not None
        else f"{meta['cores']} cores"
    )
    why = "--quick" if s.get("quick") else f"--repeats {s['repeats']}"
    return (
        f"warning: {why}: {s['repeats']} repeats per configuration on {where} measure "
        f"the machine's noise as much as the layers, so {consequence}. For figures to "
        f"rely on: at least {min_repeats} repeats without --quick, e.g. {remedy}, on an "
        "idle machine."
    )


def _goal_cell(r, judge: bool) -> str:
    if r["goal_ratio"] is None:
        return "-"
    if not judge:
        return f"<={r['goal_ratio']:g}"
    return f"<={r['goal_ratio']:g} " + ("ok" if r["goal_met"] else "MISS")


def table(rows: List[dict], peers: Sequence[str] = (), judge: bool = True) -> str:
    """A fixed-width table, one row per configuration; with ``peers``, their columns too."""
    columns = list(COLUMNS)
    if peers:
        columns += [f"{p} ms" for p in peers] + ["fastest", "/fastest"]
    body = []
    for r in rows:
        cells = [
            r["layer"],
            r["baseline"] or "-",
            _shape(r),
            DTYPE_SHORT.get(r["dtype"], r["dtype"]),
            "XLA" if r["xla"] else "no XLA",
            r["mode"],
            _fmt(r["tfnorm_ms"]),
            _fmt(r["baseline_ms"]),
            _fmt(r["ratio"]),
            _goal_cell(r, judge),
            _fmt(r["floor_ms"]),
            _fmt(r["floor_fraction"]),
            _fmt(r["gbps"], ".1f"),
        ]
        if peers:
            results = r.get("peers", {})
            for p in peers:
                res = results.get(p)
                cells.append("-" if res is None else "n/a" if "error" in res else _fmt(res["ms"]))
            cells += [r.get("fastest_peer") or "-", _fmt(r.get("peer_ratio"))]
        body.append(cells)
    return render(columns, body, left={0, 1, 2, 3, 4, 5, 9, len(COLUMNS) + len(peers)})


def floor_table(rows: List[dict], peers: Sequence[str]):
    """``x * 2`` per framework on each (shape, dtype), medians over the forward rows:
    ``(columns, body)``."""
    groups: dict = {}
    for r in rows:
        if r["mode"] != "forward" or not r.get("peers"):
            continue
        g = groups.setdefault((_shape(r), r["dtype"]), {})
        g.setdefault("tf XLA" if r["xla"] else "tf no XLA", []).append(r["floor_ms"])
        for p, res in r["peers"].items():
            if res.get("floor_ms") is not None:
                g.setdefault(p, []).append(res["floor_ms"])
    columns = ["shape", "dtype", "tf no XLA", "tf XLA"] + list(peers)
    body = []
    for (shape, dtype), g in groups.items():
        body.append(
            [shape, DTYPE_SHORT.get(dtype, dtype)]
            + [_fmt(statistics.median(g[c]) if g.get(c) else None) for c in columns[2:]]
        )
    return columns, body


def floors(rows: List[dict], peers: Sequence[str]) -> str:
    """The text table of :func:`floor_table`."""
    return render(*floor_table(rows, peers), left={0, 1})


def goals(rows: List[dict], judge: bool = True) -> List[str]:
    """One line per goal: how many rows meet it (``judge=False``: the ratios only)."""
    lines = []
    with_goal = [r for r in rows if r["goal_ratio"] is not None]
    by_layer = {}
    for r in with_goal:
        by_layer.setdefault((r["layer"], r["baseline"], r["goal_ratio"]), []).append(r)
    for (layer, base, goal), rs in by_layer.items():
        worst = max(rs, key=lambda r: r["ratio"])
        where = (
            f"{_shape(worst)} {worst['dtype']} {'XLA' if worst['xla'] else 'no XLA'} "
            f"{worst['mode']}"
        )
        if judge:
            met = sum(1 for r in rs if r["goal_met"])
            lines.append(
                f"{layer} <= {goal:g}x {base}: {met}/{len(rs)} rows "
                f"(worst {worst['ratio']:.2f}: {where})"
            )
        else:
            best = min(r["ratio"] for r in rs)
            lines.append(
                f"{layer} <= {goal:g}x {base}: ratios {best:.2f}-{worst['ratio']:.2f} "
                f"over {len(rs)} rows (highest: {where}); not judged"
            )
    for mode, need in (("forward", 0.8), ("train", 0.5)):
        rs = [r for r in rows if r["mode"] == mode and r.get("floor_goal", True)]
        if not rs:
            continue
        if judge:
            met = sum(1 for r in rs if r["floor_fraction"] >= need)
            lines.append(
                f"{mode} >= {need:g} of the floor: {met}/{len(rs)} rows "
                "(layers without a matmul or convolution)"
            )
        else:
            lo = min(r["floor_fraction"] for r in rs)
            hi = max(r["floor_fraction"] for r in rs)
            lines.append(
                f"{mode} >= {need:g} of the floor: {lo:.2f}-{hi:.2f} over {len(rs)} rows "
                "(layers without a matmul or convolution); not judged"
            )
    return lines


def peer_lines(described: dict) -> List[str]:
    """One line per requested peer: what ran where, or ``skipped (reason)``."""
    out = []
    for name, d in described.items():
        if d.get("status") != "ok":
            out.append(f"{name}: skipped ({d.get('reason', 'unavailable')})")
            continue
        versions = ", ".join(f"{k} {v}" for k, v in d.get("versions", {}).items() if k != "python")
        line = (
            f"{name}: {versions} on {d.get('device')}, {d.get('threads')} threads; "
            f"{d.get('label')}; {d.get('python')} ({d.get('source')})"
        )
        if d.get("failed"):
            line += f"; failed: {d['failed']}"
        out.append(line)
        out += [f"  {n}" for n in d.get("notes", [])]
    return out


def header(meta: dict, title: str, command: Optional[str] = None) -> List[str]:
    """Title and date, machine and versions (and the load: at the start, and at the end), command."""
    load = ""
    if meta.get("load") is not None:
        load = f"; load {meta['load']:.1f}"
        if meta.get("load_end") is not None:
            load += f" at the start, {meta['load_end']:.1f} at the end"
    head = [
        f"{title}  {meta['date']}",
        f"machine: {meta['cpu']}, {meta['cores']} cores; device: {meta['device']}; "
        f"TensorFlow {meta['tensorflow']}, Keras {meta['keras']}, tfnorm {meta['tfnorm']}{load}",
    ]
    if command:
        head.append(f"command: {command}")
    return head


def text(meta: dict, rows: List[dict], skipped: List[dict], command: Optional[str] = None) -> str:
    s = meta["settings"]
    judge = judged(s)
    peers = list(meta.get("peers", {}))
    head = header(meta, "tfnorm bench", command)
    head.append(
        f"median of {s['repeats']} interleaved runs after {s['warmup']} warm-up; "
        "ratio = tfnorm / baseline (same run); floor = x*2 under the same compile setting "
        f"(train: x{s['train_floor_passes']}); of floor = floor / tfnorm; "
        "GB/s counts x and y (train: also dy and dx) once"
    )
    if peers:
        head.append(
            "peers (each in its own process, sampled in the same rounds as tfnorm; "
            "/fastest = tfnorm ms / fastest peer ms):"
        )
        head += [f"  {line}" for line in peer_lines(meta["peers"])]
    warning = quick_warning(meta)
    parts = ["\n".join(head)]
    if warning:
        parts += ["", warning]
    parts += ["", table(rows, peers, judge)]
    if peers and any(r.get("peers") for r in rows):
        parts += ["", "x*2 floor per framework, ms (forward rows, median):", floors(rows, peers)]
    g = goals(rows, judge)
    if g:
        parts += ["", "goals:" if judge else "goals (not judged, see the warning):"]
        parts += [f"  {x}" for x in g]
    if skipped:
        parts += ["", "skipped:"]
        for s_ in skipped:
            where = " ".join(str(s_[k]) for k in ("shape", "dtype", "compile", "mode") if k in s_)
            parts.append(f"  {s_['layer']}{' ' + where if where else ''}: {s_['reason']}")
    return "\n".join(parts)


# --- Markdown, for the README: tfnorm bench --markdown (or --from RUN.json --markdown) ---

PEER_TITLES = {"torch": "PyTorch", "jax": "Keras on JAX"}


def _ms(v) -> str:
    """Milliseconds with two significant digits (0.044, 0.52, 4.5, 15)."""
    if v is None:
        return "-"
    if v >= 10:
        return f"{v:.0f}"
    return f"{v:.1f}" if v >= 1 else f"{v:.2g}"


def _pair(rows: dict, key, get) -> str:
    """``forward / train`` of ``get(row)`` for the rows of ``key`` (compile, mode) -> row."""
    cells = [get(rows[(key, m)]) if (key, m) in rows else None for m in ("forward", "train")]
    return " / ".join(_ms(c) for c in cells)


def _grouped_rows(rows: List[dict]):
    """(layer, shape, dtype) -> {(compile, mode): row}, in the run's order."""
    out: dict = {}
    for r in rows:
        out.setdefault((r["layer"], _shape(r), r["dtype"]), {})[(r["compile"], r["mode"])] = r
    return out


def peer_summary(rows: List[dict], ref: str = "xla") -> str:
    """One sentence computed from the rows: how many meet the peer goals, and the floors' ratio.

    Goals: forward within 1.25x of the fastest peer, training step at most
    1.0x; the floor ratio is TensorFlow's ``x*2`` over the fastest peer's.
    """
    counts = {}
    for mode, bound in (("forward", 1.25), ("train", 1.0)):
        judged = [r for r in rows if r["compile"] == ref and r["mode"] == mode]
        judged = [r for r in judged if r.get("peer_ratio") is not None]
        counts[mode] = (sum(r["peer_ratio"] <= bound for r in judged), len(judged))
    floors = []
    for r in rows:
        if r["compile"] != ref or r["mode"] != "forward" or not r.get("peers"):
            continue
        theirs = [p.get("floor_ms") for p in r["peers"].values() if p.get("floor_ms")]
        if theirs:
            floors.append((math.prod(r["shape"]), r["floor_ms"] / min(theirs)))
    where = "under XLA" if ref == "xla" else "without XLA"
    text = (
        f"Computed from these rows: tfnorm {where} is within 1.25× of the fastest peer in "
        f"{counts['forward'][0]} of {counts['forward'][1]} forward rows, and at most 1.0× in "
        f"{counts['train'][0]} of {counts['train'][1]} training-step rows."
    )
    big = [f for n, f in floors if n >= 1 << 20]
    small = [f for n, f in floors if n < 1 << 20]
    if big:
        text += (
            f" TensorFlow's own `x*2` takes {min(big):.2f}–{max(big):.2f}× the fastest peer's on "
            "the tensors of a million values or more"
        )
        if small:
            text += f" and {min(small):.1f}–{max(small):.1f}× on the smaller ones"
        text += (
            ". A normalization reads and writes its tensor at least once, so against a peer "
            "whose normalization runs at the speed of its own `x*2`, tfnorm's forward ratio "
            "cannot go below that one."
        )
    return text


def markdown_header(document: dict) -> str:
    """One paragraph: command, date, machine, versions, load and the timing rule."""
    meta, s = document["machine"], document["machine"]["settings"]
    load = ""
    if meta.get("load") is not None:
        load = f", load {meta['load']:.1f}"
        if meta.get("load_end") is not None:
            load += f" at the start and {meta['load_end']:.1f} at the end"
    peers = []
    for name, d in meta.get("peers", {}).items():
        if d.get("status") == "ok":
            v = ", ".join(f"{k} {x}" for k, x in d.get("versions", {}).items() if k != "python")
            peers.append(f"{PEER_TITLES.get(name, name)}: {v} ({d.get('threads')} threads)")
        else:
            peers.append(f"{PEER_TITLES.get(name, name)}: skipped ({d.get('reason', '')})")
    text = (
        f"`{document['command']}`, {meta['date'][:10]}, {meta['cpu']}, {meta['cores']} cores, "
        f"device {meta['device']}{load}; Python {meta['python']}, TensorFlow "
        f"{meta['tensorflow']}, Keras {meta['keras']}, tfnorm {meta['tfnorm']}"
    )
    if peers:
        text += "; " + "; ".join(peers)
    return text + (
        f". Medians of {s['repeats']} interleaved rounds after {s['warmup']} warm-up calls."
    )


def markdown(document: dict) -> str:
    """The run as Markdown tables, as the README shows them (computed, never typed in).

    With peers: one row per layer, shape and dtype; each cell ``forward / train
    step`` in ms; the last column tfnorm under XLA over the fastest peer. Without
    peers: tfnorm against its baseline, ``tfnorm / baseline = ratio`` per mode
    and compile setting (tfnorm's time alone where it has no baseline), and
    the fraction of the ``x*2`` floor it reaches under XLA.

    Example:
      >>> row = dict(layer="LayerNormalization", shape=[2, 8], dtype="float32", compile="xla",
      ...            mode="forward", tfnorm_ms=1.0, baseline_ms=2.0, ratio=0.5, baseline="keras",
      ...            goal_ratio=None, floor_goal=False)
      >>> doc = {"command": "tfnorm bench", "rows": [row], "machine": {
      ...     "date": "2026-12-01T00:00", "cpu": "CPU", "cores": 2, "device": "CPU",
      ...     "python": "3.11", "tensorflow": "2.21.0", "keras": "3.15.1", "tfnorm": "0.1.0",
      ...     "settings": {"repeats": 15, "warmup": 3}}}
      >>> print(markdown(doc).splitlines()[-1])
      | LayerNormalization | keras | 2×8 | fp32 | - | - | 1.0 / 2.0 = **0.50×** | - | - / - |
    """
    rows = document["rows"]
    peers = [p for p, d in document["machine"].get("peers", {}).items() if d.get("status") == "ok"]
    out = [markdown_header(document), ""]
    groups = _grouped_rows(rows)
    if peers:
        titles = [PEER_TITLES.get(p, p) for p in peers]
        # the peers beside tfnorm under XLA (or without it, in a run without XLA rows)
        ref = "xla" if any(r["compile"] == "xla" for r in rows) else "graph"
        out.append(
            "| layer | shape | dtype | tfnorm, no XLA | tfnorm, XLA | "
            + " | ".join(titles)
            + (" | tfnorm XLA / fastest peer |" if ref == "xla" else " | tfnorm / fastest peer |")
        )
        out.append("|---" * (6 + len(peers)) + "|")
        for (layer, shape, dtype), by in groups.items():
            cells = [
                _pair(by, "graph", lambda r: r["tfnorm_ms"]),
                _pair(by, "xla", lambda r: r["tfnorm_ms"]),
            ]
            for p in peers:
                cells.append(
                    _pair(by, ref, lambda r, p=p: (r.get("peers", {}).get(p) or {}).get("ms"))
                )
            ratios = []
            for m in ("forward", "train"):
                r = by.get((ref, m))
                if r is None or r.get("peer_ratio") is None:
                    ratios.append("-")
                else:
                    ratios.append(f"**{r['peer_ratio']:.2f}×** {r['fastest_peer']}")
            out.append(
                f"| {layer} | {shape.replace('x', '×')} | {DTYPE_SHORT.get(dtype, dtype)} | "
                + " | ".join(cells + [" / ".join(ratios)])
                + " |"
            )
        out += ["", peer_summary(rows, ref)]
        columns, body = floor_table(rows, peers)
        if body:
            names = {"tf no XLA": "TensorFlow, no XLA", "tf XLA": "TensorFlow, XLA"}
            out += ["", "`x*2` on the same tensors, forward, ms (medians over the rows):", ""]
            out.append(
                "| " + " | ".join(names.get(c, PEER_TITLES.get(c, c)) for c in columns) + " |"
            )
            out.append("|---" * len(columns) + "|")
            out += ["| " + " | ".join([b[0].replace("x", "×")] + b[1:]) + " |" for b in body]
        return "\n".join(out)
    out.append(
        "| layer | vs | shape | dtype | forward, no XLA | train step, no XLA | forward, XLA "
        "| train step, XLA | of the `x*2` floor, XLA |"
    )
    out.append("|---" * 9 + "|")
    for (layer, shape, dtype), by in groups.items():
        baseline = next(iter(by.values())).get("baseline") or "-"
        cells = []
        for key in (("graph", "forward"), ("graph", "train"), ("xla", "forward"), ("xla", "train")):
            r = by.get(key)
            if r is None:
                cells.append("-")
            elif r.get("ratio") is None:  # no baseline: tfnorm's time alone
                cells.append(_ms(r["tfnorm_ms"]))
            else:
                cells.append(
                    f"{_ms(r['tfnorm_ms'])} / {_ms(r['baseline_ms'])} = **{r['ratio']:.2f}×**"
                )
        floor = [by.get(("xla", m), {}).get("floor_fraction") for m in ("forward", "train")]
        cells.append(" / ".join("-" if f is None else f"{f:.2f}" for f in floor))
        out.append(
            f"| {layer} | {baseline} | {shape.replace('x', '×')} | "
            f"{DTYPE_SHORT.get(dtype, dtype)} | " + " | ".join(cells) + " |"
        )
    met = goals(rows, judged(document["machine"].get("settings", {})))
    if met:
        out += ["", "Goals in this run (computed from its rows):", ""]
        out += [f"- {line}" for line in met]
    return "\n".join(out)
