"""The 8-layer network of IGCV2's Table 2 and Figures 2-3: a 3x3 stem conv to C channels, six layers of
C -> C at full resolution (no down-sampling), global pooling and a classifier. The six intermediate layers
are the operator (`xception8`: channel-wise 3x3 then 1x1, i.e. dsep; `igcv2_8`: IGCV2 with L = 3 and
branches of K channels, the divisor of C nearest sqrt(C), unless `conv_kwargs` say otherwise), each followed
by BN and ReLU; the paper counts parameters and FLOPs within one such block (Table 2: Xception C64 ≈ 4,700 /
4.8·10⁶, IGCV2 C144 the same). `channels` is the paper's C (64 for xception8, 144 for igcv2_8 by default)
and `width` multiplies it, as it multiplies every backbone's channels. `stem_stride` 2 halves the resolution once at the
stem, as the paper adapts its CIFAR networks to Tiny ImageNet: the CPU scale of its K / L sweeps."""

from __future__ import annotations

import functools
import math
from typing import Any

from torch import Tensor, nn

from ..registry import ConvBuilder, register_model
from .backbone import Backbone, ClassifierHead
from .layers import (
    ConvNormAct,
    check_positive,
    init_weights,
    scaled_channels,
)

__all__ = ["EightLayerNet"]


class EightLayerNet(Backbone, ClassifierHead, nn.Module):
    """Stem (a plain 3x3 conv unless `replace_stem`) + six C -> C operator layers with BN and act + pool +
    classifier. `channels` None: `default_channels` (the registered network's C)."""

    def __init__(
        self,
        *,
        name: str = "igc8",
        conv: str | ConvBuilder = "dsep",
        channels: int | None = None,
        default_channels: int = 64,
        layers: int = 6,
        stem_stride: int = 1,
        **common: Any,
    ) -> None:
        super().__init__()
        check_positive(name, "layers", layers, int)
        if stem_stride not in (1, 2):
            raise ValueError(f"{name}: stem_stride must be 1 or 2, got {stem_stride!r}")
        shared = self.common_args(name, common, conv=conv)
        c = scaled_channels(name, channels, default_channels, shared.width)
        options = dict(shared.conv_kwargs or {})
        if conv == "igcv2" and "K" not in options and "branch_sizes" not in options:
            # two 1x1 convs with branches of K channels, K the divisor of C nearest sqrt(C) (12 for C144)
            k = min((d for d in range(1, c + 1) if c % d == 0), key=lambda d: (abs(d - math.sqrt(c)), d))
            options = {"L": 3, "K": k, **options}
        conv_layer = shared.convs(options)
        self.stem = ConvNormAct(conv_layer, shared.in_chans, c, 3, stride=stem_stride, stem=True,
                                **shared.norm_act())
        self.blocks = nn.Sequential(*(ConvNormAct(conv_layer, c, c, 3, **shared.norm_act())
                                      for _ in range(layers)))
        self.add_classifier(c, shared.num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.blocks(self.stem(x)))


register_model(
    "xception8", tags=("cifar", "igc"),
    description="IGCV2's 8-layer net (Table 2): stem + six channel-wise 3x3 + 1x1 layers at C channels, no "
                "down-sampling",
)(functools.partial(EightLayerNet, name="xception8", conv="dsep", default_channels=64))
register_model(
    "igcv2_8", tags=("cifar", "igc"),
    description="IGCV2's 8-layer net (Table 2): stem + six IGCV2 layers (L = 3, K = sqrt(C)) at C channels, no "
                "down-sampling",
)(functools.partial(EightLayerNet, name="igcv2_8", conv="igcv2", default_channels=144))
