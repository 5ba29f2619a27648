"""Builds the timed callables for each configuration and runs them interleaved."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfnorm.bench import plan
from tfnorm.bench.peers import RemoteTimer, compare_peers, peer_result
from tfnorm.bench.peers import case as peer_case
from tfnorm.bench.timing import interleaved

COMPILES = ("graph", "xla")  # tf.function without / with jit_compile
MODES = ("forward", "train")
DTYPES = ("float32", "bfloat16")
# A training step touches the tensor at least three times (forward; the
# backward's reductions; the input gradient): its floor is three ``x * 2``.
TRAIN_FLOOR_PASSES = 3
# Tensors a step must read or write at least once: forward x, y; train x, y, dy, dx.
TENSORS_MOVED = {"forward": 2, "train": 4}


@dataclasses.dataclass
class Settings:
    shapes: Optional[Sequence[str]] = None  # None: each layer's own list
    dtypes: Sequence[str] = DTYPES
    compiles: Sequence[str] = COMPILES
    modes: Sequence[str] = MODES
    repeats: int = 15
    warmup: int = 3
    first_shape_only: bool = False  # every layer: its first shape only (--quick)
    all_shapes: bool = False  # layers without a Keras twin: every shape, not the first
    goals_only: bool = False  # only layers with a Keras twin or a goal (--quick)
    tiny: bool = False


def _policy(dtype: str) -> Optional[str]:
    return None if dtype == "float32" else f"mixed_{dtype}"


def _apply(layers, x, training):
    for layer in layers:
        x = layer(x, training=training)
    return x


def _forward(layers, xla: bool):
    @tf.function(jit_compile=xla)
    def step(x):
        return _apply(layers, x, False)

    return step


def _train(layers, xla: bool):
    variables = [v for layer in layers for v in layer.trainable_variables]

    @tf.function(jit_compile=xla)
    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = _apply(layers, x, True)
        grads = tape.gradient(y, [x] + variables, output_gradients=dy)
        return y, grads

    return step


def _floor(xla: bool):
    @tf.function(jit_compile=xla)
    def step(x):
        return x * tf.constant(2, x.dtype)

    return step


def _first_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line[:200]


def plan_configs(subjects: List[plan.Subject], settings: Settings):
    """(subject, shape key) pairs in run order."""
    out = []
    for s in subjects:
        if settings.goals_only and not (s.spec.twin or s.spec.goal is not None):
            continue
        keys = list(s.spec.shapes)
        if settings.shapes is not None:
            keys = [k for k in keys if k in settings.shapes]
        if settings.first_shape_only or not (
            s.spec.twin or settings.all_shapes or settings.shapes is not None
        ):
            keys = keys[:1]
        for k in keys:
            out.append((s, k))
    return out


class Progress:
    """One line per step on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()

    def step(self, text: str):
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        line = f"[{self.done:>3}/{self.total}] {elapsed:6.1f}s  {text}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str):
        """A line that is not a step (e.g. what is being built before the next one)."""
        if self.enabled:
            elapsed = time.perf_counter() - self.t0
            self.stream.write(
                ("\r\033[K" if self.tty else "")
                + f"[{self.done:>3}/{self.total}] {elapsed:6.1f}s  {text}"
                + ("" if self.tty else "\n")
            )
            self.stream.flush()

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run(
    subjects: List[plan.Subject],
    settings: Settings,
    progress: bool = True,
    seed: int = 0,
    peers: Sequence[object] = (),
):
    """Runs every configuration; returns ``(rows, skipped)``.

    ``peers``: running :class:`~tfnorm.bench.peers.PeerProcess` workers; for a
    layer whose spec names a peer op, each one's op and its ``x * 2`` join the
    configuration's interleaved group, and the row gets ``peers``,
    ``fastest_peer`` and ``peer_ratio``.
    """
    shapes_table = plan.TINY_SHAPES if settings.tiny else plan.SHAPES
    pairs = plan_configs(subjects, settings)
    per_pair = len(settings.dtypes) * len(settings.compiles) * len(settings.modes)
    bar = Progress(len(pairs) * per_pair, enabled=progress)
    rows: List[dict] = []
    skipped: List[dict] = []
    rng = np.random.default_rng(seed)
    for subject, key in pairs:
        shape = shapes_table[key]
        channels = shape[-1]
        x32 = (rng.standard_normal(shape) * 1.5 + 0.5).astype("float32")
        for dtype in settings.dtypes:
            label = f"{subject.name} {key} {'x'.join(map(str, shape))} {dtype}"
            x = tf.cast(tf.constant(x32), dtype)
            try:
                mine = subject.make(channels, _policy(dtype))
                base = (
                    subject.spec.baseline(channels, _policy(dtype))
                    if subject.spec.baseline
                    else None
                )
                y = _apply(mine, x, False)
                if base is not None:
                    _apply(base, x, False)
                dy = tf.cast(tf.constant(rng.standard_normal(y.shape).astype("float32")), y.dtype)
            except Exception as err:  # report and go on: one layer never stops the run
                skipped.append(
                    {
                        "layer": subject.name,
                        "shape": key,
                        "dtype": dtype,
                        "reason": _first_line(err),
                    }
                )
                for _ in range(len(settings.compiles) * len(settings.modes)):
                    bar.step(f"{label}: skipped")
                continue
            for compile_ in settings.compiles:
                xla = compile_ == "xla"
                for mode in settings.modes:
                    bar.step(f"{label} {compile_} {mode}")
                    try:
                        row = _measure(
                            subject,
                            key,
                            shape,
                            dtype,
                            compile_,
                            mode,
                            mine,
                            base,
                            x,
                            dy,
                            xla,
                            settings,
                            peers,
                        )
                    except Exception as err:
                        skipped.append(
                            {
                                "layer": subject.name,
                                "shape": key,
                                "dtype": dtype,
                                "compile": compile_,
                                "mode": mode,
                                "reason": _first_line(err),
                            }
                        )
                        continue
                    for name, result in row["peers"].items():
                        if "error" in result:
                            skipped.append(
                                {
                                    "layer": f"{subject.name} [{name}]",
                                    "shape": key,
                                    "dtype": dtype,
                                    "compile": compile_,
                                    "mode": mode,
                                    "reason": result["error"],
                                }
                            )
                    rows.append(row)
            for peer in peers:
                peer.drop_all()
    bar.close()
    return rows, skipped


def _peer_timers(subject, shape, dtype, mode, peers):
    """(peer name, timer for the op, timer for its ``x * 2``) for each running peer."""
    if not subject.spec.peer:
        return []
    op, kwargs = subject.spec.peer
    out = []
    for peer in peers:
        out.append(
            (
                peer.name,
                RemoteTimer(peer, peer_case(op, shape, dtype, mode, **kwargs)),
                RemoteTimer(peer, peer_case("floor", shape, dtype, "forward")),
            )
        )
    return out


def _measure(
    subject, key, shape, dtype, compile_, mode, mine, base, x, dy, xla, settings, peers=()
):
    fns: List[object] = []
    if mode == "forward":
        f_mine = _forward(mine, xla)
        fns.append(lambda: f_mine(x))
        if base is not None:
            f_base = _forward(base, xla)
            fns.append(lambda: f_base(x))
    else:
        f_mine = _train(mine, xla)
        fns.append(lambda: f_mine(x, dy))
        if base is not None:
            f_base = _train(base, xla)
            fns.append(lambda: f_base(x, dy))
    f_floor = _floor(xla)
    fns.append(lambda: f_floor(x))
    n_local = len(fns)
    remote = _peer_timers(subject, shape, dtype, mode, peers)
    for _, op_timer, floor_timer in remote:
        fns += [op_timer, floor_timer]
    res = interleaved(fns, repeats=settings.repeats, warmup=settings.warmup)
    t_mine = res[0]["median_s"]
    t_base = res[1]["median_s"] if base is not None else None
    t_floor = res[n_local - 1]["median_s"]
    peer_rows = {}
    for j, (name, op_timer, _) in enumerate(remote):
        r_op, r_floor = res[n_local + 2 * j], res[n_local + 2 * j + 1]
        peer_rows[name] = peer_result(r_op, r_floor, op_timer.info)
    floor = t_floor * (TRAIN_FLOOR_PASSES if mode == "train" else 1)
    nbytes = int(np.prod(shape)) * tf.as_dtype(dtype).size
    moved = TENSORS_MOVED[mode] * nbytes
    spec = subject.spec
    goal = (
        spec.goal
        if (spec.goal is not None and base is not None and mode in spec.goal_modes)
        else None
    )
    ratio = t_mine / t_base if t_base else None
    return {
        "layer": subject.name,
        "short_name": subject.short,
        "baseline": (spec.baseline_label or "baseline") if base is not None else None,
        "twin": bool(spec.twin and base is not None),
        "shape_name": key,
        "shape": list(shape),
        "dtype": dtype,
        "compile": compile_,
        "xla": xla,
        "mode": mode,
        "tfnorm_ms": t_mine * 1e3,
        "baseline_ms": None if t_base is None else t_base * 1e3,
        "floor_ms": t_floor * 1e3,
        "ratio": ratio,
        "floor_fraction": floor / t_mine,
        "baseline_floor_fraction": None if t_base is None else floor / t_base,
        "gbps": moved / t_mine / 1e9,
        "baseline_gbps": None if t_base is None else moved / t_base / 1e9,
        "goal_ratio": goal,
        "goal_met": None if goal is None or ratio is None else bool(ratio <= goal),
        "floor_goal": spec.floor_goal,
        "repeats": settings.repeats,
        "peers": peer_rows,
        **compare_peers(t_mine * 1e3, peer_rows),
    }
