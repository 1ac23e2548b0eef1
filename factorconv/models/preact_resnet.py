"""Pre-activation CIFAR ResNets (He et al., "Identity mappings", ResNet-v2) and wide ResNets
(Zagoruyko & Komodakis), which share their block design.

Blocks are BN-act-conv; a 1x1 conv projection (no BN) on the pre-activated input replaces the identity
where the shape changes. After the last stage: BN-act, global pooling, linear classifier.

- preact_resnet20/56/110: basic blocks (two 3x3), widths 16/32/64·width, (depth-2)/6 blocks per stage.
- preact_resnet164: bottleneck blocks (1x1, 3x3 carrying the stride, 1x1 ×4), (depth-2)/9 per stage.
- wrn_40_1, wrn_40_4, wrn_28_10: basic blocks at widths 16k/32k/64k (k the widen factor), (depth-4)/6 per
  stage, optional dropout between the two convs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..registry import register_model
from .backbone import Backbone, ClassifierHead
from .layers import (
    check_dropout,
    default_act,
    init_weights,
    scale_width,
)

__all__ = ["PreActBasicBlock", "PreActBottleneck", "PreActResNet"]


class PreActBasicBlock(nn.Module):
    """BN-act-conv3x3-BN-act-(dropout)-conv3x3 plus the (projected) input."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        *,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = default_act,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.bn1 = norm_layer(in_ch)
        self.act1 = act_layer()
        self.conv1 = conv_layer(in_ch, planes, 3, stride=stride)
        self.bn2 = norm_layer(planes)
        self.act2 = act_layer()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv_layer(planes, planes, 3)
        self.shortcut = (
            conv_layer(in_ch, planes, 1, stride=stride) if stride != 1 or in_ch != planes else None
        )

    def forward(self, x: Tensor) -> Tensor:
        pre = self.act1(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.drop(self.act2(self.bn2(out))))
        return out + skip


class PreActBottleneck(nn.Module):
    """BN-act-conv1x1-BN-act-conv3x3(stride)-BN-act-conv1x1(×4) plus the (projected) input."""

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        *,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = default_act,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.bn1 = norm_layer(in_ch)
        self.act1 = act_layer()
        self.conv1 = conv_layer(in_ch, planes, 1)
        self.bn2 = norm_layer(planes)
        self.act2 = act_layer()
        self.conv2 = conv_layer(planes, planes, 3, stride=stride)
        self.bn3 = norm_layer(planes)
        self.act3 = act_layer()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv3 = conv_layer(planes, out_ch, 1)
        self.shortcut = conv_layer(in_ch, out_ch, 1, stride=stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        pre = self.act1(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        out = self.conv3(self.drop(self.act3(self.bn3(out))))
        return out + skip


class PreActResNet(Backbone, ClassifierHead, nn.Module):
    """Pre-activation ResNet / WRN for CIFAR: 3x3 stem, three stages, BN-act, pooling, classifier.

    `blocks_per_stage` basic (or bottleneck) blocks at widths 16·k, 32·k, 64·k (k = `widen_factor`), all
    channel counts scaled by `width`; `dropout` between the convs of each block (WRN).
    """

    def __init__(
        self,
        blocks_per_stage: int,
        *,
        bottleneck: bool = False,
        widen_factor: int = 1,
        name: str = "preact_resnet",
        dropout: float = 0.0,
        **common: Any,
    ) -> None:
        super().__init__()
        shared = self.common_args(name, common)
        conv_layer = shared.convs()
        check_dropout(name, dropout)
        block = PreActBottleneck if bottleneck else PreActBasicBlock
        stem_ch = scale_width(16, shared.width)
        planes = [scale_width(16 * widen_factor, shared.width) * m for m in (1, 2, 4)]

        self.conv1 = conv_layer(shared.in_chans, stem_ch, 3, stem=True)
        in_ch = stem_ch
        for i, p in enumerate(planes):
            layers = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(block(in_ch, p, stride, **shared.block_layers(conv_layer), dropout=dropout))
                in_ch = p * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.bn = shared.norm_layer(in_ch)
        self.act = shared.act_layer()
        self.add_classifier(in_ch, shared.num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.classify(self.act(self.bn(x)))


for _depth in (20, 56, 110):
    register_model(
        f"preact_resnet{_depth}", tags=("cifar", "preact"),
        description=f"Pre-activation ResNet-{_depth} (ResNet-v2, He et al.): {(_depth - 2) // 6} basic blocks "
        "per stage, 1x1 conv projections",
    )(functools.partial(PreActResNet, (_depth - 2) // 6, name=f"preact_resnet{_depth}"))

register_model(
    "preact_resnet164", tags=("cifar", "preact"),
    description="Pre-activation ResNet-164 (ResNet-v2, He et al.): 18 bottleneck blocks per stage",
)(functools.partial(PreActResNet, 18, bottleneck=True, name="preact_resnet164"))

for _depth, _k in ((40, 1), (40, 4), (28, 10)):
    register_model(
        f"wrn_{_depth}_{_k}", tags=("cifar", "wrn"),
        description=f"Wide ResNet-{_depth}-{_k} (Zagoruyko & Komodakis): pre-activation, widths "
        f"{16 * _k}/{32 * _k}/{64 * _k}, 1x1 conv shortcuts",
    )(functools.partial(PreActResNet, (_depth - 4) // 6, widen_factor=_k, name=f"wrn_{_depth}_{_k}"))
