"""Stateless helpers shared by the operators: channel shuffles and permutations, grouped-kernel
expansion, and composition of the kernels of convolutions applied in sequence.

Conventions: a permutation `perm` of C channels acts on a feature map as `x[:, perm]`, i.e. output
channel j is input channel perm[j]. Kernels are `nn.Conv2d` weights (out, in/groups, kh, kw).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "channel_shuffle",
    "compose_kernels",
    "expand_grouped_kernel",
    "invert_permutation",
    "permute_channels",
    "shuffle_permutation",
    "take_grouped_kernel",
]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: (B, g·n, H, W) viewed as (B, g, n) and transposed to (B, n, g)."""
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: channels ({c}) must be divisible by groups ({groups})")
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def shuffle_permutation(channels: int, groups: int) -> Tensor:
    """The permutation `perm` with `channel_shuffle(x, groups) == x[:, perm]`."""
    if channels % groups:
        raise ValueError(f"shuffle_permutation: channels ({channels}) must be divisible by groups ({groups})")
    # index data on the CPU whatever the default device (a model built on meta still needs real indices)
    return torch.arange(channels, device="cpu").view(groups, channels // groups).t().reshape(-1)


def invert_permutation(perm: Tensor) -> Tensor:
    """`inv` with `x[:, perm][:, inv] == x`."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device, dtype=perm.dtype)
    return inv


def permute_channels(x: Tensor, perm: Tensor) -> Tensor:
    """`x[:, perm]` for a feature map or the output axis of a kernel (dim 1 for maps, use .index_select)."""
    return x.index_select(1, perm)


def expand_grouped_kernel(weight: Tensor, groups: int) -> Tensor:
    """A grouped conv kernel (out, in/g, kh, kw) as the equivalent dense, block-diagonal (out, in, kh, kw)."""
    if groups == 1:
        return weight
    out_ch, in_per_group, kh, kw = weight.shape
    out_per_group = out_ch // groups
    blocks = weight.view(groups, out_per_group, in_per_group, kh, kw)
    eye = torch.eye(groups, dtype=weight.dtype, device=weight.device)
    # dense[g, o, h, i] = eye[g, h] * blocks[g, o, i]: the block of group g sits at input group h == g
    dense = torch.einsum("gh,goikl->gohikl", eye, blocks)
    return dense.reshape(out_ch, groups * in_per_group, kh, kw)


def take_grouped_kernel(dense: Tensor, groups: int) -> Tensor:
    """The diagonal blocks of a dense kernel (out, in, kh, kw) as a grouped kernel (out, in/g, kh, kw)."""
    if groups == 1:
        return dense
    out_ch, in_ch, kh, kw = dense.shape
    blocks = dense.view(groups, out_ch // groups, groups, in_ch // groups, kh, kw)
    return torch.diagonal(blocks, dim1=0, dim2=2).permute(4, 0, 1, 2, 3).reshape(out_ch, in_ch // groups, kh, kw)


def compose_kernels(first: Tensor, second: Tensor) -> Tensor:
    """The kernel of `conv(conv(x, first), second)` for dense kernels with stride 1 and dilation 1.

    first: (m, c, a, b), second: (o, m, p, q) -> (o, c, a+p-1, b+q-1). Cross-correlations compose into the
    full *convolution* of their kernels, computed here as a correlation with the flipped second kernel.
    """
    if first.shape[0] != second.shape[1]:
        raise ValueError(f"compose_kernels: first has {first.shape[0]} outputs, second reads {second.shape[1]}")
    p, q = second.shape[-2:]
    if (first.shape[-2], first.shape[-1], p, q) == (1, 1, 1, 1):
        return (second.flatten(1) @ first.flatten(1)).view(second.shape[0], first.shape[1], 1, 1)
    composed = F.conv2d(first.transpose(0, 1), second.flip(-1, -2), padding=(p - 1, q - 1))
    return composed.transpose(0, 1).contiguous()
