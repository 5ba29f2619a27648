"""Package-level behaviour: backend check, version, command line, ops API."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

import tfnorm
from tfnorm import ops


def _run(args, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_other_keras_backend_gives_a_clear_import_error():
    proc = _run(["-c", "import tfnorm"], {"KERAS_BACKEND": "numpy"})
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "KERAS_BACKEND=tensorflow" in proc.stderr and "'numpy'" in proc.stderr


def test_version_and_help():
    proc = _run(["-m", "tfnorm", "--version"])
    assert proc.returncode == 0 and proc.stdout.strip() == f"tfnorm {tfnorm.__version__}"
    proc = _run(["-m", "tfnorm", "--help"])
    assert proc.returncode == 0 and "usage: tfnorm" in proc.stdout


def test_moments_in_float32_for_half_input():
    x = tf.constant(np.full((2, 1000), 300.0), tf.float16)
    m, v = ops.moments(x, [1])
    assert m.dtype == tf.float32 and v.dtype == tf.float32
    np.testing.assert_allclose(m.numpy(), 300.0)
    np.testing.assert_array_equal(v.numpy(), 0.0)  # clipped, never negative


def test_masked_moments_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 7, 3))
    w = rng.random((4, 7, 1)) > 0.4
    m, v = ops.moments(tf.constant(x), [0, 1], mask=tf.constant(w))
    sel = x[np.broadcast_to(w, x.shape)].reshape(-1, 3)
    np.testing.assert_allclose(m.numpy().ravel(), sel.mean(0), rtol=1e-12)
    np.testing.assert_allclose(v.numpy().ravel(), sel.var(0), rtol=1e-12)
    # unbiased
    m, v = ops.moments(tf.constant(x), [2], correction=1)
    np.testing.assert_allclose(v.numpy()[..., 0], x.var(2, ddof=1), rtol=1e-12)


def test_fully_masked_slice_is_finite():
    x = tf.ones((2, 3, 4))
    m, v = ops.moments(x, [1], mask=tf.zeros((2, 3, 1)))
    assert np.isfinite(m.numpy()).all() and np.isfinite(v.numpy()).all()


def test_shifted_sums_recover_moments():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3)) * 0.01 + 1e3
    shift = tf.constant([[1e3, 1e3, 1e3]])
    m, v = ops.moments_from_sums(*ops.shifted_sums(tf.constant(x, tf.float32), [0], shift), shift)
    np.testing.assert_allclose(m.numpy().ravel(), x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(v.numpy().ravel(), x.var(0), rtol=1e-2)


def test_group_ops_round_trip_and_moments():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 4, 6))
    t = tf.constant(x)
    np.testing.assert_array_equal(ops.merge_groups(ops.split_groups(t, 3, 3), 3).numpy(), x)
    m, v = ops.group_moments(t, 3, 3, [1, 2])
    g = x.reshape(2, 12, 3, 2)
    np.testing.assert_allclose(m.numpy()[:, 0, 0, ::2], g.mean((1, 3)), rtol=1e-12)
    np.testing.assert_allclose(v.numpy()[:, 0, 0, 1::2], g.var((1, 3)), rtol=1e-12)


def test_ops_work_in_a_user_tf_function_with_xla():
    x = tf.constant(np.random.default_rng(3).normal(size=(4, 5)), tf.float32)

    @tf.function(jit_compile=True)
    def f(t):
        m, v = ops.moments(t, [1])
        return ops.normalize(t, m, v, epsilon=1e-5)

    eager_m, eager_v = ops.moments(x, [1])
    np.testing.assert_allclose(
        f(x).numpy(), ops.normalize(x, eager_m, eager_v, epsilon=1e-5), atol=1e-6
    )
