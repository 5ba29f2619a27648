"""tfnorm's Keras layers, one family per module."""

from tfnorm.layers.adanorm import AdaNorm, DetachNormalization
from tfnorm.layers.base import NormalizationLayer
from tfnorm.layers.batch import BatchNormalization
from tfnorm.layers.channel import LocalResponseNormalization, PixelNormalization
from tfnorm.layers.cosine import CosineConv1D, CosineConv2D, CosineDense
from tfnorm.layers.evonorm import EvoNormB0, EvoNormS0
from tfnorm.layers.frn import TLU, FilterResponseNormalization
from tfnorm.layers.group import GroupNormalization, InstanceNormalization
from tfnorm.layers.layer_norm import LayerNormalization, RMSNormalization
from tfnorm.layers.online import OnlineNormalization
from tfnorm.layers.spectral import SpectralNormalization
from tfnorm.layers.standardized import (
    WeightStandardizedConv1D,
    WeightStandardizedConv2D,
    WeightStandardizedConv3D,
)
from tfnorm.layers.switchable import SwitchableNormalization
from tfnorm.layers.transformer import DynamicTanh, ScaleNormalization
from tfnorm.layers.weight import WeightNormalization

__all__ = [
    "AdaNorm",
    "BatchNormalization",
    "CosineConv1D",
    "CosineConv2D",
    "CosineDense",
    "DetachNormalization",
    "DynamicTanh",
    "EvoNormB0",
    "EvoNormS0",
    "FilterResponseNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "LocalResponseNormalization",
    "NormalizationLayer",
    "OnlineNormalization",
    "PixelNormalization",
    "RMSNormalization",
    "ScaleNormalization",
    "SpectralNormalization",
    "SwitchableNormalization",
    "TLU",
    "WeightNormalization",
    "WeightStandardizedConv1D",
    "WeightStandardizedConv2D",
    "WeightStandardizedConv3D",
]
