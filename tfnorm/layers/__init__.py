"""tfnorm's Keras layers, one family per module."""

from tfnorm.layers.base import NormalizationLayer
from tfnorm.layers.batch import BatchNormalization
from tfnorm.layers.group import GroupNormalization, InstanceNormalization
from tfnorm.layers.layer_norm import LayerNormalization, RMSNormalization

__all__ = [
    "BatchNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "NormalizationLayer",
    "RMSNormalization",
]
