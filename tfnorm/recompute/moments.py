"""Exact statistics in float64: per-batch moments, their pairwise merge, and the assignment.

:func:`stacked_moments` reduces one batch of a layer's inputs to ``(rows, count, mean,
m2)`` per channel, in float64 and in two passes (no cancellation for inputs far from
0); :func:`merge_moments` merges such results with Chan et al.'s pairwise update, so
neither the number nor the order of the batches costs precision;
:func:`assign_statistics` turns the merged moments into the mean, variance or standard
deviation each of the layer's variables holds, assigns them, and tells how far they
moved.

Example:
  >>> import numpy as np, tensorflow as tf
  >>> from tfnorm.recompute.moments import merge_moments, stacked_moments
  >>> x = 1e8 + np.arange(1.0, 9.0).reshape(4, 2)  # 4 samples, 2 channels, far from 0
  >>> parts = [tuple(stacked_moments(tf.constant(b), (1,), None).numpy()[1:])
  ...          for b in (x[:1], x[1:])]
  >>> count, mean, m2 = merge_moments(*parts)
  >>> count.tolist(), (mean - 1e8).tolist(), (m2 / count).tolist()
  ([4.0, 4.0], [4.0, 5.0], [5.0, 5.0])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from tfnorm.recompute.report import LayerStatistics

if TYPE_CHECKING:
    from tfnorm.recompute.layers import Entry


def _moments64(x, kept, mask):
    """``(rows, count, mean, m2)`` of ``x`` per channel over the axes not in ``kept``, float64.

    ``m2`` is the sum of squared deviations from the batch mean (two passes, no
    cancellation for inputs far from 0); ``count`` the positions per channel.
    """
    rank = x.shape.rank
    reduce = [a for a in range(rank) if a not in kept]
    xs = tf.cast(x, tf.float64)
    rows = tf.cast(tf.shape(xs)[0], tf.float64)
    if mask is None:
        n = tf.cast(tf.reduce_prod(tf.gather(tf.shape(xs), reduce)), tf.float64)
        mean = tf.reduce_mean(xs, reduce, keepdims=True)
        m2 = tf.reduce_sum(tf.square(xs - mean), reduce)
        count = tf.fill(tf.shape(m2), n)
        return rows, count, tf.reshape(mean, tf.shape(m2)), m2
    w = tf.broadcast_to(mask, tf.shape(xs))
    zero = tf.zeros_like(xs)
    count = tf.reduce_sum(tf.cast(w, tf.float64), reduce, keepdims=True)
    mean = tf.math.divide_no_nan(tf.reduce_sum(tf.where(w, xs, zero), reduce, keepdims=True), count)
    m2 = tf.reduce_sum(tf.where(w, tf.square(xs - mean), zero), reduce)
    return rows, tf.reshape(count, tf.shape(m2)), tf.reshape(mean, tf.shape(m2)), m2


def stacked_moments(x, kept, mask):
    """:func:`_moments64` as one float64 tensor ``(4, channels...)``: rows (repeated per
    channel), count, mean and m2."""
    rows, count, mean, m2 = _moments64(x, kept, mask)
    return tf.stack([tf.fill(tf.shape(m2), rows), count, mean, m2])


def merge_moments(acc, batch):
    """Chan et al.'s pairwise update of ``(count, mean, m2)``, per channel, float64."""
    n_a, mean_a, m2_a = acc
    n_b, mean_b, m2_b = batch
    n = n_a + n_b
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(n > 0, n_b / np.where(n > 0, n, 1.0), 0.0)
    delta = mean_b - mean_a
    return n, mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac


def _relative_change(new, old):
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.abs(new - old)
        rel = np.where(
            old != 0, diff / np.abs(np.where(old != 0, old, 1.0)), np.where(diff == 0, 0.0, np.inf)
        )
    return float(np.max(rel)) if rel.size else 0.0


def assign_statistics(entry: Entry, count, mean, m2, samples) -> LayerStatistics:
    """Assigns the merged moments of ``entry``'s layer to its variables (a channel no
    position reached, or whose statistic is not finite, keeps its old values)."""
    layer = entry.layer
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(count > 0, m2 / np.where(count > 0, count, 1.0), np.nan)
    ok = (count > 0) & np.isfinite(mean) & np.isfinite(var)
    var = np.maximum(var, 0.0)
    eps = float(getattr(layer, "epsilon", 0.0))
    values = {"mean": mean, "variance": var, "stddev": np.sqrt(var + eps)}
    targets = entry.kind.targets(layer)
    mean_change = None
    variance_change = 0.0
    for attr, quantity in targets:
        variable = getattr(layer, attr)
        old = np.asarray(variable.numpy())
        new = np.where(
            ok.reshape(old.shape), values[quantity].reshape(old.shape), old.astype(np.float64)
        )
        new = new.astype(old.dtype)
        if attr == "moving_mean":
            mean_change = float(np.max(np.abs(new.astype(np.float64) - old))) if new.size else 0.0
        elif attr == "moving_variance":
            variance_change = _relative_change(new.astype(np.float64), old.astype(np.float64))
        variable.assign(new)
    return LayerStatistics(
        path=entry.path,
        name=layer.name,
        layer_class=type(layer),
        variables=tuple(attr for attr, _ in targets),
        calls=entry.calls,
        samples=int(samples),
        positions=int(np.max(count)) if count.size else 0,
        mean_change=mean_change,
        variance_change=variance_change,
        unchanged_channels=int(np.size(ok) - np.count_nonzero(ok)),
    )
