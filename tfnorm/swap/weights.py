"""Weights of the new model: exact copies, and what a replacement inherits.

The rewrite hands over two lists: ``copies``, ``(old, new, path)`` for every
layer re-created from its config, and ``swaps``, ``(record, old, new)`` for
every replacement. :func:`copy_weights` copies the variables of the first,
one for one (a copy whose variables do not line up with the original's is an
error: its config does not describe it). :func:`carry_weights` gives each
replacement the old layer's weights of the same meaning (:data:`WEIGHT_ROLES`)
and shape, and writes what was carried, left fresh and dropped into its
record; :func:`mark_fresh` records that nothing was carried.

Example:
  >>> import keras
  >>> from tfnorm.swap import weights
  >>> old = keras.layers.LayerNormalization(); old.build((None, 3))
  >>> new = keras.layers.RMSNormalization(); new.build((None, 3))
  >>> record = {}
  >>> weights.carry_weights([(record, old, new)])
  >>> record["carried"], record["dropped"]
  ((('scale', 'gamma'),), ('beta',))
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

import keras

__all__ = ["WEIGHT_ROLES", "carry_weights", "copy_weights", "mark_fresh"]

#: Weight name -> meaning. A weight of the new layer receives the old layer's
#: weight of the same meaning (and the same shape). Layers of the same class
#: also match weights by exact name.
WEIGHT_ROLES: Dict[str, str] = {
    "gamma": "scale",
    "scale": "scale",
    "beta": "offset",
    "offset": "offset",
    "moving_mean": "moving_mean",
    "moving_variance": "moving_variance",
    # batch renormalization (Keras and tfnorm keep the same three)
    "moving_stddev": "moving_stddev",
    "renorm_mean": "renorm_mean",
    "renorm_stddev": "renorm_stddev",
}

Copies = Iterable[Tuple[keras.layers.Layer, keras.layers.Layer, str]]
Swaps = Iterable[Tuple[dict, keras.layers.Layer, keras.layers.Layer]]


def copy_weights(copies: Copies) -> None:
    """Assigns every variable of each ``old`` layer to the same variable of its ``new`` copy."""
    for old, new, path in copies:
        src, dst = old.variables, new.variables
        if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst)):
            raise ValueError(
                f"cannot copy the weights of layer {path!r} ({type(old).__name__}): its "
                f"re-created copy has variables {[(v.name, tuple(v.shape)) for v in dst]}, "
                f"the original {[(v.name, tuple(v.shape)) for v in src]}. Its config does not "
                "describe it fully; pass copy_weights=False to start from fresh weights"
            )
        for a, b in zip(src, dst):
            b.assign(a.value)


def _source(old_weights, used, new_weight, same_class):
    """The old weight ``new_weight`` receives, or None: by name, then by meaning."""
    if same_class:
        same = [w for w in old_weights if w.name == new_weight.name and id(w) not in used]
        if len(same) == 1:
            return same[0]
    role = WEIGHT_ROLES.get(new_weight.name)
    if role is None:
        return None
    same = [w for w in old_weights if WEIGHT_ROLES.get(w.name) == role and id(w) not in used]
    return same[0] if len(same) == 1 else None


def carry_weights(swaps: Swaps) -> None:
    """Gives each replacement the old weights of the same meaning and shape; fills its record."""
    for record, old, new in swaps:
        old_weights = list(old.weights)
        used = set()
        carried, fresh, notes = [], [], []
        for v in new.weights:
            src = _source(old_weights, used, v, type(old) is type(new))
            if src is not None and tuple(src.shape) == tuple(v.shape):
                v.assign(keras.ops.cast(src.value, v.dtype))
                used.add(id(src))
                carried.append((v.name, src.name))
            else:
                fresh.append(v.name)
                if src is not None:
                    notes.append(
                        f"{v.name} {tuple(v.shape)} vs {src.name} {tuple(src.shape)}: shapes differ"
                    )
        record.update(
            carried=tuple(carried),
            fresh=tuple(fresh),
            dropped=tuple(w.name for w in old_weights if id(w) not in used),
            note="; ".join(notes),
        )


def mark_fresh(swaps: Swaps) -> None:
    """Records that every replacement starts fresh (``copy_weights=False``)."""
    for record, old, new in swaps:
        record.update(
            fresh=tuple(v.name for v in new.weights),
            dropped=tuple(w.name for w in old.weights),
            note="copy_weights=False",
        )
