"""The DARTS (V2) evaluation networks (Liu et al. 2018, the published DARTS_V2 genotype): `darts_cifar`
(20 cells, 36 initial channels, auxiliary head after the second reduction) and `darts_imagenet` (14 cells,
48 channels, the two-stride stems, auxiliary head). Their separable and dilated convs (DARTS's SepConv and
DilConv: a depthwise k×k and a 1x1) are built through the registry as one operator: `dsep` (the default)
gives DARTS, `osep` gives the optimized-separable paper's o-DARTS (Tables 3 and 5: initial channels raised to
42 and 56), any other operator its own variant. Counted as DARTS counts (`count_params` of the network
without the auxiliary head, which is only used in training: `model.auxiliary` is its own module).

Training options: `drop_path` (the probability cells drop an op's output in training, DARTS's 0.2 scaled
by epoch in its code, here constant), `auxiliary` (build the head); the trainer's auxiliary loss weight is
the config field `aux_weight` (0.4 in DARTS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import ConvBuilder, create_conv2d, register_model
from .layers import ConvFactory, check_positive, scaled_channels

__all__ = ["DARTS_V2", "DartsNetwork", "Genotype"]

Genotype = tuple[tuple[tuple[str, int], ...], tuple[int, ...], tuple[tuple[str, int], ...], tuple[int, ...]]
# (normal ops, normal concat, reduce ops, reduce concat): the genotype DARTS published as DARTS_V2
DARTS_V2: Genotype = (
    (("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 1),
     ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    (2, 3, 4, 5),
    (("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1), ("max_pool_3x3", 0),
     ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    (2, 3, 4, 5),
)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs on offset grids, concatenated, BN (DARTS's reduction of a skip)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        # standard convs from the registry: their strided 1x1 runs around a oneDNN bug (ops/baselines.py)
        self.conv_1 = create_conv2d(c_in, c_out // 2, 1, stride=2)
        self.conv_2 = create_conv2d(c_in, c_out - c_out // 2, 1, stride=2)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        y = self.conv_2(x[:, :, 1:, 1:]) if x.shape[-1] % 2 == 0 else self.conv_2(x)
        a = self.conv_1(x)
        if y.shape[-2:] != a.shape[-2:]:  # odd sizes: the offset grid is one smaller
            y = nn.functional.pad(y, (0, a.shape[-1] - y.shape[-1], 0, a.shape[-2] - y.shape[-2]))
        return self.bn(torch.cat([a, y], dim=1))


def _op(name: str, c: int, stride: int, conv_layer: Callable[..., nn.Module]) -> nn.Module:
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == "sep_conv_3x3":  # SepConv: two separable units, the first carrying the stride
        return nn.Sequential(nn.ReLU(inplace=False), conv_layer(c, c, 3, stride=stride), nn.BatchNorm2d(c),
                             nn.ReLU(inplace=False), conv_layer(c, c, 3), nn.BatchNorm2d(c))
    if name == "dil_conv_3x3":  # DilConv: one dilated separable unit
        return nn.Sequential(nn.ReLU(inplace=False), conv_layer(c, c, 3, stride=stride, dilation=2),
                             nn.BatchNorm2d(c))
    raise ValueError(f"DARTS: unknown op {name!r}")


class Cell(nn.Module):
    def __init__(self, genotype: Genotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 conv_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c)
        self.preprocess1 = ReLUConvBN(c_p, c)
        ops, concat = (genotype[2], genotype[3]) if reduction else (genotype[0], genotype[1])
        self.indices = [i for _, i in ops]
        self.concat = list(concat)
        self.ops = nn.ModuleList(_op(name, c, 2 if reduction and i < 2 else 1, conv_layer) for name, i in ops)
        self.multiplier = len(concat)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for step in range(len(self.ops) // 2):
            total = None
            for k in (2 * step, 2 * step + 1):
                h = self.ops[k](states[self.indices[k]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[k], nn.Identity):
                    keep = 1 - drop_prob  # drop path: the op's output, per sample
                    mask = torch.empty(h.shape[0], 1, 1, 1, device=h.device, dtype=h.dtype).bernoulli_(keep)
                    h = h / keep * mask
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier (CIFAR: 8x8 input, pool 5/3; ImageNet: 14x14, pool 5/2)."""

    def __init__(self, c: int, num_classes: int, imagenet: bool) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=2 if imagenet else 3, padding=0, count_include_pad=False)
        self.features = nn.Sequential(
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), *([] if imagenet else [nn.BatchNorm2d(768)]), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.relu(x)
        # DARTS's inputs are 8x8 (CIFAR) and 14x14 (ImageNet); a smaller map is pooled to 2x2 for the 2x2 conv
        x = self.pool(x) if min(x.shape[-2:]) >= 5 else nn.functional.adaptive_avg_pool2d(x, 2)
        x = self.features(x)
        return self.classifier(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class DartsNetwork(nn.Module):
    """A DARTS evaluation network. `channels` is the initial channel count C (36 / 48 in DARTS; o-DARTS 42 / 56)
    and `width` multiplies it, as it multiplies every backbone's channels (C = channels × width).
    In training with `auxiliary`, forward returns (logits, auxiliary logits); otherwise the logits."""

    def __init__(
        self,
        *,
        imagenet: bool = False,
        conv: str | ConvBuilder = "dsep",
        conv_kwargs: dict[str, Any] | None = None,
        width: float = 1.0,
        channels: int | None = None,
        cells: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        auxiliary: bool = True,
        drop_path: float = 0.0,
        genotype: Genotype = DARTS_V2,
    ) -> None:
        super().__init__()
        name = "darts_imagenet" if imagenet else "darts_cifar"
        check_positive(name, "cells", cells, int)
        if not 0 <= drop_path < 1:
            raise ValueError(f"{name}: drop_path must be in [0, 1), got {drop_path!r}")
        c = scaled_channels(name, channels, 48 if imagenet else 36, width)
        conv_layer = ConvFactory(conv, conv_kwargs)
        self.drop_path = float(drop_path)
        if imagenet:
            self.stem0 = nn.Sequential(nn.Conv2d(in_chans, c // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(c // 2),
                                       nn.ReLU(inplace=True), nn.Conv2d(c // 2, c, 3, 2, 1, bias=False),
                                       nn.BatchNorm2d(c))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c))
            c_pp, c_p, c_cur, reduction_prev = c, c, c, True
        else:
            self.stem0 = nn.Sequential(nn.Conv2d(in_chans, 3 * c, 3, padding=1, bias=False), nn.BatchNorm2d(3 * c))
            self.stem1 = None
            c_pp, c_p, c_cur, reduction_prev = 3 * c, 3 * c, c, False
        self.cells = nn.ModuleList()
        self.aux_at = 2 * cells // 3
        c_aux = c_p
        for i in range(cells):
            reduction = i in (cells // 3, 2 * cells // 3)
            if reduction:
                c_cur *= 2
            cell = Cell(genotype, c_pp, c_p, c_cur, reduction, reduction_prev, conv_layer)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_cur
            if i == self.aux_at:
                c_aux = c_p
        self.auxiliary = AuxiliaryHead(c_aux, num_classes, imagenet) if auxiliary else None
        self.training_only = ("auxiliary",)  # the deploy form and its counts leave the head out
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        s0 = self.stem0(x)
        s1 = s0 if self.stem1 is None else self.stem1(s0)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path)
            if i == self.aux_at and self.auxiliary is not None and self.training:
                aux = self.auxiliary(s1)
        logits = self.classifier(self.pool(s1).flatten(1))
        return (logits, aux) if aux is not None else logits


def _builder(name: str, imagenet: bool, default_channels: int, default_cells: int) -> Callable[..., DartsNetwork]:
    def build(*, conv: str | ConvBuilder = "dsep", conv_kwargs: dict[str, Any] | None = None,
              width: float = 1.0, channels: int = default_channels, cells: int = default_cells,
              num_classes: int = 10, in_chans: int = 3, auxiliary: bool = True,
              drop_path: float = 0.0) -> DartsNetwork:
        return DartsNetwork(imagenet=imagenet, conv=conv, conv_kwargs=conv_kwargs, width=width, channels=channels,
                            cells=cells, num_classes=num_classes, in_chans=in_chans, auxiliary=auxiliary,
                            drop_path=drop_path)

    build.__name__ = build.__qualname__ = name
    return build


register_model(
    "darts_cifar", tags=("cifar", "darts"),
    description="DARTS (V2) CIFAR evaluation network: 20 cells, C = 36, auxiliary head (dsep: DARTS; osep: o-DARTS)",
)(_builder("darts_cifar", False, 36, 20))
register_model(
    "darts_imagenet", input_size=(3, 224, 224), num_classes=1000, tags=("imagenet", "darts"),
    description="DARTS (V2) ImageNet network: 14 cells, C = 48, auxiliary head (dsep: DARTS; osep: o-DARTS)",
)(_builder("darts_imagenet", True, 48, 14))
