"""Operators that are a chain of (group) convs with channel gathers between them: optimized separable
convolution, interleaved group convolutions. `GroupConvChain` owns what they share: composing the chain
into the dense kernel, running it as the feature path, its costs, and its deploy form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import compose_kernels, expand_grouped_kernel, take_grouped_kernel
from .base import ConvOperator
from .channel import ChannelGather
from .runtime import compose_for_cache, full_precision, in_layout
from .spec import Cost, conv_macs, conv_output_hw, float_bits
from .speed import GATHER_MAC_EQUIVALENT, GROUP_RATE_CHANNELS

__all__ = ["AddBias", "GroupConvChain"]


class AddBias(nn.Module):
    """x + bias per channel (the bias of a chain, after its last gather)."""

    def __init__(self, bias: Tensor) -> None:
        super().__init__()
        self.bias = nn.Parameter(bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.view(1, -1, 1, 1)


class GroupConvChain(ConvOperator):
    """Base of chain operators: `parts` (nn.Conv2d, no bias) and `gathers` (one before every part and one
    after the last; nn.Identity where the channels pass unchanged), set by `_set_chain`. The layer's bias
    is added at the end. Linear: dense_weight composes the chain exactly."""

    has_feature_path = True
    from_conv_exact = False  # structured and non-convex: fitted by gradient descent
    __jit_ignored_attributes__: ClassVar[list[str]] = [
        *ConvOperator.__jit_ignored_attributes__, "_suffix_start", "_suffix_cache",
    ]

    parts: nn.ModuleList
    gathers: nn.ModuleList

    def _set_chain(self, convs: Sequence[nn.Conv2d], gathers: Sequence[Tensor | None]) -> None:
        """Install the chain: gathers[i] runs before convs[i], gathers[-1] after the last conv (None: none).
        Each gather's source width is the channel count before it."""
        if len(gathers) != len(convs) + 1:
            raise ValueError("GroupConvChain: need one gather before each conv and one after the last")
        sources = [self.in_channels] + [c.out_channels for c in convs]
        self.parts = nn.ModuleList(convs)
        self.gathers = nn.ModuleList(
            nn.Identity() if index is None else ChannelGather(index, source)
            for index, source in zip(gathers, sources, strict=True)
        )
        # (parameter versions, matrix) of the composed suffix in eval mode; see _suffix_matrix
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

    def _suffix_matrix(self) -> Tensor:
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

    def chain(self) -> list[nn.Module]:
        """The layers the feature path runs, in order: gather, conv, gather, conv, ..., gather (nn.Identity
        where channels pass unchanged); `factorconv.connectivity` and `volumetric_rf` read it."""
        chain: list[nn.Module] = []
        for gather, conv in zip(self.gathers, self.parts, strict=False):
            chain += [gather, conv]
        return [*chain, self.gathers[-1]]

    def _compose_parts(self, start: int = 0) -> Tensor:
        """The dense kernel of the parts from `start` on with their gathers (the gather before part `start`
        included, the last gather too): (out_channels, source width of gather `start`, kh, kw)."""
        total: Tensor | None = None
        for gather, conv in zip(list(self.gathers)[start:-1], list(self.parts)[start:], strict=True):
            w = expand_grouped_kernel(conv.weight, conv.groups)
            if isinstance(gather, ChannelGather):  # conv(x[:, idx]) reads x through the gather
                kh, kw = w.shape[-2:]
                absorbed = w.new_zeros(w.shape[0], gather.in_channels + 1, kh, kw)
                w = absorbed.index_add(1, gather.index, w)[:, : gather.in_channels]
            total = w if total is None else compose_kernels(total, w)
        final = self.gathers[-1]
        if isinstance(final, ChannelGather):
            total = total.index_select(0, final.index)
        return total

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
        suffix = self._suffix_matrix()
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
        modules: list[nn.Module] = []
        for module in self.chain():
            if isinstance(module, nn.Conv2d):
                conv = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                 module.padding, module.dilation, module.groups, bias=False,
                                 device=module.weight.device, dtype=module.weight.dtype)
                with torch.no_grad():
                    conv.weight.copy_(module.weight)
                modules.append(conv)
            elif isinstance(module, ChannelGather):
                modules.append(ChannelGather(module.index_cpu, module.in_channels))
        if self.bias is not None:
            modules.append(AddBias(self.bias.detach().clone()))
        return nn.Sequential(*modules).train(self.training)

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
