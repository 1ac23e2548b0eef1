"""DenseNet for CIFAR (Huang et al.), the original form without bottlenecks or compression:
densenet40 has a 3x3 stem to 16 channels, three dense blocks of 12 layers (BN-act-conv3x3 adding
k = 12 channels each), transitions BN-act-conv1x1-avgpool between blocks, then BN-act, pooling and a
linear classifier (about 1.0 M parameters; the BDSC paper's DenseNet-40 baseline).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import register_model
from .backbone import Backbone, ClassifierHead
from .layers import (
    check_positive,
    default_act,
    init_weights,
    scale_width,
)

__all__ = ["DenseLayer", "DenseNet", "Transition"]


class DenseLayer(nn.Module):
    """BN-act-conv3x3 producing `growth` channels, concatenated to its input."""

    def __init__(
        self,
        in_ch: int,
        growth: int,
        *,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = default_act,
    ) -> None:
        super().__init__()
        self.bn = norm_layer(in_ch)
        self.act = act_layer()
        self.conv = conv_layer(in_ch, growth, 3)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(self.act(self.bn(x)))], 1)


class Transition(nn.Sequential):
    """BN-act-conv1x1-avgpool2x2 between dense blocks."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = default_act,
    ) -> None:
        super().__init__()
        self.bn = norm_layer(in_ch)
        self.act = act_layer()
        self.conv = conv_layer(in_ch, out_ch, 1)
        self.pool = nn.AvgPool2d(2, ceil_mode=True)


class DenseNet(Backbone, ClassifierHead, nn.Module):
    """CIFAR DenseNet of depth 3n+4 with growth rate `growth_rate`·width."""

    def __init__(
        self,
        depth: int = 40,
        *,
        growth_rate: int = 12,
        name: str = "densenet",
        **common: Any,
    ) -> None:
        super().__init__()
        if (depth - 4) % 3 or depth < 7:
            raise ValueError(f"{name}: depth must be 3n+4 with n >= 1, got {depth}")
        shared = self.common_args(name, common)
        conv_layer = shared.convs()
        check_positive(name, "growth_rate", growth_rate, int)
        growth = scale_width(growth_rate, shared.width)
        ch = scale_width(16, shared.width)
        layers_per_block = (depth - 4) // 3
        self.conv1 = conv_layer(shared.in_chans, ch, 3, stem=True)
        for b in range(3):
            block = []
            for _ in range(layers_per_block):
                block.append(DenseLayer(ch, growth, **shared.block_layers(conv_layer)))
                ch += growth
            self.add_module(f"block{b + 1}", nn.Sequential(*block))
            if b < 2:
                self.add_module(f"trans{b + 1}", Transition(ch, ch, **shared.block_layers(conv_layer)))
        self.bn = shared.norm_layer(ch)
        self.act = shared.act_layer()
        self.add_classifier(ch, shared.num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.trans1(self.block1(x))
        x = self.trans2(self.block2(x))
        x = self.act(self.bn(self.block3(x)))
        return self.classify(x)


register_model(
    "densenet40", tags=("cifar", "densenet"),
    description="DenseNet-40 (k=12) for CIFAR: three dense blocks of 12 layers, no bottleneck/compression",
)(functools.partial(DenseNet, 40, name="densenet40"))
