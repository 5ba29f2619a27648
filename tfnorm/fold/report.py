"""What :func:`~tfnorm.fold_normalization` did: :class:`FoldReport`.

One :class:`~tfnorm.swap.SwapRecord` per normalization layer of the model, in
the order Keras runs the graph, with the actions ``"folded"`` (merged into the
neighbouring linear layer, named by ``new_name``), ``"replaced"`` (a wrapper
or a weight-standardized convolution became the plain layer) and ``"kept"``
(left in place; ``note`` says why). The record type is the swap helper's; the
report adds the folded ones and its own table.

Example:
  >>> import keras, tfnorm
  >>> from tfnorm.fold import FoldReport
  >>> from tfnorm.swap import SwapRecord
  >>> report = FoldReport([
  ...     SwapRecord("bn", "folded", keras.layers.BatchNormalization, keras.layers.Conv2D,
  ...                "conv", note="scale and shift into conv"),
  ...     SwapRecord("ln", "kept", tfnorm.LayerNormalization, note="run-time statistics")])
  >>> print(report)
  fold_normalization: 1 folded, 0 replaced, 1 kept
    #  layer  was                              now        how / why
    0  bn     keras.layers.BatchNormalization  into conv  scale and shift into conv
    1  ln     tfnorm.LayerNormalization        (kept)     run-time statistics
"""

from __future__ import annotations

from typing import Tuple

from tfnorm.swap.report import SwapRecord, SwapReport, _class_label, render_table

__all__ = ["FoldReport"]


class FoldReport(SwapReport):
    """The :class:`~tfnorm.swap.SwapRecord` of every normalization layer, in topological order.

    Attached to the folded model as ``model.fold_report`` (not saved with it);
    ``str(report)`` is the table ``verbose=True`` prints.
    """

    @property
    def folded(self) -> Tuple[SwapRecord, ...]:
        return tuple(r for r in self if r.action == "folded")

    def table(self) -> str:
        head = (
            f"fold_normalization: {len(self.folded)} folded, {len(self.replaced)} "
            f"replaced, {len(self.kept)} kept"
        )
        rows = [("#", "layer", "was", "now", "how / why")]
        for i, r in enumerate(self):
            if r.action == "folded":
                now = f"into {r.new_name}"
            elif r.action == "replaced":
                now = _class_label(r.new_class)
            else:
                now = "(kept)"
            rows.append((str(i), r.path, _class_label(r.old_class), now, r.note))
        return render_table(head, rows)
