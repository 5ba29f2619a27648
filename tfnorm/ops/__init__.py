"""Pure TensorFlow functions behind every tfnorm layer (no Keras state)."""

from tfnorm.ops.adanorm import adanorm
from tfnorm.ops.axes import as_axis_tuple, broadcast_shape, complement, resolve_axes
from tfnorm.ops.cosine import cosine_conv, cosine_matmul
from tfnorm.ops.elementwise import dynamic_tanh, tlu
from tfnorm.ops.evonorm import evonorm_b0, evonorm_s0
from tfnorm.ops.fused import (
    batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    rms_norm,
    scale_norm,
)
from tfnorm.ops.groups import divisors, group_average, group_moments, merge_groups, split_groups
from tfnorm.ops.lrn import lrn
from tfnorm.ops.moments import (
    mean_square,
    moments,
    moments_from_sums,
    replica_moments,
    replicas_in_sync,
    shifted_sums,
    stats_dtype,
    to_stats,
)
from tfnorm.ops.normalize import fold, inverse_norm, normalize, rms_normalize
from tfnorm.ops.online import online_normalize
from tfnorm.ops.switchable import mix_statistics, switchable_norm

__all__ = [
    "adanorm",
    "as_axis_tuple",
    "batch_norm",
    "broadcast_shape",
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
    "instance_norm",
    "inverse_norm",
    "layer_norm",
    "lrn",
    "mean_square",
    "merge_groups",
    "mix_statistics",
    "moments",
    "moments_from_sums",
    "normalize",
    "online_normalize",
    "replica_moments",
    "replicas_in_sync",
    "resolve_axes",
    "rms_norm",
    "rms_normalize",
    "scale_norm",
    "shifted_sums",
    "split_groups",
    "stats_dtype",
    "switchable_norm",
    "tlu",
    "to_stats",
]
