"""tfnorm: normalization layers for Keras 3 on TensorFlow.

Example:
  >>> import tfnorm
  >>> layer = tfnorm.GroupNormalization(groups=8)
"""

import os as _os
import sys as _sys

if "tensorflow" not in _sys.modules:  # keep TensorFlow's C++ INFO lines out of the way
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from tfnorm._backend import require_tensorflow_backend as _require_tf

_require_tf()

from tfnorm import compat, datasets, layers, ops
from tfnorm.__about__ import __version__
from tfnorm.fold import fold_normalization
from tfnorm.layers import *  # noqa: F403  (the layer list lives in tfnorm.layers)
from tfnorm.recompute import recompute_batch_statistics
from tfnorm.registry import available, get, register, traits
from tfnorm.swap import swap_normalization

__all__ = sorted(
    layers.__all__
    + [
        "__version__",
        "available",
        "compat",
        "datasets",
        "fold_normalization",
        "get",
        "ops",
        "recompute_batch_statistics",
        "register",
        "swap_normalization",
        "traits",
    ]
)
