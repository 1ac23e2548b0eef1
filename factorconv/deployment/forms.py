"""The exact forms an operator layer can ship in, as plain modules: what `deploy(objective="latency")` chooses
among by timing them in the runtime that ships the model.

Every operator has its size form (`op.deploy()`: the factorized convs where they are smaller, else the fold)
and its fold (the one dense conv it equals). Where the size form is a sequence of plain convs and channel
gathers (IGCV1/2/3, osep, ACDC-g, dsep, ssep), its algebra gives more exact forms:
- **merged**: the trailing run of 1x1 convs and the gathers between them is one linear map per pixel, shipped
  as one dense 1x1 conv (IGCV2's L-1 group 1x1 convs and their permutations; osep's shuffle and grouped 1x1).
  More MACs, one conv, no gather: the shuffles and permutations are absorbed into its weights.
- **regrouped**: a grouped spatial conv of g groups is also a grouped conv of any g' dividing g, its blocks
  zero outside the original groups; fewer, larger groups (4, 8 or 16 channels per group, or dense) trade
  MACs for a kernel the runtime runs faster (a depthwise 3x3 is slow in ONNX Runtime).
- BDSC's packed layer unpacks its bits at run time; **convs** is the same layer as a 1x1 conv with its
  BatchNorm folded in and a K×K conv with the ±α kernel precomputed.
Each form is a module that computes the layer's output to float rounding; `layer_forms` lists them without
duplicates (two forms of the same structure are one)."""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..functional import expand_grouped_kernel, take_grouped_kernel
from ..ops.chain import AddBias
from ..ops.channel import ChannelGather

__all__ = ["Form", "form_signature", "layer_forms", "merge_pointwise", "regroup"]

# channels per group that a regrouped spatial conv is given (where they divide its groups' channels)
REGROUP_CHANNELS = (4, 8, 16)


@dataclass
class Form:
    """One exact form of a layer: its name ("size", "fold", "merged", "regrouped:g4+merged", "convs", ...)
    and the module."""

    name: str
    module: nn.Module

    @property
    def signature(self) -> str:
        return form_signature(self.module)


def form_signature(module: nn.Module) -> str:
    """The structure of a form, without its weights: what its speed depends on (the timing cache's key)."""
    parts = []
    for m in module.modules():
        text = f"{type(m).__name__}({m.extra_repr()})"
        if isinstance(m, ChannelGather):  # which channels go where changes what a runtime does with them
            text += hashlib.blake2b(m.index.cpu().numpy().tobytes(), digest_size=6).hexdigest()
        parts.append(text)
    return ";".join(parts)


def _pointwise(module: nn.Module) -> bool:
    """A module that maps each pixel's channels linearly on its own: a 1x1 conv (stride 1, no padding), a
    gather, a bias."""
    if isinstance(module, nn.Conv2d):
        return (module.kernel_size == (1, 1) and module.stride == (1, 1) and module.padding == (0, 0)
                and module.padding_mode == "zeros")
    return isinstance(module, ChannelGather | AddBias)


def merge_pointwise(modules: Sequence[nn.Module]) -> nn.Conv2d:
    """A run of pointwise modules (1x1 convs, gathers, biases) as the one dense 1x1 conv it equals: its
    matrix read off by running the run on the identity, its bias on zeros (in float64, then cast)."""
    first = next(m for m in modules if isinstance(m, nn.Conv2d))
    in_channels = modules[0].in_channels
    dtype, device = first.weight.dtype, first.weight.device
    run = nn.Sequential(*[copy.deepcopy(m) for m in modules]).to(torch.float64).eval()
    with torch.no_grad():
        zero = run(torch.zeros(1, in_channels, 1, 1, dtype=torch.float64, device=device))[0, :, 0, 0]
        matrix = run(torch.eye(in_channels, dtype=torch.float64, device=device).view(in_channels, in_channels, 1, 1))
        matrix = (matrix[:, :, 0, 0] - zero).T  # (out, in)
        merged = nn.Conv2d(in_channels, matrix.shape[0], 1, bias=bool(zero.abs().max() > 0) or any(
            getattr(m, "bias", None) is not None for m in modules), device=device, dtype=dtype)
        merged.weight.copy_(matrix.view(*matrix.shape, 1, 1))
        if merged.bias is not None:
            merged.bias.copy_(zero)
    return merged


def _grouped(matrix: Tensor) -> tuple[Tensor, Tensor, int] | None:
    """(input order, output order, groups) that make `matrix` (out, in) block-diagonal with equal blocks: its
    support's connected components, when they all read and write as many channels; else None."""
    out_n, in_n = matrix.shape
    support = matrix != 0
    label = torch.arange(out_n + in_n)  # union-find over rows then columns, by repeated relabelling
    rows, cols = support.nonzero(as_tuple=True)
    edges_a, edges_b = rows, cols + out_n
    while True:
        low = torch.minimum(label[edges_a], label[edges_b])
        new = label.clone()
        new.scatter_reduce_(0, edges_a, low, "amin")
        new.scatter_reduce_(0, edges_b, low, "amin")
        new = new[new]
        if torch.equal(new, label):
            break
        label = new
    components = label.unique()
    groups = len(components)
    if groups < 2 or out_n % groups or in_n % groups:
        return None
    row_label, col_label = label[:out_n], label[out_n:]
    if any(int((row_label == c).sum()) != out_n // groups or int((col_label == c).sum()) != in_n // groups
           for c in components):
        return None
    return torch.argsort(col_label, stable=True), torch.argsort(row_label, stable=True), groups


def segment(modules: Sequence[nn.Module]) -> list[nn.Module]:
    """A run of pointwise modules (one segment of a chain's 1x1 convs with the gathers around them) as the
    fewest modules that compute it: one dense 1x1 conv, or, where its matrix is block-diagonal up to the order
    of channels, a gather, a grouped 1x1 conv and a gather back (each left out when it is the identity)."""
    merged = merge_pointwise(modules)
    matrix = merged.weight.detach()[:, :, 0, 0]
    found = _grouped(matrix)
    if found is None:
        return [merged]
    in_order, out_order, groups = found
    blocks = matrix[out_order][:, in_order]
    conv = nn.Conv2d(matrix.shape[1], matrix.shape[0], 1, groups=groups, bias=merged.bias is not None,
                     device=matrix.device, dtype=matrix.dtype)
    with torch.no_grad():
        conv.weight.copy_(take_grouped_kernel(blocks[:, :, None, None], groups))
        if merged.bias is not None:
            conv.bias.copy_(merged.bias[out_order])
    out: list[nn.Module] = []
    if not torch.equal(in_order, torch.arange(len(in_order))):
        out.append(ChannelGather(in_order, len(in_order)))
    out.append(conv)
    back = torch.argsort(out_order)
    if not torch.equal(back, torch.arange(len(back))):
        out.append(ChannelGather(back, len(back)))
    return out


def fuse_gathers(modules: Sequence[nn.Module]) -> list[nn.Module]:
    """The modules with every run of consecutive gathers as one gather, and identity gathers left out."""
    out: list[nn.Module] = []
    for m in modules:
        if isinstance(m, ChannelGather) and out and isinstance(out[-1], ChannelGather):
            first = out.pop()
            # m reads first's outputs: its index into them, through first's index into the source (a zero
            # channel, first's width or its own padding, stays a zero channel)
            padded = torch.cat([first.index_cpu, torch.tensor([first.in_channels])])
            m = ChannelGather(padded[m.index_cpu], first.in_channels)
        if isinstance(m, ChannelGather) and m.out_channels == m.in_channels and torch.equal(
                m.index_cpu, torch.arange(m.in_channels)):
            continue
        out.append(m)
    return out


def regroup(conv: nn.Conv2d, groups: int) -> nn.Conv2d:
    """`conv` (g groups) as the same conv with `groups` groups, `groups` dividing g: each larger group's kernel
    holds the smaller groups' blocks and zeros elsewhere."""
    if conv.groups % groups:
        raise ValueError(f"regroup: {groups} groups do not divide the conv's {conv.groups}")
    with torch.no_grad():
        dense = expand_grouped_kernel(conv.weight.detach(), conv.groups)
        new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                        device=dense.device, dtype=dense.dtype)
        new.weight.copy_(take_grouped_kernel(dense, groups))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _plain_modules(module: nn.Module) -> list[nn.Module] | None:
    """The modules of a factorized form that is a plain sequence of convs, gathers and biases, else None."""
    modules = list(module) if isinstance(module, nn.Sequential) else [module]
    if all(isinstance(m, nn.Conv2d | ChannelGather | AddBias) for m in modules):
        return modules
    return None


def _pointwise_run(modules: list[nn.Module]) -> int | None:
    """Where the trailing run of pointwise modules starts, when it holds a conv and more than one module."""
    start = len(modules)
    while start > 0 and _pointwise(modules[start - 1]):
        start -= 1
    run = modules[start:]
    if start == 0 or not any(isinstance(m, nn.Conv2d) for m in run) or len(run) < 2:
        return None
    return start


def _merged(modules: list[nn.Module]) -> list[nn.Module] | None:
    """The modules with their trailing pointwise run as one 1x1 conv (None when there is nothing to merge)."""
    start = _pointwise_run(modules)
    return None if start is None else [*modules[:start], merge_pointwise(modules[start:])]


def _segmentations(modules: list[nn.Module]) -> list[tuple[str, list[nn.Module]]]:
    """The trailing pointwise run cut into consecutive segments of its convs in every way but the two ends
    (all apart is the chain itself, all together is `merged`), each segment as `segment` builds it: IGCV2's
    three group 1x1 convs as (2 merged, 1) and (1, 2 merged), a partly dense chain with fewer convs."""
    start = _pointwise_run(modules)
    if start is None:
        return []
    run = modules[start:]
    convs = [i for i, m in enumerate(run) if isinstance(m, nn.Conv2d)]
    if len(convs) < 3:
        return []
    out = []
    for mask in range(1, 2 ** (len(convs) - 1) - 1):
        cuts = [convs[k + 1] for k in range(len(convs) - 1) if mask >> k & 1]  # a segment starts at each cut
        bounds = [0, *cuts, len(run)]
        pieces = [run[a:b] for a, b in itertools.pairwise(bounds)]
        sizes = "+".join(str(sum(isinstance(m, nn.Conv2d) for m in piece)) for piece in pieces)
        built = [m for piece in pieces for m in segment(piece)]
        out.append((f"segments:{sizes}", [*modules[:start], *fuse_gathers(built)]))
    return out


def _regroupings(conv: nn.Conv2d) -> list[int]:
    """Fewer, larger groups for a grouped spatial conv: for each of REGROUP_CHANNELS, the divisor of its group
    count whose groups read the nearest number of channels (more than now), and dense (1)."""
    g = conv.groups
    if g == 1 or conv.kernel_size == (1, 1):
        return []
    divisors = [d for d in range(2, g) if g % d == 0]
    options: list[int] = []
    for channels in REGROUP_CHANNELS:
        if not divisors:
            break
        best = min(divisors, key=lambda d: (abs(conv.in_channels / d - channels), d))
        if best not in options:
            options.append(best)
    return [*sorted(options, reverse=True), 1]


def _size_form(op: nn.Module) -> nn.Module:
    from ..convert import deploy

    return deploy(copy.deepcopy(op)).eval()


def layer_forms(op: nn.Module) -> list[Form]:
    """Every exact form of the operator layer `op` (eval mode), the size form first, without duplicates."""
    op = op.eval()
    forms = [Form("size", _size_form(op))]
    fold = getattr(op, "fold", None)
    if callable(fold):
        forms.append(Form("fold", fold().eval()))
    size = forms[0].module
    if callable(getattr(size, "as_convs", None)):  # BDSC's packed layer
        forms.append(Form("convs", size.as_convs()))
    try:
        factorized = op.factorized_deploy().eval()
    except (NotImplementedError, AttributeError, ValueError):  # no factorized form (BDSC-float: no bits to pack)
        factorized = None
    modules = _plain_modules(factorized) if factorized is not None else None
    if modules is not None:
        forms.append(Form("factorized", nn.Sequential(*modules)))
        merged = _merged(modules)
        if merged is not None:
            forms.append(Form("merged", nn.Sequential(*merged)))
        forms += [Form(name, nn.Sequential(*changed)) for name, changed in _segmentations(modules)]
        spatial = [i for i, m in enumerate(modules) if isinstance(m, nn.Conv2d) and _regroupings(m)]
        for i in spatial[:1]:  # the (first) grouped spatial conv: a chain's only one
            for groups in _regroupings(modules[i]):
                changed = [*modules[:i], regroup(modules[i], groups), *modules[i + 1:]]
                tag = f"regrouped:g{groups}"
                forms.append(Form(tag, nn.Sequential(*changed)))
                merged = _merged(changed)
                if merged is not None:
                    forms.append(Form(f"{tag}+merged", nn.Sequential(*merged)))
    unique: dict[str, Form] = {}
    for form in forms:
        unique.setdefault(form.signature, form)
    for form in unique.values():
        form.module.eval()
    return list(unique.values())


def max_relative_error(op: nn.Module, forms: Sequence[Form], x: Tensor) -> dict[str, float]:
    """Each form's largest difference from `op` on `x`, relative to the largest output magnitude."""
    with torch.no_grad():
        ref = op.eval()(x)
        scale = max(float(ref.abs().max()), 1e-12)
        return {f.name: float((f.module(x) - ref).abs().max()) / scale for f in forms}
