"""Channel routing between the factors of an operator: `ChannelGather` (any reordering, duplication or
zero padding of channels as one index_select), `chain_connectivity` (which input channels each output
channel of a chain of group convs and gathers reaches, and by how many paths) and `Reach`, the one result of
every connectivity question: path counts with the chain's spatial receptive field (IGCV's complementary
condition and osep's volumetric receptive-field condition are both read from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import shuffle_permutation
from .speed import GATHER_MATMUL_MAX_CHANNELS

__all__ = ["ChannelGather", "Reach", "chain_connectivity", "chain_reach", "gather_support", "group_support"]


class ChannelGather(nn.Module):
    """y[:, j] = x[:, index[j]]; an index equal to `in_channels` gives a zero channel (padding).

    Permutations, channel shuffles, truncation and zero padding of group convs are all one gather. The
    common shapes of index run without index_select, which on the channel axis is slow and returns NCHW
    from a channels_last tensor (the next conv then pays for converting back): a prefix is a narrow copy,
    the channels followed by zeros is F.pad, and a channel shuffle is a reshape/transpose. Any other
    gather of a channels_last tensor is a matmul of its NHWC view with a one-hot (in, out) selector: exact
    for finite values (an inf or NaN would spread through the zeros), and forward + backward run 4.5x faster
    than index_select there, whose backward (index_add_ on the channel axis) dominated IGCV's training step.
    The matmul costs in·out MACs per pixel, so above `speed.GATHER_MATMUL_MAX_CHANNELS` input channels (where
    it stops winning, measured) index_select is kept.
    """

    __jit_unused_properties__: ClassVar[list[str]] = ["out_channels"]  # TorchScript: forward reads index itself

    def __init__(self, index: Tensor, in_channels: int, shuffle_groups: int | None = None) -> None:
        """`shuffle_groups`: the planner's word that `index` is the channel shuffle in that many groups
        (checked); without it a shuffle is recognised from the index."""
        super().__init__()
        # validated on the CPU, then placed like any other tensor built now (the meta device included)
        cpu = torch.as_tensor(index, dtype=torch.long, device="cpu")
        if cpu.ndim != 1 or (cpu.numel() and (int(cpu.min()) < 0 or int(cpu.max()) > in_channels)):
            raise ValueError(f"ChannelGather: index must be a 1-d tensor of values in [0, {in_channels}]")
        self.in_channels = in_channels
        self.index_cpu = cpu  # for connectivity analysis on any device
        self.register_buffer("index", cpu.to(torch.get_default_device()), persistent=False)
        self.pads = bool((cpu == in_channels).any())
        if shuffle_groups is None:
            self.shuffle_groups = _shuffle_groups(cpu, in_channels)
        else:
            if cpu.numel() != in_channels or in_channels % shuffle_groups or not torch.equal(
                    cpu, shuffle_permutation(in_channels, shuffle_groups)):
                raise ValueError(f"ChannelGather: index is not the channel shuffle of {in_channels} channels in "
                                 f"{shuffle_groups} groups")
            self.shuffle_groups = shuffle_groups if 1 < shuffle_groups < in_channels else 0
        k = min(cpu.numel(), in_channels)
        in_order = bool(torch.equal(cpu[:k], torch.arange(k, device="cpu")))
        # a prefix of the channels: a view; all channels then only zeros: padding
        self.prefix = in_order and cpu.numel() <= in_channels
        self.zero_tail = in_order and k == in_channels and bool((cpu[k:] == in_channels).all())
        self.matmul = in_channels <= GATHER_MATMUL_MAX_CHANNELS
        selector = torch.zeros(in_channels + 1 if self.matmul else 0, cpu.numel() if self.matmul else 0, device="cpu")
        if self.matmul:
            selector[cpu, torch.arange(cpu.numel(), device="cpu")] = 1.0
        selector = selector[:in_channels if self.matmul else 0]
        self.register_buffer("selector", selector.to(torch.get_default_device()), persistent=False)

    @property
    def out_channels(self) -> int:
        return self.index.numel()

    def forward(self, x: Tensor) -> Tensor:
        if self.prefix:
            if self.index.numel() == x.shape[1]:
                return x
            # materialised in x's own layout: layers downstream are several times slower on the strided
            # view (BatchNorm's backward on a channels_last slice: 4x)
            layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else \
                torch.contiguous_format
            return x.narrow(1, 0, self.index.numel()).contiguous(memory_format=layout)
        if self.zero_tail:
            return F.pad(x, (0, 0, 0, 0, 0, self.index.numel() - self.in_channels))
        if _exporting():  # one Gather of constant indices: the fast paths below read x.shape, which an exported
            # graph recomputes at run time (a shuffle became 15 Shape/Gather/Unsqueeze/Concat/Reshape nodes)
            if self.pads:
                x = F.pad(x, (0, 0, 0, 0, 0, 1))
            return x.index_select(1, self.index)
        g = self.shuffle_groups
        if g:
            n, c, h, w = x.shape
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
                nhwc = x.permute(0, 2, 3, 1).reshape(n, h, w, g, c // g).transpose(3, 4).reshape(n, h, w, c)
                return nhwc.permute(0, 3, 1, 2)
            return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)
        if self.matmul and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return torch.matmul(x.permute(0, 2, 3, 1), self.selector.to(x.dtype)).permute(0, 3, 1, 2)
        if self.pads:
            x = F.pad(x, (0, 0, 0, 0, 0, 1))
        return x.index_select(1, self.index)

    def support(self) -> Tensor:
        return gather_support(self.index_cpu, self.in_channels)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}" + (", zero-padded" if self.pads else "")


def _exporting() -> bool:
    """Whether the forward is being traced or exported (ONNX, torch.jit.trace, torch.export)."""
    if torch.jit.is_scripting():
        return False
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def _shuffle_groups(index: Tensor, in_channels: int) -> int:
    """g when `index` is the channel shuffle of in_channels channels in g groups (1 < g < C), else 0."""
    c = index.numel()
    if c != in_channels or c < 4:
        return 0
    for g in range(2, c):
        if c % g == 0 and torch.equal(index, shuffle_permutation(c, g)):
            return g
    return 0


def group_support(in_channels: int, out_channels: int, groups: int) -> Tensor:
    """(out, in) 0/1 matrix: which inputs a group conv's outputs read."""
    rows = torch.arange(out_channels, device="cpu") // (out_channels // groups)
    cols = torch.arange(in_channels, device="cpu") // (in_channels // groups)
    return (rows[:, None] == cols[None, :]).long()


def gather_support(index: Tensor, in_channels: int) -> Tensor:
    """(len(index), in_channels) 0/1 matrix of a ChannelGather (zero-padding rows are empty)."""
    out = torch.zeros(index.numel(), in_channels + 1, dtype=torch.long, device="cpu")
    out[torch.arange(index.numel(), device="cpu"), index.cpu()] = 1
    return out[:, :in_channels]


def chain_connectivity(chain: Sequence[nn.Module | Tensor]) -> Tensor:
    """Path counts (out, in) of a chain of convs / gathers / permutations applied left to right.

    Elements: nn.Conv2d (or anything with in_channels/out_channels/groups), ChannelGather, or a 1-d
    permutation tensor (y = x[:, perm]). Entry [o, i] is the number of distinct paths from input channel i
    to output channel o: 0 means o never sees i.
    """
    paths: Tensor | None = None
    for item in chain:
        if isinstance(item, Tensor):
            step = gather_support(item.long(), item.numel())
        elif isinstance(item, ChannelGather):
            step = item.support()
        elif all(hasattr(item, a) for a in ("in_channels", "out_channels", "groups")):
            step = group_support(item.in_channels, item.out_channels, item.groups)
        else:
            raise ValueError(f"chain_connectivity: cannot read channels of {type(item).__name__}")
        if paths is not None and step.shape[1] != paths.shape[0]:
            raise ValueError(
                f"chain_connectivity: {type(item).__name__} reads {step.shape[1]} channels, "
                f"the chain has {paths.shape[0]} there"
            )
        paths = step if paths is None else step @ paths
    if paths is None:
        raise ValueError("chain_connectivity: empty chain")
    return paths


@dataclass
class Reach:
    """What a chain of group convs and gathers connects: `paths` (out, in), the number of paths from each input
    channel to each output channel; `receptive_field` its spatial receptive field, `expected_field` the one
    of the conv it replaces (None: not checked)."""

    paths: Tensor
    receptive_field: tuple[int, int] | None = None
    expected_field: tuple[int, int] | None = None

    @property
    def dense(self) -> bool:
        """Every output channel depends on every input channel."""
        return bool((self.paths > 0).all())

    @property
    def one_path(self) -> bool:
        """Exactly one path for every pair: dense with no redundant connection (IGCV's complementary
        condition)."""
        return bool((self.paths == 1).all())

    @property
    def density(self) -> float:
        return float((self.paths > 0).float().mean())

    @property
    def channel_ok(self) -> bool:
        return self.dense

    @property
    def spatial_ok(self) -> bool:
        return self.expected_field is None or self.receptive_field == self.expected_field

    @property
    def ok(self) -> bool:
        """The volumetric receptive-field condition: the original spatial field and every output reaching
        every input."""
        return self.spatial_ok and self.channel_ok


def chain_reach(chain: Sequence[nn.Module | Tensor], expected_field: tuple[int, int] | None = None) -> Reach:
    """The Reach of a chain of convs, gathers and permutation tensors applied left to right."""
    field, jump = [1, 1], [1, 1]  # receptive field and input-pixel distance between adjacent features
    for item in chain:
        if isinstance(item, nn.Conv2d):
            for axis in (0, 1):
                field[axis] += (item.kernel_size[axis] - 1) * item.dilation[axis] * jump[axis]
                jump[axis] *= item.stride[axis]
    return Reach(chain_connectivity(chain), (field[0], field[1]), expected_field)
