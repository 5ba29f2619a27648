"""What :func:`~tfnorm.swap_normalization` did: :class:`SwapRecord` and :class:`SwapReport`.

The rewrite collects one record per matched layer as it walks the graph (the
weight carry-over fills in what was carried); the records become frozen
:class:`SwapRecord` objects in a :class:`SwapReport`, a tuple in topological
order that also prints as the table ``verbose=True`` shows.

Example:
  >>> import tfnorm
  >>> from tfnorm.swap import SwapRecord, SwapReport
  >>> report = SwapReport([SwapRecord("bn", "removed", tfnorm.BatchNormalization,
  ...                                 dropped=("gamma", "beta"))])
  >>> print(report)
  swap_normalization: 0 replaced, 1 removed, 0 kept
    #  layer  was                        now        weights
    0  bn     tfnorm.BatchNormalization  (removed)  dropped gamma, beta
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import keras

__all__ = ["SwapRecord", "SwapReport"]


def _class_label(cls) -> str:
    if cls is None:
        return "-"
    name = cls.__name__
    module = getattr(cls, "__module__", "")
    if module.startswith("tfnorm"):
        return f"tfnorm.{name}"
    if module.startswith("keras") and getattr(keras.layers, name, None) is cls:
        return f"keras.layers.{name}"
    return f"{module}.{name}"


@dataclasses.dataclass(frozen=True)
class SwapRecord:
    """What :func:`swap_normalization` did with one matched layer.

    Attributes:
      path: where the old layer sits, ``"nested_model/.../layer_name"``.
      action: ``"replaced"``, ``"removed"`` or ``"kept"``.
      old_class: the class of the matched layer.
      new_class: the class of its replacement (None unless replaced; the old
        class when kept).
      new_name: the name of the layer in the new model (None when removed).
      carried: ``(new_weight, old_weight)`` name pairs whose values were carried over.
      fresh: weights of the replacement left at their initial values.
      dropped: weights of the old layer that found no place in the replacement.
      note: why a layer was kept, or why weights were not carried.
    """

    path: str
    action: str
    old_class: type
    new_class: Optional[type] = None
    new_name: Optional[str] = None
    carried: Tuple[Tuple[str, str], ...] = ()
    fresh: Tuple[str, ...] = ()
    dropped: Tuple[str, ...] = ()
    note: str = ""


def render_table(head: str, rows) -> str:
    """``head``, then ``rows`` of five cells with the first four columns aligned."""
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [head]
    for row in rows:
        cells = [row[c].ljust(widths[c]) for c in range(4)] + [row[4]]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


class SwapReport(tuple):
    """The :class:`SwapRecord` of every matched layer, in topological order.

    Attached to the new model as ``model.swap_report`` (not saved with it);
    ``str(report)`` is the table ``verbose=True`` prints.
    """

    @property
    def replaced(self) -> Tuple[SwapRecord, ...]:
        return tuple(r for r in self if r.action == "replaced")

    @property
    def removed(self) -> Tuple[SwapRecord, ...]:
        return tuple(r for r in self if r.action == "removed")

    @property
    def kept(self) -> Tuple[SwapRecord, ...]:
        return tuple(r for r in self if r.action == "kept")

    def table(self) -> str:
        head = (
            f"swap_normalization: {len(self.replaced)} replaced, {len(self.removed)} "
            f"removed, {len(self.kept)} kept"
        )
        rows = [("#", "layer", "was", "now", "weights")]
        for i, r in enumerate(self):
            if r.action == "replaced":
                now = _class_label(r.new_class)
                parts = []
                if r.carried:
                    parts.append(
                        "carried " + ", ".join(n if n == o else f"{n}<-{o}" for n, o in r.carried)
                    )
                if r.fresh:
                    parts.append("fresh " + ", ".join(r.fresh))
                if r.dropped:
                    parts.append("dropped " + ", ".join(r.dropped))
                weights = "; ".join(parts) or "no weights"
            elif r.action == "removed":
                now = "(removed)"
                weights = ("dropped " + ", ".join(r.dropped)) if r.dropped else "no weights"
            else:
                now = "(kept)"
                weights = "copied"
            if r.note:
                weights += f" [{r.note}]"
            rows.append((str(i), r.path, _class_label(r.old_class), now, weights))
        return render_table(head, rows)

    def __str__(self) -> str:
        return self.table()
