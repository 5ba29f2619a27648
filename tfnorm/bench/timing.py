"""Interleaved wall-clock timing of compiled callables.

Every configuration is timed as a group of callables (the tfnorm layer, its
baseline, the elementwise floor, and with ``--peers`` the same operation in
PyTorch or JAX, each in its own process). After warm-up, the group is run in
rounds; in each round every member runs once, in an order that rotates from
round to round, so that a burst of machine noise lands on all of them alike.
Medians are reported. The rule itself (warm-up, calls per sample, rotation)
lives in :mod:`tfnorm.bench.sampling`, which the peer workers share.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import tensorflow as tf

from tfnorm.bench.sampling import MAX_INNER, TARGET_S, LocalTimer, median, schedule


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


def interleaved(
    fns: Sequence[object],
    repeats: int,
    warmup: int,
    target_s: float = TARGET_S,
    max_inner: int = MAX_INNER,
    log: Optional[List[int]] = None,
) -> List[dict]:
    """Times ``fns`` round-robin; returns per item ``{"median_s", "samples", "inner"}``.

    An item is a callable of this process or a timer (``warm(warmup, target_s,
    max_inner)`` and ``sample() -> seconds``, as :class:`~tfnorm.bench.sampling.LocalTimer`
    or a peer's :class:`~tfnorm.bench.peers.RemoteTimer`). Each sample of a fast
    callable is the average of several back-to-back calls (about ``target_s``
    seconds in all), so dispatch jitter does not dominate sub-millisecond kernels.

    A timer marked ``optional`` (a peer's) that fails is dropped from the
    remaining rounds; its entry has ``median_s`` None and ``error``, and the
    others are unaffected. ``log``, when given, receives the index of each
    sample taken, in order.
    """
    sync = make_sync()
    timers = [f if hasattr(f, "sample") else LocalTimer(f, sync) for f in fns]
    errors: List[Optional[str]] = [None] * len(timers)

    def attempt(i, call):
        if errors[i] is not None:
            return None
        if not timers[i].optional:
            return call()
        try:
            return call()
        except Exception as err:  # a peer's failure never stops tfnorm's measurement
            text = str(err) if getattr(err, "plain", False) else f"{type(err).__name__}: {err}"
            errors[i] = (text.splitlines() or [type(err).__name__])[0][:300]
            return None

    inner = [
        attempt(i, lambda t=t: t.warm(warmup, target_s, max_inner)) for i, t in enumerate(timers)
    ]
    samples: List[List[float]] = [[] for _ in timers]
    for order in schedule(len(timers), repeats):
        for i in order:
            seconds = attempt(i, timers[i].sample)
            if seconds is not None:
                samples[i].append(seconds)
                if log is not None:
                    log.append(i)
    out = []
    for s, m, err in zip(samples, inner, errors):
        entry = {"median_s": median(s) if s and err is None else None, "samples": s, "inner": m}
        if err is not None:
            entry["error"] = err
        out.append(entry)
    return out
