"""LayerNorm, RMSNorm and ScaleNorm: statistics per row of an ``(R, C)`` view, one kernel.

The three ops share one kernel (:class:`tfnorm.ops.kernel.FusedOp`) on the
``"rows"`` view of :func:`tfnorm.ops.layout.fast_view` (the normalized axes
trailing, of static size): it computes the statistics
(:func:`tfnorm.ops.moments.row_moments`), normalizes and applies the learned
scale and offset, and its backward pass is written out instead of being
derived by autodiff through the moments. The backward reuses the forward's
mean and inverse standard deviation (``(R, 1)`` tensors) and recomputes
``x - mean`` on the fly, so a training step keeps nothing but ``x`` alive and
reads ``x`` and ``dy`` a few times instead of materializing a dozen
temporaries.

The maths, for a row of ``n`` values with ``xhat = (x - mean) * r``,
``r = 1 / sqrt(var + epsilon)``, ``y = gamma * xhat + beta`` and
``g = gamma * dy``::

    dx     = r * (g - mean(g) - xhat * mean(g * xhat))
    dgamma = sum(dy * xhat)      dbeta = sum(dy)

(the parameter sums over the rows); without centering (RMSNorm; ScaleNorm,
RMSNorm with a scalar scale and ``max(norm, epsilon)`` as the divisor) the
``mean(g)`` term and the mean drop out. The statistics are exact two-pass
moments in float32 (float64 for float64 input), the variance clipped at 0.
Other layouts compute the same functions through :func:`tfnorm.ops.moments`,
:func:`tfnorm.ops.normalize` and autodiff.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tfnorm.ops.kernel import FusedOp
from tfnorm.ops.layout import fast_view, flat, param_for, scalar, sorted_axes
from tfnorm.ops.moments import mean_square, moments, row_moments, stats_dtype
from tfnorm.ops.normalize import normalize, rms_normalize
from tfnorm.ops.reduce import sum_cols, sum_rows, xla_on_cpu

__all__ = ["layer_norm", "rms_norm", "scale_norm"]


def _row_forward(x2, gamma, beta, *, epsilon, center, clip):
    """Normalizes each row of ``x2``: ``(y, mean, r, active)``, statistics ``(R, 1)``.

    ``gamma``/``beta`` have shape ``(C,)`` or are None; ``gamma`` may also be
    a scalar. ``clip=True`` (ScaleNorm) divides by ``max(sqrt(var), epsilon)``
    instead of ``sqrt(var + epsilon)``; where the bound is active the divisor
    is a constant and carries no gradient. ``mean`` is None without
    centering, ``active`` (where the statistic, not the bound, sets the
    divisor) None without ``clip``.
    """
    dt = stats_dtype(x2.dtype)
    eps = scalar(epsilon, dt)
    stats = row_moments(x2, center=center, xla_cpu=xla_on_cpu())
    active = None
    if clip:
        root = tf.sqrt(stats.var)
        active = root >= eps
        r = 1.0 / tf.maximum(root, eps)
    else:
        r = tf.math.rsqrt(stats.var + eps)
    y = stats.centred * r
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return tf.cast(y, x2.dtype), stats.mean, r, active


def _row_backward(dy, x2, gamma, beta, mean, r, active):
    """Gradients of :func:`_row_forward` (module docstring): x[, gamma][, beta]."""
    dt = stats_dtype(x2.dtype)
    mode = xla_on_cpu()
    has_g = gamma is not None
    scalar_g = has_g and gamma.shape.rank == 0
    dys = tf.cast(dy, dt)
    xr = tf.cast(x2, dt)
    n = tf.cast(tf.shape(xr)[1], dt)
    dd = xr - mean if mean is not None else xr
    u = dys * dd  # dy * (x - mean)
    # mean(g * xhat) and mean(g) per row, g = gamma * dy
    if scalar_g:
        mgx = r * gamma * sum_rows(u, xla_cpu=mode) / n
    elif has_g:
        mgx = r * sum_rows(u, gamma, xla_cpu=mode) / n
    else:
        mgx = r * sum_rows(u, xla_cpu=mode) / n
    if active is not None:
        mgx = tf.where(active, mgx, tf.zeros_like(mgx))
    gd = dys * gamma if has_g else dys
    if mean is not None:
        mg = sum_rows(dys, gamma, xla_cpu=mode) / n
        dx = (gd - mg) * r - dd * (r * r * mgx)
    else:
        dx = gd * r - dd * (r * r * mgx)
    grads = [tf.cast(dx, x2.dtype)]
    if has_g:
        dg = sum_cols(u, r, xla_cpu=mode)
        if scalar_g:
            dg = tf.reduce_sum(dg)
        grads.append(tf.reshape(dg, tf.shape(gamma)))
    if beta is not None:
        grads.append(tf.reshape(sum_cols(dys, xla_cpu=mode), tf.shape(beta)))
    return grads


def _layer_norm_plain(x, axes, scale, offset, epsilon):
    rank = x.shape.rank
    axes = sorted_axes(axes, rank)
    mean, var = moments(x, axes)
    return normalize(
        x, mean, var, param_for(scale, axes, rank), param_for(offset, axes, rank), epsilon
    )


def _rms_norm_plain(x, axes, scale, epsilon):
    rank = x.shape.rank
    axes = sorted_axes(axes, rank)
    return rms_normalize(x, mean_square(x, axes), param_for(scale, axes, rank), None, epsilon)


def _scale_norm_plain(x, axes, gain, epsilon):
    axes = sorted_axes(axes, x.shape.rank)
    ms = mean_square(x, axes)
    dims = [x.shape[a] for a in axes]
    size = tf.size(x) // tf.size(ms) if None in dims else int(np.prod(dims, dtype=np.int64))
    sdt = ms.dtype
    # max(||x||, eps) as sqrt(max(||x||^2, eps^2)): the same value, and below eps the gradient
    # is exactly 0 (never 0 * d sqrt(0) = 0 * inf, which XLA and eager would round differently)
    norm = tf.sqrt(tf.maximum(ms * tf.cast(size, sdt), scalar(float(epsilon) ** 2, sdt)))
    # the factor reaches gain / eps (1e5 by default): applied in the statistics dtype, as
    # float16 could not hold it
    return tf.cast(tf.cast(x, sdt) * (tf.cast(gain, sdt) / norm), x.dtype)


_LAYER_NORM = FusedOp(_row_forward, _row_backward, fallback=_layer_norm_plain)
_RMS_NORM = FusedOp(_row_forward, _row_backward, fallback=_rms_norm_plain)
_SCALE_NORM = FusedOp(_row_forward, _row_backward, fallback=_scale_norm_plain)


def layer_norm(
    x: tf.Tensor, axes: Sequence[int], scale=None, offset=None, epsilon: float = 1e-3
) -> tf.Tensor:
    """LayerNorm over ``axes``: ``(x - mean) / sqrt(var + epsilon) * scale + offset``.

    One op with a hand-written gradient when ``axes`` are the trailing axes;
    the same function through :func:`moments` and :func:`normalize` otherwise.

    Args:
      x: input, any float dtype (statistics in float32 for half precision).
      axes: the normalized axes (statistics per position of the other axes).
      scale, offset: optional, shaped like the sizes of ``axes`` (in order).
      epsilon: added to the variance.

    Returns:
      A tensor like ``x``.

    Example:
      >>> layer_norm(tf.constant([[1.0, 2.0, 3.0]]), axes=[-1], epsilon=0.0).numpy().round(4)
      array([[-1.2247,  0.    ,  1.2247]], dtype=float32)
    """
    view = fast_view(x, axes)
    if view is None:
        return _LAYER_NORM.fallback(x, axes, scale, offset, epsilon)
    n, dt = view.size, stats_dtype(x.dtype)
    return view.restore(
        _LAYER_NORM(
            view.tensor,
            flat(scale, n, dt),
            flat(offset, n, dt),
            epsilon=float(epsilon),
            center=True,
            clip=False,
        )
    )


def rms_norm(x: tf.Tensor, axes: Sequence[int], scale=None, epsilon: float = 1e-6) -> tf.Tensor:
    """RMSNorm over ``axes``: ``x / sqrt(mean(x**2) + epsilon) * scale``.

    One op with a hand-written gradient when ``axes`` are the trailing axes.

    Example:
      >>> rms_norm(tf.constant([[3.0, 4.0]]), axes=[-1], epsilon=0.0).numpy().round(4)
      array([[0.8485, 1.1314]], dtype=float32)
    """
    view = fast_view(x, axes)
    if view is None:
        return _RMS_NORM.fallback(x, axes, scale, epsilon)
    n, dt = view.size, stats_dtype(x.dtype)
    return view.restore(
        _RMS_NORM(
            view.tensor, flat(scale, n, dt), None, epsilon=float(epsilon), center=False, clip=False
        )
    )


def scale_norm(x: tf.Tensor, axes: Sequence[int], gain, epsilon: float = 1e-5) -> tf.Tensor:
    """ScaleNorm over ``axes``: ``gain * x / max(||x||_2, epsilon)``, ``gain`` a scalar.

    The norm is ``sqrt(n * mean(x**2))`` over the ``n`` values of ``axes``
    (float32 for half precision). One op with a hand-written gradient (the
    RMSNorm one with a scalar scale ``gain / sqrt(n)``) when ``axes`` are the
    trailing axes; the same function with autodiff otherwise.

    Example:
      >>> scale_norm(tf.constant([[3.0, 4.0]]), axes=[-1], gain=10.0).numpy().round(4)
      array([[6., 8.]], dtype=float32)
    """
    view = fast_view(x, axes)
    if view is None:
        return _SCALE_NORM.fallback(x, axes, gain, epsilon)
    # ||x|| >= epsilon  <=>  sqrt(mean(x**2)) >= epsilon / sqrt(n)
    inv_root_n = 1.0 / float(np.sqrt(view.size))
    gain = tf.cast(gain, stats_dtype(x.dtype))
    return view.restore(
        _SCALE_NORM(
            view.tensor,
            gain * inv_root_n,
            None,
            epsilon=float(epsilon * inv_root_n),
            center=False,
            clip=True,
        )
    )
