"""He et al.'s CIFAR ResNets (resnet20/32/44/56/74/110) and the plain net without skips (plain20, the
DO-Conv paper's Table 1): a 3x3 stem to 16·width channels, three stages
of (depth-2)/6 basic blocks at widths w, 2w, 4w (w = round(16·width)), global pooling and a linear
classifier with bias.

Shortcuts at stage transitions: "A" zero-padding (the paper's CIFAR option, default), "B" a 1x1 conv +
BN, "conv" a 1x1 conv without BN (the optimized-separable paper's o-ResNet). `stem_stride=2` gives the
ImageNet40 layout of that paper (stages at 16/8/4 for 32x32 crops).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..registry import register_model
from .backbone import Backbone, ClassifierHead
from .layers import (
    ZeroPadShortcut,
    check_choice,
    check_positive,
    default_act,
    init_weights,
    scale_width,
)

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet"]

SHORTCUTS = ("A", "B", "conv")


def make_shortcut(
    in_ch: int,
    out_ch: int,
    stride: int,
    kind: str,
    conv_layer: Callable[..., nn.Module],
    norm_layer: Callable[[int], nn.Module],
) -> nn.Module:
    """Identity when the shape is kept, otherwise the projection `kind` names."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(in_ch, out_ch, stride)
    proj = conv_layer(in_ch, out_ch, 1, stride=stride)
    return nn.Sequential(proj, norm_layer(out_ch)) if kind == "B" else nn.Sequential(proj)


class BasicBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN plus shortcut, then act. `shortcut=None`: no skip (a plain net)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        shortcut: str | None = "A",
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = default_act,
    ) -> None:
        super().__init__()
        self.conv1 = conv_layer(in_ch, out_ch, 3, stride=stride)
        self.bn1 = norm_layer(out_ch)
        self.act1 = act_layer()
        self.conv2 = conv_layer(out_ch, out_ch, 3)
        self.bn2 = norm_layer(out_ch)
        self.shortcut = None if shortcut is None else make_shortcut(
            in_ch, out_ch, stride, shortcut, conv_layer, norm_layer
        )
        self.act2 = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1-BN-act, 3x3(stride, dilation)-BN-act, 1x1(×4)-BN plus shortcut, then act (ResNet v1.5; He et al.'s
    CIFAR ResNet-164). ResNeXt: the 3x3 is a group conv of `groups` groups, `base_width` channels each at the
    first stage's planes (64). `shortcut`: the projection kind of `make_shortcut` ("B": 1x1 conv + BN)."""

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
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        inner = int(planes * (base_width / 64.0)) * groups  # torchvision's ResNeXt width rule
        self.conv1 = conv_layer(in_ch, inner, 1)
        self.bn1 = norm_layer(inner)
        self.act1 = act_layer()
        self.conv2 = conv_layer(inner, inner, 3, stride=stride, groups=groups, dilation=dilation)
        self.bn2 = norm_layer(inner)
        self.act2 = act_layer()
        self.conv3 = conv_layer(inner, out_ch, 1)
        self.bn3 = norm_layer(out_ch)
        self.shortcut = make_shortcut(in_ch, out_ch, stride, shortcut, conv_layer, norm_layer)
        self.act3 = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + self.shortcut(x))


class CifarResNet(Backbone, ClassifierHead, nn.Module):
    """He et al. CIFAR ResNet of depth 6n+2 (basic blocks) or 9n+2 (`bottleneck`, ResNet-164: outputs 4x the
    widths) with the width multiplier, shortcut and stem options above."""

    def __init__(
        self,
        depth: int,
        *,
        shortcut: str = "A",
        stem_stride: int = 1,
        skip: bool = True,
        bottleneck: bool = False,
        stem_channels: int | None = None,
        stage_conv_kwargs: tuple[dict[str, Any], ...] | None = None,
        **common: Any,
    ) -> None:
        super().__init__()
        name = f"resnet{depth}" if skip else f"plain{depth}"
        per_block = 9 if bottleneck else 6
        if (depth - 2) % per_block or depth < per_block + 2:
            raise ValueError(f"CifarResNet: depth must be {per_block}n+2 with n >= 1, got {depth}")
        if bottleneck and not skip:
            raise ValueError(f"{name}: a bottleneck network has skips")
        shared = self.common_args(name, common)
        conv_layer = shared.convs()
        check_positive(name, "stem_stride", stem_stride, int)
        check_choice(name, "shortcut", shortcut, SHORTCUTS)
        if not skip and shortcut != "A":
            raise ValueError(f"{name}: shortcut has no meaning in a plain net (no skips), got {shortcut!r}")
        blocks = (depth - 2) // per_block
        widths = [scale_width(16, shared.width) * m for m in (1, 2, 4)]
        stem = widths[0] if stem_channels is None else stem_channels
        if stage_conv_kwargs is not None and len(stage_conv_kwargs) != 3:
            raise ValueError(f"{name}: stage_conv_kwargs needs one dict per stage (3), got {len(stage_conv_kwargs)}")

        self.conv1 = conv_layer(shared.in_chans, stem, 3, stride=stem_stride, stem=True)
        self.bn1 = shared.norm_layer(stem)
        self.act1 = shared.act_layer()
        in_ch = stem
        for i, out_ch in enumerate(widths):
            if stage_conv_kwargs is not None:  # per-stage operator options over the common ones
                conv_layer = shared.convs({**(shared.conv_kwargs or {}), **stage_conv_kwargs[i]})
            layers = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                if bottleneck:
                    layers.append(Bottleneck(in_ch, out_ch, stride, shortcut=shortcut,
                                             **shared.block_layers(conv_layer)))
                    in_ch = out_ch * Bottleneck.expansion
                else:
                    layers.append(BasicBlock(in_ch, out_ch, stride, shortcut=shortcut if skip else None,
                                             **shared.block_layers(conv_layer)))
                    in_ch = out_ch
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.add_classifier(in_ch, shared.num_classes)
        self.widths = tuple(widths)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.forward_features(x))


for _depth in (20, 32, 44, 56, 74, 110):
    register_model(
        f"resnet{_depth}", tags=("cifar", "resnet"),
        description=f"CIFAR ResNet-{_depth} (He et al.): 3 stages of {(_depth - 2) // 6} basic blocks, "
        "widths 16/32/64·width",
    )(functools.partial(CifarResNet, depth=_depth))
register_model("plain20", tags=("cifar", "plain"),
               description="Plain-20: ResNet-20 without skip connections (DO-Conv paper, Table 1)")(
    functools.partial(CifarResNet, depth=20, skip=False)
)
register_model("resnet164", tags=("cifar", "resnet"),
               description="CIFAR ResNet-164 v1 (He et al.; DO-Conv's Table 1): 3 stages of 18 bottlenecks, widths "
                           "16/32/64 x4, 1x1+BN projections")(
    functools.partial(CifarResNet, depth=164, bottleneck=True, shortcut="B")
)
