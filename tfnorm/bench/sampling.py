"""The timing rule every ``tfnorm bench`` measurement follows, in this process or a peer's.

Standard library only: the peer workers (``peer_torch.py``, ``peer_jax.py``)
run it in their own interpreter, without TensorFlow, so that a PyTorch or JAX
number is taken exactly as a tfnorm number is.

The rule: ``warmup`` untimed calls (each followed by ``sync``); the last one
sets how many back-to-back calls make one sample (about ``target_s`` seconds,
at most ``max_inner``), so that dispatch jitter does not dominate
sub-millisecond kernels; a sample is the wall time of those calls plus one
``sync``, divided by their number, after one untimed call (:func:`sample`).
Samples are taken in rounds, one per timer per round, in an order that
rotates from round to round (:func:`schedule`).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, List, Sequence

TARGET_S = 0.004
MAX_INNER = 64


def inner_count(elapsed_s: float, target_s: float = TARGET_S, max_inner: int = MAX_INNER) -> int:
    """Calls per sample for a callable whose one call took ``elapsed_s``.

    >>> inner_count(0.001), inner_count(0.010), inner_count(1e-9)
    (4, 1, 64)
    """
    return int(min(max_inner, max(1, round(target_s / max(elapsed_s, 1e-6)))))


def warm(fn: Callable[[], object], warmup: int, sync: Callable[[object], object]) -> float:
    """Runs ``fn`` ``max(1, warmup)`` times; returns the last call's seconds."""
    elapsed = 0.0
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        sync(fn())
        elapsed = time.perf_counter() - t0
    return elapsed


def sample(fn: Callable[[], object], inner: int, sync: Callable[[object], object]) -> float:
    """Seconds per call of ``inner`` back-to-back calls of ``fn`` and one ``sync``.

    One untimed call (and ``sync``) comes first: the timers of a round take
    turns, in this process and in the peers' (each with its own tensors), so
    without it a sample of a large tensor would start with the other
    timers' data in the caches and time the reload from memory. With it,
    every framework is timed with its own data as warm as the turns allow
    (measured on 2 cores: GroupNormalization 32x56x56x64 under XLA, 3.3 ms
    alone, 6.8 ms interleaved with PyTorch and JAX without this call, 5.9 ms
    with it).
    """
    sync(fn())
    out = None
    t0 = time.perf_counter()
    for _ in range(inner):
        out = fn()
    sync(out)
    return (time.perf_counter() - t0) / inner


def schedule(n: int, repeats: int) -> List[List[int]]:
    """The order of the timers in each round: every timer once per round, rotated.

    >>> schedule(3, 3)
    [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    """
    return [[(k + r) % n for k in range(n)] for r in range(repeats)]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


class LocalTimer:
    """A callable of this process, timed by the rule above."""

    optional = False  # a failure stops the whole group

    def __init__(
        self,
        fn: Callable[[], object],
        sync: Callable[[object], object] = lambda o: o,
        name: str = "",
    ):
        self.fn = fn
        self.sync = sync
        self.name = name
        self.inner = 1

    def warm(self, warmup: int, target_s: float = TARGET_S, max_inner: int = MAX_INNER) -> int:
        self.inner = inner_count(warm(self.fn, warmup, self.sync), target_s, max_inner)
        return self.inner

    def sample(self) -> float:
        return sample(self.fn, self.inner, self.sync)
