"""Fold inference-time normalizations into neighbouring linear layers: :func:`fold_normalization`.

The package keeps one idea per module: :mod:`~tfnorm.fold.graph` (who feeds
whom), :mod:`~tfnorm.fold.plan` (what folds where, and why not),
:mod:`~tfnorm.fold.maths` (the folded weights, float64 NumPy) and
:mod:`~tfnorm.fold.report` (what was done). The new model is built by the swap
helper's :class:`~tfnorm.swap.rewrite.Rewriter`, the graph walk
:func:`~tfnorm.swap_normalization` uses, and its untouched layers get exact
copies of their weights from :func:`tfnorm.swap.weights.copy_weights`.
"""

from __future__ import annotations

import keras

from tfnorm.fold.plan import Planner
from tfnorm.fold.report import FoldReport
from tfnorm.layers.base import check_bool
from tfnorm.swap import weights
from tfnorm.swap.report import SwapRecord
from tfnorm.swap.rewrite import Rewriter

__all__ = ["FoldReport", "fold_normalization"]


def fold_normalization(model, *, verbose=False) -> keras.Model:
    r"""Returns a new model with every inference-time normalization folded into a linear layer.

    For inference, a batch normalization with its moving statistics is a fixed
    affine map per channel, and weight-based normalizations are fixed kernels;
    both can be merged into the weights of a neighbouring layer, so the new
    model computes the same function with fewer layers and no normalization
    code (it exports and converts like a model made of plain Keras layers)::

        BN(x) = s * x + t,   s = gamma / sqrt(moving_variance + epsilon),
                             t = beta - moving_mean * s
        BN(op(x, W) + b) = op(x, W * s) + (b * s + t)      (s over W's output channels)
        Dense(BN(x))     = x (diag(s) W) + (t W + b)

    What is folded (recursively through nested Sequential and functional models):

    * a ``tfnorm.BatchNormalization`` or ``keras.layers.BatchNormalization``
      (with or without ``center``/``scale``; tfnorm's batch renormalization
      too, whose inference reads the moving mean and variance like the plain
      layer) directly after a ``Dense``, ``Conv1D/2D/3D`` or
      ``DepthwiseConv1D/2D`` with a linear activation, called once, whose
      output nothing else reads, normalizing its channel axis
      (``data_format="channels_first"`` included): into the kernel and the
      bias (created when the layer had ``use_bias=False``);
    * otherwise, one normalizing the last axis whose output only a ``Dense``
      reads: into that Dense's kernel rows and bias. A normalization in front
      of a convolution is never folded: with ``padding="same"`` the zeros the
      convolution pads the normalized input with would become raw zeros,
      which normalize to ``t``, not 0;
    * ``tfnorm.WeightNormalization`` and ``tfnorm.SpectralNormalization``
      become the plain wrapped layer that their ``remove()`` returns (the
      effective kernel; spectral normalization's inference ``sigma`` from
      the stored ``u``), and the ``tfnorm.WeightStandardizedConv1D/2D/3D``
      the plain Keras convolution of the same config holding the standardized
      kernel; a batch normalization after one of them folds as above.

    Everything else is left in place and listed in the report with the
    reason: a batch normalization not next to a suitable linear layer (after
    an activation, after a layer whose output is also read elsewhere, called
    at several places, called with ``training=True``, over several axes),
    and normalizations computed from each input at run time (layer, group,
    RMS, instance normalization, ...). Folded weights are computed in float64
    NumPy and cast to each layer's variable dtype.

    ``model``, its layers and its weights are never modified, and the new
    model shares no layer and no variable with it; the other layers are exact
    copies, with the names they had (a folded layer keeps its own name, a
    wrapper's or weight-standardized convolution's replacement takes the
    replaced layer's name). The result is for inference: a folded batch
    normalization no longer uses batch statistics with ``training=True``.
    The new model is not compiled.

    Args:
      model: a built ``keras.Sequential`` or functional ``keras.Model``
        (subclassed models are refused with a ``ValueError``).
      verbose: print the report table. Default False.

    Returns:
      A new ``keras.Sequential`` (for a Sequential input) or functional
      ``keras.Model``, with ``fold_report``: a :class:`FoldReport` of one
      :class:`~tfnorm.swap.SwapRecord` per normalization layer, in
      topological order, whose ``action`` is ``"folded"`` (``new_name``: the
      layer it went into), ``"replaced"`` or ``"kept"`` (``note``: why).

    Raises:
      TypeError / ValueError: for a ``model`` that is not a built Sequential
        or functional Keras model, or a ``verbose`` that is not a bool.

    Example:
      >>> import numpy as np, keras, tfnorm
      >>> model = keras.Sequential([
      ...     keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, name="conv"),
      ...     keras.layers.BatchNormalization(), keras.layers.ReLU(),
      ...     keras.layers.Flatten(), keras.layers.Dense(2)])
      >>> folded = tfnorm.fold_normalization(model)
      >>> [type(layer).__name__ for layer in folded.layers]
      ['Conv2D', 'ReLU', 'Flatten', 'Dense']
      >>> [(r.action, r.new_name) for r in folded.fold_report]
      [('folded', 'conv')]
      >>> x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
      >>> bool(np.allclose(folded(x), model(x), atol=1e-5))
      True
    """
    verbose = check_bool("verbose", verbose)
    planner = Planner()
    planner.plan(model)
    changes = planner.changes

    def make(old):
        change = changes[id(old)]
        return None if change is None else change.make()

    rewriter = Rewriter(model, lambda op: id(op) in changes, make, keep_first=0)
    new_model = rewriter.rewrite_model(model, "")
    weights.copy_weights(rewriter.copies)
    for record, old, new in rewriter.swaps:
        changes[id(old)].assign(new, record["path"])
    report = FoldReport(SwapRecord(**r) for r in planner.records)
    new_model.fold_report = report
    if verbose:
        print(report.table())
    return new_model
