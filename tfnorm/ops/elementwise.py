"""Element-wise layers as one op each, with their backward written out.

Dynamic Tanh (Zhu et al. 2025) and the thresholded linear unit (Singh &
Krishnan 2020) have no statistics, but their weight gradients are sums over
(almost) the whole tensor. With ``t = tanh(alpha * x)``,
``y = gamma * t + beta`` and ``h = gamma * dy * (1 - t**2)``::

    dx = alpha * h       dalpha = sum(h * x)
    dgamma = sum(dy * t) dbeta = sum(dy)

(``gamma``/``beta`` sums over every axis they are broadcast along); and for
``y = max(x, tau)``, with ties going to ``x`` as in :func:`tf.maximum`::

    dx = dy * [x >= tau]    dtau = sum(dy * [x < tau])

The backward recomputes ``t`` (or the mask) from ``x``, so a training step
keeps nothing but ``x`` alive; it reads ``x`` and ``dy`` once, writing ``dx``
and reducing the weight gradients in the same loop where XLA fuses them. The
forward runs in the input's dtype (as the layers document); the weight
gradients are summed in float32 for half precision. Each is a
:class:`tfnorm.ops.kernel.FusedOp`: plain ops eagerly, the forward and the
backward each their own XLA cluster inside a graph (the backward reading
``x`` from the caller), part of the enclosing cluster under XLA.
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf

from tfnorm.ops.kernel import FusedOp
from tfnorm.ops.layout import scalar
from tfnorm.ops.moments import stats_dtype
from tfnorm.ops.reduce import sum_over, xla_on_cpu

__all__ = ["dynamic_tanh", "tlu"]


def _broadcast_axes(p: tf.Tensor, rank: int) -> Tuple[int, ...]:
    """The axes a parameter of rank ``rank`` is broadcast along (its size-1 axes)."""
    return tuple(a for a in range(rank) if p.shape[a] == 1)


def _full_rank(p: tf.Tensor, rank: int) -> tf.Tensor:
    """``p`` with leading size-1 axes added up to ``rank`` (NumPy broadcasting)."""
    missing = rank - p.shape.rank
    return tf.reshape(p, [1] * missing + p.shape.as_list()) if missing > 0 else p


def _reduce_to(t: tf.Tensor, axes: Tuple[int, ...], like: tf.Tensor, mode: bool) -> tf.Tensor:
    """``t`` summed over ``axes`` (with :func:`sum_over`) and shaped like ``like``."""
    s = sum_over(t, axes, xla_cpu=mode) if axes else t
    return tf.reshape(s, tf.shape(like))


def _dyt_forward(x, alpha, gamma, beta):
    """``(y,)``, in ``x``'s dtype."""
    t = tf.tanh(tf.cast(alpha, x.dtype) * x)
    return (t * tf.cast(gamma, x.dtype) + tf.cast(beta, x.dtype),)


def _dyt_backward(dy, x, alpha, gamma, beta, *, axes):
    """Gradients of :func:`_dyt_forward` (module docstring): x, alpha, gamma, beta."""
    dt = stats_dtype(x.dtype)
    mode = xla_on_cpu()
    xs = tf.cast(x, dt)
    ts = tf.tanh(tf.cast(alpha, dt) * xs)  # recomputed: only x is kept
    dys = tf.cast(dy, dt)
    h = dys * tf.cast(gamma, dt) * (1.0 - ts * ts)
    dx = tf.cast(h * tf.cast(alpha, dt), x.dtype)
    # the full sum for alpha: over the minor axis first (a matrix-vector product
    # under XLA on CPU, faster there than another column sum), then the small rest
    da = tf.reduce_sum(sum_over(h * xs, [x.shape.rank - 1], xla_cpu=mode))
    dg = _reduce_to(dys * ts, axes, gamma, mode)
    db = _reduce_to(dys, axes, beta, mode)
    return (dx, tf.cast(da, alpha.dtype), tf.cast(dg, gamma.dtype), tf.cast(db, beta.dtype))


_DYNAMIC_TANH = FusedOp(_dyt_forward, _dyt_backward)


def dynamic_tanh(x: tf.Tensor, alpha, gamma, beta) -> tf.Tensor:
    """``gamma * tanh(alpha * x) + beta`` as one op with a hand-written gradient.

    Args:
      x: input, any float dtype; the element-wise maths run in its dtype.
      alpha: scalar.
      gamma, beta: broadcastable to ``x`` (size 1, or missing in front, on the
        axes they are shared along).

    Example:
      >>> y = dynamic_tanh(tf.constant([[0.0, 100.0]]), 1.0, tf.ones([1, 2]), tf.zeros([1, 2]))
      >>> y.numpy().tolist()
      [[0.0, 1.0]]
    """
    rank = x.shape.rank
    dt = stats_dtype(x.dtype)
    alpha, gamma, beta = (scalar(p, dt) for p in (alpha, gamma, beta))
    gamma, beta = (_full_rank(p, rank) for p in (gamma, beta))
    axes = _broadcast_axes(gamma, rank)
    if axes != _broadcast_axes(beta, rank) or gamma.shape.rank != rank:
        raise ValueError(
            f"gamma {gamma.shape} and beta {beta.shape} must broadcast to x "
            f"(rank {rank}) along the same axes"
        )
    return _DYNAMIC_TANH(x, alpha, gamma, beta, axes=axes)


def _tlu_forward(x, tau):
    """``(max(x, tau),)`` in ``x``'s dtype."""
    return (tf.maximum(x, tf.cast(tau, x.dtype)),)


def _tlu_backward(dy, x, tau, *, axes):
    """Gradients of :func:`_tlu_forward`: x, tau (ties go to ``x``)."""
    dt = stats_dtype(x.dtype)
    keep = x >= tf.cast(tau, x.dtype)  # recomputed
    zero = tf.zeros_like(dy)
    dtau = _reduce_to(tf.cast(tf.where(keep, zero, dy), dt), axes, tau, xla_on_cpu())
    return tf.where(keep, dy, zero), tf.cast(dtau, tau.dtype)


_TLU = FusedOp(_tlu_forward, _tlu_backward)


def tlu(x: tf.Tensor, tau) -> tf.Tensor:
    """``max(x, tau)`` as one op with a hand-written gradient (ties go to ``x``).

    ``tau`` is broadcastable to ``x``; the maximum is taken
    in ``x``'s dtype.

    Example:
      >>> tlu(tf.constant([[-1.0, 2.0]]), tf.zeros([1, 2])).numpy().tolist()
      [[0.0, 2.0]]
    """
    rank = x.shape.rank
    tau = _full_rank(scalar(tau, stats_dtype(x.dtype)), rank)
    if tau.shape.rank != rank:
        raise ValueError(f"tau {tau.shape} must broadcast to x (rank {rank})")
    axes = _broadcast_axes(tau, rank)
    return _TLU(x, tau, axes=axes)
