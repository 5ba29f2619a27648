"""Pure TensorFlow functions behind every tfnorm layer (no Keras state).

Kernels (one :class:`tfnorm.ops.kernel.FusedOp` each, on a view chosen by
:func:`tfnorm.ops.layout.fast_view`): per row in ``rows`` (LayerNorm, RMSNorm,
ScaleNorm) and ``adanorm``; per channel group in ``grouped`` (BatchNorm,
GroupNorm, InstanceNorm), ``evonorm`` and ``switchable``; ``online``,
``elementwise`` and ``lrn``. Statistics come from ``moments`` and ``groups``,
the sums behind them from ``reduce``.
"""

from tfnorm.ops.adanorm import adanorm
from tfnorm.ops.axes import as_axis_tuple, complement, resolve_axes
from tfnorm.ops.cosine import cosine_conv, cosine_matmul, normalized_kernel
from tfnorm.ops.elementwise import dynamic_tanh, tlu
from tfnorm.ops.evonorm import evonorm_b0, evonorm_s0
from tfnorm.ops.grouped import batch_norm, group_norm, instance_norm
from tfnorm.ops.groups import divisors, group_average, group_moments, merge_groups, split_groups
from tfnorm.ops.lrn import lrn, window_sum
from tfnorm.ops.moments import (
    grouped_moments,
    kept,
    mean_square,
    moments,
    moments_from_sums,
    replica_moments,
    replicas_in_sync,
    row_moments,
    shifted_sums,
    stats_dtype,
    to_stats,
)
from tfnorm.ops.normalize import fold, inverse_norm, normalize, rms_normalize
from tfnorm.ops.online import online_normalize
from tfnorm.ops.rows import layer_norm, rms_norm, scale_norm
from tfnorm.ops.scan import linear_recurrence
from tfnorm.ops.switchable import mix_statistics, switchable_norm

__all__ = [
    "adanorm",
    "as_axis_tuple",
    "batch_norm",
    "complement",
    "cosine_conv",
    "cosine_matmul",
    "divisors",
    "dynamic_tanh",
    "evonorm_b0",
    "evonorm_s0",
    "fold",
    "group_average",
    "group_moments",
    "group_norm",
    "grouped_moments",
    "instance_norm",
    "inverse_norm",
    "kept",
    "layer_norm",
    "linear_recurrence",
    "lrn",
    "mean_square",
    "merge_groups",
    "mix_statistics",
    "moments",
    "moments_from_sums",
    "normalize",
    "normalized_kernel",
    "online_normalize",
    "replica_moments",
    "replicas_in_sync",
    "resolve_axes",
    "rms_norm",
    "rms_normalize",
    "row_moments",
    "scale_norm",
    "shifted_sums",
    "split_groups",
    "stats_dtype",
    "switchable_norm",
    "tlu",
    "to_stats",
    "window_sum",
]
