"""Operators that are a chain of (group) convs with channel gathers between them: optimized separable
convolution, interleaved group convolutions, ACDC-g.

The chain is data first: a `ChainPlan` (its `ChainPart`s: channels, kernel, groups, geometry; and a
`Gather` before every part and after the last: what kind it is, shuffle, pad, prefix, permutation or
general) is what the planners return (`plan_osep(...).chain(...)`, `igcv1_chain`, `igcv2_chain`, ACDC-g's
grouping), what `reach` answers connectivity and receptive-field questions from, and what
`GroupConvChain` builds, composes into the dense kernel, runs as the feature path, costs and deploys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import compose_kernels, expand_grouped_kernel, shuffle_permutation, take_grouped_kernel
from .base import ConvOperator
from .channel import ChannelGather, Reach, chain_reach
from .runtime import compose_for_cache, full_precision, in_layout
from .spec import Cost, as_pair, conv_macs, conv_output_hw, float_bits
from .speed import GATHER_MAC_EQUIVALENT, GROUP_RATE_CHANNELS

__all__ = ["AddBias", "ChainPart", "ChainPlan", "Gather", "GroupConvChain", "compose_plan", "deploy_plan",
           "gather_indices"]

GATHER_KINDS = ("prefix", "pad", "shuffle", "permutation", "general")


@dataclass(frozen=True)
class ChainPart:
    """One (group) conv of a chain, without bias: channels, kernel, groups and where it carries the layer's
    stride, padding and dilation."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    groups: int = 1
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        for name, minimum in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1)):
            object.__setattr__(self, name, as_pair("ChainPart", name, getattr(self, name), minimum))
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"ChainPart: {self.groups} groups must divide {self.in_channels} -> "
                             f"{self.out_channels} channels")

    @property
    def params(self) -> int:
        return self.out_channels * self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]

    def conv(self, **factory: Any) -> nn.Conv2d:
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=False, **factory)

    def replicate(self, copies: int) -> ChainPart:
        """The part of `copies` independent conv groups side by side."""
        return ChainPart(self.in_channels * copies, self.out_channels * copies, self.kernel_size,
                         self.groups * copies, self.stride, self.padding, self.dilation)


@dataclass(frozen=True, eq=False)
class Gather:
    """y[:, j] = x[:, index[j]] over `source` channels, an index equal to `source` giving a zero channel;
    `kind` says what it is (GATHER_KINDS; `shuffle_groups` for a shuffle): planners that build a shuffle or
    a padding say so, so the runtime does not have to recognise it."""

    index: Tensor
    source: int
    kind: str = "general"
    shuffle_groups: int = 0

    def __post_init__(self) -> None:
        index = torch.as_tensor(self.index, dtype=torch.long, device="cpu")
        object.__setattr__(self, "index", index)
        if index.ndim != 1 or (index.numel() and (int(index.min()) < 0 or int(index.max()) > self.source)):
            raise ValueError(f"Gather: index must be a 1-d tensor of values in [0, {self.source}]")
        if self.kind not in GATHER_KINDS:
            raise ValueError(f"Gather: kind must be one of {', '.join(GATHER_KINDS)}, got {self.kind!r}")

    @classmethod
    def shuffle(cls, channels: int, groups: int) -> Gather:
        """The channel shuffle of `channels` channels in `groups` groups (ShuffleNet's)."""
        return cls(shuffle_permutation(channels, groups), channels, "shuffle", groups)

    @classmethod
    def pad(cls, source: int, width: int) -> Gather:
        """The `source` channels then zero channels up to `width`."""
        return cls(torch.tensor([min(i, source) for i in range(width)], device="cpu"), source, "pad")

    @classmethod
    def prefix(cls, source: int, width: int) -> Gather:
        """The first `width` of `source` channels."""
        return cls(torch.arange(width, device="cpu"), source, "prefix")

    @classmethod
    def permutation(cls, index: Tensor) -> Gather:
        return cls(index, int(torch.as_tensor(index).numel()), "permutation")

    @property
    def width(self) -> int:
        return self.index.numel()

    def replicate(self, copies: int) -> Gather:
        """The gather applied independently to `copies` consecutive blocks of `source` channels (zero channels
        stay zero channels)."""
        if copies == 1:
            return self
        zero = self.index == self.source
        index = torch.cat([torch.where(zero, copies * self.source, self.index + q * self.source)
                           for q in range(copies)])
        # side by side, a permutation stays one; a shuffle, padding or prefix per block is none of those
        return Gather(index, copies * self.source, "permutation" if self.kind == "permutation" else "general")

    def module(self) -> ChannelGather:
        return ChannelGather(self.index, self.source, self.shuffle_groups if self.kind == "shuffle" else None)


@dataclass(frozen=True, eq=False)
class ChainPlan:
    """A chain: `gathers[i]` runs before `parts[i]`, `gathers[-1]` after the last part (None: channels pass
    unchanged), on an input of `in_channels` channels. Checked: each gather reads the width before it and
    each part reads the width after its gather."""

    in_channels: int
    parts: tuple[ChainPart, ...]
    gathers: tuple[Gather | None, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        gathers = tuple(self.gathers) or (None,) * (len(self.parts) + 1)
        object.__setattr__(self, "gathers", gathers)
        if not self.parts or len(gathers) != len(self.parts) + 1:
            raise ValueError("ChainPlan: needs parts and one gather (or None) before each and after the last")
        width = self.in_channels
        for i, gather in enumerate(gathers):
            if gather is not None:
                if gather.source != width:
                    raise ValueError(f"ChainPlan: gather {i} reads {gather.source} channels, the chain has {width}")
                width = gather.width
            if i < len(self.parts):
                if self.parts[i].in_channels != width:
                    raise ValueError(f"ChainPlan: part {i} reads {self.parts[i].in_channels} channels, the chain "
                                     f"has {width} there")
                width = self.parts[i].out_channels

    @property
    def out_channels(self) -> int:
        last = self.gathers[-1]
        return self.parts[-1].out_channels if last is None else last.width

    @property
    def params(self) -> int:
        return sum(p.params for p in self.parts)

    def replicate(self, copies: int) -> ChainPlan:
        """The chain run on `copies` independent conv groups (a conv with groups > 1)."""
        if copies == 1:
            return self
        return ChainPlan(self.in_channels * copies, tuple(p.replicate(copies) for p in self.parts),
                         tuple(None if g is None else g.replicate(copies) for g in self.gathers))

    def layers(self, **factory: Any) -> list[nn.Module]:
        """The chain as new convs (`factory`: device, dtype; the meta device by default) and ChannelGathers, in
        order, identities left out."""
        factory.setdefault("device", "meta")
        out: list[nn.Module] = []
        for i, gather in enumerate(self.gathers):
            if gather is not None:
                out.append(gather.module())
            if i < len(self.parts):
                out.append(self.parts[i].conv(**factory))
        return out

    def reach(self, expected_field: tuple[int, int] | None = None) -> Reach:
        """Path counts and receptive field of the chain (IGCV's complementary condition: `one_path`; osep's
        volumetric receptive field: `ok` against the replaced kernel)."""
        return chain_reach(self.layers(), expected_field)


def gather_indices(modules: Sequence[nn.Module]) -> list[Tensor | None]:
    """The index buffers (on the modules' device) of a chain's gather modules; None for an nn.Identity."""
    return [m.index if isinstance(m, ChannelGather) else None for m in modules]


def compose_plan(plan: ChainPlan, weights: Sequence[Tensor], start: int = 0,
                 indices: Sequence[Tensor | None] | None = None) -> Tensor:
    """The dense kernel of the plan's parts from `start` on with their gathers, the part weights given
    (grouped, as nn.Conv2d holds them): (out_channels, source width of gather `start`, kh, kw). `indices`:
    the gathers' indices already on the weights' device (an operator's buffers, `gather_indices`), so that
    composing in training copies nothing to the device; by default the plan's, moved there."""
    device = weights[0].device
    indices = indices if indices is not None else [None if g is None else g.index.to(device) for g in plan.gathers]
    total: Tensor | None = None
    for gather, index, part, weight in zip(plan.gathers[start:-1], indices[start:-1], plan.parts[start:],
                                           weights[start:], strict=True):
        w = expand_grouped_kernel(weight, part.groups)
        if gather is not None:  # part(x[:, idx]) reads x through the gather
            kh, kw = w.shape[-2:]
            w = w.new_zeros(w.shape[0], gather.source + 1, kh, kw).index_add(1, index, w)[:, :gather.source]
        total = w if total is None else compose_kernels(total, w)
    if plan.gathers[-1] is not None:
        total = total.index_select(0, indices[-1])
    return total


def deploy_plan(plan: ChainPlan, weights: Sequence[Tensor], bias: Tensor | None) -> nn.Sequential:
    """The plan as plain modules with these part weights: gathers, nn.Conv2d (no bias) and the bias added at
    the end (what deploy() ships where the factorized form is smaller than the fold)."""
    modules = plan.layers(device=weights[0].device, dtype=weights[0].dtype)
    with torch.no_grad():
        for conv, weight in zip((m for m in modules if isinstance(m, nn.Conv2d)), weights, strict=True):
            conv.weight.copy_(weight)
    if bias is not None:
        modules.append(AddBias(bias.detach().clone()))
    return nn.Sequential(*modules)


class AddBias(nn.Module):
    """x + bias per channel (the bias of a chain, after its last gather)."""

    def __init__(self, bias: Tensor) -> None:
        super().__init__()
        self.bias = nn.Parameter(bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.view(1, -1, 1, 1)


class GroupConvChain(ConvOperator):
    """Base of chain operators: built from a `ChainPlan` (`build_chain`, which a subclass calls from its
    __init__) as `parts` (nn.Conv2d, no bias) and `gathers` (one before every part and one after the last;
    nn.Identity where the channels pass unchanged); `chain_plan` is that plan. The layer's bias is added at
    the end. Linear: dense_weight composes the chain exactly."""

    has_feature_path = True
    from_conv_exact = False  # structured and non-convex: fitted by gradient descent
    __jit_ignored_attributes__: ClassVar[list[str]] = [
        *ConvOperator.__jit_ignored_attributes__, "_suffix_start", "_suffix_cache",
    ]

    parts: nn.ModuleList
    gathers: nn.ModuleList

    def build_chain(self, plan: ChainPlan) -> None:
        """Install `plan` (its input and output widths must be the layer's)."""
        if (plan.in_channels, plan.out_channels) != (self.in_channels, self.out_channels):
            raise ValueError(f"{type(self).__name__}: the plan maps {plan.in_channels} -> {plan.out_channels} "
                             f"channels, the layer {self.in_channels} -> {self.out_channels}")
        self.chain_plan = plan
        self.parts = nn.ModuleList(part.conv() for part in plan.parts)
        self.gathers = nn.ModuleList(nn.Identity() if g is None else g.module() for g in plan.gathers)
        # (parameter versions, matrix) of the composed suffix in eval mode; see suffix_kernel
        self._suffix_cache: tuple[list[int], Tensor] | None = None
        self._suffix_start = self._choose_suffix()

    def _choose_suffix(self) -> int | None:
        """Where the trailing run of pointwise parts starts, when the feature path should run that run as one
        dense 1x1 conv (by the cost model above), else None.

        The parts after a spatial prefix are 1x1 convs, channel for channel a linear map: composed with
        their gathers they are one (out, mid) matrix. A dense 1x1 conv with it does more MACs than the thin
        group convs but runs them several times faster, and drops the gathers between them (measured on
        ResNet-20-size layers, training step: IGCV2 2.5-3x faster, osep at 58 channels 1.6x; at 232
        channels, 39 per group, the chain stays faster and is kept)."""
        k = len(self.parts)
        while k > 1 and all(
            getattr(self.parts[k - 1], name) == value
            for name, value in (("kernel_size", (1, 1)), ("stride", (1, 1)), ("padding", (0, 0)))
        ):
            k -= 1
        if k == len(self.parts):
            return None
        chain = 0
        for gather, conv in zip(list(self.gathers)[k:-1], list(self.parts)[k:], strict=True):
            if isinstance(gather, ChannelGather):
                chain += GATHER_MAC_EQUIVALENT * gather.out_channels
            per_group = conv.in_channels // conv.groups
            chain += conv.out_channels * max(per_group, GROUP_RATE_CHANNELS if conv.groups > 1 else 0)
        if isinstance(self.gathers[-1], ChannelGather):
            chain += GATHER_MAC_EQUIVALENT * self.gathers[-1].out_channels
        dense = self.out_channels * self.parts[k - 1].out_channels
        return k if dense < chain else None

    def suffix_kernel(self) -> Tensor:
        """The parts from `_suffix_start` on, with their gathers, as one (out, mid, 1, 1) kernel; cached in
        eval mode until a parameter changes (as `composed_kernel`)."""
        k = self._suffix_start
        weights = [conv.weight for conv in list(self.parts)[k:]]
        cacheable = not self.training and not (torch.is_grad_enabled() and any(w.requires_grad for w in weights))
        versions = [w._version for w in weights] + [id(w) for w in weights]
        if cacheable and self._suffix_cache is not None and self._suffix_cache[0] == versions:
            return self._suffix_cache[1]
        if cacheable:
            kernel = compose_for_cache(lambda: self._compose_parts(k), weights[0].device)
            self._suffix_cache = (versions, kernel)
            return kernel
        if self._suffix_cache is not None:
            self._suffix_cache = None
        # at the parameters' precision, as the cached form (the conv casts it under autocast)
        with full_precision(weights[0].device):
            return self._compose_parts(k)

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> GroupConvChain:
        self._suffix_cache = None
        return super()._apply(fn, *args, **kwargs)

    @property
    def suffix_start(self) -> int | None:
        """The part from which the feature path runs the rest as one dense 1x1 conv (None: the whole chain)."""
        return self._suffix_start

    def feature_modules(self) -> list[nn.Module]:
        """What the feature path runs, in order, as plain modules: the gathers and parts before a composed
        suffix and that suffix as one dense 1x1 conv; the whole chain without one (bias left out)."""
        k = self._suffix_start
        if k is None:
            return [m for m in self.chain() if not isinstance(m, nn.Identity)]
        modules: list[nn.Module] = []
        for gather, conv in zip(list(self.gathers)[:k], list(self.parts)[:k], strict=True):
            modules += [m for m in (gather, conv) if not isinstance(m, nn.Identity)]
        with torch.no_grad():
            matrix = self.suffix_kernel()
            suffix = nn.Conv2d(matrix.shape[1], matrix.shape[0], 1, bias=False, device=matrix.device,
                               dtype=matrix.dtype)
            suffix.weight.copy_(matrix)
        return [*modules, suffix]

    def chain(self) -> list[nn.Module]:
        """The layers the feature path runs, in order: gather, conv, gather, conv, ..., gather (nn.Identity
        where channels pass unchanged); `chain_plan.reach()` answers what it connects."""
        chain: list[nn.Module] = []
        for gather, conv in zip(self.gathers, self.parts, strict=False):
            chain += [gather, conv]
        return [*chain, self.gathers[-1]]

    def _compose_parts(self, start: int = 0) -> Tensor:
        """The dense kernel of the parts from `start` on with their gathers (the gather before part `start`
        included, the last gather too): (out_channels, source width of gather `start`, kh, kw)."""
        return compose_plan(self.chain_plan, [conv.weight for conv in self.parts], start,
                            gather_indices(self.gathers))

    def dense_weight(self) -> Tensor:
        return take_grouped_kernel(self._compose_parts(), self.groups).contiguous()

    def feature_forward(self, x: Tensor) -> Tensor:
        """The chain of group convs and gathers; with a trailing pointwise run worth composing
        (`_choose_suffix`), the parts before it and then that run as one dense 1x1 conv."""
        k = self._suffix_start
        if k is None:
            for module in self.chain():
                x = module(x)
            return x if self.bias is None else x + self.bias.view(1, -1, 1, 1)
        for gather, conv in zip(list(self.gathers)[:k], list(self.parts)[:k], strict=True):
            x = conv(gather(x))
        suffix = self.suffix_kernel()
        if x.is_contiguous():  # see in_layout
            suffix = in_layout(suffix, torch.contiguous_format)
        return F.conv2d(x, suffix, self.bias)

    def compose_macs(self) -> int:
        # expanding each part and multiplying the dense channel matrices, per kernel tap
        total, prev = 0, self.in_channels
        kh, kw = self.kernel_size
        for conv in self.parts:
            total += conv.out_channels * conv.in_channels * prev * kh * kw
            prev = conv.out_channels
        return total

    def feature_macs(self, in_hw: tuple[int, int]) -> int:
        """MACs of the chain's convs at their real (padded) sizes: what the feature path computes."""
        macs, hw = 0, in_hw
        for conv in self.parts:
            hw = conv_output_hw(hw, conv.kernel_size, conv.stride, conv.padding, conv.dilation)
            macs += conv_macs(conv.in_channels, conv.out_channels, conv.kernel_size, conv.groups, hw)
        return macs

    def factorized_size(self) -> tuple[int, int]:
        n = sum(conv.weight.numel() for conv in self.parts)
        n += self.out_channels if self.bias is not None else 0
        return n, n * float_bits(self)

    def factorized_deploy(self) -> nn.Module:
        """The chain of plain group convs and gathers (deploy() ships it where it is smaller than the fold)."""
        return deploy_plan(self.chain_plan, [conv.weight for conv in self.parts], self.bias).train(self.training)

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        params = sum(p.numel() for p in self.parameters())
        macs = self.feature_macs(in_hw)
        deploy_params, deploy_bits, deploy_macs, _ = self.deploy_cost(in_hw, macs)
        return Cost(params, params * float_bits(self), macs, deploy_params, deploy_bits, deploy_macs)

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        """A least-squares fit by gradient descent (the factorization is structured and non-convex)."""
        if self.bias is not None:
            self.bias.copy_(bias if bias is not None else torch.zeros_like(self.bias))
        return self.fit_kernel(weight)
