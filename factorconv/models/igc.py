"""The interleaved-group-convolution networks of paper 002 and its nonlinear blocks.

CIFAR networks of Table 1 (depth 3B+2: a 3x3 stem, three stages of B layers at widths x, 2x, 4x with an
identity skip every two layers and zero padding at transitions, pooling, classifier; `channels` is the
first-stage width x of the paper's name "(Cx)", each network's own by default, and `width` multiplies it as it
multiplies every backbone's channels). Each layer is the paper's operator by default, with its per-stage options:
- `xception_cifar`: channel-wise 3x3 then 1x1 (dsep; depth multiplier 2 at transitions, full 2x->2x 1x1);
- `igcv1_cifar`: igcv1 with L = x/2 primary partitions in every stage (M = 2, 4, 8 channels each);
- `igcv2_cifar`: igcv2 with L = 3 and branch sizes K per stage (`K=(8, 16, 32)` for C64, Table 4);
- `igcv2star_cifar`: igcv2 with K = 8 and L-1 = ceil(log_8 C_s) group 1x1 convs per stage, stem 3->64
  (3->x when x < 64).

ImageNet networks (built from the nonlinear blocks; their spatial convs are the chosen operator):
- `igcv2_mobilenet` (Table 8): MobileNetV1's pattern with IGCV2 blocks of g1 = g2 = 8 branches, an
  IGCV2* classifier (no channel-wise conv, g1 = 8, g2 = 4);
- `igcv3` (Table 10): MobileNetV2's pattern with IGCV3 blocks of g1 = g2 = 2 branches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..functional import shuffle_permutation
from ..ops.channel import ChannelGather
from ..registry import ConvBuilder, register_model
from .backbone import Backbone
from .cifar_resnet import CifarResNet
from .layers import (
    default_act,
    init_weights,
    make_divisible,
    scaled_channels,
)
from .mobilenet import MobileNetV2, SeparableBlock, relu6

__all__ = ["IGCV3", "IGCV2Block", "IGCV2Mobilenet", "IGCV3Block", "XceptionBlock"]


# -- CIFAR networks of Table 1 ------------------------------------------------------------------------
def _cifar(
    name: str,
    default_conv: str,
    stage_kwargs: Callable[[int], tuple[dict[str, Any], ...]],
    stem: Callable[[int], int | None] = lambda x: None,
    default_width: int = 64,
) -> Callable[..., CifarResNet]:
    def builder(
        *,
        depth: int = 20,
        conv: str | ConvBuilder = default_conv,
        conv_kwargs: dict[str, Any] | None = None,
        width: float = 1.0,
        channels: int | None = None,
        num_classes: int = 10,
        in_chans: int = 3,
        K: tuple[int, int, int] | None = None,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = default_act,
    ) -> CifarResNet:
        x = scaled_channels(name, channels, default_width, width)
        if (depth - 2) % 6:
            raise ValueError(f"{name}: depth must be 3B+2 with B even (8, 20, 26, ...), got {depth}")
        if K is not None and name != "igcv2_cifar":
            raise ValueError(f"{name}: K is an option of igcv2_cifar only")
        # the paper's per-stage options apply to the paper's operator; another conv gets only conv_kwargs
        per_stage = (stage_kwargs(x) if K is None else tuple({"K": k, "L": 3} for k in K)) \
            if conv == default_conv else None
        return CifarResNet(depth, conv=conv, conv_kwargs=conv_kwargs, width=x / 16, num_classes=num_classes,
                           in_chans=in_chans, shortcut="A", stem_channels=stem(x), stage_conv_kwargs=per_stage,
                           norm_layer=norm_layer, act_layer=act_layer)

    builder.__name__ = builder.__qualname__ = name
    return builder


def _igcv2star_stages(x: int) -> tuple[dict[str, Any], ...]:
    return tuple({"K": 8, "L": math.ceil(math.log(c, 8) - 1e-9) + 1} for c in (x, 2 * x, 4 * x))


CIFAR_NETS = {
    "xception_cifar": ("dsep", lambda x: ({"multiplier": "auto"},) * 3, lambda x: None, 35,
                       "Xception(Cx) of IGCV2's Table 1: channel-wise 3x3 + 1x1 layers, depth 3B+2"),
    "igcv1_cifar": ("igcv1", lambda x: ({"partitions": x // 2},) * 3, lambda x: None, 48,
                    "IGCV1(Cx) of IGCV2's Table 1: x/2 primary partitions of 2, 4, 8 channels per stage"),
    "igcv2_cifar": ("igcv2", lambda x: tuple({"K": max(2, c // 8), "L": 3} for c in (x, 2 * x, 4 * x)), lambda x: None,
                    64, "IGCV2(Cx) of IGCV2's Table 1: channel-wise 3x3 + two group 1x1 convs of branch K"),
    "igcv2star_cifar": ("igcv2", _igcv2star_stages, lambda x: min(64, x), 216,
                        "IGCV2*(Cx) of IGCV2's Table 1: K = 8, ceil(log_8 C) group 1x1 convs per stage"),
}
for _name, (_conv, _stages, _stem, _width, _doc) in CIFAR_NETS.items():
    register_model(_name, tags=("cifar", "igc"), description=_doc)(
        _cifar(_name, _conv, _stages, _stem, _width)
    )


# -- nonlinear blocks -------------------------------------------------------------------------------------
class XceptionBlock(SeparableBlock):
    """The Xception / MobileNetV1 block (Fig. 5a): channel-wise 3x3 -BN-act, 1x1 -BN-act."""


def _shuffle_gather(channels: int, groups: int) -> nn.Module:
    return nn.Identity() if groups == 1 else ChannelGather(shuffle_permutation(channels, groups), channels)


class IGCV2Block(nn.Module):
    """The nonlinear IGCV2 block (Fig. 5b): channel-wise 3x3 -BN-act, 1x1 group conv (g1) -BN, permutation,
    1x1 group conv (g2, carrying the width change) -BN-act, permutation. `spatial=False` leaves out the
    channel-wise conv (the IGCV2* block); `final_act=False` the last BN and act (a classifier)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        g1: int = 8,
        g2: int = 8,
        spatial: bool = True,
        final_act: bool = True,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = default_act,
    ) -> None:
        super().__init__()
        g1, g2 = math.gcd(g1, in_ch), math.gcd(math.gcd(g2, in_ch), out_ch)  # divide the widths
        layers: list[nn.Module] = []
        if spatial:
            layers += [conv_layer(in_ch, in_ch, 3, stride=stride, groups=in_ch), norm_layer(in_ch), act_layer()]
        layers += [conv_layer(in_ch, in_ch, 1, groups=g1), norm_layer(in_ch), _shuffle_gather(in_ch, g1),
                   conv_layer(in_ch, out_ch, 1, groups=g2, bias=not final_act)]
        if final_act:
            layers += [norm_layer(out_ch), act_layer()]
        layers.append(_shuffle_gather(out_ch, g2))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class IGCV3Block(nn.Module):
    """The nonlinear IGCV3 block (Fig. 6b): 1x1 group conv (g1, expansion ×t) -BN-ReLU6, permutation,
    channel-wise 3x3 -BN-ReLU6, 1x1 group conv (g2, projection) -BN, permutation, plus the input when the
    shape is kept. t = 1: no expansion conv. `spatial=False`: no channel-wise conv (the IGCV3* block)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        expansion: int = 6,
        *,
        g1: int = 2,
        g2: int = 2,
        spatial: bool = True,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = relu6,
    ) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            g1 = math.gcd(math.gcd(g1, in_ch), hidden)
            layers += [conv_layer(in_ch, hidden, 1, groups=g1), norm_layer(hidden), act_layer(),
                       _shuffle_gather(hidden, g1)]
        if spatial:
            layers += [conv_layer(hidden, hidden, 3, stride=stride, groups=hidden), norm_layer(hidden), act_layer()]
        g2 = math.gcd(math.gcd(g2, hidden), out_ch)
        layers += [conv_layer(hidden, out_ch, 1, groups=g2), norm_layer(out_ch), _shuffle_gather(out_ch, g2)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


# -- ImageNet networks ------------------------------------------------------------------------------------
# Table 8: (in, out, stride, repeats) of the IGCV2 blocks at width 1.0. Table 8 prints "×10" for the
# 14x14 blocks of both networks, but MobileNetV1 has five there (its 4.2 M parameters need five), and with
# five IGCV2 blocks the network has Table 9's 4.1 M parameters and 564 M MACs (ten give 5.4 M / 831 M).
IGCV2_BLOCKS = ((64, 128, 1, 1), (128, 256, 2, 1), (256, 256, 1, 1), (256, 512, 2, 1), (512, 512, 1, 1),
                (512, 1024, 2, 1), (1024, 1024, 1, 5), (1024, 2048, 2, 1), (2048, 2048, 1, 1))
# Table 10: (expansion t, out, repeats, first stride) of the IGCV3 blocks at width 1.0
IGCV3_SETTINGS = ((1, 16, 1, 1), (6, 24, 1, 2), (6, 24, 3, 1), (6, 32, 1, 2), (6, 32, 5, 1), (6, 64, 1, 2),
                  (6, 64, 7, 1), (6, 96, 1, 1), (6, 96, 5, 1), (6, 160, 1, 2), (6, 160, 5, 1), (6, 320, 1, 1))


class IGCV2Mobilenet(Backbone, nn.Module):
    """IGCV2 on ImageNet (Table 8): 3x3/2 stem to 64·α, IGCV2 blocks in MobileNetV1's pattern, pooling,
    an IGCV2* classifier (2048·α -> classes, g1 = 8, g2 = 4; g2 shrinks to divide the class count)."""

    def __init__(
        self,
        *,
        name: str = "igcv2_mobilenet",
        g1: int = 8,
        g2: int = 8,
        **common: Any,
    ) -> None:
        super().__init__()
        shared = self.common_args(name, common)
        conv_layer = shared.convs()

        def ch(c: int) -> int:
            return make_divisible(c * shared.width, 8)

        stem = ch(64)
        self.stem = nn.Sequential(conv_layer(shared.in_chans, stem, 3, stride=2, stem=True), shared.norm_layer(stem),
                                  shared.act_layer())
        blocks, in_ch = [], stem
        for _, out, stride, repeats in IGCV2_BLOCKS:
            for i in range(repeats):
                blocks.append(IGCV2Block(in_ch, ch(out), stride if i == 0 else 1, g1=g1, g2=g2,
                                         **shared.block_layers(conv_layer)))
                in_ch = ch(out)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = IGCV2Block(in_ch, shared.num_classes, g1=8, g2=math.gcd(4, shared.num_classes),
                                     spatial=False, final_act=False, **shared.block_layers(conv_layer))
        self.flatten = nn.Flatten(1)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.flatten(self.classifier(self.pool(self.blocks(self.stem(x)))))


class IGCV3(MobileNetV2):
    """IGCV3 on ImageNet (Table 10): MobileNetV2's skeleton with IGCV3 blocks (g1 = g2 = 2) and an IGCV3*
    block 320·α -> 1280 without the channel-wise conv as its last layer."""

    settings = IGCV3_SETTINGS

    def __init__(
        self,
        *,
        name: str = "igcv3",
        g1: int = 2,
        g2: int = 2,
        dropout: float = 0.2,
        act_layer: Callable[[], nn.Module] = relu6,
        **common: Any,
    ) -> None:
        super().__init__(name=name, dropout=dropout, act_layer=act_layer, block_options={"g1": g1, "g2": g2}, **common)

    def block(self, in_ch: int, out_ch: int, stride: int, expansion: int, **layer: Any) -> nn.Module:
        return IGCV3Block(in_ch, out_ch, stride, expansion, **layer)

    def last_layer(self, in_ch: int, out_ch: int, **layer: Any) -> nn.Module:
        # IGCV3*: group 1x1 to 1280 and a group 1x1 at 1280, no channel-wise conv
        return IGCV3Block(in_ch, out_ch, 1, out_ch // in_ch if out_ch % in_ch == 0 else 1, spatial=False, **layer)


register_model(
    "igcv2_mobilenet", input_size=(3, 224, 224), num_classes=1000, tags=("imagenet", "igc"),
    description="IGCV2-α on ImageNet (IGCV2's Table 8): IGCV2 blocks, g1 = g2 = 8, IGCV2* classifier",
)(IGCV2Mobilenet)
register_model(
    "igcv3", input_size=(3, 224, 224), num_classes=1000, tags=("imagenet", "igc"),
    description="IGCV3-α on ImageNet (IGCV2's Table 10): MobileNetV2 pattern, IGCV3 blocks, g1 = g2 = 2",
)(IGCV3)
