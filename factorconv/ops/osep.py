"""Optimized separable convolution (paper 001): `plan_osep` (Algorithm 1), the `osep` and `sosep`
operators built from a plan, and the volumetric receptive-field checker `volumetric_rf`.

A plan splits a (C_in -> C_out, KH×KW) conv into N group convs C_1 -> C_2 -> ... -> C_{N+1}:
- internal channels C_2..C_N by a policy: "min" = min(C_in, C_out), "linear" = (C_in + C_out)/2,
  "bottleneck" = max(C_in, C_out)/4, "inverted" = 4·min(C_in, C_out), or explicit ints;
- kernels (eq. 18/19): part ⌊N/2⌋ takes (KH, KW) and the others 1x1; the spatial variant gives
  (KH, 1) to part ⌊N/2⌋ and (1, KW) to part ⌊N/2⌋+1 (parts counted from 1);
- channels per group n_l by eq. 17, n_l = (γ·∏C·∏K^H·∏K^W)^(1/N) / (C_{l+1}·K_l^H·K_l^W), which makes every
  part cost the same and meets the channel condition ∏n_l >= γ·C_1 with equality;
- groups g_l = C_l / n_l, re-optimised with masked values where that leaves [1, min(C_l, C_{l+1})];
- integers as the paper's tables count them: n_l rounded up, g_l = min(ceil(C_l / n_l), C_l, C_{l+1}).

When g_l does not divide the channels, part l is a padded group conv: its weight is
(g·ceil(C_{l+1}/g)) × ceil(C_l/g) × kh × kw and the padding counts in params and MACs (as the paper,
whose implementation copies blobs). The input of part 1 is zero-padded. Between parts, every input slot
of part l+1 reads a channel of part l in channel-shuffle order (slot p <- group p mod g_l), padded slots
included: the plain shuffle when sizes match, and otherwise the routing that keeps the volumetric RF
(zero-padded slots there would leave the last group of part l+1 blind to some groups of part l; the
paper's own C = 62 example does that).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..checks import is_int, is_number
from ..registry import register_conv
from .chain import ChainPart, ChainPlan, Gather, GroupConvChain
from .channel import Reach, chain_reach
from .examples import Draw, ExampleShape
from .space import Dimension, FloatRange, IntRange
from .spec import as_pair, conv_output_hw

__all__ = [
    "OptimizedSeparableConv2d",
    "OsepPart",
    "OsepPlan",
    "SpatialOptimizedSeparableConv2d",
    "VolumetricRF",
    "plan_osep",
    "volumetric_rf",
]

POLICIES = ("min", "linear", "bottleneck", "inverted")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class OsepPart:
    """One group conv of a plan: nominal channels, kernel, groups, and the padded channel counts."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    groups: int
    in_padded: int  # groups · ceil(in_channels / groups): input slots the group conv reads
    out_padded: int  # groups · ceil(out_channels / groups): channels it writes

    @property
    def channels_per_group(self) -> int:
        return self.in_padded // self.groups

    @property
    def params(self) -> int:
        return self.out_padded * self.channels_per_group * self.kernel_size[0] * self.kernel_size[1]


@dataclass(frozen=True)
class OsepPlan:
    """The result of Algorithm 1: the parts, eq. 17's continuous group counts, and the costs."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    gamma: float
    spatial: bool
    parts: tuple[OsepPart, ...]
    continuous_groups: tuple[float, ...]

    @property
    def n_parts(self) -> int:
        return len(self.parts)

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(p.groups for p in self.parts)

    @property
    def params(self) -> int:
        return sum(p.params for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-able data: each part's channels, kernel, groups, channels per group, padded widths
        and parameters; eq. 17's continuous group counts; the total parameters."""
        parts = [{"in": p.in_channels, "out": p.out_channels, "kernel": list(p.kernel_size), "groups": p.groups,
                  "channels_per_group": p.channels_per_group, "in_padded": p.in_padded, "out_padded": p.out_padded,
                  "params": p.params} for p in self.parts]
        return {"operator": "sosep" if self.spatial else "osep", "parts": parts,
                "continuous_groups": list(self.continuous_groups), "params": self.params}

    def geometry(
        self, stride: Any = 1, padding: Any = None, dilation: Any = 1
    ) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
        """(stride, padding, dilation) of every part for a layer with these arguments (default padding:
        'same' for odd kernels). Per axis, the one part with a kernel > 1 carries the axis (the first part
        when none has); parts sharing an axis need stride 1, dilation 1 and padding 0 on it, since zero
        padding between two spatial convs is not the padding of their composition."""
        s, d = as_pair("osep", "stride", stride, 1), as_pair("osep", "dilation", dilation, 1)
        if padding is None:
            padding = tuple(di * (k - 1) // 2 for di, k in zip(d, self.kernel_size, strict=True))
        p = as_pair("osep", "padding", padding, 0)
        out: list[list[list[int]]] = [[[1, 1], [0, 0], [1, 1]] for _ in self.parts]
        for axis in (0, 1):
            spatial_parts = [i for i, part in enumerate(self.parts) if part.kernel_size[axis] > 1]
            if len(spatial_parts) > 1:
                if (s[axis], d[axis], p[axis]) != (1, 1, 0):
                    raise ValueError(
                        "osep: parts that share a spatial axis need stride 1, dilation 1 and padding 0 on it "
                        f"(got stride {s}, dilation {d}, padding {p} with kernel_sizes "
                        f"{[q.kernel_size for q in self.parts]})"
                    )
                continue
            carrier = spatial_parts[0] if spatial_parts else 0
            out[carrier][0][axis], out[carrier][1][axis], out[carrier][2][axis] = s[axis], p[axis], d[axis]
        return [(tuple(a), tuple(b), tuple(c)) for a, b, c in out]

    def part_output_hw(self, in_hw: tuple[int, int], **conv_args: Any) -> list[tuple[int, int]]:
        hw, sizes = in_hw, []
        for part, (s, p, d) in zip(self.parts, self.geometry(**conv_args), strict=True):
            hw = conv_output_hw(hw, part.kernel_size, s, p, d)
            sizes.append(hw)
        return sizes

    def macs(self, in_hw: tuple[int, int], **conv_args: Any) -> int:
        """MACs at batch 1 as the paper counts them (padded group convs at full size)."""
        sizes = self.part_output_hw(in_hw, **conv_args)
        return sum(part.params * h * w for part, (h, w) in zip(self.parts, sizes, strict=True))

    def chain(self, stride: Any = 1, padding: Any = None, dilation: Any = 1, conv_groups: int = 1) -> ChainPlan:
        """The plan as a chain of group convs with their routing (`plan_routing`), for a layer with this
        geometry, replicated over `conv_groups` independent conv groups."""
        parts = tuple(ChainPart(part.in_padded, part.out_padded, part.kernel_size, part.groups, s, p, d)
                      for part, (s, p, d) in zip(self.parts, self.geometry(stride, padding, dilation), strict=True))
        sources = [self.in_channels] + [part.out_padded for part in self.parts]
        kinds = ["pad"] + ["general"] * (len(self.parts) - 1) + ["prefix"]
        gathers = tuple(None if index is None else Gather(index, source, kind)
                        for index, source, kind in zip(plan_routing(self), sources, kinds, strict=True))
        return ChainPlan(self.in_channels, parts, gathers).replicate(conv_groups)


def _internal_channels(policy: Any, c_in: int, c_out: int, n: int) -> list[int]:
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(
                f"plan_osep: policy must be one of {', '.join(POLICIES)} or channel counts, got {policy!r}"
            )
        value = {
            "min": min(c_in, c_out),
            "linear": (c_in + c_out) / 2,
            "bottleneck": max(c_in, c_out) / 4,
            "inverted": 4 * min(c_in, c_out),
        }[policy]
        return [max(1, math.floor(value + 0.5))] * (n - 1)
    channels = [policy] * (n - 1) if is_int(policy) else list(policy)
    if len(channels) != n - 1 or any(not is_int(c) or c < 1 for c in channels):
        raise ValueError(f"plan_osep: explicit channels need {n - 1} positive ints for {n} parts, got {policy!r}")
    return channels


def _kernels(kernel: tuple[int, int], n: int, spatial: bool, given: Any) -> list[tuple[int, int]]:
    if given is not None:
        ks = [as_pair("plan_osep", "kernel_sizes", k, 1) for k in given]
        if len(ks) != n:
            raise ValueError(f"plan_osep: kernel_sizes needs {n} entries, got {len(ks)}")
        for axis, name in ((0, "height"), (1, "width")):
            if sum(k[axis] for k in ks) - (n - 1) != kernel[axis]:  # eq. 13
                raise ValueError(
                    f"plan_osep: kernel_sizes {ks} do not keep the receptive field along {name} "
                    f"(sum of sizes - (N - 1) must be {kernel[axis]}, eq. 13)"
                )
        return ks
    ks = [(1, 1)] * n
    mid = n // 2 - 1 if n > 1 else 0  # part ⌊N/2⌋, counted from 1
    if spatial and n > 1:
        ks[mid] = (kernel[0], 1)
        ks[mid + 1] = (1, kernel[1])
    else:
        ks[mid] = kernel
    return ks


def _geometric_level(need: float, sizes: list[int]) -> float:
    """(need · ∏ sizes)^(1/len(sizes)), eq. 17's common level. The product of hundreds of parts' sizes
    overflows a float: then in logs (only then, so that every plan a float holds keeps its exact rounding)."""
    try:
        return (need * math.prod(sizes)) ** (1 / len(sizes))
    except OverflowError:
        return math.exp((math.log(need) + sum(math.log(x) for x in sizes)) / len(sizes))


def _preset_groups(groups: Sequence[int | None] | None, channels: list[int], n: int) -> dict[int, float]:
    """The group counts the caller presets (masks), by part, checked against eq. 16."""
    fixed: dict[int, float] = {}
    if groups is None:
        return fixed
    groups = list(groups)
    if len(groups) != n:
        raise ValueError(f"plan_osep: groups needs {n} entries (int or None), got {len(groups)}")
    for i, g in enumerate(groups):
        if g is None:
            continue
        limit = min(channels[i], channels[i + 1])
        if not is_int(g) or not 1 <= g <= limit:
            raise ValueError(f"plan_osep: groups[{i}] must be an int in [1, {limit}] (eq. 16), got {g!r}")
        fixed[i] = g
    return fixed


def _eq17_groups(fixed: dict[int, float], channels: list[int], area: list[int], gamma: float, n: int
                 ) -> tuple[dict[int, float], dict[int, float]]:
    """Eq. 17 on the free parts, masking those whose groups leave [1, min(C_l, C_l+1)] (Algorithm 1): (the
    masked and preset group counts, the free parts' continuous channels per group)."""
    fixed = dict(fixed)
    n_cont: dict[int, float] = {}
    for _ in range(n + 1):
        free = [i for i in range(n) if i not in fixed]
        if not free:
            break
        covered = math.prod(channels[i] / fixed[i] for i in fixed)
        need = gamma * channels[0] / covered
        level = _geometric_level(need, [channels[i + 1] * area[i] for i in free])
        n_cont = {i: level / (channels[i + 1] * area[i]) for i in free}
        masked = {}
        for i in free:
            g = channels[i] / n_cont[i]
            if g < 1:
                masked[i] = 1
            elif g > min(channels[i], channels[i + 1]):
                masked[i] = min(channels[i], channels[i + 1])
        if not masked:
            break
        fixed.update(masked)
    return fixed, n_cont


def plan_osep(
    c_in: int,
    c_out: int,
    kernel_size: int | tuple[int, int],
    n_parts: int | str = 2,
    gamma: float = 1.0,
    policy: str | int | Sequence[int] = "min",
    spatial: bool = False,
    kernel_sizes: Sequence[int | tuple[int, int]] | None = None,
    groups: Sequence[int | None] | None = None,
) -> OsepPlan:
    """Algorithm 1 of the optimized-separable paper (see the module docstring).

    `n_parts="auto"` takes N = round(ln(γ·C_in·KH·KW)) (eq. 21), at least 2. `groups` presets (masks) the
    group count of some parts: a sequence of N ints or None (free).
    """
    c_in = _positive_int("c_in", c_in)
    c_out = _positive_int("c_out", c_out)
    kernel = as_pair("plan_osep", "kernel_size", kernel_size, 1)
    if not is_number(gamma) or not gamma > 0 or math.isinf(gamma):
        raise ValueError(f"plan_osep: gamma must be a positive number, got {gamma!r}")
    if not isinstance(spatial, bool):
        raise ValueError(f"plan_osep: spatial must be True or False, got {spatial!r}")
    if n_parts == "auto":
        n = max(2, round(math.log(gamma * c_in * kernel[0] * kernel[1])))
    elif is_int(n_parts) and n_parts >= 2:
        n = n_parts
    else:
        raise ValueError(f"plan_osep: n_parts must be an int >= 2 or 'auto', got {n_parts!r}")
    if spatial and n < 2:
        raise ValueError("plan_osep: the spatial variant needs n_parts >= 2")
    channels = [c_in, *_internal_channels(policy, c_in, c_out, n), c_out]
    ks = _kernels(kernel, n, spatial, kernel_sizes)
    area = [kh * kw for kh, kw in ks]
    fixed = _preset_groups(groups, channels, n)
    fixed, n_cont = _eq17_groups(fixed, channels, area, gamma, n)
    group_counts, continuous = [], []
    for i in range(n):
        if i in fixed:
            group_counts.append(int(fixed[i]))
            continuous.append(float(fixed[i]))
        else:
            per_group = math.ceil(n_cont[i] - 1e-9)
            group_counts.append(min(_ceil_div(channels[i], per_group), channels[i], channels[i + 1]))
            continuous.append(channels[i] / n_cont[i])
    _keep_channel_condition(group_counts, channels, area, gamma, set(groups_given(groups)))
    parts = [
        OsepPart(channels[i], channels[i + 1], ks[i], g, g * _ceil_div(channels[i], g),
                 g * _ceil_div(channels[i + 1], g))
        for i, g in enumerate(group_counts)
    ]
    return OsepPlan(c_in, c_out, kernel, float(gamma), spatial, tuple(parts), tuple(continuous))


def groups_given(groups: Sequence[int | None] | None) -> list[int]:
    """Indices of the parts whose group count the caller preset."""
    return [] if groups is None else [i for i, g in enumerate(groups) if g is not None]


def _keep_channel_condition(
    group_counts: list[int], channels: list[int], area: list[int], gamma: float, preset: set[int]
) -> None:
    """Rounding g_l = ceil(C_l / ceil(n_l)) can leave the integer channels per group ceil(C_l / g_l) with a
    product below γ·C_1 (eq. 15). Lower group counts, where it costs the fewest parameters, until it holds."""
    def per_group(i: int) -> int:
        return _ceil_div(channels[i], group_counts[i])

    while math.prod(per_group(i) for i in range(len(group_counts))) < gamma * channels[0] - 1e-9:
        best, best_cost = None, math.inf
        for i, g in enumerate(group_counts):
            if i in preset or g == 1:
                continue
            # the next smaller group count that actually widens the groups
            g_next = g - 1
            while g_next > 1 and _ceil_div(channels[i], g_next) == per_group(i):
                g_next -= 1
            cost = (g_next * _ceil_div(channels[i + 1], g_next) * _ceil_div(channels[i], g_next)
                    - g * _ceil_div(channels[i + 1], g) * per_group(i)) * area[i]
            if cost < best_cost:
                best, best_cost = (i, g_next), cost
        if best is None:
            return  # only preset groups left to change: the plan keeps the caller's choice
        group_counts[best[0]] = best[1]


def _positive_int(name: str, value: Any) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"plan_osep: {name} must be a positive int, got {value!r}")
    return value


def _mixed_radix_routing(plan: OsepPlan) -> list[list[int]]:
    """The input slots of parts 2..N, as indices into the outputs of the part before (one conv group).

    After part 1 each real group a (one that reads at least one real input) is a class of inputs. Number
    the K classes in mixed radix with the digits' radices r_k = channels per group of part k (k >= 2).
    A level-k block is the set of classes that agree on all digits above k; part-k group j covers level-k
    block j mod M_k (M_k = number of level-k blocks) by reading, in slot t, a part-(k-1) group of block
    r_k·b + t (the level-(k-1) blocks making it up; repeats where the last block is short). Level N has one
    block once the channel condition holds, so every output reaches every input. With N = 2 and matching
    sizes this is exactly the channel shuffle: slot t of group j reads position j of part-1 group t.
    """
    parts = plan.parts
    first = parts[0]
    classes = _ceil_div(plan.in_channels, first.channels_per_group)  # part-1 groups with real inputs
    # block of every group of the part before; part 1: group a is class a (groups reading only zero
    # padding hold no class: None)
    group_block: list[int | None] = [a if a < classes else None for a in range(first.groups)]
    n_blocks, block_size = classes, 1
    routes = []
    for left, right in itertools.pairwise(parts):
        per_group = left.out_padded // left.groups
        radix = right.channels_per_group
        by_block: dict[int, list[int]] = {}
        for a, b in enumerate(group_block):
            if b is not None:
                by_block.setdefault(b, []).append(a)
        block_size *= radix
        next_blocks = _ceil_div(classes, block_size)
        turn = {b: 0 for b in by_block}  # round robin over the groups holding a block
        uses = [0] * left.groups  # round robin over a group's output channels
        route = []
        for j in range(right.groups):
            target = j % next_blocks
            for t in range(radix):
                wanted = (target * radix + t) % n_blocks
                holders = by_block.get(wanted) or by_block[min(by_block, key=lambda b: abs(b - wanted))]
                a = holders[turn.get(wanted, 0) % len(holders)]
                turn[wanted] = turn.get(wanted, 0) + 1
                route.append(a * per_group + uses[a] % per_group)
                uses[a] += 1
        routes.append(route)
        group_block = [j % next_blocks for j in range(right.groups)]
        n_blocks = next_blocks
    return routes


def plan_routing(plan: OsepPlan) -> list[Tensor | None]:
    """The N+1 channel gathers of a plan for one conv group: input -> part 1 (zero padding: `Gather.pad`),
    part l -> part l+1 (`_mixed_radix_routing`), part N -> output (truncation: `Gather.prefix`). None where the
    gather is the identity. Zero-padding slots index one past the source. `OsepPlan.chain` replicates them
    over conv groups."""
    parts = plan.parts
    first, last = parts[0], parts[-1]
    gathers: list[Tensor | None] = [
        None if first.in_padded == plan.in_channels else Gather.pad(plan.in_channels, first.in_padded).index
    ]
    for route, left, right in zip(_mixed_radix_routing(plan), parts[:-1], parts[1:], strict=True):
        identity = route == list(range(left.out_padded)) and right.in_padded == left.out_padded
        gathers.append(None if identity else torch.tensor(route, device="cpu"))
    gathers.append(None if last.out_padded == plan.out_channels
                   else Gather.prefix(last.out_padded, plan.out_channels).index)
    return gathers


@register_conv("osep")
class OptimizedSeparableConv2d(GroupConvChain):
    """Optimized separable convolution: the group convs of `plan_osep`, with channel routing between them.

    Options: `n_parts` (N, default 2, or "auto"), `gamma` (overlap coefficient, default 1), `policy`
    (internal channels), `spatial` (the spatial variant, `sosep`), `kernel_sizes`, `part_groups` (masked
    group counts). No BN or bias inside; the layer's bias (if any) is added at the end. A conv with
    `groups` > 1 is planned per conv group. Linear: dense_weight/fold compose the parts exactly.
    """

    search_space: ClassVar[dict[str, Dimension]] = {
        "gamma": FloatRange(0.25, 4.0, log=True), "n_parts": IntRange(2, 3),
    }

    spatial_default: ClassVar[bool] = False

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        return shape, {"n_parts": draw.choice([2, 2, 3]), "gamma": draw.choice([1.0, 1.0, 0.5, 2.0]),
                       "policy": draw.choice(["min", "linear", "bottleneck", "inverted"])}

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
        n_parts: int | str = 2,
        gamma: float = 1.0,
        policy: str | int | Sequence[int] = "min",
        spatial: bool | None = None,
        kernel_sizes: Sequence[int | tuple[int, int]] | None = None,
        part_groups: Sequence[int | None] | None = None,
        path: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        spatial = self.spatial_default if spatial is None else spatial
        g = self.groups
        self.plan = plan_osep(self.in_channels // g, self.out_channels // g, self.kernel_size, n_parts, gamma,
                              policy, spatial, kernel_sizes, part_groups)
        self.build_chain(self.plan.chain(self.stride, self.padding, self.dilation, g))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", groups_per_part={self.plan.groups}"


@register_conv("sosep")
class SpatialOptimizedSeparableConv2d(OptimizedSeparableConv2d):
    """Spatial optimized separable convolution: osep whose kernel splits into KH×1 and 1×KW parts."""

    search_space: ClassVar[dict[str, Dimension]] = {
        "gamma": FloatRange(0.25, 4.0, log=True), "n_parts": IntRange(2, 3),
    }

    spatial_default = True


# What a chain of convs sees, its spatial receptive field and which inputs each output reaches: the one
# result type of connectivity questions (`channel.Reach`: `ok` is the volumetric receptive-field condition)
VolumetricRF = Reach


def volumetric_rf(
    target: OsepPlan | OptimizedSeparableConv2d | Sequence[nn.Module | Tensor],
    kernel_size: int | tuple[int, int] | None = None,
) -> Reach:
    """Check the volumetric receptive-field condition of a plan, an osep operator, or a chain of convs
    (nn.Conv2d / ChannelGather / permutation tensors, applied left to right). `kernel_size` is the conv
    the chain replaces (taken from the plan or operator when not given)."""
    expected = None if kernel_size is None else as_pair("volumetric_rf", "kernel_size", kernel_size, 1)
    if isinstance(target, OsepPlan):
        return target.chain().reach(expected or target.kernel_size)
    if isinstance(target, OptimizedSeparableConv2d):
        return target.chain_plan.reach(expected or target.kernel_size)
    return chain_reach(list(target), expected)
