"""Cosine normalization (Luo et al. 2017): cosine similarity in place of the dot product.

A unit's output is the cosine between its weight vector ``w`` and its input
vector ``x`` (the whole input of a dense unit, one patch of a convolution)::

    out = (w . x) / (sqrt(|w|**2 + eps) * sqrt(|x|**2 + eps))

which lies in [-1, 1]. With ``centered=True`` both vectors are mean-subtracted
first (the Pearson correlation). With a bias, as in the paper, the bias is a
component of the weight vector matched by a constant 1 in the input vector:
``w~ = [w, b]``, ``x~ = [x, 1]``.

The weight vector is normalized once (it is small); the input norms come from
sums of ``x**2`` (and ``x`` when centered) over each input vector, taken with
a convolution by a ones kernel, so patches are never extracted in memory.
Statistics are float32 for half-precision input; the matmul or convolution
itself runs in the input dtype with the normalized kernel, so its values are
bounded by the input norms.
"""

from __future__ import annotations

from typing import Sequence, Union

import tensorflow as tf

from tfnorm.ops.layout import scalar
from tfnorm.ops.moments import moments, stats_dtype, to_stats

__all__ = ["normalized_kernel", "cosine_matmul", "cosine_conv"]


def normalized_kernel(kernel, bias=None, centered: bool = False, epsilon: float = 1e-6):
    """Unit weight vectors: every axis but the last is one vector per output unit.

    Returns ``(kernel_hat, bias_hat)`` (``bias_hat`` None without a bias) with
    ``[kernel_hat, bias_hat]`` equal to ``[kernel, bias]`` (mean-subtracted
    when ``centered``) divided by ``sqrt(squared norm + epsilon)``.
    """
    axes = list(range(kernel.shape.rank - 1))
    size = 1
    for n in kernel.shape[:-1]:
        size *= n
    if centered:
        total = tf.reduce_sum(kernel, axes)
        count = size
        if bias is not None:
            total += bias
            count += 1
        mean = total / count
        kernel = kernel - mean
        if bias is not None:
            bias = bias - mean
    sq = tf.reduce_sum(tf.square(kernel), axes)
    if bias is not None:
        sq += tf.square(bias)
    inv = tf.math.rsqrt(sq + scalar(epsilon, sq.dtype))
    return kernel * inv, (None if bias is None else bias * inv)


def _finish(dot, bias_hat, sq, epsilon, dtype):
    """``(dot + bias_hat) / sqrt(sq + epsilon)`` in ``dtype``."""
    # in the statistics dtype: the gradient of dot * inv with respect to inv is a sum of
    # dot * dy, which float16 cannot hold for inputs of large magnitude
    dot = tf.cast(dot, sq.dtype)
    if bias_hat is not None:
        dot = dot + tf.cast(bias_hat, dot.dtype)
    inv = tf.math.rsqrt(tf.maximum(sq, tf.zeros([], sq.dtype)) + scalar(epsilon, sq.dtype))
    return tf.cast(dot * inv, dtype)


def cosine_matmul(
    x: tf.Tensor, kernel, bias=None, centered: bool = False, epsilon: float = 1e-6
) -> tf.Tensor:
    """Cosine between each input row (last axis of ``x``) and each column of ``kernel``.

    Args:
      x: ``(..., D)``.
      kernel: ``(D, units)`` (float32 for half-precision ``x``).
      bias: optional ``(units,)``, folded into the vectors (module docstring).
      centered: mean-subtract both vectors (Pearson correlation).
      epsilon: added to both squared norms.

    Returns:
      ``(..., units)`` in ``x``'s dtype, within [-1, 1].

    Example:
      >>> out = cosine_matmul(tf.constant([[3.0, 4.0]]), tf.constant([[1.0], [0.0]]), epsilon=0.0)
      >>> round(float(out[0, 0]), 6)
      0.6
    """
    sd = stats_dtype(x.dtype)
    kernel = tf.cast(kernel, sd)
    bias = None if bias is None else tf.cast(bias, sd)
    k_hat, b_hat = normalized_kernel(kernel, bias, centered, epsilon)
    d = x.shape[-1]
    extra = 0 if bias is None else 1
    if centered:
        # |x~ - mean|^2 = D var(x) (+ D/(D+1) (mean(x) - 1)^2 with the bias component)
        m, var = moments(x, [x.shape.rank - 1], keepdims=True)
        sq = d * var
        if extra:
            sq = sq + (d / (d + 1.0)) * tf.square(m - 1.0)
        # The centred kernel sums to zero, so shifting every component of x~ by the same
        # amount leaves the dot product unchanged: shift by the row mean (in float32), which
        # keeps a large common offset out of the (possibly half-precision) product.
        m = tf.stop_gradient(m)
        x = tf.cast(to_stats(x) - m, x.dtype)
        if b_hat is not None:
            b_hat = (1.0 - m) * b_hat
    else:
        sq = tf.reduce_sum(tf.square(to_stats(x)), -1, keepdims=True) + float(extra)
    k = tf.cast(k_hat, x.dtype)
    if x.shape.rank == 2:
        dot = tf.matmul(x, k)
    else:
        dot = tf.tensordot(x, k, [[x.shape.rank - 1], [0]])
    return _finish(dot, b_hat, sq, epsilon, x.dtype)


def _window_sums(t, kernel_size, strides, padding, dilations):
    """Sums of ``t`` (channels_last, C channels) over each window, one output per channel."""
    c = t.shape[-1]
    ones = tf.eye(c, dtype=t.dtype)
    ones = tf.reshape(ones, [1] * len(kernel_size) + [c, c])
    ones = tf.tile(ones, list(kernel_size) + [1, 1])
    return tf.nn.convolution(t, ones, strides=strides, padding=padding, dilations=dilations)


def cosine_conv(
    x: tf.Tensor,
    kernel,
    bias=None,
    strides: Union[int, Sequence[int]] = 1,
    padding: str = "VALID",
    dilations: Union[int, Sequence[int]] = 1,
    centered: bool = False,
    epsilon: float = 1e-6,
) -> tf.Tensor:
    """Cosine between each input patch and each filter, for channels_last ``x``.

    Args:
      x: ``(N, *spatial, C_in)``.
      kernel: ``(*kernel_size, C_in, filters)``.
      bias: optional ``(filters,)``, folded into the vectors.
      strides, padding, dilations: as in ``tf.nn.convolution`` (``"VALID"`` or
        ``"SAME"``; a ``"SAME"`` patch includes its zero padding).
      centered: mean-subtract the patch and the filter (Pearson correlation);
        only the filter needs explicit centering, since the centered filter
        sums to zero.
      epsilon: added to both squared norms.

    Returns:
      ``(N, *out_spatial, filters)`` in ``x``'s dtype, within [-1, 1].

    Example:
      >>> x = tf.reshape(tf.range(1.0, 5.0), [1, 4, 1])
      >>> out = cosine_conv(x, tf.ones([2, 1, 1]), epsilon=0.0)
      >>> [round(v, 4) for v in out.numpy().ravel().tolist()]
      [0.9487, 0.9806, 0.9899]
    """
    sd = stats_dtype(x.dtype)
    kernel = tf.cast(kernel, sd)
    bias = None if bias is None else tf.cast(bias, sd)
    k_hat, b_hat = normalized_kernel(kernel, bias, centered, epsilon)
    ksize = kernel.shape[:-2].as_list()
    extra = 0 if bias is None else 1
    xs = to_stats(x)
    if centered:
        # The centred patch and filter are unchanged when every component of the patch
        # (zero padding included) moves by the same amount: shift each sample by its mean,
        # in float32, so that a large common offset neither cancels in the patch sums
        # S2 - S1**2 / K nor enters the (possibly half-precision) convolution.
        if padding.upper() == "SAME":
            xs = tf.pad(xs, _same_padding(xs, ksize, strides, dilations))
            padding = "VALID"
        shift = tf.stop_gradient(tf.reduce_mean(xs, list(range(1, xs.shape.rank)), keepdims=True))
        xs = xs - shift
        x = tf.cast(xs, x.dtype)
        stats = tf.stack([tf.reduce_sum(tf.square(xs), -1), tf.reduce_sum(xs, -1)], -1)
        sums = _window_sums(stats, ksize, strides, padding, dilations)
        s2, s1 = sums[..., :1], sums[..., 1:]
        if extra:
            ones = 1.0 - shift  # the bias component, shifted too
            s2, s1 = s2 + tf.square(ones), s1 + ones
        count = float(kernel.shape[:-1].num_elements() + extra)
        sq = s2 - tf.square(s1) / count
        if b_hat is not None:
            b_hat = ones * b_hat
    else:
        sq = _window_sums(
            tf.reduce_sum(tf.square(xs), -1, keepdims=True), ksize, strides, padding, dilations
        ) + float(extra)
    dot = tf.nn.convolution(
        x, tf.cast(k_hat, x.dtype), strides=strides, padding=padding, dilations=dilations
    )
    return _finish(dot, b_hat, sq, epsilon, x.dtype)


def _same_padding(x, kernel_size, strides, dilations):
    """The zero padding ``tf.nn.convolution(padding="SAME")`` applies, for ``tf.pad``."""
    rank = len(kernel_size)
    strides = [strides] * rank if isinstance(strides, int) else list(strides)
    dilations = [dilations] * rank if isinstance(dilations, int) else list(dilations)
    pads = [[0, 0]]
    for i, (k, s, d) in enumerate(zip(kernel_size, strides, dilations)):
        n = x.shape[i + 1]
        if n is None:
            n = tf.shape(x)[i + 1]
            total = tf.maximum(((n + s - 1) // s - 1) * s + (k - 1) * d + 1 - n, 0)
        else:
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append([total // 2, total - total // 2])
    return pads + [[0, 0]]
