"""Pure TensorFlow functions behind every tfnorm layer (no Keras state)."""

from tfnorm.ops.axes import as_axis_tuple, broadcast_shape, complement, resolve_axes
from tfnorm.ops.elementwise import dynamic_tanh, tlu
from tfnorm.ops.fused import (
    batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    rms_norm,
    scale_norm,
)
from tfnorm.ops.groups import divisors, group_average, group_moments, merge_groups, split_groups
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

__all__ = [
    "as_axis_tuple",
    "batch_norm",
    "broadcast_shape",
    "complement",
    "divisors",
    "dynamic_tanh",
    "fold",
    "group_average",
    "group_moments",
    "group_norm",
    "instance_norm",
    "inverse_norm",
    "layer_norm",
    "mean_square",
    "merge_groups",
    "moments",
    "moments_from_sums",
    "normalize",
    "replica_moments",
    "replicas_in_sync",
    "resolve_axes",
    "rms_norm",
    "rms_normalize",
    "scale_norm",
    "shifted_sums",
    "split_groups",
    "stats_dtype",
    "tlu",
    "to_stats",
]
