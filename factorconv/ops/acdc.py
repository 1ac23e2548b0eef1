"""ACDC (paper 003, "A joint subspace view to CNNs"): atom-coefficient convolution with coefficients
shared across a network, its stages, single layers, or filter groups.

A layer's kernel is K = A[:c_out, :c_in, :] · D: m filter atoms D (m × kh × kw, the layer's own) combined
by coefficients A (c_out × c_in × m) held in a `CoefficientBank`. A bank is shared by reference by every
layer of its sharing unit, sized to the largest c_out and c_in there; smaller layers use its leading
slice. The bank is a child module of the first layer of its unit only, so a state_dict stores it once
and parameters() counts it once.

Options: `atoms` (m), `share` ("layer", "stage": a run of layers with equal output width and feature
size, "net"), `group_size` (s: the ACDC-g variants: groups of s channels, A is s × s × m, one atom set
per group, outputs combined by a channel shuffle), `atom_drop` (p: in training each atom is zeroed with
probability p and the survivors scaled by 1/(1-p); never in eval). Atoms are orthogonally initialised,
coefficients Kaiming normal. Sharing is decided for the whole model, in `factorconv.sharing`
(`share_coefficients`, which `create_model` and `convert` call; `expand`, which loosens sharing or adds atoms
without changing outputs); the joint least-squares fit of a unit is in `factorconv.ops.fitting`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import is_int, is_number
from ..registry import register_conv
from .base import ConvOperator
from .chain import ChainPart, ChainPlan, Gather, compose_plan, deploy_plan, gather_indices
from .channel import ChannelGather
from .examples import Draw, ExampleShape
from .fitting import fit_shared_coefficients
from .space import Choice, Dimension, IntRange
from .spec import Cost, conv_macs, float_bits

__all__ = ["SHARES", "ACDCConv2d", "CoefficientBank", "orthogonal_atoms"]

SHARES = ("layer", "stage", "net")


class CoefficientBank(nn.Module):
    """Atom coefficients A (out × in × m) shared by the ACDC layers of one sharing unit.

    In training the bank composes the kernels of all its members at once (one matmul per shape of member,
    instead of one composition per layer), and hands each member its kernel; a member asking a second
    time starts a new composition, so every forward pass has its own autograd graph. `batched = False`
    makes every member compose its own kernel instead (the same values; benchmarks/bench_acdc.py measures
    what batching buys).
    """

    batched: bool = True

    def __init__(self, out_channels: int, in_channels: int, atoms: int) -> None:
        super().__init__()
        self.coefficients = nn.Parameter(torch.empty(out_channels, in_channels, atoms))
        self.reset_parameters()
        self._members: list[ACDCConv2d] = []  # a plain list: the members live elsewhere in the model
        self._batch: dict[int, Tensor] = {}
        self._consumed: set[int] = set()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.coefficients)  # fan-in = in × m: the composed kernel is He-scaled

    @property
    def atoms(self) -> int:
        return self.coefficients.shape[2]

    def extra_repr(self) -> str:
        out, cin, m = self.coefficients.shape
        return f"{out}, {cin}, atoms={m}, members={len(self._members)}"

    def kernel_for(self, member: ACDCConv2d) -> Tensor:
        """The member's grouped-conv weight from this forward pass's batched composition."""
        key = id(member)
        if key not in self._batch or key in self._consumed:
            self._compose_all()
        self._consumed.add(key)
        return self._batch[key]

    def _compose_all(self) -> None:
        a = self.coefficients
        m = a.shape[2]
        self._batch, self._consumed = {}, set()
        by_shape: dict[tuple[int, int, int, int], list[ACDCConv2d]] = {}
        for member in self._members:
            so, si = member.block
            by_shape.setdefault((so, si, *member.kernel_size), []).append(member)
        for (so, si, kh, kw), members in by_shape.items():
            atoms = [mem.effective_atoms() for mem in members]  # (sets, m, kh, kw) each
            stacked = torch.cat([d.reshape(-1, m, kh * kw).permute(1, 0, 2).reshape(m, -1) for d in atoms], 1)
            kernels = (a[:so, :si].reshape(so * si, m) @ stacked).view(so, si, -1, kh, kw)
            offset = 0
            for mem, d in zip(members, atoms, strict=True):
                sets = d.shape[0]
                block = kernels[:, :, offset:offset + sets].permute(2, 0, 1, 3, 4)
                self._batch[id(mem)] = block.reshape(sets * so, si, kh, kw)
                offset += sets


def orthogonal_atoms(atoms: Tensor) -> None:
    """Orthogonal rows (or columns, when m > kh·kw) for every atom set; nothing to do on the meta device."""
    if atoms.is_meta:
        return
    with torch.no_grad():
        for d in atoms:
            nn.init.orthogonal_(d.view(d.shape[0], -1))


@register_conv("acdc", replace_stem=True)
class ACDCConv2d(ConvOperator):
    """Atom-coefficient convolution: K = A[:c_out, :c_in] · D (module docstring).

    With `group_size` s: input and output channels form groups of min(s, C) channels; output group j reads
    input group j mod (its count) (each shallow group feeds several deep ones when channels grow), has its
    own atoms D_j, and uses the shared A[:so, :si]; a channel shuffle mixes the groups' outputs. The conv's
    own `groups` must then be 1.
    """

    search_space: ClassVar[dict[str, Dimension]] = {
        "atoms": IntRange(2, 16), "share": Choice("net", "stage", "layer"),
    }

    has_feature_path = True
    __jit_ignored_attributes__: ClassVar[list[str]] = [
        *ConvOperator.__jit_ignored_attributes__, "_shared_bank", "_fit_target",
    ]

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        options: dict[str, Any] = {"atoms": draw.integer(1, 12), "atom_drop": draw.choice([0.0, 0.2])}
        if shape.groups == 1 and draw.boolean():  # ACDC-g: groups of s channels, channels kept or grown
            s = draw.integer(1, 6)
            cin = s * draw.integer(1, 3)
            shape = shape.with_(in_channels=cin, out_channels=cin * draw.integer(1, 2))
            options["group_size"] = s
        return shape, options

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
        atoms: int = 8,
        share: str = "layer",
        group_size: int | None = None,
        atom_drop: float = 0.0,
        path: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        if not is_int(atoms) or atoms < 1:
            raise ValueError(f"ACDCConv2d: atoms must be a positive int, got {atoms!r}")
        if share not in SHARES:
            raise ValueError(f"ACDCConv2d: share must be one of {', '.join(SHARES)}, got {share!r}")
        if not is_number(atom_drop) or not 0 <= atom_drop < 1:
            raise ValueError(f"ACDCConv2d: atom_drop must be in [0, 1), got {atom_drop!r}")
        self.atoms_count, self.share, self.atom_drop = atoms, share, float(atom_drop)
        self.group_size = group_size
        cin, cout = self.in_channels, self.out_channels
        if group_size is None:
            sets, block, in_gather = 1, (cout, cin // self.groups), None
            self.conv_groups = self.groups
        else:
            if not is_int(group_size) or group_size < 1:
                raise ValueError(f"ACDCConv2d: group_size must be a positive int, got {group_size!r}")
            if self.groups != 1:
                raise ValueError("ACDCConv2d: group_size (the ACDC-g variants) needs a conv with groups=1")
            si, so = min(group_size, cin), min(group_size, cout)
            if cin % si or cout % so:
                raise ValueError(
                    f"ACDCConv2d: group_size {group_size} must divide in_channels ({cin}) and out_channels ({cout}) "
                    "where they are larger than it"
                )
            g_in, g_out = cin // si, cout // so
            if g_out < g_in:  # fewer outputs than inputs: one group per input group
                if cout % g_in:
                    raise ValueError(
                        f"ACDCConv2d: out_channels ({cout}) must split over the {g_in} input groups of size {si}"
                    )
                so, g_out = cout // g_in, g_in
            sets, block = g_out, (so, si)
            replicate = [(j % g_in) * si + t for j in range(sets) for t in range(si)]
            in_gather = None if sets == g_in else torch.tensor(replicate, device="cpu")
            self.conv_groups = sets
        self.sets, self.block = sets, block
        # ACDC-g is a one-part chain: the input gather (groups of inputs shared by several output groups), the
        # grouped conv, the output shuffle; composed and deployed as every chain is (chain.py)
        gathers = (None if in_gather is None else Gather(in_gather, cin),
                   Gather.shuffle(cout, sets) if sets > 1 else None)
        self.chain_plan = ChainPlan(cin, (ChainPart(sets * block[1] if sets > 1 else cin, cout, self.kernel_size,
                                                    self.conv_groups, self.stride, self.padding, self.dilation),),
                                    gathers)
        self.in_gather = nn.Identity() if gathers[0] is None else gathers[0].module()
        self.out_shuffle = nn.Identity() if gathers[1] is None else gathers[1].module()
        kh, kw = self.kernel_size
        self.atoms = nn.Parameter(torch.empty(sets, atoms, kh, kw))
        orthogonal_atoms(self.atoms)
        self.coefficient_bank = CoefficientBank(*block, atoms)
        self.coefficient_bank._members.append(self)
        self._fit_target: Tensor | None = None

    # -- the bank --------------------------------------------------------------------------------------
    @property
    def bank(self) -> CoefficientBank:
        own = self._modules.get("coefficient_bank")
        return own if own is not None else self.__dict__["_shared_bank"]

    @property
    def owns_bank(self) -> bool:
        return "coefficient_bank" in self._modules

    def _use_bank(self, bank: CoefficientBank, owner: bool) -> None:
        """Point this layer at `bank` (registered as its child when it is the owner)."""
        if "coefficient_bank" in self._modules:
            del self._modules["coefficient_bank"]
        self.__dict__.pop("_shared_bank", None)
        if owner:
            self.coefficient_bank = bank
        else:
            object.__setattr__(self, "_shared_bank", bank)
        self._cache = self._fast = None

    def kernel_inputs(self) -> tuple[Tensor, ...]:
        own = tuple(t for t in (*self._parameters.values(), *self._buffers.values()) if t is not None)
        return (*own, self.bank.coefficients)

    # -- kernels -----------------------------------------------------------------------------------------
    def effective_atoms(self) -> Tensor:
        """The atoms, with atom-drop applied in training (a fresh draw per call)."""
        d = self.atoms
        if self.training and self.atom_drop > 0:
            keep = torch.empty(d.shape[0], d.shape[1], 1, 1, device=d.device, dtype=d.dtype)
            keep.bernoulli_(1 - self.atom_drop)
            d = d * keep / (1 - self.atom_drop)
        return d

    def group_weight(self, atoms: Tensor | None = None) -> Tensor:
        """The weight of the (grouped) conv this layer runs: (sets·so, si, kh, kw)."""
        d = self.effective_atoms() if atoms is None else atoms
        so, si = self.block
        kh, kw = self.kernel_size
        m = self.atoms_count
        a = self.bank.coefficients[:so, :si].reshape(so * si, m)
        k = (a @ d.reshape(self.sets, m, kh * kw).permute(1, 0, 2).reshape(m, -1)).view(so, si, self.sets, kh, kw)
        return k.permute(2, 0, 1, 3, 4).reshape(self.sets * so, si, kh, kw)

    def dense_weight(self) -> Tensor:
        return self._dense(self.group_weight(self.atoms))

    def forward_kernel(self) -> Tensor:
        """The grouped conv's weight (cached in eval); in training from the bank's batched composition of all
        its members, one matmul per member shape, unless the bank composes layer by layer (`batched`)."""
        if self._kernel_cacheable():
            return self.group_weight(self.atoms)
        if self.bank.batched and len(self.bank._members) > 1 and not torch.compiler.is_compiling():
            return self.bank.kernel_for(self)
        return self.group_weight()

    def _dense(self, weight: Tensor) -> Tensor:
        """Grouped weight -> the dense kernel of input gather, grouped conv and output shuffle."""
        if self.sets == 1:
            return weight.contiguous()
        return compose_plan(self.chain_plan, [weight],
                            indices=gather_indices([self.in_gather, self.out_shuffle])).contiguous()

    def kernel_conv(self, x: Tensor, weight: Tensor) -> Tensor:
        """The grouped conv with its input gather and output shuffle (ACDC-g), or the plain conv."""
        if self.sets == 1:
            return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        y = F.conv2d(self.in_gather(x), weight, None, self.stride, self.padding, self.dilation, self.sets)
        y = self.out_shuffle(y)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def feature_forward(self, x: Tensor) -> Tensor:
        """Atom sub-layer (every input channel through its group's m atoms), then coefficient sub-layer."""
        so, si = self.block
        m, sets = self.atoms_count, self.sets
        d = self.effective_atoms()  # (sets, m, kh, kw)
        x = self.in_gather(x)
        # channel c of group j is filtered by D_j: depthwise weight (sets·si·m, 1, kh, kw)
        depthwise = d.unsqueeze(1).expand(sets, si * self.conv_groups // sets, m, *self.kernel_size)
        depthwise = depthwise.reshape(-1, 1, *self.kernel_size)
        z = F.conv2d(x, depthwise, None, self.stride, self.padding, self.dilation, x.shape[1])
        # every set's outputs combine its group's atom features with the same A block
        a = self.bank.coefficients[:so, :si].reshape(so, si * m)
        pointwise = a.repeat(sets, 1).view(sets * so, si * m, 1, 1)
        y = self.out_shuffle(F.conv2d(z, pointwise, None, 1, 0, 1, self.conv_groups))
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def compose_macs(self) -> int:
        so, si = self.block
        return self.sets * so * si * self.atoms_count * self.kernel_size[0] * self.kernel_size[1]

    def feature_macs(self, in_hw: tuple[int, int]) -> int:
        so, si = self.block
        out_hw = self.spec.out_hw(in_hw)
        mid = self.conv_groups * si * self.atoms_count
        return conv_macs(mid, mid, self.kernel_size, mid, out_hw) + conv_macs(
            mid, self.sets * so, (1, 1), self.conv_groups, out_hw
        )

    def kernel_macs(self, in_hw: tuple[int, int]) -> int:
        """The kernel path runs the grouped conv (for ACDC-g, not the far larger dense fold)."""
        so, si = self.block
        return conv_macs(self.conv_groups * si, self.sets * so, self.kernel_size, self.conv_groups,
                         self.spec.out_hw(in_hw))

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        """Own atoms (+ bias), and the bank where this layer owns it; MACs of the (grouped) conv it runs."""
        params = sum(p.numel() for p in self.parameters())
        macs = self.kernel_macs(in_hw)
        deploy_params, deploy_bits, deploy_macs, _ = self.deploy_cost(in_hw, macs)
        return Cost(params, params * float_bits(self), macs, deploy_params, deploy_bits, deploy_macs)

    def factorized_size(self) -> tuple[int, int] | None:
        """ACDC-g's grouped conv (with its gathers); a layer of one set has only the fold."""
        if self.sets == 1:
            return None
        so, si = self.block
        n = self.sets * so * si * self.kernel_size[0] * self.kernel_size[1]
        n += self.out_channels if self.bias is not None else 0
        return n, n * float_bits(self)

    def factorized_deploy(self) -> nn.Module:
        """ACDC-g's grouped conv with its gathers (far smaller than the fold)."""
        with torch.no_grad():
            weight = self.group_weight(self.atoms).detach()
        return deploy_plan(self.chain_plan, [weight], self.bias)

    # -- fitting -----------------------------------------------------------------------------------------
    def blocks_from_dense(self, dense: Tensor) -> Tensor:
        """The part of a dense kernel this layer's structure can represent: (sets, so, si, kh·kw)."""
        so, si = self.block
        l_ = self.kernel_size[0] * self.kernel_size[1]
        if self.sets == 1:
            return dense.reshape(1, so, si, l_)
        rows = dense.flatten(2)
        if isinstance(self.out_shuffle, ChannelGather):  # undo the shuffle: rows in group order
            inverse = torch.empty_like(self.out_shuffle.index_cpu)
            inverse[self.out_shuffle.index_cpu] = torch.arange(inverse.numel())
            rows = rows.index_select(0, inverse.to(rows.device))
        g_in = self.in_channels // si
        out = [rows[j * so:(j + 1) * so, (j % g_in) * si:(j % g_in + 1) * si] for j in range(self.sets)]
        return torch.stack(out)

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        """Least squares for A and D (alternating, from the SVD of the blocks): exact for one layer with
        m >= kh·kw; with group_size, the part of the kernel outside the groups counts in the error."""
        if self.share != "layer":  # kept until share_coefficients fits the whole unit jointly
            self._fit_target = weight.detach().clone()
        fit_shared_coefficients(self.bank, {self: weight})
        if self.bias is not None:
            self.bias.copy_(bias if bias is not None else torch.zeros_like(self.bias))
        return self.kernel_error(weight)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", atoms={self.atoms_count}, share={self.share!r}"
        if self.group_size is not None:
            s += f", group_size={self.group_size}"
        if self.atom_drop:
            s += f", atom_drop={self.atom_drop}"
        return s

