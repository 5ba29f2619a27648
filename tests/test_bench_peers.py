"""``tfnorm bench --peers``: the peer protocol, discovery, interleaving and the peer columns.

No test needs PyTorch or JAX. The real workers (``peer_torch.py``,
``peer_jax.py``) are run with their framework blocked, to check the "not
installed" path and that they never import TensorFlow; the measuring path is
checked with a fake worker that speaks the same protocol through the real
:mod:`tfnorm.bench.peer_worker` loop, with fixed timings. No assertion is on speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from tfnorm import cli
from tfnorm.bench import peers, report, runner, timing
from tfnorm.bench.sampling import LocalTimer, schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "tfnorm", "bench")

# Fixed per-sample seconds the fake workers report, by peer and op.
FAKE_SECONDS = {
    "torch": {"layer_norm": 0.004, "group_norm": 0.003, "floor": 0.0005},
    "jax": {"layer_norm": 0.002, "group_norm": 0.006, "floor": 0.00025},
}

FAKE_WORKER = textwrap.dedent('''
    """A fake peer: the real protocol loop (peer_worker.Worker), fixed timings."""
    import json, os, sys, time
    sys.path.insert(0, {bench!r})
    import peer_worker
    peer_worker.script_setup(os.path.join({bench!r}, "peer_fake.py"))

    SCRIPT = os.path.basename(sys.argv[1]) if len(sys.argv) > 1 else "?"
    NAME = SCRIPT[len("peer_"):-len(".py")] if SCRIPT.startswith("peer_") else "?"
    SECONDS = {seconds!r}[NAME]
    LOG = os.environ.get("FAKE_PEER_LOG")
    FAIL = os.environ.get("FAKE_PEER_FAIL", "")      # "jax:group_norm": that case is refused
    DIE = os.environ.get("FAKE_PEER_DIE", "")        # "torch:group_norm": exit on its first sample

    class Backend(peer_worker.Backend):
        name = NAME
        def load(self):
            return None
        def describe(self):
            return {{"versions": {{"fake": "1"}}, "device": "cpu", "threads": 1,
                    "compile": "none", "notes": ["fake worker run as " + SCRIPT]}}
        def build(self, case):
            if FAIL == NAME + ":" + case["op"]:
                raise RuntimeError("fake " + NAME + " has no " + case["op"])
            return peer_worker.Prepared(lambda: None, lambda out: out,
                                        {{"impl": "fake." + case["op"], "layout": "fake",
                                         "op": case["op"]}})

    class Worker(peer_worker.Worker):
        def sample(self, key):
            op = self.cases[key].info["op"]
            if DIE == NAME + ":" + op:
                os._exit(3)
            if LOG:
                with open(LOG, "a") as fh:
                    fh.write(json.dumps([time.monotonic(), NAME + " " + op]) + "\\n")
            return SECONDS[op]

    sys.exit(peer_worker.main(Backend(), Worker))
''')


@pytest.fixture
def fake_pythons(tmp_path):
    """``{peer: path}`` of executables that run the fake worker in place of ``python``."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER.format(bench=BENCH, seconds=FAKE_SECONDS))
    out = {}
    for name in peers.PEERS:
        exe = tmp_path / f"python-{name}"
        exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
        out[name] = str(exe)
    return out


def _environ(fake_pythons, **extra):
    env = dict(os.environ)
    for name, spec in peers.PEERS.items():
        env[spec.env] = fake_pythons[name]
    env.update(extra)
    return env


def _start(name, fake_pythons, **extra):
    spec = peers.PEERS[name]
    return peers.PeerProcess(
        spec, fake_pythons[name], spec.env, env=_environ(fake_pythons, **extra)
    )


# -- discovery and "not installed" ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_current_interpreter_is_used_only_when_it_has_the_framework(name):
    spec = peers.PEERS[name]
    missing = [m for m in spec.modules if importlib.util.find_spec(m) is None]
    if missing:  # the CI environment: neither torch nor jax
        with pytest.raises(peers.PeerUnavailable, match=f"not installed: {missing[0]}") as info:
            peers.find_interpreter(spec, environ={})
        assert spec.env in str(info.value)  # says how to point at another interpreter
    else:
        assert peers.find_interpreter(spec, environ={}) == (sys.executable, "current interpreter")


def test_environment_variable_wins_and_is_checked(tmp_path):
    spec = peers.PEERS["torch"]
    assert peers.find_interpreter(spec, environ={spec.env: sys.executable}) == (
        sys.executable,
        spec.env,
    )
    bad = str(tmp_path / "no-python")
    with pytest.raises(peers.PeerUnavailable) as info:
        peers.find_interpreter(spec, environ={spec.env: bad})
    assert f"{spec.env}={bad}" in str(info.value)


@pytest.fixture
def blocked(tmp_path):
    """A PYTHONPATH entry on which ``import torch`` / ``import jax`` fails as if absent."""
    d = tmp_path / "blocked"
    d.mkdir()
    for mod in ("torch", "jax"):
        (d / f"{mod}.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{mod}'\", name={mod!r})\n"
        )
    return str(d)


@pytest.mark.parametrize("name, module", [("torch", "torch"), ("jax", "jax")])
def test_real_worker_reports_not_installed_without_importing_tensorflow(name, module, blocked):
    spec = peers.PEERS[name]
    env = dict(os.environ, PYTHONPATH=blocked)
    proc = subprocess.run(
        [sys.executable, spec.path], input="", capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    hello = json.loads(proc.stdout.splitlines()[0])
    assert hello["event"] == "hello" and hello["protocol"] == 1 and hello["peer"] == name
    assert hello["available"] is False
    assert hello["reason"].startswith(f"not installed: {module}")
    assert hello["tensorflow_imported"] is False
    # the same through the client: a PeerUnavailable, which start() turns into "skipped"
    with pytest.raises(peers.PeerUnavailable, match=f"not installed: {module}"):
        peers.PeerProcess(spec, sys.executable, "test", env=env)
    running, described = peers.start([name], environ=dict(env, **{spec.env: sys.executable}))
    assert running == []
    assert described[name]["status"] == "skipped"
    assert described[name]["reason"].startswith(f"not installed: {module}")
    line = report.peer_lines(described)[0]
    assert line.startswith(f"{name}: skipped (not installed: {module}")


def test_a_program_that_is_not_a_worker_is_skipped(tmp_path):
    exe = tmp_path / "python-liar"
    exe.write_text("#!/bin/sh\necho hello world\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    running, described = peers.start(
        ["torch"], environ=dict(os.environ, TFNORM_BENCH_TORCH_PYTHON=str(exe))
    )
    assert running == [] and described["torch"]["status"] == "skipped"
    assert "not JSON" in described["torch"]["reason"]


# -- the protocol with the fake worker ------------------------------------------------------


def test_protocol_round_trip(fake_pythons):
    peer = _start("torch", fake_pythons)
    try:
        assert peer.hello["available"] and peer.hello["tensorflow_imported"] is False
        assert peer.hello["notes"] == ["fake worker run as peer_torch.py"]  # the right script
        timer = peers.RemoteTimer(peer, peers.case("layer_norm", (2, 4, 8), "float32", "train"))
        assert timer.warm(2, 0.004, 64) >= 1
        assert timer.info["impl"] == "fake.layer_norm"
        assert timer.sample() == FAKE_SECONDS["torch"]["layer_norm"]
        with pytest.raises(peers.PeerError, match="unknown case op"):
            peer.request({"op": "prepare", "key": "k", "case": {"op": "softmax"}})
        with pytest.raises(peers.PeerError, match="unknown request op"):
            peer.request({"op": "dance"})
        assert timer.sample() == FAKE_SECONDS["torch"]["layer_norm"]  # still serving
    finally:
        last = peer.close()
    assert last == {"ok": True, "tensorflow_imported": False}
    assert peer.proc.returncode == 0


def test_rounds_interleave_across_processes(fake_pythons, tmp_path):
    """Every member once per round, rotated; the peers' samples happen in their turn."""
    log_path = tmp_path / "samples.log"
    started = [_start(n, fake_pythons, FAKE_PEER_LOG=str(log_path)) for n in ("torch", "jax")]
    events = []

    def local(label):
        import time

        def fn():
            events.append((time.monotonic(), label))

        return LocalTimer(fn, name=label)

    members = [local("tfnorm"), local("keras"), local("x*2")]
    labels = ["tfnorm", "keras", "x*2"]
    for p in started:
        for op in ("layer_norm", "floor"):
            members.append(peers.RemoteTimer(p, peers.case(op, (2, 8), "float32", "forward")))
            labels.append(f"{p.name} {op}")
    order = []
    try:
        res = timing.interleaved(members, repeats=3, warmup=1, target_s=0, max_inner=1, log=order)
    finally:
        for p in started:
            p.close()
    n = len(members)
    assert order == [i for rnd in schedule(n, 3) for i in rnd]
    # first round: tfnorm, keras, x*2, torch, torch x*2, jax, jax x*2; then rotated
    assert [labels[i] for i in order[:n]] == labels
    assert [labels[i] for i in order[n : 2 * n]] == labels[1:] + labels[:1]
    # and that is the order in which the samples really happened, across the three processes
    for line in log_path.read_text().splitlines():
        events.append(tuple(json.loads(line)))
    events.sort()
    warm_up_calls = 3  # one warm-up call per local member, before any round
    calls = [label for _, label in events][warm_up_calls:]
    # a local sample is an untimed call, then the timed one: two events of one member in a row
    happened = [label for i, label in enumerate(calls) if i == 0 or label != calls[i - 1]]
    assert len(calls) == len(happened) + 3 * 3  # three local members, three rounds
    assert happened == [labels[i] for i in order]
    assert res[3]["median_s"] == FAKE_SECONDS["torch"]["layer_norm"]
    assert res[5]["median_s"] == FAKE_SECONDS["jax"]["layer_norm"]


def test_a_failing_or_dying_peer_leaves_the_others_alone(fake_pythons):
    torch = _start("torch", fake_pythons, FAKE_PEER_DIE="torch:group_norm")
    jax = _start("jax", fake_pythons, FAKE_PEER_FAIL="jax:group_norm")
    calls = []
    members = [
        lambda: calls.append(1),
        peers.RemoteTimer(torch, peers.case("group_norm", (2, 8), "float32", "train", groups=2)),
        peers.RemoteTimer(jax, peers.case("group_norm", (2, 8), "float32", "train", groups=2)),
        peers.RemoteTimer(jax, peers.case("layer_norm", (2, 8), "float32", "train")),
    ]
    try:
        res = timing.interleaved(members, repeats=3, warmup=1, target_s=0, max_inner=1)
        assert len(calls) == 1 + 2 * 3  # the local member: warm-up, then per round two calls
        assert res[0]["median_s"] is not None
        assert res[1]["median_s"] is None and "exited (code 3)" in res[1]["error"]
        assert res[2]["median_s"] is None and "fake jax has no group_norm" in res[2]["error"]
        assert res[3]["median_s"] == FAKE_SECONDS["jax"]["layer_norm"]
        # a dead peer answers every later request at once, with the same reason
        with pytest.raises(peers.PeerError, match="exited"):
            peers.RemoteTimer(torch, peers.case("floor", (2, 8), "float32", "forward")).warm(
                1, 0, 1
            )
    finally:
        torch.close()
        jax.close()


# -- ratios and columns from fixed timings ------------------------------------------------


def _row(layer, tfnorm_ms, peer_ms, **kw):
    results = {
        name: ({"error": "x"} if ms is None else {"ms": ms, "floor_ms": ms / 10})
        for name, ms in peer_ms.items()
    }
    row = {
        "layer": layer,
        "baseline": "keras",
        "shape": [2, 8],
        "dtype": "float32",
        "xla": False,
        "mode": "forward",
        "tfnorm_ms": tfnorm_ms,
        "baseline_ms": 4.0,
        "ratio": tfnorm_ms / 4.0,
        "goal_ratio": 0.8,
        "goal_met": tfnorm_ms / 4.0 <= 0.8,
        "floor_ms": 1.0,
        "floor_fraction": 1.0 / tfnorm_ms,
        "gbps": 1.0,
        "floor_goal": True,
        "peers": results,
    }
    row.update(peers.compare_peers(tfnorm_ms, results))
    row.update(kw)
    return row


def test_ratio_against_the_fastest_peer_from_fixed_timings():
    assert peers.compare_peers(3.0, {"torch": {"ms": 1.5}, "jax": {"ms": 6.0}}) == {
        "fastest_peer": "torch",
        "peer_ratio": 2.0,
    }
    assert peers.compare_peers(1.0, {"torch": {"error": "x"}, "jax": {"ms": 4.0}}) == {
        "fastest_peer": "jax",
        "peer_ratio": 0.25,
    }
    rows = [
        _row("LayerNormalization", 3.0, {"torch": 1.5, "jax": 6.0}),
        _row("GroupNormalization", 1.0, {"torch": None, "jax": 4.0}),
    ]
    lines = report.table(rows, ["torch", "jax"]).splitlines()
    assert lines[0].endswith("torch ms  jax ms  fastest  /fastest")
    assert lines[2].split()[-4:] == ["1.50", "6.00", "torch", "2.00"]
    assert lines[3].split()[-4:] == ["n/a", "4.00", "jax", "0.25"]


def test_peer_result_keeps_what_the_worker_said():
    r = peers.peer_result(
        {"median_s": 0.002},
        {"median_s": 0.0005},
        {"impl": "torch.nn.functional.group_norm", "layout": "NCHW", "x": 1},
    )
    assert r == {
        "ms": 2.0,
        "floor_ms": 0.5,
        "impl": "torch.nn.functional.group_norm",
        "layout": "NCHW",
    }
    assert peers.peer_result({"median_s": None, "error": "boom"}, {}, {}) == {"error": "boom"}


# -- the runner and the command line with fake peers -------------------------------------


def test_runner_puts_peers_in_the_same_rounds(fake_pythons, monkeypatch):
    from tfnorm.bench import plan

    groups = []
    real = runner.interleaved

    def spy(fns, **kw):
        order = []
        out = real(fns, log=order, **kw)
        groups.append(([getattr(f, "name", "local") for f in fns], order))
        return out

    monkeypatch.setattr(runner, "interleaved", spy)
    subjects, _ = plan.subjects(["layer"])
    settings = runner.Settings(
        shapes=["seq"],
        dtypes=["float32"],
        compiles=["graph"],
        modes=["forward", "train"],
        repeats=2,
        warmup=1,
        tiny=True,
    )
    started = [_start(n, fake_pythons) for n in ("torch", "jax")]
    try:
        rows, skipped = runner.run(subjects, settings, progress=False, peers=started)
    finally:
        for p in started:
            p.close()
    assert skipped == [] and len(rows) == 2
    for names, order in groups:
        assert names == ["local"] * 3 + [
            "torch layer_norm",
            "torch floor",
            "jax layer_norm",
            "jax floor",
        ]
        assert order == [i for rnd in schedule(len(names), 2) for i in rnd]
    for row in rows:
        assert row["peers"]["torch"]["ms"] == pytest.approx(4.0)
        assert row["peers"]["jax"]["ms"] == pytest.approx(2.0)
        assert row["peers"]["jax"]["floor_ms"] == pytest.approx(0.25)
        assert row["fastest_peer"] == "jax"
        assert row["peer_ratio"] == pytest.approx(row["tfnorm_ms"] / 2.0)


def test_command_line_with_fake_peers(fake_pythons, tmp_path):
    path = tmp_path / "bench.json"
    env = _environ(
        fake_pythons,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        FAKE_PEER_FAIL="jax:group_norm",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfnorm",
            "bench",
            "--peers",
            "torch,jax",
            "--tiny",
            "--layers",
            "layer,group",
            "--dtypes",
            "float32",
            "--compile",
            "graph",
            "--modes",
            "forward",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--save",
            str(path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "peer torch: starting" in proc.stderr
    header = next(line for line in out.splitlines() if line.startswith("layer "))
    assert header.endswith("torch ms  jax ms  fastest  /fastest")
    assert "x*2 floor per framework" in out
    doc = json.loads(path.read_text())
    described = doc["machine"]["peers"]
    assert set(described) == {"torch", "jax"}
    for name in described:
        assert described[name]["status"] == "ok"
        assert described[name]["source"] == peers.PEERS[name].env
        assert described[name]["tensorflow_imported"] is False
    by_layer = {r["layer"]: r for r in doc["rows"]}
    ln, gn = by_layer["LayerNormalization"], by_layer["GroupNormalization"]
    assert ln["peers"]["torch"]["ms"] == pytest.approx(4.0)
    assert ln["peer_ratio"] == pytest.approx(ln["tfnorm_ms"] / 2.0)
    assert gn["peers"]["jax"] == {"error": "RuntimeError: fake jax has no group_norm"}
    assert gn["fastest_peer"] == "torch"
    assert gn["peer_ratio"] == pytest.approx(gn["tfnorm_ms"] / 3.0)
    assert any(s["layer"] == "GroupNormalization [jax]" for s in doc["skipped"])
    gn_line = next(line for line in out.splitlines() if line.startswith("GroupNormalization"))
    assert gn_line.split()[-4:-1] == ["3.00", "n/a", "torch"]
    # the same run as the README's Markdown table, computed from the saved rows
    rendered = subprocess.run(
        [sys.executable, "-m", "tfnorm", "bench", "--from", str(path), "--markdown"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    table = [line for line in rendered.stdout.splitlines() if line.startswith("|")]
    assert table[0].endswith("| PyTorch | Keras on JAX | tfnorm / fastest peer |")
    gn_cells = [c.strip() for c in next(t for t in table if "GroupNormalization" in t).split("|")]
    assert gn_cells[6:9] == ["3.0 / -", "- / -", f"**{gn['peer_ratio']:.2f}×** torch / -"]
    within = sum(r["peer_ratio"] <= 1.25 for r in doc["rows"])
    assert (
        f"Computed from these rows: tfnorm without XLA is within 1.25× of the fastest peer in "
        f"{within} of {len(doc['rows'])} forward rows"
    ) in rendered.stdout


def test_peers_not_installed_on_the_command_line(blocked, tmp_path):
    """The default discovery with nothing to find: both peers skipped, tfnorm's rows intact."""
    # torch: through the variable, the real worker finds no torch; jax: the default
    # discovery (this interpreter), whichever of the two steps finds it missing
    env = dict(
        os.environ,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=blocked + os.pathsep + ROOT,
        TFNORM_BENCH_TORCH_PYTHON=sys.executable,
    )
    env.pop("TFNORM_BENCH_JAX_PYTHON", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfnorm",
            "bench",
            "--peers",
            "torch,jax",
            "--tiny",
            "--layers",
            "rms",
            "--dtypes",
            "float32",
            "--compile",
            "xla",
            "--modes",
            "train",
            "--repeats",
            "1",
            "--warmup",
            "1",
            "--no-progress",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.strip().startswith("torch: skipped (not installed: torch") for line in lines)
    assert any(line.strip().startswith("jax: skipped (not installed: jax") for line in lines)
    row = next(line for line in lines if line.startswith("RMSNormalization"))
    assert row.split()[-4:] == ["-", "-", "-", "-"]


# -- argument errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["bench", "--peers", "torch,foo"], ["--peers", "'torch,foo'", "foo", "torch, jax"]),
        (["bench", "--peers", ","], ["--peers", "','", "empty"]),
        (
            ["bench", "--models", "resnet,transformer"],
            ["--models", "'resnet,transformer'", "resnet50, mobilenetv2, transformer"],
        ),
        (["bench", "--models", "--peers", "torch"], ["--models", "--peers"]),
        (["bench", "--models", "transformer", "--layers", "batch"], ["--models", "--layers"]),
    ],
)
def test_argument_errors_name_the_argument_and_the_value(argv, needles, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for needle in needles:
        assert needle in err, (needle, err)
