"""A backbone kept outside the package (docs/backbones.md): two operator convs, pooling and a classifier.

It declares only its own arguments (`depth`); the shared ones (conv, conv_kwargs, width, num_classes,
in_chans, replace_stem, norm_layer, act_layer) come through `**common` and `Backbone`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from factorconv import register_model
from factorconv.models.backbone import Backbone, ClassifierHead
from factorconv.models.layers import ConvNormAct, check_positive, init_weights, scale_width


@register_model("tiny_net", input_size=(1, 28, 28))
class TinyNet(Backbone, ClassifierHead, nn.Module):
    """A 3x3 stem, `depth` operator layers at 32·width channels, pooling, a linear classifier."""

    def __init__(self, *, name: str = "tiny_net", depth: int = 2, **common: Any) -> None:
        super().__init__()
        shared = self.common_args(name, common)  # checked: a ValueError naming the option
        check_positive(name, "depth", depth, int)
        conv_layer = shared.convs()
        channels = scale_width(32, shared.width)
        self.stem = ConvNormAct(conv_layer, shared.in_chans, channels, 3, stem=True, **shared.norm_act())
        self.body = nn.Sequential(*(ConvNormAct(conv_layer, channels, channels, 3, **shared.norm_act())
                                    for _ in range(depth)))
        self.add_classifier(channels, shared.num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.body(self.stem(x)))
