"""VGG-16 for CIFAR with BatchNorm: thirteen 3x3 convs (no bias) + BN + act in five pooling stages,
then a single linear classifier 512·width -> classes (the ACDC paper's baseline, 14.72 M parameters).

Pooling uses ceil_mode so that inputs other than 32x32 (28x28 Fashion-MNIST) still reach 1x1.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor, nn

from ..registry import register_model
from .backbone import Backbone, ClassifierHead
from .layers import (
    ConvNormAct,
    init_weights,
    scale_width,
)

__all__ = ["VGG"]

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(Backbone, ClassifierHead, nn.Module):
    """VGG with BN from a config of channel counts and "M" (2x2 max-pool)."""

    def __init__(
        self,
        config: tuple[int | str, ...] = VGG16,
        *,
        name: str = "vgg",
        **common: Any,
    ) -> None:
        super().__init__()
        shared = self.common_args(name, common)
        conv_layer = shared.convs()
        layers: list[nn.Module] = []
        in_ch = shared.in_chans
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                out_ch = scale_width(int(item), shared.width)
                layers.append(ConvNormAct(conv_layer, in_ch, out_ch, 3, stem=not layers, **shared.norm_act()))
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.add_classifier(in_ch, shared.num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features(x))


register_model(
    "vgg16", tags=("cifar", "vgg"),
    description="VGG-16 with BN for CIFAR: 13 convs without bias, FC 512 -> classes",
)(functools.partial(VGG, VGG16, name="vgg16"))

# The few-shot backbones (Vinyals et al.; MAML's and Chen et al.'s Conv-4): blocks of 3x3 conv (32 channels)
# + BN + ReLU with a 2x2 max-pool after each stage; Conv-8 is the deeper network of the same width for MAML's
# depth comparison (ACDC's Figure 5), its four extra blocks in the two low-resolution stages (1.4x the MACs)
CONV4 = (32, "M", 32, "M", 32, "M", 32, "M")
CONV8 = (32, "M", 32, "M", 32, 32, 32, "M", 32, 32, 32, "M")
register_model(
    "conv4", input_size=(1, 28, 28), tags=("fewshot",),
    description="the few-shot Conv-4: four 3x3 conv (32) + BN + ReLU + max-pool blocks, FC 32 -> classes",
)(functools.partial(VGG, CONV4, name="conv4"))
register_model(
    "conv8", input_size=(1, 28, 28), tags=("fewshot",),
    description="Conv-4 twice as deep: eight 3x3 conv (32) + BN + ReLU blocks, three in each of the last two "
                "pooling stages",
)(functools.partial(VGG, CONV8, name="conv8"))
