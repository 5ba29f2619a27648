"""What :func:`~tfnorm.recompute_batch_statistics` did: one :class:`LayerStatistics` per layer.

One :class:`LayerStatistics` per recomputed layer (where it sits, which variables were
assigned, how many samples and positions it averaged, how far its statistics moved),
gathered in a :class:`RecomputeReport`, which behaves as their tuple and prints as a
table.

Example:
  >>> import tfnorm
  >>> from tfnorm.recompute import LayerStatistics, RecomputeReport
  >>> layer = LayerStatistics("bn", "bn", tfnorm.BatchNormalization,
  ...                         ("moving_mean", "moving_variance"), calls=1, samples=64,
  ...                         positions=64, mean_change=0.5, variance_change=0.25)
  >>> print(RecomputeReport((layer,), batches=2, samples=64))
  recompute_batch_statistics: 1 layer(s) over 64 samples in 2 batch(es)
    #  layer  class                      samples  positions  max|dmean|  max|dvar|/var
    0  bn     tfnorm.BatchNormalization       64         64         0.5           0.25
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import keras


def _class_label(cls) -> str:
    module = getattr(cls, "__module__", "")
    if module.startswith("tfnorm"):
        return f"tfnorm.{cls.__name__}"
    if module.startswith("keras") and getattr(keras.layers, cls.__name__, None) is cls:
        return f"keras.layers.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


@dataclasses.dataclass(frozen=True)
class LayerStatistics:
    """What :func:`recompute_batch_statistics` did with one layer.

    Attributes:
      path: where the layer sits, ``"nested_model/.../layer_name"``.
      name: the layer's name.
      layer_class: the layer's class.
      variables: the variables that were assigned, e.g. ``("moving_mean", "moving_variance")``.
      calls: how many times one forward pass calls the layer (more than 1 when shared).
      samples: input rows (batch entries) that reached the layer, all calls together.
      positions: values averaged per channel (``samples`` times the positions of every
        reduced axis but the batch; masked-out positions not counted).
      mean_change: largest ``|new - old|`` of the moving mean over the channels (None for
        a layer without one).
      variance_change: largest ``|new - old| / old`` of the moving variance over the
        channels (``inf`` where the old value was 0 and the new one is not).
      unchanged_channels: channels left as they were: no position reached them (every one
        masked out), or their statistic was not finite (NaN or inf in the inputs).
    """

    path: str
    name: str
    layer_class: type
    variables: Tuple[str, ...]
    calls: int
    samples: int
    positions: int
    mean_change: Optional[float]
    variance_change: float
    unchanged_channels: int = 0


@dataclasses.dataclass(frozen=True)
class RecomputeReport:
    """The result of :func:`recompute_batch_statistics`: one :class:`LayerStatistics` per layer.

    Behaves as the tuple of its layers (``len``, indexing, iteration), in the order they
    were recomputed (the order the model calls them); ``str(report)`` is a table.

    Attributes:
      layers: the :class:`LayerStatistics` of every recomputed layer.
      batches: batches of ``data`` read per pass.
      samples: samples (rows of ``x``) read per pass.
      not_called: paths of layers that keep statistics but that the model's forward pass
        never called (their statistics are left as they were).
    """

    layers: Tuple[LayerStatistics, ...]
    batches: int = 0
    samples: int = 0
    not_called: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def table(self) -> str:
        if not self.layers:
            if self.not_called:
                return (
                    "recompute_batch_statistics: nothing changed; the forward pass called "
                    f"none of the layers that keep batch statistics "
                    f"({', '.join(self.not_called)})"
                )
            return "recompute_batch_statistics: no layer keeps batch statistics; nothing changed"
        head = (
            f"recompute_batch_statistics: {len(self.layers)} layer(s) over "
            f"{self.samples} samples in {self.batches} batch(es)"
        )
        rows = [("#", "layer", "class", "samples", "positions", "max|dmean|", "max|dvar|/var")]
        for i, r in enumerate(self.layers):
            mean = "-" if r.mean_change is None else f"{r.mean_change:.3g}"
            rows.append(
                (
                    str(i),
                    r.path,
                    _class_label(r.layer_class),
                    str(r.samples),
                    str(r.positions),
                    mean,
                    f"{r.variance_change:.3g}",
                )
            )
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = [head]
        for row in rows:
            cells = [
                cell.rjust(w) if c >= 3 else cell.ljust(w)
                for c, (cell, w) in enumerate(zip(row, widths))
            ]
            lines.append("  " + "  ".join(cells).rstrip())
        notes = [
            f"  {r.path}: {r.unchanged_channels} channel(s) kept their old statistics "
            "(all positions masked out, or not finite)"
            for r in self.layers
            if r.unchanged_channels
        ]
        if self.not_called:
            notes.append(
                "  not called by the forward pass (left as they were): "
                + ", ".join(self.not_called)
            )
        return "\n".join(lines + notes)

    def __str__(self) -> str:
        return self.table()
