"""The worker side of the peer protocol: one framework, one process, no TensorFlow.

``tfnorm bench --peers torch,jax`` starts ``python peer_torch.py`` and
``python peer_jax.py`` (each with the interpreter found for it, see
:mod:`tfnorm.bench.peers`) and talks to them over stdin/stdout, one JSON
object per line, one reply per request. The worker is run as a script, not as
``python -m tfnorm.bench...``: importing the ``tfnorm`` package would import
TensorFlow, and the peer's environment need not have it. This module and
:mod:`tfnorm.bench.sampling` are standard library only for that reason.

Protocol (version 1):

* on start the worker writes ``{"event": "hello", "protocol": 1, "peer": NAME,
  "available": true, "versions": {...}, "device": ..., "threads": N, "notes": [...],
  "tensorflow_imported": false}``; when its framework cannot be imported,
  ``"available": false, "reason": "not installed: torch (...)"`` and it exits;
* ``{"op": "prepare", "key": K, "case": CASE, "warmup": W, "target_s": T,
  "max_inner": M}`` builds the case (once per key), runs the warm-up and replies
  ``{"ok": true, "inner": calls per sample, "impl": ..., "layout": ..., "params": ...}``;
* ``{"op": "sample", "key": K}`` takes one sample: ``{"ok": true, "seconds": S}``;
* ``{"op": "drop", "key": K}`` forgets a case (``"key": null``: every case);
* ``{"op": "exit"}`` replies ``{"ok": true, "tensorflow_imported": ...}`` and exits.

A request that fails is answered ``{"ok": false, "reason": "..."}`` and the
worker goes on. ``CASE`` is ``{"op": "layer_norm" | "rms_norm" | "batch_norm" |
"group_norm" | "instance_norm" | "floor", "shape": [...], "dtype": "float32" |
"bfloat16", "mode": "forward" | "train", "groups": G, "epsilon": E, "seed": S}``
with ``shape`` in tfnorm's channels-last order; the worker picks its framework's
layout and says which in ``layout``. ``floor`` is ``x * 2`` on the same tensor.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable, Dict, Optional

if __package__:
    from tfnorm.bench import sampling
else:  # run as a script by peer_torch.py / peer_jax.py: the directory is on sys.path
    import sampling

PROTOCOL = 1
OPS = ("layer_norm", "rms_norm", "batch_norm", "group_norm", "instance_norm", "floor")


class Prepared:
    """A built case: the callable to time, how to wait for it, and what it is."""

    def __init__(self, fn: Callable[[], object], sync: Callable[[object], object], info: dict):
        self.fn = fn
        self.sync = sync
        self.info = info
        self.inner = 1


class Backend:
    """What a framework supplies: its name, versions and how to build a case."""

    name = "?"

    def load(self) -> Optional[str]:
        """Imports the framework; returns None, or why it cannot run (``not installed: ...``)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """``versions``, ``device``, ``threads`` and ``notes`` for the hello message."""
        raise NotImplementedError

    def build(self, case: dict) -> Prepared:
        raise NotImplementedError


def missing_module(err: ImportError, wanted: str, why: str = "") -> str:
    """The reason string for a framework that cannot be imported."""
    name = (getattr(err, "name", None) or wanted).split(".")[0]
    head = (
        f"not installed: {name}"
        if isinstance(err, ModuleNotFoundError)
        else f"cannot import {wanted}"
    )
    detail = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    return f"{head} ({detail}{'; ' + why if why else ''}; interpreter {sys.executable})"


class Worker:
    """Serves the protocol for one :class:`Backend` on a pair of text streams."""

    def __init__(self, backend: Backend, stdin, stdout):
        self.backend = backend
        self.stdin = stdin
        self.stdout = stdout
        self.cases: Dict[str, Prepared] = {}

    def send(self, obj: dict) -> None:
        self.stdout.write(json.dumps(obj) + "\n")
        self.stdout.flush()

    # -- requests ---------------------------------------------------------------------
    def prepare(self, msg: dict) -> dict:
        key = msg["key"]
        case = msg["case"]
        if case.get("op") not in OPS:
            raise ValueError(f"unknown case op {case.get('op')!r}; expected one of {OPS}")
        prepared = self.cases.get(key)
        if prepared is None:
            prepared = self.backend.build(case)
            self.cases[key] = prepared
        elapsed = sampling.warm(prepared.fn, int(msg.get("warmup", 3)), prepared.sync)
        prepared.inner = sampling.inner_count(
            elapsed,
            float(msg.get("target_s", sampling.TARGET_S)),
            int(msg.get("max_inner", sampling.MAX_INNER)),
        )
        return dict(prepared.info, inner=prepared.inner)

    def sample(self, key: str) -> float:
        prepared = self.cases[key]
        return sampling.sample(prepared.fn, prepared.inner, prepared.sync)

    def drop(self, key: Optional[str]) -> None:
        if key is None:
            self.cases.clear()
        else:
            self.cases.pop(key, None)

    # -- loop -------------------------------------------------------------------------
    def hello(self) -> bool:
        reason = self.backend.load()
        msg = {
            "event": "hello",
            "protocol": PROTOCOL,
            "peer": self.backend.name,
            "available": reason is None,
            "pid": os.getpid(),
            "python": sys.executable,
        }
        if reason is None:
            msg.update(self.backend.describe())
        else:
            msg["reason"] = reason
        msg["tensorflow_imported"] = "tensorflow" in sys.modules
        self.send(msg)
        return reason is None

    def serve(self) -> int:
        if not self.hello():
            return 0
        for line in self.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
                op = msg.get("op")
                if op == "prepare":
                    reply = dict(self.prepare(msg), ok=True)
                elif op == "sample":
                    reply = {"ok": True, "seconds": self.sample(msg["key"])}
                elif op == "drop":
                    self.drop(msg.get("key"))
                    reply = {"ok": True}
                elif op == "exit":
                    self.send({"ok": True, "tensorflow_imported": "tensorflow" in sys.modules})
                    return 0
                else:
                    raise ValueError(f"unknown request op {op!r}")
            except Exception as err:  # answer and go on: one case never stops the worker
                reply = {
                    "ok": False,
                    "reason": f"{type(err).__name__}: {err}".splitlines()[0][:300],
                }
            self.send(reply)
        return 0


def main(backend: Backend, worker: type = Worker) -> int:
    """Runs a ``worker`` (a :class:`Worker` class) for ``backend`` on this process's stdin/stdout.

    The protocol keeps the original stdout; file descriptor 1 is pointed at
    stderr, so that whatever the framework prints cannot corrupt it.
    """
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return worker(backend, sys.stdin, proto).serve()


def script_setup(path: str) -> None:
    """For a worker run as a script: its directory (tfnorm/bench) leaves ``sys.path``.

    Needed only until its siblings are imported; names such as ``plan`` or
    ``report`` must not shadow the framework's own imports afterwards.
    """
    here = os.path.dirname(os.path.abspath(path))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
