"""DeepLabV3 (Chen et al. 2017) for semantic segmentation, in torchvision's layout: a dilated ResNet-50/101
backbone (`output_stride` 8: stages 3-4 dilated, torchvision's default; 16: stage 4 only), ASPP (a 1x1 branch,
three atrous 3x3 branches at rates 12/24/36 for stride 8, 6/12/18 for 16, image pooling; 256 channels each,
projected to 256 with dropout 0.5), a 3x3 conv and a 1x1 classifier, logits upsampled to the input size: (N,
classes, H, W). `deeplabv3_resnet50` has 39,638,869 parameters with 21 classes and no auxiliary head
(torchvision's 42,004,074 less its auxiliary FCN head's 2,365,205). Every 3x3 conv of the backbone and the head
goes through the registry (`conv=`); `fc.convert(model, op, include="backbone.*")` or `"head.*"` puts an
operator in one of the two only (the DO-Conv paper's Table 4 stages)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import register_model
from .backbone import Backbone
from .layers import ConvNormAct, check_choice, default_act
from .resnet import ResNet

__all__ = ["ASPP", "DeepLabV3"]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three atrous 3x3 at `rates`, image pooling; concatenated and
    projected to `channels` (norm, act, dropout 0.5)."""

    def __init__(self, in_ch: int, rates: tuple[int, int, int], conv_layer: Callable[..., nn.Module],
                 channels: int = 256, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 act_layer: Callable[[], nn.Module] = default_act) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvNormAct(conv_layer, in_ch, channels, 1, norm_layer=norm_layer,
                                                   act_layer=act_layer)])
        for rate in rates:
            self.branches.append(nn.Sequential(
                conv_layer(in_ch, channels, 3, dilation=rate), norm_layer(channels), act_layer()))
        self.pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, channels, 1, bias=False),
                                     norm_layer(channels), act_layer())
        self.project = nn.Sequential(nn.Conv2d(channels * (len(rates) + 2), channels, 1, bias=False),
                                     norm_layer(channels), act_layer(), nn.Dropout(0.5))

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.interpolate(self.pooling(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabV3(Backbone, nn.Module):
    """DeepLabV3 with a dilated ResNet backbone; forward returns per-pixel logits at the input's size."""

    task = "segmentation"

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        *,
        name: str = "deeplabv3_resnet50",
        num_classes: int = 21,
        output_stride: int = 8,
        **common: Any,
    ) -> None:
        super().__init__()
        shared = self.common_args(name, common, num_classes=num_classes)
        check_choice(name, "output_stride", output_stride, (8, 16))
        self.backbone = ResNet(layers, bottleneck=True, name=name, num_classes=1,
                               dilate=(False, output_stride == 8, True), **common)
        del self.backbone.fc, self.backbone.pool, self.backbone.flatten  # features only
        features = self.backbone.layer4[-1].bn3.num_features
        conv_layer = shared.convs()
        channels = max(8, round(256 * shared.width))
        rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        self.head = nn.Sequential(ASPP(features, rates, conv_layer, channels, **shared.norm_act()),
                                  ConvNormAct(conv_layer, channels, channels, 3, **shared.norm_act()),
                                  nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.backbone.forward_features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


register_model(
    "deeplabv3_resnet50", input_size=(3, 520, 520), num_classes=21, tags=("segmentation", "deeplab"),
    description="DeepLabV3, dilated ResNet-50 (output stride 8), ASPP: 39.64 M params with 21 classes (torchvision's)",
)(functools.partial(DeepLabV3, (3, 4, 6, 3), name="deeplabv3_resnet50"))
register_model(
    "deeplabv3_resnet101", input_size=(3, 520, 520), num_classes=21, tags=("segmentation", "deeplab"),
    description="DeepLabV3, dilated ResNet-101 (output stride 8), ASPP: 58.63 M params with 21 classes",
)(functools.partial(DeepLabV3, (3, 4, 23, 3), name="deeplabv3_resnet101"))
