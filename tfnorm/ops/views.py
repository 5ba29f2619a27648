"""Views and shapes shared by the kernels: free reshapes, parameter layouts, group sums."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["channels_last_view", "flat", "group_sum", "param_for", "scalar"]


def param_for(p, axes, rank):
    """A parameter shaped like the normalized axes, reshaped to broadcast over ``rank``."""
    if p is None:
        return None
    shape = [1] * rank
    for a, n in zip(axes, p.shape):
        shape[a] = n
    return tf.reshape(p, shape)


def scalar(value, dtype):
    """A Python number as a ``dtype`` constant (``tf.cast`` would round it to float32 first)."""
    if isinstance(value, (int, float)):
        return tf.constant(value, dtype)
    return tf.cast(value, dtype)


def flat(p, n, dtype):
    """``p`` (or None) as a ``dtype`` vector of length ``n``."""
    return None if p is None else tf.reshape(tf.cast(p, dtype), [n])


def group_sum(t, groups):
    """Sums an ``(A, 1, C)`` tensor within channel groups; broadcastable result."""
    c = t.shape[-1]
    if groups == c:
        return t
    if groups == 1:
        return tf.reduce_sum(t, -1, keepdims=True)
    a = tf.shape(t)[0]
    g = tf.reshape(t, tf.stack([a, 1, groups, c // groups]))
    s = tf.reduce_sum(g, -1, keepdims=True)
    return tf.reshape(tf.broadcast_to(s, tf.shape(g)), tf.stack([a, 1, c]))


def channels_last_view(x):
    """``(N, S, C)`` view of a channels-last tensor (S = product of the middle axes).

    Example:
      >>> tuple(channels_last_view(tf.zeros([2, 3, 4, 5])).shape)
      (2, 12, 5)
    """
    c = x.shape[-1]
    return tf.reshape(x, tf.stack([tf.shape(x)[0], -1, c]))
