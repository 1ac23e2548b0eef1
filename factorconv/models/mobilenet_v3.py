"""MobileNetV3-Large (Howard et al. 2019) in torchvision's layout: a 3x3/2 hard-swish stem, fifteen inverted
residual blocks (optional 1x1 expansion, a depthwise 3x3 or 5x5, squeeze-and-excitation on some, 1x1
projection), a 1x1 conv to 960, pooling and a 1280-wide hidden classifier layer: 5,483,032 parameters with
1000 classes (torchvision's count). As in MobileNetV1/V2 the depthwise convs are the spatial convs an operator
replaces (DO-Conv's DO-DConv); the 1x1 convs, the SE layers and the stem stay standard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import register_model
from .backbone import Backbone
from .layers import ConvNormAct, check_dropout, init_weights, make_divisible

__all__ = ["MobileNetV3", "SqueezeExcite"]

# (kernel, expanded, out, squeeze-excite, hard-swish, stride) of MobileNetV3-Large's blocks (input 16)
LARGE = ((3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
         (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
         (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
         (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
         (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1))


class SqueezeExcite(nn.Module):
    """Pool, 1x1 to make_divisible(c / 4), ReLU, 1x1 back, hard-sigmoid gate (torchvision's)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeeze = make_divisible(channels // 4)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))


class _Block(nn.Module):
    def __init__(self, in_ch: int, kernel: int, expanded: int, out_ch: int, se: bool, hard_swish: bool,
                 stride: int, *, conv_layer: Callable[..., nn.Module], norm_layer: Callable[[int], nn.Module],
                 act_layer: Callable[[], nn.Module]) -> None:
        super().__init__()
        layer = {"norm_layer": norm_layer, "act_layer": nn.Hardswish if hard_swish else act_layer}
        layers: list[nn.Module] = []
        if expanded != in_ch:
            layers.append(ConvNormAct(conv_layer, in_ch, expanded, 1, **layer))
        layers.append(ConvNormAct(conv_layer, expanded, expanded, kernel, stride=stride, groups=expanded, **layer))
        if se:
            layers.append(SqueezeExcite(expanded))
        layers.append(ConvNormAct(conv_layer, expanded, out_ch, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV3(Backbone, nn.Module):
    """MobileNetV3-Large with width multiplier α (channels make_divisible(c·α), as torchvision). The stem, the
    last conv and the blocks the paper marks get hard-swish; `act_layer` is the other blocks' (ReLU)."""

    def __init__(self, *, name: str = "mobilenet_v3_large", dropout: float = 0.2,
                 act_layer: Callable[[], nn.Module] = nn.ReLU, **common: Any) -> None:
        super().__init__()
        shared = self.common_args(name, common, act_layer=act_layer)
        check_dropout(name, dropout)
        conv_layer = shared.convs()
        in_ch = make_divisible(16 * shared.width)
        layers: list[nn.Module] = [ConvNormAct(conv_layer, shared.in_chans, in_ch, 3, stride=2, stem=True,
                                               norm_layer=shared.norm_layer, act_layer=nn.Hardswish)]
        for kernel, expanded, out, se, hard_swish, stride in LARGE:
            out_ch = make_divisible(out * shared.width)
            layers.append(_Block(in_ch, kernel, make_divisible(expanded * shared.width), out_ch, se, hard_swish,
                                 stride, **shared.block_layers(conv_layer)))
            in_ch = out_ch
        last_conv = 6 * in_ch
        layers.append(ConvNormAct(conv_layer, in_ch, last_conv, 1, norm_layer=shared.norm_layer,
                                  act_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        hidden = make_divisible(1280 * shared.width)
        self.classifier = nn.Sequential(nn.Linear(last_conv, hidden), nn.Hardswish(),
                                        nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                                        nn.Linear(hidden, shared.num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


register_model(
    "mobilenet_v3_large", input_size=(3, 224, 224), num_classes=1000, tags=("imagenet", "mobilenet"),
    description="MobileNetV3-Large (torchvision's layout, width multiplier): 5.48 M params",
)(MobileNetV3)
