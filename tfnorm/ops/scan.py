"""Linear recurrences ``h_t = a_t * h_{t-1} + b_t`` along axis 0 as parallel prefix scans.

Instead of a loop over the ``N`` steps, the whole sequence is processed with
Hillis-Steele doubling: ``ceil(log2 N)`` vectorized steps on tensors of the
state's size. Online normalization streams its statistics and its control
process over the batch this way (:mod:`tfnorm.ops.online`).
"""

from __future__ import annotations

from typing import Union

import tensorflow as tf

from tfnorm.ops.reduce import in_xla

__all__ = ["linear_recurrence"]

Coefficient = Union[float, tf.Tensor]


# h_t = a_t h_{t-1} + b_t, all t at once.
def _scan_static(a, b, n):
    """Inclusive scan for a static length ``n``: ``ceil(log2 n)`` unrolled steps."""
    const = not isinstance(a, tf.Tensor)
    d = 1
    while d < n:
        if const:
            b = tf.concat([b[:d], b[d:] + (a**d) * b[:-d]], 0)
        else:
            b = tf.concat([b[:d], b[d:] + a[d:] * b[:-d]], 0)
            a = tf.concat([a[:d], a[d:] * a[:-d]], 0)
        d *= 2
    return b


def _scan_dynamic(a, b):
    """Inclusive scan as a ``while_loop`` of the same doubling steps.

    Used when the batch size is known only at run time, and under XLA, where
    the loop keeps the scan from being fused into (and recomputed for every
    element of) the full-size tensors that consume its result.
    """
    const = not isinstance(a, tf.Tensor)
    n = tf.shape(b)[0]
    steps = tf.range(n)
    rank = b.shape.rank
    zero = tf.zeros_like(b)

    def shifted(d, t):
        return tf.gather(t, tf.maximum(steps - d, 0))

    def valid(d):
        return tf.reshape(steps >= d, [-1] + [1] * (rank - 1))

    if const:

        def body(d, b):
            coef = tf.pow(tf.constant(a, b.dtype), tf.cast(d, b.dtype))
            return d * 2, b + tf.where(valid(d), coef * shifted(d, b), zero)

        _, b = tf.while_loop(lambda d, b: d < n, body, (tf.constant(1), b))
        return b

    def body(d, a, b):
        ok = valid(d)
        b = b + tf.where(ok, a * shifted(d, b), zero)
        a = tf.where(ok, a * shifted(d, a), a)
        return d * 2, a, b

    _, _, b = tf.while_loop(lambda d, a, b: d < n, body, (tf.constant(1), a, b))
    return b


def linear_recurrence(a: Coefficient, b: tf.Tensor, initial: tf.Tensor):
    """Runs ``h_t = a_t * h_{t-1} + b_t`` along axis 0 with ``h_{-1} = initial``.

    A parallel prefix scan: ``ceil(log2 N)`` vectorized steps, no loop over
    the ``N`` steps of the recurrence.

    Args:
      a: the coefficients, a tensor shaped like ``b``, or a Python number for a
        constant coefficient (an exponential moving average).
      b: the inputs, shape ``(N, ...)``.
      initial: the state before step 0, shape ``(1, ...)`` (broadcastable).

    Returns:
      ``(before, last)``: ``before[t] = h_{t-1}`` (the state step ``t`` starts
      from, ``before[0] = initial``) and ``last = h_{N-1}`` with shape ``(1, ...)``.

    Example:
      >>> before, last = linear_recurrence(0.5, tf.constant([[1.0], [2.0], [3.0]]),
      ...                                  tf.constant([[4.0]]))
      >>> before.numpy().ravel().tolist(), last.numpy().ravel().tolist()
      ([4.0, 3.0, 3.5], [4.75])
    """
    initial = tf.cast(initial, b.dtype) + tf.zeros_like(b[:1])
    if isinstance(a, tf.Tensor):
        a = tf.cast(a, b.dtype) + tf.zeros_like(b)
        b = tf.concat([b[:1] + a[:1] * initial, b[1:]], 0)
    else:
        a = float(a)
        b = tf.concat([b[:1] + a * initial, b[1:]], 0)
    n = b.shape[0]
    if n is None or (n > 1 and in_xla()):
        # the loop form is a fusion boundary for XLA, which otherwise fuses the scan into
        # every consumer of its result, recomputing it per element of the activations
        h = _scan_dynamic(a, b)
    else:
        h = _scan_static(a, b, n)
    return tf.concat([initial, h[:-1]], 0), h[-1:]
