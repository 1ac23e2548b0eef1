"""Operator families, one per module; importing this package registers them all."""

from .base import ConvOperator, ConvSpec, Cost, OperatorMixin, conv_macs, conv_output_hw, is_operator
from .baselines import DepthwiseConv2d, DepthwiseSeparableConv2d, SpatialSeparableConv2d, StandardConv2d
from .doconv import DOConv2d

__all__ = [
    "ConvOperator",
    "ConvSpec",
    "Cost",
    "DOConv2d",
    "DepthwiseConv2d",
    "DepthwiseSeparableConv2d",
    "OperatorMixin",
    "SpatialSeparableConv2d",
    "StandardConv2d",
    "conv_macs",
    "conv_output_hw",
    "is_operator",
]
