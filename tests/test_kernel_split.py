"""Kernels with a hand-written gradient run as two XLA clusters that TensorFlow never differentiates.

Inside a ``tf.function`` without XLA each kernel is its own cluster
(``tfnorm.ops.kernel``). Were a ``tf.custom_gradient`` compiled inside the
forward cluster, TensorFlow would differentiate that cluster itself: it
rewrites the call into a ``__forward_*`` function that also returns what the
gradient closes over (copies of the input) and adds a ``__backward_*`` one.
Joined by ``tfnorm.ops.kernel.with_backward``, the training step holds a
compiled forward and a compiled backward of our own, and neither of those.
The values on this path are checked against NumPy in the kernel tests.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from tfnorm import ops
from tfnorm.ops import kernel
from tfnorm.ops.adanorm import adanorm
from tfnorm.ops.evonorm import evonorm_b0, evonorm_s0
from tfnorm.ops.switchable import switchable_norm

C = 4
_ONES = tf.ones([C])


def _switchable(x, training):
    moving = None if training else _ONES
    return switchable_norm(
        x, tf.zeros([3]), tf.zeros([3]), _ONES, _ONES, moving, moving, training=training
    )[0]


OPS = {
    "layer_norm": lambda x: ops.layer_norm(x, [-1], _ONES, _ONES),
    "rms_norm": lambda x: ops.rms_norm(x, [-1], _ONES),
    "scale_norm": lambda x: ops.scale_norm(x, [-1], tf.constant(2.0)),
    "group_norm": lambda x: ops.group_norm(x, 2, -1, _ONES, _ONES),
    "frn": lambda x: ops.instance_norm(x, -1, _ONES, _ONES, tf.constant(1e-3), center=False),
    "adanorm": lambda x: adanorm(x, [-1]),
    "switchable_train": lambda x: _switchable(x, True),
    "switchable_infer": lambda x: _switchable(x, False),
    "evonorm_b0": lambda x: evonorm_b0(x, -1, _ONES, _ONES, _ONES)[0],
    "evonorm_s0": lambda x: evonorm_s0(x, 2, -1, _ONES, _ONES, _ONES),
    "dynamic_tanh": lambda x: ops.dynamic_tanh(x, tf.constant(0.5), _ONES, _ONES),
    "tlu": lambda x: ops.tlu(x, _ONES),
    "lrn": lambda x: ops.lrn(x, 2, 1.0, 1e-3, 0.75, 3),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_training_step_compiles_forward_and_backward_kernels_only(name, monkeypatch):
    monkeypatch.setattr(kernel, "MIN_XLA_ELEMENTS", 0)  # own clusters at any size
    monkeypatch.delenv("TFNORM_XLA_KERNELS", raising=False)
    fn = OPS[name]
    x = tf.reshape(tf.range(2 * 3 * 3 * C, dtype=tf.float32) % 7.0, [2, 3, 3, C])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x)

    library = step.get_concrete_function(x).graph.as_graph_def().library.function
    compiled = [f.signature.name for f in library if f.attr["_XlaMustCompile"].b]
    assert len(compiled) == 2, compiled  # the forward kernel and the backward kernel
    derived = [n for n in compiled if n.startswith("__forward_") or "__backward_" in n]
    assert not derived, f"TensorFlow differentiated a compiled kernel: {derived}"
