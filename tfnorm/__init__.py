"""tfnorm: normalization layers for Keras 3 on TensorFlow.

Example:
  >>> import tfnorm
  >>> layer = tfnorm.GroupNormalization(groups=8)
"""

import os as _os
import sys as _sys

if "tensorflow" not in _sys.modules:  # keep TensorFlow's C++ INFO lines out of the way
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from tfnorm._backend import require_tensorflow_backend as _require_tf  # noqa: E402

_require_tf()

from tfnorm import ops  # noqa: E402
from tfnorm import layers  # noqa: E402
from tfnorm.layers import *  # noqa: E402,F401,F403  (the layer list lives in tfnorm.layers)
from tfnorm import compat  # noqa: E402
from tfnorm.recompute import recompute_batch_statistics  # noqa: E402
from tfnorm.registry import available, get, register, traits  # noqa: E402
from tfnorm.swap import swap_normalization  # noqa: E402
from tfnorm.fold import fold_normalization  # noqa: E402

from tfnorm.__about__ import __version__  # noqa: E402

__all__ = sorted(layers.__all__ + [
    "__version__",
    "available",
    "compat",
    "fold_normalization",
    "get",
    "ops",
    "recompute_batch_statistics",
    "register",
    "swap_normalization",
    "traits",
])
