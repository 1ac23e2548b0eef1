"""MobileNetV1 (Howard et al.) and MobileNetV2 (Sandler et al.) in the ImageNet layout, with the width
multiplier. Their depthwise 3x3 convs are the spatial convs an operator replaces (DO-Conv's DO-DConv);
the 1x1 convs and the stem stay standard.

- mobilenet_v1: 3x3/2 stem to 32·α, 13 depthwise-separable blocks (dw3x3-BN-ReLU, pw1x1-BN-ReLU), pooling,
  FC 1024·α -> classes: 4.23 M parameters and 569 M MACs at 224x224, α = 1.
- mobilenet_v2: torchvision's layout (inverted residuals, ReLU6, last 1x1 to 1280, dropout 0.2): 3.50 M.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..registry import register_model
from .backbone import Backbone, ClassifierHead
from .layers import (
    ConvNormAct,
    check_choice,
    check_dropout,
    default_act,
    init_weights,
    make_divisible,
)

__all__ = ["InvertedResidual", "MobileNetV1", "MobileNetV2", "SeparableBlock"]

# (out_channels, stride) of MobileNetV1's 13 depthwise-separable blocks
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5, (1024, 2), (1024, 1))
# (expansion t, channels c, repeats n, first stride s) of MobileNetV2
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))
relu6: Callable[[], nn.Module] = functools.partial(nn.ReLU6, inplace=True)


class SeparableBlock(nn.Sequential):
    """MobileNetV1 block: depthwise 3x3 (stride) -BN-act, pointwise 1x1 -BN-act."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        *,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = default_act,
    ) -> None:
        super().__init__()
        self.dw = ConvNormAct(conv_layer, in_ch, in_ch, 3, stride=stride, groups=in_ch, norm_layer=norm_layer,
                              act_layer=act_layer)
        self.pw = ConvNormAct(conv_layer, in_ch, out_ch, 1, norm_layer=norm_layer, act_layer=act_layer)


class MobileNetV1(Backbone, ClassifierHead, nn.Module):
    """MobileNetV1 with width multiplier α (channels max(int(c·α), 8), as TF-slim).

    `block="separable"` (default): the 13 depthwise-separable blocks. `block="conv"`: each becomes one 3x3
    conv -BN-act (in -> out, the block's stride), which the chosen operator replaces; with `conv="osep"`
    this is the optimized-separable paper's o-MobileNet (Table 5).
    """

    def __init__(
        self,
        *,
        name: str = "mobilenet_v1",
        dropout: float = 0.0,
        block: str = "separable",
        **common: Any,
    ) -> None:
        super().__init__()
        shared = self.common_args(name, common)
        check_dropout(name, dropout)
        check_choice(name, "block", block, ("separable", "conv"))
        conv_layer = shared.convs()

        def ch(c: int) -> int:
            return max(int(c * shared.width), 8)

        in_ch = ch(32)
        self.stem = ConvNormAct(conv_layer, shared.in_chans, in_ch, 3, stride=2, stem=True, **shared.norm_act())
        blocks = []
        for out, stride in V1_BLOCKS:
            if block == "separable":
                blocks.append(SeparableBlock(in_ch, ch(out), stride, **shared.block_layers(conv_layer)))
            else:
                blocks.append(ConvNormAct(conv_layer, in_ch, ch(out), 3, stride=stride, **shared.norm_act()))
            in_ch = ch(out)
        self.blocks = nn.Sequential(*blocks)
        self.add_classifier(in_ch, shared.num_classes, dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.blocks(self.stem(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand -BN-act] -> dw3x3 (stride) -BN-act -> 1x1 project -BN, + input."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        expansion: int,
        *,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = relu6,
    ) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvNormAct(conv_layer, in_ch, hidden, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers += [
            ConvNormAct(conv_layer, hidden, hidden, 3, stride=stride, groups=hidden, norm_layer=norm_layer,
                        act_layer=act_layer),
            ConvNormAct(conv_layer, hidden, out_ch, 1, norm_layer=norm_layer, act_layer=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(Backbone, ClassifierHead, nn.Module):
    """MobileNetV2 with width multiplier α (channels rounded to multiples of 8, as torchvision). The skeleton
    (stem, `settings` of (expansion t, channels, repeats, first stride), a last layer to 1280·max(1, α),
    pooling and a linear classifier) is also IGCV3's: a subclass gives its own `settings`, `block` and
    `last_layer`; `block_options` reach its blocks."""

    settings = V2_SETTINGS

    def __init__(
        self,
        *,
        name: str = "mobilenet_v2",
        dropout: float = 0.2,
        act_layer: Callable[[], nn.Module] = relu6,
        block_options: dict[str, Any] | None = None,
        **common: Any,
    ) -> None:
        super().__init__()
        shared = self.common_args(name, common, act_layer=act_layer)
        check_dropout(name, dropout)
        conv_layer = shared.convs()
        layer = shared.block_layers(conv_layer)
        in_ch = make_divisible(32 * shared.width)
        last = make_divisible(1280 * max(1.0, shared.width))
        layers: list[nn.Module] = [ConvNormAct(conv_layer, shared.in_chans, in_ch, 3, stride=2, stem=True,
                                               **shared.norm_act())]
        for t, c, n, s in self.settings:
            out = make_divisible(c * shared.width)
            for i in range(n):
                layers.append(self.block(in_ch, out, s if i == 0 else 1, t, **layer, **(block_options or {})))
                in_ch = out
        layers.append(self.last_layer(in_ch, last, **layer, **(block_options or {})))
        self.features = nn.Sequential(*layers)
        self.add_classifier(last, shared.num_classes, dropout)
        init_weights(self)

    def block(self, in_ch: int, out_ch: int, stride: int, expansion: int, **layer: Any) -> nn.Module:
        """One block of the body (MobileNetV2: the inverted residual)."""
        return InvertedResidual(in_ch, out_ch, stride, expansion, **layer)

    def last_layer(self, in_ch: int, out_ch: int, *, conv_layer: Callable[..., nn.Module],
                   norm_layer: Callable[[int], nn.Module], act_layer: Callable[[], nn.Module]) -> nn.Module:
        """The layer to the classifier's width (MobileNetV2: a 1x1 conv -BN-act)."""
        return ConvNormAct(conv_layer, in_ch, out_ch, 1, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features(x))


register_model(
    "mobilenet_v1", input_size=(3, 224, 224), num_classes=1000, tags=("imagenet", "mobilenet"),
    description="MobileNetV1 (ImageNet layout, width multiplier): 4.23 M params, 569 M MACs at 224",
)(MobileNetV1)
register_model(
    "mobilenet_v2", input_size=(3, 224, 224), num_classes=1000, tags=("imagenet", "mobilenet"),
    description="MobileNetV2 (torchvision's layout, width multiplier): 3.50 M params",
)(MobileNetV2)
