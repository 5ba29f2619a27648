"""What the op tests share: the paths a kernel can take, and central differences.

A kernel (``tfnorm.ops.kernel``) runs as plain ops eagerly (``"eager"``), as
plain ops inside a graph for small tensors (``"graph"``), as its own XLA
cluster inside a graph (``"cluster"``: forced at any size by the autouse
fixture in ``conftest.py`` for tests parametrized with ``mode="cluster"``),
and inlined in an enclosing XLA cluster (``"xla"``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

MODES = ("eager", "graph", "cluster", "xla")


def compiled(fn, mode):
    """``fn`` as it runs on the path ``mode`` (see the module docstring)."""
    return fn if mode == "eager" else tf.function(fn, jit_compile=(mode == "xla"))


def numeric_grads(fn, arrays, w, eps=1e-6):
    """Central differences of ``sum(fn(*arrays) * w)`` w.r.t. each array (float64)."""
    out = []
    for k, a in enumerate(arrays):
        grad = np.zeros_like(a)
        for i in range(a.size):
            for sign in (1.0, -1.0):
                pert = [p.copy() for p in arrays]
                pert[k].reshape(-1)[i] += sign * eps
                grad.reshape(-1)[i] += sign * np.sum(fn(*pert) * w) / (2 * eps)
        out.append(grad)
    return out
