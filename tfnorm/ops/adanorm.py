"""AdaNorm (Xu et al. 2019) as one op with the paper's detached backward written out.

Per row (the normalized axes of one sample), with ``n`` values, ``xc = x - mean``,
``sigma`` the unbiased standard deviation and ``s = sigma + epsilon``::

    y = xc / s
    z = c * (1 - k * y) * y                 phi(y) = c * (1 - k * y) is a constant

so with ``g = phi(y) * dz`` (the gradient reaching ``y``) the gradient flows
through the mean and the standard deviation only::

    dx = (g - mean(g)) / s - xc * sum(g * xc) / (s**2 * (n - 1) * sigma)

(the last term is 0 for a constant row, where ``sigma = 0``). The forward pass
reads ``x`` twice (two-pass moments) and writes ``z``; the backward pass reads
``x`` and ``dz`` for two row sums and once more to write ``dx``. Forward and
backward are one :class:`tfnorm.ops.kernel.FusedOp` on the ``"rows"`` view of
:func:`tfnorm.ops.layout.fast_view`, compiled at any size inside a graph.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfnorm.ops.kernel import FusedOp
from tfnorm.ops.layout import fast_view, scalar, sorted_axes
from tfnorm.ops.moments import moments, row_moments, stats_dtype, to_stats
from tfnorm.ops.reduce import sum_rows, xla_on_cpu

__all__ = ["adanorm"]


def _safe_std(var):
    """``sqrt(var)`` whose gradient at ``var == 0`` (a constant row) is 0, not inf."""
    positive = var > 0
    return tf.where(
        positive, tf.sqrt(tf.where(positive, var, tf.ones_like(var))), tf.zeros_like(var)
    )


def _rows_forward(x2, *, k, c, epsilon):
    """AdaNorm of each row of a 2-D ``x2``: ``(z, mean, sigma, inv)``, statistics ``(R, 1)``."""
    eps = scalar(float(epsilon), stats_dtype(x2.dtype))
    stats = row_moments(x2, correction=1, xla_cpu=xla_on_cpu())
    sigma = tf.sqrt(stats.var)
    inv = 1.0 / (sigma + eps)
    y = stats.centred * inv
    return tf.cast(c * (1.0 - k * y) * y, x2.dtype), stats.mean, sigma, inv


def _rows_backward(dz, x2, mean, sigma, inv, *, k, c):
    """The gradient of :func:`_rows_forward` (module docstring), as a one-element list."""
    dt = stats_dtype(x2.dtype)
    mode = xla_on_cpu()
    n = tf.cast(tf.shape(x2)[1], dt)
    dd = tf.cast(x2, dt) - mean
    yy = dd * inv
    g = c * (1.0 - k * yy) * tf.cast(dz, dt)
    mean_g = sum_rows(g, xla_cpu=mode) / n
    # d sigma / d x = xc / ((n - 1) sigma); no such term where sigma == 0
    safe = tf.where(sigma > 0, sigma, tf.ones_like(sigma))
    coef = tf.where(
        sigma > 0,
        sum_rows(g * dd, xla_cpu=mode) * tf.square(inv) / (tf.maximum(n - 1.0, 1.0) * safe),
        tf.zeros_like(sigma),
    )
    return [tf.cast((g - mean_g) * inv - dd * coef, x2.dtype)]


def _adanorm_plain(x, axes, k, c, epsilon):
    # All of it in the statistics dtype from one cast of x: the gradients of the centring,
    # mean and variance branches then meet in float32, where they cancel, instead of each
    # being rounded to float16 first (they overflow it for a slice of tiny spread), and
    # x * inv cannot overflow float16 for a constant sample.
    xs = to_stats(x)
    mean, var = moments(xs, sorted_axes(axes, x.shape.rank), correction=1)
    inv = 1.0 / (_safe_std(var) + scalar(float(epsilon), var.dtype))
    y = (xs - mean) * inv
    return tf.cast(tf.stop_gradient(c * (1.0 - k * y)) * y, x.dtype)


_ADANORM = FusedOp(_rows_forward, _rows_backward, threshold=False, fallback=_adanorm_plain)


def adanorm(
    x: tf.Tensor, axes: Sequence[int], k: float = 0.1, c: float = 1.0, epsilon: float = 1e-5
) -> tf.Tensor:
    """AdaNorm over ``axes``: ``z = c * (1 - k * y) * y``, ``phi = c (1 - k y)`` detached.

    ``y = (x - mean) / (std + epsilon)`` with the unbiased standard deviation,
    statistics per position of the other axes (float32 for half precision).
    One op with the hand-written backward (module docstring) when ``axes``
    are the trailing axes; the same function with autodiff through
    :func:`tfnorm.ops.moments` and a stop-gradient otherwise.

    Example:
      >>> z = adanorm(tf.constant([[1.0, 2.0, 3.0]]), axes=[-1], k=0.1, epsilon=0.0)
      >>> z.numpy().astype(float).round(4).tolist()
      [[-1.1, 0.0, 0.9]]
    """
    view = fast_view(x, axes)
    if view is None:
        return _ADANORM.fallback(x, axes, k, c, epsilon)
    return view.restore(_ADANORM(view.tensor, k=float(k), c=float(c), epsilon=float(epsilon)))
