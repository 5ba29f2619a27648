"""Training killed with SIGKILL and resumed ends bit-identical to an uninterrupted run.

A child process trains a small model holding the stateful layers (BatchNormalization's moving
statistics, OnlineNormalization's streamed and control state, WeightNormalization's
data-dependent init flag) under ``keras.callbacks.BackupAndRestore`` with op determinism,
and kills itself with SIGKILL in the middle of an epoch; a second process resumes from the
backup. Every variable of the model and of the optimizer must equal, bit for bit, those of
a third process that trained without interruption. ``tf.train.Checkpoint`` and
``save_weights`` round trips are checked the same way in-process, and two seeded runs
under op determinism must be bit-identical.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnorm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, keras, tensorflow as tf
    import tfnorm

    backup, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype("float32") * 3 + 1
    y = rng.normal(size=(96, 1)).astype("float32")
    model = keras.Sequential([
        keras.Input((8,)),
        tfnorm.WeightNormalization(keras.layers.Dense(16)),
        tfnorm.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(8),
        tfnorm.OnlineNormalization(),
        keras.layers.Dense(1),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "mse")

    class Kill(keras.callbacks.Callback):
        seen = 0
        def on_train_batch_end(self, batch, logs=None):
            Kill.seen += 1
            if Kill.seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    callbacks = [Kill()]
    if backup != "-":
        callbacks.insert(0, keras.callbacks.BackupAndRestore(backup, save_freq="epoch"))
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
    state = {f"m{i}:{v.path}": np.asarray(v) for i, v in enumerate(model.variables)}
    state.update({f"o{i}:{v.path}": np.asarray(v)
                  for i, v in enumerate(model.optimizer.variables)})
    np.savez(out, **state)
""")


def _run(tmp_path, backup, out, kill_at):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, str(script), backup, out, str(kill_at)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_sigkill_mid_epoch_and_resume_is_bit_identical(tmp_path):
    backup = str(tmp_path / "backup")
    # 12 batches per epoch: killed after batch 17, in the middle of the second epoch; Keras
    # resumes from the backup of the last finished epoch and runs the second epoch again
    killed = _run(tmp_path, backup, str(tmp_path / "unused.npz"), 17)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert os.path.isdir(backup)
    resumed = _run(tmp_path, backup, str(tmp_path / "resumed.npz"), 10**9)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = _run(tmp_path, "-", str(tmp_path / "straight.npz"), 10**9)
    assert straight.returncode == 0, straight.stderr[-2000:]
    again = _run(tmp_path, "-", str(tmp_path / "again.npz"), 10**9)  # a second seeded run
    assert again.returncode == 0, again.stderr[-2000:]
    c, b = np.load(tmp_path / "again.npz"), np.load(tmp_path / "straight.npz")
    for key in b.files:  # two seeded runs under op determinism: bit-identical
        np.testing.assert_array_equal(c[key], b[key], err_msg=key)
    a = np.load(tmp_path / "resumed.npz")
    assert sorted(a.files) == sorted(b.files)
    names = " ".join(a.files)
    for needed in ("moving_mean", "moving_variance", "initialized", "g"):
        assert needed in names, needed  # the stateful variables are part of the comparison
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _stateful_model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((4, 6)),
            tfnorm.WeightNormalization(keras.layers.Dense(6)),
            tfnorm.BatchNormalization(renorm=True),
            tfnorm.OnlineNormalization(),
            tfnorm.SwitchableNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    rng = np.random.default_rng(1)
    model.fit(
        rng.normal(size=(32, 4, 6)).astype("float32"),
        rng.normal(size=(32, 1)).astype("float32"),
        batch_size=8,
        verbose=0,
    )
    return model


def test_checkpoint_and_save_weights_round_trips_are_bit_identical(tmp_path):
    model = _stateful_model()
    saved = [np.asarray(v).copy() for v in model.variables]
    ckpt = tf.train.Checkpoint(model=model)
    path = ckpt.write(str(tmp_path / "ckpt"))
    model.save_weights(str(tmp_path / "w.weights.h5"))
    for v in model.variables:  # wipe, then restore each way
        v.assign(tf.zeros_like(v))
    ckpt.read(path).assert_consumed()
    for v, s in zip(model.variables, saved):
        np.testing.assert_array_equal(np.asarray(v), s, err_msg=v.path)
    for v in model.variables:
        v.assign(tf.zeros_like(v))
    model.load_weights(str(tmp_path / "w.weights.h5"))
    for v, s in zip(model.variables, saved):
        np.testing.assert_array_equal(np.asarray(v), s, err_msg=v.path)
