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
coefficients Kaiming normal. Sharing is decided for the whole model (`share_coefficients`, which
`create_model` and `convert` call); `expand` loosens sharing or adds atoms without changing outputs.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import register_conv
from .base import ConvOperator
from .chain import ChainPart, ChainPlan, Gather, compose_plan, deploy_plan, gather_indices
from .channel import ChannelGather
from .spec import Cost, conv_macs, float_bits

__all__ = ["ACDCConv2d", "CoefficientBank", "expand", "fit_shared_coefficients", "share_coefficients"]

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


def _orthogonal_atoms(atoms: Tensor) -> None:
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

    has_feature_path = True
    __jit_ignored_attributes__: ClassVar[list[str]] = [
        *ConvOperator.__jit_ignored_attributes__, "_shared_bank", "_fit_target",
    ]

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
        if isinstance(atoms, bool) or not isinstance(atoms, int) or atoms < 1:
            raise ValueError(f"ACDCConv2d: atoms must be a positive int, got {atoms!r}")
        if share not in SHARES:
            raise ValueError(f"ACDCConv2d: share must be one of {', '.join(SHARES)}, got {share!r}")
        if isinstance(atom_drop, bool) or not isinstance(atom_drop, int | float) or not 0 <= atom_drop < 1:
            raise ValueError(f"ACDCConv2d: atom_drop must be in [0, 1), got {atom_drop!r}")
        self.atoms_count, self.share, self.atom_drop = atoms, share, float(atom_drop)
        self.group_size = group_size
        cin, cout = self.in_channels, self.out_channels
        if group_size is None:
            sets, block, in_gather = 1, (cout, cin // self.groups), None
            self.conv_groups = self.groups
        else:
            if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
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
        _orthogonal_atoms(self.atoms)
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
        return self._fit_error(weight)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", atoms={self.atoms_count}, share={self.share!r}"
        if self.group_size is not None:
            s += f", group_size={self.group_size}"
        if self.atom_drop:
            s += f", atom_drop={self.atom_drop}"
        return s

    @classmethod
    def finalize_model(cls, model: nn.Module, input_size: tuple[int, ...] | None = None,
                       example: Any = None) -> None:
        """Called by create_model / convert: bind the shared banks (see `share_coefficients`)."""
        share_coefficients(model, input_size, example)


def _layers_in_forward_order(model: nn.Module, input_size: tuple[int, ...] | None,
                             example: Any = None) -> list[tuple[ACDCConv2d, tuple]]:
    """(layer, output shape) of every ACDC layer, in the order one forward pass calls them: `model(*example)`
    (a tensor or a tuple of the forward's arguments), else a batch of zeros of `input_size` (C, H, W), else
    the registered model's input size; a model that is none of these cannot be run, and says so."""
    layers = [m for m in model.modules() if isinstance(m, ACDCConv2d)]
    if not layers:
        return []
    first = next(iter(model.parameters()))
    if example is None:
        if input_size is None:
            input_size = _registered_input_size(model)
        if input_size is None:
            raise ValueError("ACDC with share='stage' finds its stages by running the model once, and this model's "
                             "input is unknown: pass convert(..., input_size=(C, H, W)) or example=<an input>")
        example = torch.zeros((1, *input_size), device=first.device, dtype=first.dtype)
    args = example if isinstance(example, tuple) else (example,)
    seen: list[tuple[ACDCConv2d, tuple]] = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append((mod, tuple(out.shape))))
             for m in layers]
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(*args)
    except Exception as err:
        raise ValueError(f"ACDC with share='stage' runs the model once to find its stages, and that forward pass "
                         f"failed on the example input ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                         "pass the right input_size=(C, H, W) or example=") from None
    finally:
        for h in hooks:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    order, done = [], set()
    for layer, shape in seen:
        if id(layer) not in done:
            done.add(id(layer))
            order.append((layer, shape))
    # layers the forward never reached keep their own banks
    return order


def _registered_input_size(model: nn.Module) -> tuple[int, int, int] | None:
    config = getattr(model, "build_config", None)
    if not config:
        return None
    from ..registry import model_entry

    size = model_entry(config["model"]).input_size
    return (config.get("in_chans", size[0]), size[1], size[2])


def share_coefficients(model: nn.Module, input_size: tuple[int, ...] | None = None, example: Any = None) -> None:
    """Give every sharing unit of `model` one CoefficientBank (each layer's `share` option says which
    unit it belongs to: itself, its stage, or the net; layers also group by their number of atoms).

    A stage is a run of layers, in execution order, with equal output width and feature size, found by one
    forward pass on `example` (or zeros of `input_size`, or the registered model's input size); only
    share="stage" needs that pass: "net" takes the layers in the model's order and "layer" shares nothing.
    Layers initialised by from_conv are fitted jointly to their original kernels (`fit_shared_coefficients`).
    """
    for members in _sharing_units(model, input_size, example):
        _bind(members)


def _sharing_units(model: nn.Module, input_size: tuple[int, ...] | None,
                   example: Any = None) -> list[list[ACDCConv2d]]:
    """The layers that share one bank, per unit: by the `share` scope of each layer (stage: a run of layers
    with equal output width and feature size, in execution order) and its number of atoms. Layers with
    share="layer" form no unit."""
    layers = [m for m in model.modules() if isinstance(m, ACDCConv2d)]
    if any(m.share == "stage" for m in layers):
        ordered = _layers_in_forward_order(model, input_size, example)
    else:  # net and layer scopes need no stages: no forward pass, so any model converts
        ordered = [(m, ()) for m in layers if m.share != "layer"]
    units: dict[Any, list[ACDCConv2d]] = {}
    stage, last_shape = 0, None
    for layer, shape in ordered:
        if shape[1:] != last_shape:
            stage, last_shape = stage + 1, shape[1:]
        if layer.share != "layer":
            key = ("net",) if layer.share == "net" else ("stage", stage)
            units.setdefault((*key, layer.atoms_count), []).append(layer)
    return list(units.values())


def _bind(members: list[ACDCConv2d]) -> CoefficientBank:
    out = max(m.block[0] for m in members)
    cin = max(m.block[1] for m in members)
    ref = members[0].bank.coefficients
    with torch.device(ref.device):
        bank = CoefficientBank(out, cin, members[0].atoms_count).to(dtype=ref.dtype)
    for i, layer in enumerate(members):
        layer._use_bank(bank, owner=i == 0)
    bank._members = list(members)
    targets = {m: m._fit_target for m in members if m._fit_target is not None}
    if targets and len(targets) == len(members):
        with torch.no_grad():
            fit_shared_coefficients(bank, targets)
            for m, t in targets.items():
                m.fit_error = m._fit_error(t)
    for m in members:
        m._fit_target = None  # only needed until the joint fit
    return bank


@torch.no_grad()
def fit_shared_coefficients(bank: CoefficientBank, targets: dict[ACDCConv2d, Tensor], iters: int = 30) -> None:
    """Least squares for the shared A and every member's atoms against dense target kernels, by
    alternating minimisation (each step an exact linear least-squares problem, solved with the SVD-based
    driver so that rank-deficient cases, m > kh·kw included, stay stable); keeps the best iterate.

    A-step: every entry A[o, i] is fitted to the blocks of the members whose slice contains it; members'
    slices are leading blocks, so the entries split into rectangles covered by the same members, each one
    least-squares solve. D-step: each atom set is the least-squares solution for the fixed A. Atoms start
    from the top right singular vectors of each member's blocks.
    """
    a = bank.coefficients
    m = a.shape[2]
    blocks = {mem: mem.blocks_from_dense(t.to(a)) for mem, t in targets.items()}  # (sets, so, si, L)
    atoms: dict[ACDCConv2d, Tensor] = {}
    for mem, b in blocks.items():
        _, _, vh = torch.linalg.svd(b.reshape(-1, b.shape[-1]), full_matrices=False)
        d = torch.zeros(m, b.shape[-1], dtype=a.dtype, device=a.device)
        r = min(m, vh.shape[0])
        d[:r] = vh[:r]
        atoms[mem] = d.expand(b.shape[0], m, b.shape[-1]).clone()
    o_cuts = sorted({0, *(mem.block[0] for mem in blocks)})
    i_cuts = sorted({0, *(mem.block[1] for mem in blocks)})
    rects = []
    for (o0, o1), (i0, i1) in itertools.product(itertools.pairwise(o_cuts), itertools.pairwise(i_cuts)):
        covering = [mem for mem in blocks if mem.block[0] >= o1 and mem.block[1] >= i1]
        if covering:
            rects.append(((o0, o1), (i0, i1), covering))
    total = sum(b.pow(2).sum() for b in blocks.values()).clamp_min(1e-30)
    driver = "gelsd" if a.device.type == "cpu" else None

    def solve(lhs: Tensor, rhs: Tensor) -> Tensor:
        return torch.linalg.lstsq(lhs, rhs, driver=driver).solution

    def residual() -> float:
        err = 0.0
        for mem, b in blocks.items():
            so, si = mem.block
            fitted = torch.einsum("osm,jml->josl", a[:so, :si], atoms[mem])
            err += float((fitted - b).pow(2).sum())
        return err / float(total)

    best, best_state = math.inf, None
    for _ in range(iters):
        for (o0, o1), (i0, i1), covering in rects:
            # rows: every (member, set, tap) whose block covers the rectangle; columns: its entries
            basis = torch.cat([atoms[mem].permute(0, 2, 1).reshape(-1, m) for mem in covering])  # (ΣL, m)
            values = torch.cat([blocks[mem][:, o0:o1, i0:i1].permute(0, 3, 1, 2).reshape(-1, (o1 - o0) * (i1 - i0))
                                for mem in covering])  # (ΣL, entries)
            a[o0:o1, i0:i1] = solve(basis, values).t().reshape(o1 - o0, i1 - i0, m)
        for mem, b in blocks.items():
            so, si = mem.block
            lhs = a[:so, :si].reshape(1, so * si, m).expand(b.shape[0], -1, -1)
            atoms[mem] = solve(lhs, b.reshape(b.shape[0], so * si, -1))
        err = residual()
        if err < best - 1e-12:
            best, best_state = err, (a.clone(), {mem: d.clone() for mem, d in atoms.items()})
        else:
            break  # converged, or the numerics stopped helping
    if best_state is not None:
        a.copy_(best_state[0])
        atoms = best_state[1]
    for mem, d in atoms.items():
        mem.atoms.copy_(d.reshape_as(mem.atoms))
        mem._cache = mem._fast = None


def expand(model: nn.Module, share: str | None = None, atoms: int | None = None,
           input_size: tuple[int, ...] | None = None, example: Any = None) -> nn.Module:
    """Architecture adaptivity (paper appendix E): make a trained ACDC model less shared (`share`:
    "net" -> "stage" -> "layer") and/or give it more atoms, in place, with outputs unchanged at the moment
    of expansion; every parameter stays trainable.

    Less sharing copies each new unit's slice of its old bank; more atoms append zero coefficients and
    fresh orthogonal atoms (so A·D is unchanged, and both start to learn at the next step).
    """
    layers = [m for m in model.modules() if isinstance(m, ACDCConv2d)]
    if not layers:
        raise ValueError("expand: the model has no ACDC layers")
    if share is not None:
        if share not in SHARES:
            raise ValueError(f"expand: share must be one of {', '.join(SHARES)}, got {share!r}")
        rank = {s: i for i, s in enumerate(SHARES[::-1])}  # net 0, stage 1, layer 2
        if any(rank[share] < rank[layer.share] for layer in layers):
            raise ValueError(f"expand: cannot go from {layers[0].share!r} to more sharing ({share!r})")
    old = {layer: (layer.bank.coefficients.detach().clone(), layer.atoms.detach().clone()) for layer in layers}
    if atoms is not None and (
        isinstance(atoms, bool) or not isinstance(atoms, int) or atoms < max(lay.atoms_count for lay in layers)
    ):
        raise ValueError(f"expand: atoms must be an int >= the current number of atoms, got {atoms!r}")
    for layer in layers:
        a, d = old[layer]
        if share is not None:
            layer.share = share
        if atoms is not None and atoms > layer.atoms_count:
            extra = atoms - layer.atoms_count
            fresh = torch.empty(d.shape[0], extra, *d.shape[2:], dtype=d.dtype, device=d.device)
            _orthogonal_atoms(fresh)
            d = torch.cat([d, fresh], 1)
            a = torch.cat([a, a.new_zeros(*a.shape[:2], extra)], 2)
            layer.atoms_count = atoms
            layer.atoms = nn.Parameter(d)
        own = CoefficientBank(*layer.block, layer.atoms_count).to(a)
        with torch.no_grad():
            own.coefficients.copy_(a[: layer.block[0], : layer.block[1]])
        layer._use_bank(own, owner=True)
        own._members = [layer]
    # rebind the wider units, each new bank starting as its members' common slice of the old one
    for members in _sharing_units(model, input_size, example):
        coefficients = [m.bank.coefficients.detach().clone() for m in members]
        bank = _bind(members)
        with torch.no_grad():
            for c in coefficients:
                bank.coefficients[: c.shape[0], : c.shape[1]] = c
    return model

