"""Interleaved wall-clock timing of compiled callables.

Every configuration is timed as a group of callables (the tfnorm layer, its
baseline, the elementwise floor). After warm-up, the group is run in rounds;
in each round every callable runs once, in an order that rotates from round
to round, so that a burst of machine noise lands on all of them alike.
Medians are reported.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, List, Sequence

import tensorflow as tf


def _on_gpu() -> bool:
    try:
        return bool(tf.config.list_logical_devices("GPU"))
    except Exception:  # pragma: no cover - defensive
        return False


def make_sync():
    """A function that blocks until a callable's outputs are computed.

    On CPU a compiled TensorFlow call returns when its work is done; on an
    accelerator the call is asynchronous, so one element of each output is
    read back (a tiny copy, the same for every side).
    """
    if not _on_gpu():
        def sync(out):
            return out
        return sync

    def sync(out):
        for t in tf.nest.flatten(out):
            if t is not None:
                tf.reshape(t, [-1])[:1].numpy()
        return out
    return sync


def interleaved(fns: Sequence[Callable[[], object]], repeats: int, warmup: int,
                target_s: float = 0.004, max_inner: int = 64) -> List[dict]:
    """Times ``fns`` round-robin; returns per callable ``{"median_s", "samples"}``.

    Each sample of a fast callable is the average of several back-to-back
    calls (about ``target_s`` seconds in all), so dispatch jitter does not
    dominate sub-millisecond kernels.
    """
    sync = make_sync()
    inner = []
    for fn in fns:
        elapsed = None
        for _ in range(max(1, warmup)):
            t0 = time.perf_counter()
            sync(fn())
            elapsed = time.perf_counter() - t0
        inner.append(int(min(max_inner, max(1, round(target_s / max(elapsed, 1e-6))))))
    samples: List[List[float]] = [[] for _ in fns]
    n = len(fns)
    for r in range(repeats):
        for k in range(n):
            i = (k + r) % n
            fn, m = fns[i], inner[i]
            t0 = time.perf_counter()
            for _ in range(m):
                out = fn()
            sync(out)
            samples[i].append((time.perf_counter() - t0) / m)
    return [{"median_s": statistics.median(s), "samples": s, "inner": m}
            for s, m in zip(samples, inner)]
