"""The arithmetic of folding, in float64 NumPy: arrays in, arrays out, no Keras state.

In inference a batch normalization is a fixed affine map per channel::

    BN(x) = gamma * (x - mean) / sqrt(var + epsilon) + beta = s * x + t
    s = gamma / sqrt(var + epsilon),   t = beta - mean * s

(:func:`batch_norm_affine`; ``gamma = 1`` without ``scale``, ``beta = 0``
without ``center``). A linear layer ``y = op(x, W) + b`` followed by it
becomes ``op(x, W * s) + (b * s + t)``, the kernel scaled per output channel
(:func:`fold_after`); one preceded by it, a Dense ``(s * x + t) W + b``,
becomes ``x (diag(s) W) + (t W + b)``, the kernel's rows scaled
(:func:`fold_before_dense`). :func:`standardize_kernel` is the kernel a
weight-standardized convolution uses.

Example:
  >>> import numpy as np
  >>> s, t = batch_norm_affine(mean=np.array([1.0]), variance=np.array([3.0]), gamma=None,
  ...                          beta=np.array([0.5]), epsilon=1.0)
  >>> s.tolist(), t.tolist()
  ([0.5], [0.0])
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["batch_norm_affine", "fold_after", "fold_before_dense", "standardize_kernel"]


def _f64(value) -> Optional[np.ndarray]:
    return None if value is None else np.asarray(value, dtype=np.float64)


def batch_norm_affine(mean, variance, gamma, beta, epsilon: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` with ``BN(x) = s * x + t`` per channel (inference statistics)."""
    mean, variance = _f64(mean), _f64(variance)
    scale = 1.0 / np.sqrt(variance + np.float64(epsilon))
    if gamma is not None:
        scale = scale * _f64(gamma)
    shift = -mean * scale
    if beta is not None:
        shift = shift + _f64(beta)
    return scale, shift


def _per_output(kernel: np.ndarray, kind: str, s: np.ndarray) -> np.ndarray:
    """``s`` (one value per output channel) shaped to broadcast against ``kernel``."""
    if kind == "depthwise":  # output channel c * depth_multiplier + m sits at kernel[..., c, m]
        return s.reshape(kernel.shape[-2], kernel.shape[-1])
    return s  # Dense (in, out) and Conv (*window, in / groups, out): outputs on the last axis


def fold_after(kernel, bias, kind: str, s, t) -> Tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of ``s * (op(x, kernel) + bias) + t`` (``bias`` None: zero).

    ``kind`` is ``"dense"``, ``"conv"`` or ``"depthwise"``: where the output
    channels sit in the kernel.

    Example:
      >>> k, b = fold_after(np.ones((2, 3)), None, "dense", np.array([1.0, 2, 3]), np.ones(3))
      >>> k.tolist(), b.tolist()
      ([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], [1.0, 1.0, 1.0])
    """
    kernel, s, t = _f64(kernel), _f64(s), _f64(t)
    bias = np.zeros_like(s) if bias is None else _f64(bias)
    return kernel * _per_output(kernel, kind, s), bias * s + t


def fold_before_dense(kernel, bias, s, t) -> Tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of a Dense applied to ``s * x + t`` (``s``, ``t`` per input feature).

    Example:
      >>> k, b = fold_before_dense(np.ones((2, 1)), None, np.array([2.0, 3.0]), np.array([1.0, 1]))
      >>> k.ravel().tolist(), b.tolist()
      ([2.0, 3.0], [2.0])
    """
    kernel, s, t = _f64(kernel), _f64(s), _f64(t)
    bias = np.zeros(kernel.shape[-1]) if bias is None else _f64(bias)
    return kernel * s[:, None], bias + t @ kernel


def standardize_kernel(kernel, epsilon: float) -> np.ndarray:
    """Each output filter (last axis) standardized over the other axes, population variance.

    Example:
      >>> standardize_kernel(np.array([[1.0], [3.0]]), epsilon=0.0).ravel().tolist()
      [-1.0, 1.0]
    """
    w = _f64(kernel)
    axes = tuple(range(w.ndim - 1))
    mean = w.mean(axis=axes, keepdims=True)
    var = np.square(w - mean).mean(axis=axes, keepdims=True)
    return (w - mean) / np.sqrt(var + np.float64(epsilon))
