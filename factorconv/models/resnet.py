"""ResNet-18/34/50 in the ImageNet layout (torchvision's: 7x7/2 stem + 3x3/2 max-pool, stages at
64/128/256/512·width, 1x1 conv + BN projections, bottlenecks with the stride on the 3x3), and
`resnet18_cifar`, the same ResNet-18 with a 3x3 stride-1 stem and no max-pool (the ACDC paper's CIFAR
baseline, 11.17 M parameters).
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor, nn

from ..registry import register_model
from .backbone import Backbone, ClassifierHead
from .cifar_resnet import BasicBlock, Bottleneck
from .layers import (
    init_weights,
    scale_width,
)

__all__ = ["Bottleneck", "ResNet"]


class ResNet(Backbone, ClassifierHead, nn.Module):
    """ResNet with basic or bottleneck blocks; `cifar_stem` swaps the ImageNet stem for a 3x3/1 conv;
    `groups` / `width_per_group` make the bottlenecks ResNeXt's (an operator takes the group conv through its
    `groups` argument: DO-GConv for doconv)."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        *,
        bottleneck: bool = False,
        cifar_stem: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        dilate: tuple[bool, bool, bool] = (False, False, False),
        name: str = "resnet",
        **common: Any,
    ) -> None:
        super().__init__()
        shared = self.common_args(name, common)
        conv_layer = shared.convs()
        base = scale_width(64, shared.width)
        if cifar_stem:
            self.conv1 = conv_layer(shared.in_chans, base, 3, stem=True)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = conv_layer(shared.in_chans, base, 7, stride=2, stem=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = shared.norm_layer(base)
        self.act1 = shared.act_layer()
        in_ch = base
        if len(dilate) != 3 or (any(dilate) and not bottleneck):
            raise ValueError(f"{name}: dilate takes three booleans (stages 2-4), for bottleneck networks only")
        dilation = 1
        for i, blocks in enumerate(layers):
            planes = base * 2**i
            stage = []
            previous = dilation
            stage_stride = 2 if i > 0 else 1
            if i > 0 and dilate[i - 1]:  # a dilated stage keeps the resolution (DeepLab's output stride)
                dilation, stage_stride = dilation * stage_stride, 1
            for j in range(blocks):
                stride = stage_stride if j == 0 else 1
                if bottleneck:
                    stage.append(Bottleneck(in_ch, planes, stride, groups=groups, base_width=width_per_group,
                                            dilation=previous if j == 0 else dilation,
                                            **shared.block_layers(conv_layer)))
                    in_ch = planes * Bottleneck.expansion
                else:
                    stage.append(BasicBlock(in_ch, planes, stride, shortcut="B",
                                            **shared.block_layers(conv_layer)))
                    in_ch = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.add_classifier(in_ch, shared.num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature maps (what DeepLabV3 builds on)."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.forward_features(x))


register_model(
    "resnet18_cifar", tags=("cifar", "resnet"),
    description="ResNet-18 for CIFAR: 3x3 stem, no max-pool, 1x1+BN projections (ACDC's baseline)",
)(functools.partial(ResNet, (2, 2, 2, 2), cifar_stem=True, name="resnet18_cifar"))

for _name, _layers, _bottleneck in (
    ("resnet18", (2, 2, 2, 2), False), ("resnet34", (3, 4, 6, 3), False), ("resnet50", (3, 4, 6, 3), True)
):
    register_model(
        _name, input_size=(3, 224, 224), num_classes=1000, tags=("imagenet", "resnet"),
        description=f"{_name.replace('resnet', 'ResNet-')} (ImageNet layout, torchvision's counts)",
    )(functools.partial(ResNet, _layers, bottleneck=_bottleneck, name=_name))
register_model(
    "resnext50_32x4d", input_size=(3, 224, 224), num_classes=1000, tags=("imagenet", "resnet"),
    description="ResNeXt-50 32x4d (ImageNet layout, torchvision's counts: 25.03 M); DO-Conv's DO-GConv backbone",
)(functools.partial(ResNet, (3, 4, 6, 3), bottleneck=True, groups=32, width_per_group=4, name="resnext50_32x4d"))
