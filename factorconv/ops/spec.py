"""What a conv is and what it costs: `ConvSpec` (the nn.Conv2d arguments, validated into pairs with a
ValueError naming the option), `Cost` (closed-form costs of one layer at batch 1) and the conv arithmetic
they share (`conv_output_hw`, `conv_macs`, `dense_cost`)."""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

__all__ = ["ConvSpec", "Cost", "as_int", "as_pair", "conv_macs", "conv_output_hw", "dense_cost", "float_bits"]


@dataclass(frozen=True)
class Cost:
    """Closed-form costs of one operator for one input size, at batch 1.

    params/param_bits: trainable form (elements and storage bits). macs: multiply-accumulates of one
    forward as the papers count them. adds: additions that are not part of a MAC (binary
    configurations). deploy_*: the same for the form `deploy()` returns; deploy_bits includes any
    statistics the deployed form stores.
    """

    params: int
    param_bits: int
    macs: int
    deploy_params: int
    deploy_bits: int
    deploy_macs: int
    adds: int = 0
    deploy_adds: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def conv_output_hw(
    in_hw: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> tuple[int, int]:
    """Output height and width of a conv (the formula of nn.Conv2d)."""
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(in_hw, kernel_size, stride, padding, dilation, strict=True)
    )


def conv_macs(in_ch: int, out_ch: int, kernel_size: tuple[int, int], groups: int, out_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of one conv at batch 1."""
    return out_ch * (in_ch // groups) * kernel_size[0] * kernel_size[1] * out_hw[0] * out_hw[1]


def as_pair(name: str, option: str, value: Any, minimum: int) -> tuple[int, int]:
    items = value if isinstance(value, tuple | list) else (value, value)
    if len(items) != 2:
        raise ValueError(f"{name}: {option} must be an int or a pair of ints, got {value!r}")
    out = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"{name}: {option} must be an int or a pair of ints, got {value!r}")
        try:
            item = operator.index(item)
        except TypeError:
            raise ValueError(f"{name}: {option} must be an int or a pair of ints, got {value!r}") from None
        if item < minimum:
            raise ValueError(f"{name}: {option} must be >= {minimum}, got {value!r}")
        out.append(item)
    return out[0], out[1]


def as_int(name: str, option: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}: {option} must be an int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}: {option} must be an int, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name}: {option} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class ConvSpec:
    """The normalised `nn.Conv2d` arguments of a layer (pairs everywhere, padding as ints)."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False

    @classmethod
    def make(
        cls,
        name: str,
        in_channels: Any,
        out_channels: Any,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: Any = 1,
        bias: Any = False,
    ) -> ConvSpec:
        """Validate nn.Conv2d-style arguments; ValueError naming `name`, the option and the rule otherwise."""
        cin = as_int(name, "in_channels", in_channels, 1)
        cout = as_int(name, "out_channels", out_channels, 1)
        k = as_pair(name, "kernel_size", kernel_size, 1)
        s = as_pair(name, "stride", stride, 1)
        d = as_pair(name, "dilation", dilation, 1)
        g = as_int(name, "groups", groups, 1)
        if cin % g or cout % g:
            raise ValueError(
                f"{name}: groups ({g}) must divide in_channels ({cin}) and out_channels ({cout})"
            )
        if not isinstance(bias, bool):
            raise ValueError(f"{name}: bias must be True or False, got {bias!r}")
        if isinstance(padding, str):
            if padding == "valid":
                p = (0, 0)
            elif padding == "same":
                if s != (1, 1):
                    raise ValueError(f"{name}: padding='same' needs stride 1, got stride {s}")
                total = [di * (ki - 1) for di, ki in zip(d, k, strict=True)]
                if any(t % 2 for t in total):
                    raise ValueError(
                        f"{name}: padding='same' needs symmetric padding (dilation*(kernel-1) even), "
                        f"got kernel {k} dilation {d}"
                    )
                p = (total[0] // 2, total[1] // 2)
            else:
                raise ValueError(f"{name}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        else:
            p = as_pair(name, "padding", padding, 0)
        return cls(cin, cout, k, s, p, d, g, bias)

    @classmethod
    def of(cls, conv: nn.Module) -> ConvSpec:
        """The spec of an existing nn.Conv2d or operator."""
        name = type(conv).__name__
        if getattr(conv, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported, got {conv.padding_mode!r}")
        bias = conv.bias is not None if hasattr(conv, "bias") else False
        return cls.make(
            name, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, bias,
        )

    def kwargs(self) -> dict[str, Any]:
        return {
            "stride": self.stride, "padding": self.padding, "dilation": self.dilation,
            "groups": self.groups, "bias": self.bias,
        }

    def out_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        return conv_output_hw(in_hw, self.kernel_size, self.stride, self.padding, self.dilation)

    def macs(self, in_hw: tuple[int, int]) -> int:
        return conv_macs(self.in_channels, self.out_channels, self.kernel_size, self.groups, self.out_hw(in_hw))

    @property
    def weight_numel(self) -> int:
        return self.out_channels * (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]


def float_bits(module: nn.Module) -> int:
    """Bits of one float element as `module` stores it: the width of its first floating parameter's dtype (32
    when it has none). The one bit count of every Cost; accounting.profile counts plain layers the same way."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.element_size() * 8
    return 32


def dense_cost(spec: ConvSpec, in_hw: tuple[int, int], bits: int = 32) -> Cost:
    """The cost of a plain conv with this spec (trainable form == deploy form)."""
    params = spec.weight_numel + (spec.out_channels if spec.bias else 0)
    macs = spec.macs(in_hw)
    return Cost(params, params * bits, macs, params, params * bits, macs)


