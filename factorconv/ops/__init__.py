"""Operator families, one per module; importing this package registers them all."""

from .acdc import ACDCConv2d, CoefficientBank
from .base import ConvOperator, OperatorMixin, is_operator
from .baselines import DepthwiseConv2d, DepthwiseSeparableConv2d, SpatialSeparableConv2d, StandardConv2d
from .bdsc import BalancedDecoupledConv2d, DecoupledConv2d, PackedBDSC, decouple
from .channel import ChannelGather, chain_connectivity
from .doconv import DOConv2d
from .igcv import InterleavedGroupConv1, InterleavedGroupConv2
from .osep import (
    OptimizedSeparableConv2d,
    OsepPlan,
    SpatialOptimizedSeparableConv2d,
    plan_osep,
    volumetric_rf,
)
from .spec import ConvSpec, Cost, conv_macs, conv_output_hw

__all__ = [
    "ACDCConv2d",
    "BalancedDecoupledConv2d",
    "ChannelGather",
    "CoefficientBank",
    "ConvOperator",
    "ConvSpec",
    "Cost",
    "DOConv2d",
    "DecoupledConv2d",
    "DepthwiseConv2d",
    "DepthwiseSeparableConv2d",
    "InterleavedGroupConv1",
    "InterleavedGroupConv2",
    "OperatorMixin",
    "OptimizedSeparableConv2d",
    "OsepPlan",
    "PackedBDSC",
    "SpatialOptimizedSeparableConv2d",
    "SpatialSeparableConv2d",
    "StandardConv2d",
    "chain_connectivity",
    "conv_macs",
    "conv_output_hw",
    "decouple",
    "is_operator",
    "plan_osep",
    "volumetric_rf",
]
