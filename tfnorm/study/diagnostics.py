"""Measurements at initialization, no training: why deep batch normalization is hard to train.

Two symptoms of the same mechanism, each measured on freshly initialized networks:

* **Gradient explosion** (:func:`gradient_norms`, :func:`growth_rate`): with batch
  normalization after every layer of a plain ReLU stack, the norm of the loss
  gradient with respect to a layer's kernel grows geometrically from the output
  towards the input. Mean-field theory predicts a growth of
  ``sqrt(pi / (pi - 1)) = 1.2112`` per layer at large batch size (Yang et al.,
  "A Mean Field Theory of Batch Normalization", ICLR 2019), and faster at small
  batches. One normalization after the first layer does not compound: the rest of
  the stack is a plain He-initialized ReLU network, whose gradients keep their norm.
* **Batch dependence** (:func:`batch_sensitivity`): in training mode a sample's
  features depend on the other samples of its batch. With a normalization after
  every layer the dependence compounds with depth; :func:`batch_sensitivity`
  measures how much a sample's deepest features change when only its batch
  companions change.

>>> growth_rate([8.0, 4.0, 2.0, 1.0])  # halves at each layer towards the output
2.0
>>> round(THEORY_GROWTH, 4)
1.2112
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np

#: Per-layer gradient growth of a BN-ReLU stack at large batch (Yang et al. 2019).
THEORY_GROWTH = math.sqrt(math.pi / (math.pi - 1.0))


def hidden_layers(model) -> List:
    """The hidden Dense/Conv layers of a study network, input to output (``dense_i``/``conv_i``)."""
    layers = [
        l
        for l in model.layers
        if l.name.split("_")[0] in ("dense", "conv") and l.name.split("_")[-1].isdigit()
    ]
    return sorted(layers, key=lambda l: int(l.name.split("_")[-1]))


def gradient_norms(model, x, y) -> np.ndarray:
    """Frobenius norm of the cross-entropy gradient w.r.t. each hidden layer's kernel,
    input to output, for one batch ``(x, y)`` in training mode (batch statistics)."""
    import keras
    import tensorflow as tf

    kernels = [l.kernel for l in hidden_layers(model)]
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        )
    grads = tape.gradient(loss, kernels)
    return np.array([float(tf.norm(tf.cast(g, tf.float64))) for g in grads])


def growth_rate(norms: Sequence[float], trim: int = 0) -> float:
    """Per-layer growth of gradient norms towards the input: ``exp(-slope)`` of a
    least-squares line through ``log(norm)`` against the layer index, leaving out
    ``trim`` layers at each end (the first and last layers differ from the bulk).

    >>> round(growth_rate([1.21 ** k for k in range(10, 0, -1)]), 4)
    1.21
    """
    n = np.log(np.asarray(norms, dtype=np.float64))
    idx = np.arange(len(n), dtype=np.float64)
    if trim and len(n) > 2 * trim + 1:
        n, idx = n[trim:-trim], idx[trim:-trim]
    if len(n) < 2:
        return float("nan")
    slope = np.polyfit(idx, n, 1)[0]
    return round(float(np.exp(-slope)), 12)


def _features_model(model):
    """A model returning every hidden ReLU output of a study network, input to output."""
    import keras

    relus = sorted(
        (l for l in model.layers if l.name.startswith("relu_")),
        key=lambda l: int(l.name.split("_")[-1]),
    )
    return keras.Model(model.inputs, [l.output for l in relus])


def batch_sensitivity(model, x, probes: int = 8, trials: int = 4, seed: int = 0) -> np.ndarray:
    """How much a sample's features depend on its batch companions, per hidden layer.

    ``probes`` fixed samples are put in a batch with ``len(x) // 2 - probes`` other
    samples, twice, each time with different companions drawn from ``x`` (disjoint
    halves); both batches run in training mode. For each hidden layer the result is
    ``2 ||f1 - f2|| / ||f1 + f2||`` over the probes' features: 0 when the companions
    do not matter, 2 when the two results are orthogonal vectors of equal size (ReLU
    features are never negative, so two unrelated ones are rarely further apart).
    Averaged over ``trials`` draws.

    Args:
      model: a study network (see :func:`tfnorm.study.build_model`).
      x: a pool of inputs, at least ``2 * probes + 2`` samples; the batch size is
        ``len(x) // 2``.
    """
    import tensorflow as tf

    n = len(x)
    batch = n // 2
    if probes < 1 or batch - probes < 1:
        raise ValueError(
            f"batch_sensitivity needs len(x) >= 2 * probes + 2, received "
            f"len(x)={n}, probes={probes}"
        )
    feats = _features_model(model)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        order = rng.permutation(n)
        probe = order[:probes]
        rest = order[probes:]
        half = (len(rest)) // 2
        c1, c2 = rest[: batch - probes], rest[half : half + batch - probes]
        f1 = feats(tf.constant(x[np.concatenate([probe, c1])]), training=True)
        f2 = feats(tf.constant(x[np.concatenate([probe, c2])]), training=True)
        f1 = f1 if isinstance(f1, (list, tuple)) else [f1]
        f2 = f2 if isinstance(f2, (list, tuple)) else [f2]
        row = []
        for a, b in zip(f1, f2):
            a = np.asarray(a, np.float64)[:probes].reshape(probes, -1)
            b = np.asarray(b, np.float64)[:probes].reshape(probes, -1)
            den = np.linalg.norm(a + b, axis=1)
            num = np.linalg.norm(a - b, axis=1)
            ok = den > 0
            row.append(float(np.mean(2 * num[ok] / den[ok])) if ok.any() else 0.0)
        out.append(row)
    return np.mean(np.asarray(out), axis=0)
