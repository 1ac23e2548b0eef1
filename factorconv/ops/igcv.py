"""Interleaved group convolutions (paper 002): IGCV1 and IGCV2 operators, and the design rules.

- `complementary_permutations(branch_sizes)`: the permutations between L group convs whose branches
  hold K_1, ..., K_L channels (C = ∏K_l) that satisfy the complementary condition: number every channel
  in mixed radix with digits d_l in [0, K_l); group conv l mixes digit l (its branches are the channels
  that differ only in d_l), so each group conv changes exactly one digit and every input reaches every
  output along exactly one path.
- `connectivity(chain)`: for any chain of group convs and permutations, the composed support (path
  counts), whether it is dense and whether every pair has exactly one path.
- `plan_igcv2(channels, spatial, L, K)`: the balance condition (eq. 11: S·K_1 = K_2 = ... = K_L =
  (S·C)^(1/L)) and the optimal L (eq. 14: L = ln(S·C)), rounded to integer branch sizes with ∏K_l = C.
- `igcv1`: primary group k×k conv with `partitions` groups, the interleaving permutation, secondary
  group 1x1 conv. `igcv2`: a channel-wise (or group) k×k conv, then L-1 group 1x1 convs with branches of
  K channels, complementary permutations between them where the sizes allow (∏K = C), channel shuffles
  otherwise (the paper's "loose" condition).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..checks import is_int
from ..registry import register_conv
from .chain import ChainPart, ChainPlan, Gather, GroupConvChain
from .channel import Reach, chain_reach
from .examples import Draw, ExampleShape
from .space import Choice, Dimension, IntRange

__all__ = [
    "Connectivity",
    "IGCV1Chain",
    "IGCV2Chain",
    "IGCV2Plan",
    "InterleavedGroupConv1",
    "InterleavedGroupConv2",
    "complementary_permutations",
    "connectivity",
    "igcv1_chain",
    "igcv2_chain",
    "plan_igcv2",
]


def _positive_ints(name: str, values: Sequence[Any]) -> list[int]:
    out = list(values)
    if not out or any(not is_int(v) or v < 1 for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    return out


def complementary_permutations(branch_sizes: Sequence[int]) -> list[Tensor]:
    """The L-1 permutations between L group convs with branches of K_1..K_L channels (C = ∏K_l channels).

    Channel layouts: before group conv l, channel c has digits d (mixed radix, radices K) and sits at
    d_l + K_l·(the other digits in order), so that conv l's branches are contiguous. Permutation l maps
    layout l to layout l+1 (`y = x[:, perm]`). Layout 1 is the natural order.
    """
    k = _positive_ints("complementary_permutations: branch_sizes", branch_sizes)
    c = math.prod(k)
    # digits of every channel in natural order (d_1 fastest)
    index = torch.arange(c, device="cpu")
    digits, rest = [], index
    for radix in k:
        digits.append(rest % radix)
        rest = rest // radix

    def position(layer: int) -> Tensor:
        pos, scale = digits[layer].clone(), k[layer]
        for other, radix in enumerate(k):
            if other != layer:
                pos += digits[other] * scale
                scale *= radix
        return pos

    perms = []
    for layer in range(len(k) - 1):
        src, dst = position(layer), position(layer + 1)
        perm = torch.empty(c, dtype=torch.long, device="cpu")
        perm[dst] = src
        perms.append(perm)
    return perms


# The composed support of a chain (path counts per output/input pair): one result type with osep's
# volumetric receptive field (`channel.Reach`)
Connectivity = Reach


def connectivity(chain: Sequence[nn.Module | Tensor]) -> Reach:
    """Connectivity of a chain of group convs (nn.Conv2d, operators with in/out channels and groups),
    ChannelGathers and permutation tensors, applied left to right."""
    return chain_reach(chain)


@dataclass(frozen=True)
class IGCV2Plan:
    """Branch sizes K_1..K_L (conv 1 spatial) with ∏K = C, their parameter count, and the continuous
    optimum of the balance condition."""

    channels: int
    spatial: int
    branch_sizes: tuple[int, ...]
    continuous_branch: float  # (S·C)^(1/L): S·K_1 and K_2..K_L at the balance condition
    continuous_L: float  # eq. 14: ln(S·C)

    @property
    def L(self) -> int:
        return len(self.branch_sizes)

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(self.channels // k for k in self.branch_sizes)

    @property
    def params(self) -> int:
        """Eq. 7: C·S·K_1 + C·ΣK_l (l >= 2); permutations are free."""
        k = self.branch_sizes
        return self.channels * (self.spatial * k[0] + sum(k[1:]))

    def to_dict(self, kernel: tuple[int, int] | None = None) -> dict[str, Any]:
        """The plan as JSON-able data: each conv's channels, kernel (the spatial one `kernel`, default square of
        `spatial` taps), groups and branch size; the continuous optimum; the parameters."""
        c = self.channels
        side = round(self.spatial ** 0.5)
        kernel = kernel or (side, side)
        parts = [{"in": c, "out": c, "kernel": list(kernel) if i == 0 else [1, 1], "groups": c // k, "branch": k}
                 for i, k in enumerate(self.branch_sizes)]
        return {"operator": "igcv2", "parts": parts, "branch_sizes": list(self.branch_sizes),
                "continuous_branch": self.continuous_branch, "continuous_L": self.continuous_L,
                "params": self.params}


@functools.lru_cache(maxsize=4096)
def _factorizations(n: int, parts: int, least: int = 1) -> tuple[tuple[int, ...], ...]:
    """All non-decreasing tuples of `parts` ints >= `least` with product n. Each call starts at its least
    factor and is memoised, so the work grows with the number of factorizations (a few hundred for any real
    C), not exponentially with `parts` (L = 35 took 4 s and L = 100 did not end when every branch re-derived
    the tuples of its rest)."""
    if parts == 1:
        return ((n,),) if n >= least else ()
    out: list[tuple[int, ...]] = []
    d = least
    while d ** parts <= n:  # the smallest factor is at most n^(1/parts)
        if n % d == 0:
            out += [(d, *rest) for rest in _factorizations(n // d, parts - 1, d)]
        d += 1
    return tuple(out)


def plan_igcv2(
    channels: int,
    spatial: int = 9,
    L: int | None = None,
    K: int | None = None,
    channelwise: bool = False,
) -> IGCV2Plan:
    """Branch sizes for an IGCV2 block of `channels` channels and a spatial kernel of `spatial` taps.

    Default: the balance condition of eq. 11 (S·K_1 = K_2 = ... = K_L) with L from eq. 14, rounded to the
    integer branch sizes with ∏K_l = C and the fewest parameters (eq. 7); with `L`, that L. With
    `channelwise=True` the first conv is channel-wise (K_1 = 1), the design the paper recommends, and the
    balance holds among the 1x1 convs (K_2 = ... = K_L = C^(1/(L-1))). With `K` (IGCV2*): channel-wise,
    L-1 = ceil(log_K C) 1x1 convs of branch K (a loose condition: ∏K >= C).
    """
    c = _positive_ints("plan_igcv2: channels", [channels])[0]
    s = _positive_ints("plan_igcv2: spatial", [spatial])[0]
    continuous_l = math.log(s * c)
    if K is not None:
        k = _positive_ints("plan_igcv2: K", [K])[0]
        if k < 2:
            raise ValueError(f"plan_igcv2: K must be >= 2, got {K!r}")
        n = max(1, math.ceil(math.log(c, k) - 1e-9))
        return IGCV2Plan(c, s, (1, *([k] * n)), float(k), continuous_l)
    if L is not None:
        candidates = [_positive_ints("plan_igcv2: L", [L])[0]]
        if channelwise and candidates[0] < 2:
            raise ValueError("plan_igcv2: a channel-wise design needs L >= 2")
    else:
        top = max(2, math.ceil(continuous_l) + 1)
        candidates = list(range(2, top + 1))
    best: tuple[int, tuple[int, ...]] | None = None
    for n in candidates:
        if channelwise:
            options = [(1, *f) for f in _factorizations(c, n - 1)]
        else:  # any factor may be the spatial conv's; the 1x1 convs' order does not change the count
            options = [(f[i], *f[:i], *f[i + 1:]) for f in _factorizations(c, n) for i in range(n)
                       if i == 0 or f[i] != f[i - 1]]
        for sizes in options:
            q = c * (s * sizes[0] + sum(sizes[1:]))
            if best is None or q < best[0] or (q == best[0] and len(sizes) < len(best[1])):
                best = (q, tuple(sizes))
    assert best is not None
    sizes = best[1]
    l_ = len(sizes)
    cont = c ** (1 / (l_ - 1)) if channelwise else (s * c) ** (1 / l_)
    return IGCV2Plan(c, s, sizes, cont, continuous_l)


def _shuffle(channels: int, left_groups: int) -> Gather | None:
    """After a group conv with `left_groups` groups: the channel shuffle (none after a dense conv), so the
    next conv's branches take their channels from as many of those groups as they can."""
    return None if left_groups == 1 else Gather.shuffle(channels, left_groups)


def _check_divides(name: str, option: str, value: int, *channels: int) -> None:
    for c in channels:
        if value < 1 or c % value:
            raise ValueError(f"{name}: {option} ({value}) must divide the channels ({', '.join(map(str, channels))})")


@dataclass(frozen=True)
class IGCV1Chain:
    """IGCV1's plan for one conv: the chain and its primary partition count."""

    plan: ChainPlan
    partitions: int


def igcv1_chain(in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: Any = 1, padding: Any = 0,
                dilation: Any = 1, groups: int = 1, partitions: int | None = None) -> IGCV1Chain:
    """Primary group k×k conv with `partitions` groups (in -> out), the interleaving permutation, secondary
    group 1x1 conv (out -> out) with out/partitions groups of `partitions` channels; per conv group."""
    cin, cout = in_channels // groups, out_channels // groups
    parts = math.gcd(cin, max(1, cout // 2)) if partitions is None else partitions
    if not is_int(parts):
        raise ValueError(f"InterleavedGroupConv1: partitions must be an int, got {partitions!r}")
    _check_divides("InterleavedGroupConv1", "partitions", parts, cin, cout)
    secondary = cout // parts  # M: channels per primary partition = number of secondary groups
    perm = complementary_permutations([secondary, parts])[0] if parts > 1 and secondary > 1 else None
    plan = ChainPlan(cin, (ChainPart(cin, cout, kernel_size, parts, stride, padding, dilation),
                           ChainPart(cout, cout, (1, 1), secondary)),
                     (None, None if perm is None else Gather.permutation(perm), None))
    return IGCV1Chain(plan.replicate(groups), parts)


@dataclass(frozen=True)
class IGCV2Chain:
    """IGCV2's plan for one conv: the chain, the spatial conv's branch size, the 1x1 convs' branch sizes, and
    whether the permutations are complementary (one path per channel pair)."""

    plan: ChainPlan
    spatial_branch: int
    branch_sizes: tuple[int, ...]
    complementary: bool


def igcv2_chain(in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: Any = 1,
                padding: Any = 0, dilation: Any = 1, groups: int = 1, *, L: int | None = None, K: int | None = None,
                branch_sizes: Sequence[int] | None = None, channelwise: bool = True) -> IGCV2Chain:
    """The chain of InterleavedGroupConv2 (see there for the options), per conv group."""
    name = "InterleavedGroupConv2"
    cin, cout = in_channels // groups, out_channels // groups
    if not isinstance(channelwise, bool):
        raise ValueError(f"{name}: channelwise must be True or False, got {channelwise!r}")
    if L is not None and (isinstance(L, bool) or not isinstance(L, int) or L < 2):
        raise ValueError(f"{name}: L must be an int >= 2, got {L!r}")
    if branch_sizes is not None:
        sizes = _positive_ints(f"{name}: branch_sizes", branch_sizes)
        spatial_branch = 1 if channelwise else sizes.pop(0)
        if not sizes:
            raise ValueError(f"{name}: branch_sizes needs at least one 1x1 conv's branch size")
    elif K is not None:
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise ValueError(f"{name}: K must be a positive int, got {K!r}")
        spatial_branch, sizes = 1, [K] * ((3 if L is None else L) - 1)
    else:
        plan = plan_igcv2(cout, kernel_size[0] * kernel_size[1], L, channelwise=True)
        spatial_branch, sizes = 1, list(plan.branch_sizes[1:])
    if not channelwise:
        _check_divides(name, "branch_sizes[0]", spatial_branch, cin)
    for k in sizes:
        _check_divides(name, "the 1x1 branch size", k, cout)
    # The first 1x1 conv reads the input width, which its group count need not divide (64 -> 216 with
    # K = 8: 27 groups): its input slots are padded to a multiple of the groups, as the paper counts
    # it, the extra slots repeating input channels cyclically so that no group reads only padding.
    first_groups = cout // sizes[0]
    in_slots = first_groups * -(-cin // first_groups)
    parts = [ChainPart(cin, cin, kernel_size, cin // spatial_branch, stride, padding, dilation)]
    widths = [in_slots] + [cout] * len(sizes)
    parts += [ChainPart(widths[i], cout, (1, 1), cout // k) for i, k in enumerate(sizes)]
    # Complementary permutations where the branch sizes multiply to the width: over all convs when the
    # spatial conv is grouped and keeps the width, over the 1x1 convs otherwise (a channel-wise conv
    # needs none after it); channel shuffles (the paper's loose condition) where they do not.
    between: list[Gather | None]
    if spatial_branch > 1 and cin == cout and spatial_branch * math.prod(sizes) == cout:
        between = [Gather.permutation(p) for p in complementary_permutations([spatial_branch, *sizes])]
    else:
        first = None if spatial_branch == 1 else Gather.shuffle(cin, cin // spatial_branch)
        exact = len(sizes) > 1 and math.prod(sizes) == cout
        rest = ([Gather.permutation(p) for p in complementary_permutations(sizes)] if exact
                else [_shuffle(cout, cout // k) for k in sizes[:-1]])
        between = [first, *rest]
    if in_slots != cin:  # pad the first 1x1 conv's input slots by cycling through the channels
        order = torch.arange(cin, device="cpu") if between[0] is None else between[0].index
        between[0] = Gather(order[torch.arange(in_slots, device="cpu") % cin], cin)
    complementary = (spatial_branch * math.prod(sizes) == cout if spatial_branch > 1 else
                     math.prod(sizes) == cout)
    chain = ChainPlan(cin, tuple(parts), (None, *between, None))
    return IGCV2Chain(chain.replicate(groups), spatial_branch, tuple(sizes), complementary)


@register_conv("igcv1")
class InterleavedGroupConv1(GroupConvChain):
    """IGCV1 (Zhang et al.): primary group k×k conv with `partitions` groups (in -> out), the interleaving
    permutation, secondary group 1x1 conv (out -> out) with out/partitions groups of `partitions` channels.

    Default `partitions` = gcd(in, out/2): out/2 when in = out (two channels per primary partition, the
    paper's suggestion), and a count that divides both widths otherwise. The primary conv carries stride,
    padding and dilation. A conv with `groups` > 1 runs one IGCV1 per group.
    """

    search_space: ClassVar[dict[str, Dimension]] = {"partitions": Choice(None, 2, 4, 8)}  # None: the default

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        per_group, parts, g = draw.integer(1, 3), draw.integer(1, 3), shape.groups  # partitions divide both widths
        return shape.with_(in_channels=g * parts * draw.integer(1, 2), out_channels=g * parts * per_group), {
            "partitions": parts}

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        partitions: int | None = None,
        path: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        chain = igcv1_chain(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                            self.dilation, self.groups, partitions)
        self.partitions = chain.partitions
        self.build_chain(chain.plan)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", partitions={self.partitions}"


@register_conv("igcv2")
class InterleavedGroupConv2(GroupConvChain):
    """IGCV2: a k×k conv that is channel-wise (`channelwise=True`, default) or grouped with branches of
    `branch_sizes[0]` channels, then group 1x1 convs with branches of K channels each (in -> out, then
    out -> out; `L`-1 of them), permuted between so their branches interleave.

    Branch sizes: `branch_sizes` (one per 1x1 conv, and first the spatial conv's when not channel-wise), or
    `K` for all 1x1 convs with `L` convs in all (default L = 3), or by default the balance condition for
    the output width (`plan_igcv2(out, S, L, channelwise=True)`). When ∏K equals the width the permutations
    are complementary (one path per pair); otherwise they are channel shuffles (dense where ∏K >= width).
    The first 1x1 conv's input slots are padded to a multiple of its groups where needed (64 -> 216 with
    K = 8 has 27 groups), by repeating channels: counted as padded group convs are.
    """

    # K None: the balance condition's branch sizes for L; a K that does not divide a layer's width is refused
    search_space: ClassVar[dict[str, Dimension]] = {"L": IntRange(2, 4), "K": Choice(None, 2, 4, 8)}

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        g, k, width = shape.groups, draw.integer(1, 4), draw.integer(1, 3)
        cout = g * k * width
        cin = g * (cout // g // k) * draw.integer(1, 2)  # divisible by the 1x1 group count
        options: dict[str, Any] = {"K": k, "L": draw.integer(2, 4), "channelwise": True}
        if draw.boolean():
            branch = draw.integer(1, 2)
            cin = cout = g * k * width * branch
            options = {"branch_sizes": [branch, k, k], "channelwise": False}
        return shape.with_(in_channels=cin, out_channels=cout), options

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        L: int | None = None,
        K: int | None = None,
        branch_sizes: Sequence[int] | None = None,
        channelwise: bool = True,
        path: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        chain = igcv2_chain(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                            self.dilation, self.groups, L=L, K=K, branch_sizes=branch_sizes, channelwise=channelwise)
        self.spatial_branch, self.branch_sizes = chain.spatial_branch, chain.branch_sizes
        self.complementary = chain.complementary
        self.build_chain(chain.plan)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", branch_sizes={self.branch_sizes}"
        if self.spatial_branch != 1:
            s += f", spatial_branch={self.spatial_branch}"
        return s
