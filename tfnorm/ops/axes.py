"""Axis bookkeeping shared by every op and layer.

Pure Python: no TensorFlow state. One place checks axes, so every layer reports
a bad axis with the same words.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Tuple, Union

AxisArg = Union[int, Sequence[int]]


def as_axis_tuple(axis: AxisArg, argname: str = "axis") -> Tuple[int, ...]:
    """Returns ``axis`` as a tuple of Python ints, checking its type only."""
    if isinstance(axis, bool):
        raise TypeError(f"{argname} must be an int or a list of ints, received {argname}={axis!r}")
    if isinstance(axis, int):
        return (axis,)
    try:
        items = tuple(axis)
    except TypeError:
        raise TypeError(
            f"{argname} must be an int or a list of ints, received {argname}={axis!r}"
        ) from None
    if not items:
        raise ValueError(f"{argname} must name at least one axis, received {argname}={axis!r}")
    for a in items:
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(
                f"{argname} must be an int or a list of ints, received {argname}={axis!r}"
            )
    return items


def resolve_axes(
    axis: AxisArg, rank: int, argname: str = "axis", allow_batch: bool = False
) -> Tuple[int, ...]:
    """Turns (possibly negative) axes into sorted non-negative ones for ``rank``.

    Raises a ValueError naming ``argname`` and the value when an axis is out of
    range, repeated, or (unless ``allow_batch``) is the batch axis 0.
    """
    items = as_axis_tuple(axis, argname)
    out = []
    for a in items:
        if not -rank <= a < rank:
            raise ValueError(
                f"{argname}={axis!r} is out of range for an input of rank {rank}; "
                f"valid axes are {-rank}..{rank - 1}"
            )
        a = a % rank
        if a == 0 and not allow_batch:
            raise ValueError(
                f"{argname}={axis!r} names the batch axis 0 of a rank-{rank} input; "
                f"normalize over feature axes, e.g. {argname}=-1"
            )
        out.append(a)
    if len(set(out)) != len(out):
        raise ValueError(f"{argname}={axis!r} repeats an axis for an input of rank {rank}")
    return tuple(sorted(out))


def complement(axes: Iterable[int], rank: int, skip_batch: bool = False) -> Tuple[int, ...]:
    """All axes of ``rank`` not in ``axes`` (optionally leaving out axis 0)."""
    axes = set(axes)
    start = 1 if skip_batch else 0
    return tuple(a for a in range(start, rank) if a not in axes)
