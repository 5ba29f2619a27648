"""How the kernels see their input and parameters: free 2-D and 3-D views, flat parameters.

Every kernel works on one of two views of ``x``, both plain reshapes (no data
moves):

* ``"rows"``: the normalized axes are the trailing axes, of static size
  ``C``: ``x`` is ``(R, C)``, statistics per row (LayerNorm, RMSNorm,
  ScaleNorm, AdaNorm);
* ``"samples"`` / ``"batch"``: the channel axis is the last axis, of static
  size ``C``: ``x`` is ``(N, S, C)`` with ``S`` the product of the middle
  axes, statistics per sample (GroupNorm, InstanceNorm, EvoNorm, online and
  switchable normalization), or ``(1, R, C)``, statistics over the whole
  batch (BatchNorm).

:func:`fast_view` decides, and returns None for any other layout, which the
op then computes with :func:`tfnorm.ops.moments` and autodiff instead.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

__all__ = ["View", "fast_view", "flat", "param_for", "scalar", "sorted_axes"]

_KINDS = ("rows", "samples", "batch")


def sorted_axes(axes: Sequence[int], rank: int) -> Tuple[int, ...]:
    """``axes`` made non-negative for ``rank`` and sorted."""
    return tuple(sorted(a % rank for a in axes))


class View(NamedTuple):
    """``x`` as the kernels see it: ``tensor`` ``(R, C)`` or ``(A, S, C)``, ``C`` static."""

    tensor: tf.Tensor
    size: int  # C: the product of the normalized axes, or the channel count
    source: tf.Tensor  # x itself, whose shape the result takes back

    def restore(self, y: tf.Tensor) -> tf.Tensor:
        """A kernel's output shaped like ``x`` again."""
        return tf.reshape(y, tf.shape(self.source))


def _static_size(x: tf.Tensor, axes) -> Optional[int]:
    dims = [x.shape[a] for a in axes]
    if any(d is None for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64))


def fast_view(x: tf.Tensor, axes: Sequence[int], kind: str = "rows") -> Optional[View]:
    """The view of ``x`` a kernel takes (module docstring), or None for another layout.

    Args:
      x: the input, static rank.
      axes: ``"rows"``: the normalized axes; otherwise the channel axis (or axes).
      kind: ``"rows"`` for ``(R, C)``; ``"samples"`` for ``(N, S, C)``;
        ``"batch"`` for ``(1, R, C)``.

    Example:
      >>> x = tf.zeros([2, 3, 4, 5])
      >>> tuple(fast_view(x, [-2, -1]).tensor.shape)
      (6, 20)
      >>> tuple(fast_view(x, [3], "samples").tensor.shape), fast_view(x, [3], "batch").size
      ((2, 12, 5), 5)
      >>> fast_view(x, [1]) is None, fast_view(x, [1], "batch") is None
      (True, True)
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, received kind={kind!r}")
    rank = x.shape.rank
    axes = sorted_axes(axes, rank)
    if kind == "rows":
        n = _static_size(x, axes)
        if axes != tuple(range(rank - len(axes), rank)) or n is None:
            return None
        return View(tf.reshape(x, [-1, n]), n, x)
    c = x.shape[-1]
    if axes != (rank - 1,) or c is None:
        return None
    if kind == "batch":
        return View(tf.reshape(x, [1, -1, c]), c, x)
    return View(tf.reshape(x, tf.stack([tf.shape(x)[0], -1, c])), c, x)


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
