"""``tfnorm bench --peers torch,jax``: the same operations in PyTorch and Keras-on-JAX.

Each peer runs in its own process, started from its own interpreter, so that
its framework never shares a process (threads, allocator, imports) with
TensorFlow: ``<python> tfnorm/bench/peer_torch.py`` or ``peer_jax.py``, which
speak the line protocol of :mod:`tfnorm.bench.peer_worker`. The parent sends
one request at a time and waits for the answer, so a peer's sample is taken
exactly when its turn in the round comes (:func:`tfnorm.bench.timing.interleaved`).

Which interpreter runs a peer (:func:`find_interpreter`):

1. the environment variable ``TFNORM_BENCH_TORCH_PYTHON`` / ``TFNORM_BENCH_JAX_PYTHON``
   when it is set: the path of a Python executable (a virtual environment's
   ``bin/python``) that has the framework; an explicit choice wins;
2. else the interpreter running ``tfnorm`` when it can import the framework
   (still in a separate process);
3. else the peer is skipped: ``not installed: torch (...)``.

A peer that cannot start, or fails on one case, is reported and skipped;
it never stops tfnorm's own measurements. This module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
START_TIMEOUT_S = 180.0  # importing torch or jax on a loaded machine
PREPARE_TIMEOUT_S = 600.0  # build, compile (jax.jit) and warm up one case
SAMPLE_TIMEOUT_S = 300.0


@dataclasses.dataclass(frozen=True)
class PeerSpec:
    """One peer framework: its worker script, what it imports, where to find it."""

    name: str
    script: str
    modules: Tuple[str, ...]
    env: str
    label: str
    extra_env: Tuple[Tuple[str, str], ...] = ()

    @property
    def path(self) -> str:
        return os.path.join(HERE, self.script)


PEERS: Dict[str, PeerSpec] = {
    "torch": PeerSpec(
        "torch",
        "peer_torch.py",
        ("torch",),
        "TFNORM_BENCH_TORCH_PYTHON",
        "PyTorch, torch.nn.functional, eager",
    ),
    "jax": PeerSpec(
        "jax",
        "peer_jax.py",
        ("jax", "keras"),
        "TFNORM_BENCH_JAX_PYTHON",
        "Keras 3 layers on JAX, jax.jit",
        extra_env=(("KERAS_BACKEND", "jax"),),
    ),
}

#: The operations a peer worker implements (``plan.Spec.peer`` names one of them).
PEER_OPS = ("layer_norm", "rms_norm", "batch_norm", "group_norm", "instance_norm")


class PeerUnavailable(Exception):
    """The peer cannot run here; ``str(err)`` is the reason shown as ``skipped (...)``."""


class PeerError(Exception):
    """A peer failed on a request (or died); the message says how."""

    plain = True  # reported as its message, without the class name


def find_interpreter(
    spec: PeerSpec, environ: Optional[Mapping[str, str]] = None, current: Optional[str] = None
) -> Tuple[str, str]:
    """``(python, source)`` for ``spec``; raises :class:`PeerUnavailable` with the reason.

    ``source`` says how it was found: the environment variable, or
    ``"current interpreter"``.
    """
    environ = os.environ if environ is None else environ
    current = current or sys.executable
    value = environ.get(spec.env, "").strip()
    if value:
        path = os.path.expanduser(value)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise PeerUnavailable(
                f"{spec.env}={value} is not an executable file; "
                "set it to a Python interpreter that has "
                f"{' and '.join(spec.modules)}"
            )
        return path, spec.env
    missing = [m for m in spec.modules if importlib.util.find_spec(m) is None]
    if missing:
        raise PeerUnavailable(
            f"not installed: {', '.join(missing)} (not importable by {current}; "
            f"set {spec.env} to a Python that has it)"
        )
    return current, "current interpreter"


class PeerProcess:
    """A running peer worker and its request/answer channel."""

    def __init__(
        self,
        spec: PeerSpec,
        python: str,
        source: str = "",
        script: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        start_timeout: float = START_TIMEOUT_S,
    ):
        self.spec = spec
        self.name = spec.name
        self.python = python
        self.source = source
        self.hello: dict = {}
        self.dead: Optional[str] = None
        self._stderr = tempfile.TemporaryFile(mode="w+b")
        child_env = dict(os.environ if env is None else env)
        child_env.update(dict(spec.extra_env))
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        argv = [python, script or spec.path]
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=child_env,
                text=True,
                bufsize=1,
            )
        except OSError as err:
            raise PeerUnavailable(f"cannot start {python}: {err}") from None
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            hello = self._receive(start_timeout)
        except PeerError as err:
            self.close()
            raise PeerUnavailable(str(err)) from None
        if hello.get("event") != "hello":
            self.close()
            raise PeerUnavailable(
                f"{python} {argv[1]}: not a tfnorm peer worker (first message {hello!r:.200})"
            )
        self.hello = hello
        if not hello.get("available"):
            self.close()
            raise PeerUnavailable(hello.get("reason") or "unavailable")

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _stderr_tail(self, n: int = 400) -> str:
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return text[-n:].replace("\n", " | ")

    def _receive(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.dead = f"peer {self.name} gave no answer within {timeout:g} s"
            self._kill()
            raise PeerError(self.dead) from None
        if line is None:
            self.proc.wait()
            tail = self._stderr_tail()
            self.dead = f"peer {self.name} exited (code {self.proc.returncode})" + (
                f": {tail}" if tail else ""
            )
            raise PeerError(self.dead)
        try:
            return json.loads(line)
        except ValueError:
            raise PeerError(
                f"peer {self.name} wrote a line that is not JSON: {line[:200]!r}"
            ) from None

    def request(self, msg: dict, timeout: float = SAMPLE_TIMEOUT_S) -> dict:
        """Sends one request; returns the answer; raises :class:`PeerError` when it failed."""
        if self.dead:
            raise PeerError(self.dead)
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.proc.wait()
            tail = self._stderr_tail()
            self.dead = f"peer {self.name} exited (code {self.proc.returncode})" + (
                f": {tail}" if tail else ""
            )
            raise PeerError(self.dead) from None
        reply = self._receive(timeout)
        if not reply.get("ok"):
            raise PeerError(reply.get("reason") or f"peer {self.name} refused {msg.get('op')}")
        return reply

    def describe(self) -> dict:
        h = self.hello
        return {
            "status": "ok",
            "python": self.python,
            "source": self.source,
            "versions": h.get("versions", {}),
            "device": h.get("device"),
            "threads": h.get("threads"),
            "compile": h.get("compile"),
            "notes": h.get("notes", []),
            "label": self.spec.label,
            "tensorflow_imported": h.get("tensorflow_imported"),
        }

    def drop_all(self) -> None:
        if not self.dead:
            try:
                self.request({"op": "drop", "key": None})
            except PeerError:
                pass

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> Optional[dict]:
        """Asks the worker to exit (kills it if it does not); returns its last answer."""
        last = None
        if self.proc.poll() is None and not self.dead:
            try:
                last = self.request({"op": "exit"}, timeout=30)
            except PeerError:
                pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._kill()
        self._stderr.close()
        return last


class RemoteTimer:
    """One case of a peer as a member of an interleaved group (see :mod:`tfnorm.bench.timing`)."""

    optional = True  # a peer's failure drops it from the group, nothing else

    def __init__(self, peer: PeerProcess, case: dict, prepare_timeout: float = PREPARE_TIMEOUT_S):
        self.peer = peer
        self.case = case
        self.key = json.dumps(case, sort_keys=True)
        self.name = f"{peer.name} {case['op']}"
        self.inner = None
        self.info: dict = {}
        self.prepare_timeout = prepare_timeout

    def warm(self, warmup: int, target_s: float, max_inner: int) -> int:
        self.info = self.peer.request(
            {
                "op": "prepare",
                "key": self.key,
                "case": self.case,
                "warmup": warmup,
                "target_s": target_s,
                "max_inner": max_inner,
            },
            timeout=self.prepare_timeout,
        )
        self.inner = int(self.info["inner"])
        return self.inner

    def sample(self) -> float:
        return float(self.peer.request({"op": "sample", "key": self.key})["seconds"])


def parse(names: Iterable[str]) -> List[str]:
    """Peer names in the given order, without repeats; KeyError names an unknown one."""
    out: List[str] = []
    for n in names:
        if n not in PEERS:
            raise KeyError(n)
        if n not in out:
            out.append(n)
    return out


def start(
    names: Iterable[str], environ: Optional[Mapping[str, str]] = None, progress=None
) -> Tuple[List[PeerProcess], Dict[str, dict]]:
    """Starts the named peers; returns the running ones and ``name -> description``.

    A peer that cannot run is described as ``{"status": "skipped", "reason": ...}``.
    """
    running: List[PeerProcess] = []
    described: Dict[str, dict] = {}
    for name in names:
        spec = PEERS[name]
        try:
            python, source = find_interpreter(spec, environ)
            if progress:
                progress(f"peer {name}: starting {python} {spec.script} ({source})")
            peer = PeerProcess(spec, python, source, env=None if environ is None else environ)
        except PeerUnavailable as err:
            described[name] = {"status": "skipped", "reason": str(err), "label": spec.label}
            if progress:
                progress(f"peer {name}: skipped ({err})")
            continue
        running.append(peer)
        described[name] = peer.describe()
    return running, described


def stop(peers: Iterable[PeerProcess], described: Dict[str, dict]) -> None:
    """Closes the peers; records whether a worker ever had TensorFlow imported."""
    for peer in peers:
        last = peer.close()
        if last is not None and peer.name in described:
            described[peer.name]["tensorflow_imported"] = last.get("tensorflow_imported")
        if peer.dead and peer.name in described:
            described[peer.name]["failed"] = peer.dead


def case(op: str, shape, dtype: str, mode: str, seed: int = 0, **kwargs) -> dict:
    """The protocol's case for one measurement (``op`` a peer op or ``"floor"``)."""
    out = {
        "op": op,
        "shape": [int(d) for d in shape],
        "dtype": dtype,
        "mode": mode,
        "seed": int(seed),
    }
    out.update(kwargs)
    return out


def peer_result(op: dict, floor: dict, info: dict) -> dict:
    """A row's entry for one peer from its two :func:`~tfnorm.bench.timing.interleaved` results.

    ``{"ms", "floor_ms", "impl", "layout", "compile", "params", "inner"}``, or
    ``{"error": reason}`` when the op could not be timed (a failed floor alone
    leaves ``floor_ms`` None).
    """
    if op.get("median_s") is None:
        return {"error": op.get("error") or "no sample"}
    out = {
        "ms": op["median_s"] * 1e3,
        "floor_ms": None if floor.get("median_s") is None else floor["median_s"] * 1e3,
    }
    for k in ("impl", "layout", "compile", "params", "inner"):
        if k in info:
            out[k] = info[k]
    return out


def compare_peers(tfnorm_ms: float, results: Mapping[str, dict]) -> dict:
    """``{"fastest_peer", "peer_ratio"}``: the fastest peer and tfnorm's time over its time.

    >>> compare_peers(6.0, {"torch": {"ms": 4.0}, "jax": {"ms": 3.0}})
    {'fastest_peer': 'jax', 'peer_ratio': 2.0}
    >>> compare_peers(6.0, {"torch": {"error": "no sample"}})
    {'fastest_peer': None, 'peer_ratio': None}
    """
    timed = [(r["ms"], name) for name, r in results.items() if r.get("ms")]
    if not timed:
        return {"fastest_peer": None, "peer_ratio": None}
    ms, name = min(timed)
    return {"fastest_peer": name, "peer_ratio": tfnorm_ms / ms}
