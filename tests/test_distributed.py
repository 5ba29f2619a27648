"""Every layer under tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy.

Logical CPU devices must be configured before TensorFlow initialises its
devices, and multi-worker training needs one process per worker, so the
checks run in subprocesses (``tests/dist_worker.py``): one process with two
logical CPUs for ``MirroredStrategy``, and two worker processes on 127.0.0.1
(``TF_CONFIG``, free ports) for ``MultiWorkerMirroredStrategy``. All three are
started together by one fixture, bounded in time, and stopped by it. Each
reports, per descriptor case, whether every replica matched single-device runs
(the rules are in ``dist_worker.py``); the tests below read those reports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import tfnorm
from tests.dist_worker import distributed_cases
from tfnorm import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 540
CASES = distributed_cases("mirrored")  # the descriptors, plus synchronized=True variants
ids = [c.id for c in CASES]
multiworker_ids = [c.id for c in distributed_cases("multiworker")]


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(**extra):
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _start(strategy, out, log, env):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.dist_worker", "--strategy", strategy, "--out", out],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The reports of the mirrored process and the two workers, run once per test session.

    Under pytest-xdist every worker process that runs a test of this module
    needs them; the first one to take the lock file runs the processes, the
    others wait for its reports.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the xdist workers of this session
    done = base / "distributed-reports.json"
    try:
        fd = os.open(base / "distributed-reports.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        deadline = time.monotonic() + TIMEOUT_S + 120
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(1.0)
        if not done.exists():
            pytest.fail(
                "another pytest worker was running the distributed checks and gave no "
                "reports in time"
            )
        return json.loads(done.read_text())
    os.close(fd)
    result = {
        key: {"failed": "the distributed checks did not run"}
        for key in ("mirrored", "worker0", "worker1")
    }
    try:
        result = _run_reports(tmp_path_factory.mktemp("distributed"))
    finally:
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, done)
    return result


def _run_reports(tmp):
    """Runs the mirrored process and the two workers; returns their JSON reports."""
    procs, logs = {}, {}

    def launch(key, strategy, out, env):
        logs[key] = open(tmp / f"{key}.log", "w")
        procs[key] = _start(strategy, str(out), logs[key], env)

    launch("mirrored", "mirrored", tmp / "mirrored.json", _env())
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        launch(f"worker{i}", "multiworker", tmp / "multiworker.json", _env(TF_CONFIG=tf_config))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs.values():
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for f in logs.values():
            f.close()

    def read(key, path):
        if procs[key].returncode != 0 or not os.path.exists(path):
            tail = (tmp / f"{key}.log").read_text()[-4000:]
            return {"failed": f"{key} exited with {procs[key].returncode}:\n{tail}"}
        with open(path) as f:
            return json.load(f)

    return {
        "mirrored": read("mirrored", tmp / "mirrored.json"),
        "worker0": read("worker0", f"{tmp / 'multiworker.json'}.0"),
        "worker1": read("worker1", f"{tmp / 'multiworker.json'}.1"),
    }


def _case_result(report, case_id):
    assert "failed" not in report, report.get("failed")
    assert case_id in report["cases"], f"{case_id} missing from the report"
    return report["cases"][case_id]


@pytest.mark.parametrize("case_id", ids)
def test_mirrored_two_logical_cpus(reports, case_id):
    report = reports["mirrored"]
    result = _case_result(report, case_id)
    assert report["replicas"] == 2
    assert result["ok"], result["error"] + "\n" + result.get("traceback", "")


@pytest.mark.parametrize("case_id", multiworker_ids)
def test_multiworker_two_processes(reports, case_id):
    for key in ("worker0", "worker1"):
        report = reports[key]
        result = _case_result(report, case_id)
        assert report["replicas"] == 2
        assert result["ok"], f"{key}: " + result["error"] + "\n" + result.get("traceback", "")


def test_workers_are_distinct_tasks(reports):
    assert {reports["worker0"].get("task"), reports["worker1"].get("task")} == {0, 1}


def test_multiworker_covers_every_layer_class_and_every_stateful_case():
    chosen = set(multiworker_ids)
    assert {c.cls for c in CASES if c.id in chosen} == {c.cls for c in CASES}
    assert {c.id for c in CASES if c.stateful or c.kwargs.get("synchronized")} <= chosen


def test_synchronized_layers_are_found(reports):
    """The rule 'synchronized=True -> global batch statistics' was applied to some cases."""
    report = reports["mirrored"]
    assert "failed" not in report, report.get("failed")
    sync = sorted(k for k, v in report["cases"].items() if v.get("synchronized"))
    expected = sorted(c.id for c in CASES if c.kwargs.get("synchronized"))
    assert expected and sync == expected
    assert any(i.endswith("+sync") for i in expected)


@pytest.mark.parametrize("key", ["mirrored", "worker0", "worker1"])
def test_training_loop_sees_the_global_batch(reports, key):
    """A step of ``distribute.train`` with synchronized BN normalizes with the global batch."""
    report = reports[key]
    assert "failed" not in report, report.get("failed")
    tr = report["training"]
    assert "error" not in tr, tr.get("error", "") + tr.get("traceback", "")
    assert tr["replicas"] == 2
    # momentum 0: the moving statistics are the first global batch's, per the NumPy mean
    assert tr["probe_mean_error"] < 1e-5 and tr["probe_variance_error"] < 1e-5
    assert tr["local_batch_mean_distance"] > 0.05  # one replica's half would be told apart
    # and two more epochs, shuffled, end at the single-device weights
    for path, err in tr["weight_errors"].items():
        assert err < 1e-5, f"{path} differs from the single-device run by {err}"
    np.testing.assert_allclose(tr["loss"], tr["reference_loss"], rtol=1e-5)
    assert tr["weights_moved"] > 1e-2


def test_keras_fit_under_mirrored_matches_one_device(reports):
    """Keras' own fit() with synchronized BN under MirroredStrategy takes single-device steps."""
    report = reports["mirrored"]
    assert "failed" not in report, report.get("failed")
    tr = report["training"]
    assert "error" not in tr, tr.get("error", "") + tr.get("traceback", "")
    assert tr["fit_weight_errors"]
    for path, err in tr["fit_weight_errors"].items():
        assert err < 1e-5, f"{path} differs from the single-device fit by {err}"
    np.testing.assert_allclose(tr["fit_loss"], tr["fit_reference_loss"], rtol=1e-5)


# -- the helpers of tfnorm.distribute, in this process (default strategy) ----------------
def test_make_strategy_names():
    assert distribute.make_strategy("default").num_replicas_in_sync == 1
    assert distribute.make_strategy(None).num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="name='ring'.*default, mirrored, multiworker"):
        distribute.make_strategy("ring")
    with pytest.raises(ValueError, match="devices"):
        distribute.make_strategy("multiworker", devices=["/cpu:0"])


def test_logical_cpus_after_initialisation_says_when_to_call_it():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # devices are initialised now
    have = len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(RuntimeError, match="before any TensorFlow operation"):
        distribute.logical_cpus(have + 1)
    with pytest.raises(ValueError, match="n=0"):
        distribute.logical_cpus(0)


def test_sample_order_is_a_per_epoch_permutation():
    order = distribute.sample_order(10, 4, epochs=2, shuffle=True, seed=1)
    assert order.shape == (16,)
    for part in (order[:8], order[8:]):
        assert len(set(part.tolist())) == 8 and set(part.tolist()) <= set(range(10))
    assert not np.array_equal(order[:8], order[8:])
    np.testing.assert_array_equal(
        distribute.sample_order(10, 4, epochs=2, shuffle=True, seed=1), order
    )
    np.testing.assert_array_equal(distribute.sample_order(10, 4), np.arange(8))


def _small_model():
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4),
            tfnorm.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )


def test_train_rejects_bad_arguments():
    x = np.zeros((8, 3), "float32")
    y = np.zeros(8, "int64")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _small_model()
    with pytest.raises(ValueError, match="batch_size=16 is larger than the 8 samples"):
        distribute.train(model, x, y, loss=loss, optimizer="sgd", batch_size=16, verbose=0)
    with pytest.raises(ValueError, match="epochs=0"):
        distribute.train(model, x, y, loss=loss, optimizer="sgd", epochs=0, verbose=0)
    with pytest.raises(TypeError, match="loss="):
        distribute.train(model, x, y, loss=3, optimizer="sgd", verbose=0)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        distribute.train(unbuilt, x, y, loss=loss, optimizer="sgd", verbose=0)


def test_train_matches_keras_fit_on_one_device():
    """With one replica the loop takes Keras' own steps (SGD, mean loss, BN in training)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = rng.integers(0, 2, 32)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(1)
    a = _small_model()
    keras.utils.set_random_seed(1)
    b = _small_model()
    h = distribute.train(
        a,
        x,
        y,
        loss=loss,
        optimizer=keras.optimizers.SGD(0.1),
        batch_size=8,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    b.compile(keras.optimizers.SGD(0.1), loss)
    hb = b.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(h["loss"], hb.history["loss"], rtol=1e-5)
