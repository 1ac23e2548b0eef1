"""Building blocks shared by the backbones: the per-model conv factory, width scaling, shortcuts and
option checks.

`ConvFactory` is the single place that decides which convs of a backbone become the chosen operator:
spatial (kernel > 1) convs of the body do; 1x1 projections and the stem (unless `replace_stem`) stay
standard convs, as in all five papers.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import is_number
from ..ops.spec import as_pair
from ..registry import ConvBuilder, create_conv2d, replaces, stem_default

__all__ = [
    "ConvFactory",
    "ConvNormAct",
    "ZeroPadShortcut",
    "check_choice",
    "check_dropout",
    "check_positive",
    "default_act",
    "init_weights",
    "make_divisible",
    "scale_width",
    "scaled_channels",
]

default_act: Callable[[], nn.Module] = functools.partial(nn.ReLU, inplace=True)


class ConvFactory:
    """Makes the convs of one model: operator `conv` for spatial body convs, standard convs otherwise."""

    def __init__(
        self,
        conv: str | ConvBuilder = "conv",
        conv_kwargs: dict[str, Any] | None = None,
        replace_stem: bool | None = None,
    ) -> None:
        if replace_stem is None:
            replace_stem = stem_default(conv)
        self.conv = conv
        self.conv_kwargs = dict(conv_kwargs or {})
        self.replace_stem = bool(replace_stem)

    def __call__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        stem: bool = False,
    ) -> nn.Module:
        k = as_pair("ConvFactory", "kernel_size", kernel_size, 1)
        if padding is None:  # 'same' for odd kernels, as every backbone here uses
            padding = (dilation * (k[0] - 1) // 2, dilation * (k[1] - 1) // 2)
        taken = replaces(k, stem=stem, replace_stem=self.replace_stem)
        conv, extra = (self.conv, self.conv_kwargs) if taken else ("conv", {})
        return create_conv2d(
            in_ch, out_ch, k, conv=conv, stride=stride, padding=padding, dilation=dilation, groups=groups,
            bias=bias, **extra,
        )


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act (act omitted when `act_layer` is None), made through a ConvFactory."""

    def __init__(
        self,
        conv_layer: Callable[..., nn.Module],
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        stem: bool = False,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] | None = default_act,
    ) -> None:
        layers = {
            "conv": conv_layer(in_ch, out_ch, kernel_size, stride=stride, groups=groups, stem=stem),
            "bn": norm_layer(out_ch),
        }
        if act_layer is not None:
            layers["act"] = act_layer()
        super().__init__(OrderedDict(layers))


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet's channel rounding: nearest multiple of `divisor`, never below 90% of `value`."""
    min_value = divisor if min_value is None else min_value
    out = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def scale_width(base: int, width: float, divisor: int = 1, min_value: int | None = None) -> int:
    """round(base·width) (halves up) to a multiple of `divisor`, at least `min_value` (default divisor)."""
    min_value = divisor if min_value is None else min_value
    return max(min_value, math.floor(base * width / divisor + 0.5) * divisor)


def check_positive(model: str, option: str, value: Any, kind: type = float) -> None:
    ok = is_number(value) and value > 0
    if ok and kind is int:
        ok = isinstance(value, int)
    if not ok:
        raise ValueError(f"{model}: {option} must be a positive {kind.__name__}, got {value!r}")


def check_dropout(model: str, dropout: Any) -> None:
    if not is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"{model}: dropout must be in [0, 1), got {dropout!r}")


def scaled_channels(model: str, channels: int | None, default: int, width: float) -> int:
    """A network's base channel count (`channels`, the paper's C; `default` when None) times the width
    multiplier, rounded; at least 2 (a narrower network has no group structure left)."""
    check_positive(model, "width", width)
    if channels is not None:
        check_positive(model, "channels", channels, int)
    base = default if channels is None else channels
    c = round(base * width)
    if c < 2:
        raise ValueError(f"{model}: width {width:g} leaves {base} x {width:g} = {base * width:.3g} channels; at least "
                         f"2 are needed (width >= {2 / base:.3g})")
    return c


def check_choice(model: str, option: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{model}: {option} must be one of {', '.join(map(repr, choices))}, got {value!r}")


class ZeroPadShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample by `stride`, pad the new channels with zeros (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ZeroPadShortcut: out_channels ({out_channels}) < in_channels ({in_channels})")
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad={self.pad}"


def conv_init(weight: Tensor) -> None:
    """The conv initialisation of every backbone here: He normal, fan-out, ReLU gain."""
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


def init_weights(model: nn.Module) -> None:
    """He initialisation for plain convs, unit BatchNorm, and PyTorch's default for linears.

    Operators that reparametrise any conv exactly start as the conv would (`reset_like_conv`); the
    others initialise themselves (their factors need their own schemes).
    """
    from ..ops.base import is_operator

    skip: set[int] = set()
    for m in model.modules():
        if id(m) in skip:
            continue
        if is_operator(m) and not isinstance(m, nn.Conv2d):
            m.reset_like_conv(conv_init)
            skip.update(id(c) for c in m.modules())
            continue
        if isinstance(m, nn.Conv2d):
            conv_init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
