"""Honest costs of a model: `profile(model, input_size)` -> `Profile`.

Conventions (the five papers'): MACs are conv + linear multiply-accumulates of one forward at batch 1;
BN, activations, pooling, shuffles and residual additions cost zero MACs (they are listed in the layer
table). Parameters are unique tensors, counted once however many layers share them. Model size is the
deploy form in bytes: float parameters at their width, binary entries at 1 bit, BN running statistics
included. Operators report their own costs through `op.cost(in_hw)`; plain layers are counted here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .ops.base import is_operator
from .ops.spec import Cost, conv_macs

__all__ = ["LayerRow", "Profile", "available_memory", "check_memory", "count_params", "profile"]


@dataclass
class LayerRow:
    """One row of the per-layer table: a layer the forward ran (or a parameter holder it did not)."""

    name: str
    type: str
    params: int
    macs: int
    out_shape: tuple[int, ...] | None
    adds: int = 0
    calls: int = 0


@dataclass
class Profile:
    """Costs of one model for one input size (batch 1). See the module docstring for the conventions."""

    params: int
    param_bits: int
    buffers: int
    macs: int
    adds: int
    deploy_params: int
    deploy_macs: int
    deploy_adds: int
    size_bytes: int
    input_size: tuple[int, ...]
    layers: list[LayerRow] = field(default_factory=list)

    @property
    def size_mib(self) -> float:
        return self.size_bytes / 2**20

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["size_mib"] = self.size_mib
        for row in d["layers"]:
            row["out_shape"] = None if row["out_shape"] is None else list(row["out_shape"])
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        lines = [
            f"input          {'x'.join(map(str, self.input_size))} (batch 1)",
            f"params         {self.params:,} ({self.params / 1e6:.3f} M), "
            f"{self.param_bits / 8 / 2**20:.3f} MiB as stored",
            f"MACs           {self.macs:,} ({self.macs / 1e9:.5f} G)",
        ]
        if self.adds:
            lines.append(f"adds           {self.adds:,}")
        lines += [
            f"buffers        {self.buffers:,}",
            f"deploy params  {self.deploy_params:,}" + (" (training-only layers left out)" if any(
                r.type.endswith("(training only)") for r in self.layers) else ""),
            f"deploy MACs    {self.deploy_macs:,}",
        ]
        if self.deploy_adds:
            lines.append(f"deploy adds    {self.deploy_adds:,}")
        lines.append(f"size           {self.size_bytes:,} bytes ({self.size_mib:.3f} MiB, deploy form)")
        return "\n".join(lines)

    def table(self) -> str:
        header = ("layer", "type", "params", "MACs", "output")
        rows = [
            (r.name or "<model>", r.type, f"{r.params:,}", f"{r.macs:,}" + (f" +{r.adds:,} adds" if r.adds else ""),
             "-" if r.out_shape is None else "x".join(map(str, r.out_shape)))
            for r in self.layers
        ]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
        fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
        return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)])

    def __str__(self) -> str:
        return self.table() + "\n\n" + self.summary()


def training_only(model: nn.Module) -> tuple[str, ...]:
    """Names of the submodules `model` uses only in training (DARTS's auxiliary head): counted in its
    parameters, left out of its deploy counts and size, and removed by `factorconv.deploy`."""
    names = getattr(model, "training_only", ())
    return tuple(n for n in names if getattr(model, n, None) is not None)


def count_params(model: nn.Module) -> int:
    """Unique parameter elements (a tensor shared by several layers counts once)."""
    return sum(p.numel() for p in model.parameters())


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(params: int, copies: float, what: str) -> None:
    """Raise ValueError when `copies` float32 copies of `params` parameters (1 to hold a model, about 4 to
    train it: weights, gradients, momentum, workspace) cannot fit in the memory available, before anything is
    allocated: an allocation that large is otherwise a crash, or the system's out-of-memory killer."""
    need, have = int(params * 4 * copies), available_memory()
    if have is not None and need > have:
        raise ValueError(f"{what} has {params:,} parameters and would need about {need / 2**30:.1f} GiB; "
                         f"{have / 2**30:.1f} GiB of memory is available; use a smaller width or model")


def _costed(module: nn.Module) -> bool:
    """Operators, and deploy forms that report their own costs (a packed BDSC layer), count as one layer."""
    return is_operator(module) or callable(getattr(module, "cost", None))


def _units(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Layers to account for: costed modules (not descended), convs, linears and other leaves."""
    if _costed(model) or isinstance(model, nn.Conv2d | nn.Linear) or not any(True for _ in model.children()):
        return [(prefix, model)]
    out = []
    for name, child in model.named_children():
        out += _units(child, f"{prefix}.{name}" if prefix else name)
    return out


def _bits(t: torch.Tensor) -> int:
    return t.element_size() * 8


def _shipped_buffers(module: nn.Module) -> list[torch.Tensor]:
    """The float buffers a saved model carries (BN running statistics): persistent ones only. Non-persistent
    buffers (a gather's one-hot selector, DO-Conv's identity) are rebuilt from the architecture on load, so
    they are not part of what ships; counting them made a deployed IGCV2/osep model look twice its size."""
    skip = module._non_persistent_buffers_set
    return [b for name, b in module.named_buffers(recurse=False) if name not in skip and b.is_floating_point()] + [
        b for child in module.children() for b in _shipped_buffers(child)]


def _probe_hw(module: nn.Module) -> tuple[int, int]:
    """An input size valid for a layer the forward never reached (only its static costs are used)."""
    k, d = module.kernel_size, module.dilation
    return ((k[0] - 1) * d[0] + 1, (k[1] - 1) * d[1] + 1)


def _layer_costs(model: nn.Module, units: list[tuple[str, nn.Module]], unit_params: dict[str, list[torch.Tensor]],
                 calls: Calls) -> tuple[list[LayerRow], Cost, int]:
    """(table rows, totals, deploy size in bits) of the layers: an operator by its own closed-form costs at
    each input it met, a plain conv or linear by its shapes; training-only modules counted, not shipped."""
    rows: list[LayerRow] = []
    totals = Cost(0, 0, 0, 0, 0, 0)
    size_bits = 0
    dropped = training_only(model)
    for name, unit in units:
        own = unit_params[name]
        own_params = sum(p.numel() for p in own)
        seen = calls[name]
        if any(name == d or name.startswith(d + ".") for d in dropped):  # trained, but not shipped
            if own_params:
                rows.append(LayerRow(name, type(unit).__name__ + " (training only)", own_params, 0, None))
            continue
        macs = adds = deploy_macs = deploy_adds = 0
        if _costed(unit):
            per_call = [unit.cost(tuple(x[-2:])) for x, _ in seen]
            static = per_call[0] if per_call else unit.cost(_probe_hw(unit))
            macs, adds = sum(c.macs for c in per_call), sum(c.adds for c in per_call)
            deploy_macs, deploy_adds = sum(c.deploy_macs for c in per_call), sum(c.deploy_adds for c in per_call)
            deploy_params = static.deploy_params
            size_bits += math.ceil(static.deploy_bits / 8) * 8
        else:
            for _, y in seen:
                if isinstance(unit, nn.Conv2d):
                    macs += conv_macs(unit.in_channels, unit.out_channels, unit.kernel_size, unit.groups, y[-2:])
                elif isinstance(unit, nn.Linear):
                    macs += unit.in_features * unit.out_features * math.prod(y[1:-1])
            deploy_macs = macs
            deploy_params = own_params
            size_bits += sum(math.ceil(p.numel() * _bits(p) / 8) * 8 for p in own)
            size_bits += sum(math.ceil(b.numel() * _bits(b) / 8) * 8 for b in _shipped_buffers(unit))
        totals = totals + Cost(0, 0, macs, deploy_params, 0, deploy_macs, adds, deploy_adds)
        if own_params or seen:
            rows.append(LayerRow(name, type(unit).__name__, own_params, macs,
                                 seen[0][1] if seen else None, adds, len(seen)))
    return rows, totals, size_bits


def _owners(units: list[tuple[str, nn.Module]]
            ) -> tuple[dict[int, tuple[nn.Module, str]], dict[str, list[torch.Tensor]]]:
    """(parameter id -> the layer that counts it and its name there, layer name -> the parameters it counts):
    a tensor shared by several layers (ACDC's coefficients) is counted by the first."""
    owner: dict[int, tuple[nn.Module, str]] = {}
    unit_params: dict[str, list[torch.Tensor]] = {}
    for name, unit in units:
        unit_params[name] = []
        for pname, p in unit.named_parameters():
            if id(p) not in owner:
                owner[id(p)] = (unit, pname)
                unit_params[name].append(p)
    return owner, unit_params


Calls = dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]]


def _traced_calls(model: nn.Module, units: list[tuple[str, nn.Module]], input_size: tuple[int, ...]) -> Calls:
    """(input shape, output shape) of every call of every layer in one eval-mode forward at batch 1; the
    model's train/eval flags restored afterwards."""
    calls: Calls = {name: [] for name, _ in units}
    hooks = []
    for name, unit in units:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any, name: str = name) -> None:
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            y = out if isinstance(out, torch.Tensor) else None
            calls[name].append((tuple(x.shape) if x is not None else (), tuple(y.shape) if y is not None else ()))
        hooks.append(unit.register_forward_hook(hook))
    flags = {m: m.training for m in model.modules()}
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    return calls


def profile(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32)) -> Profile:
    """Run one forward at batch 1 (eval mode, no grad) and account for every layer.

    Works on the meta device too (build the model under `with torch.device("meta")` to count a large
    model without allocating it). The model's train/eval flags are restored afterwards.
    """
    input_size = tuple(int(v) for v in input_size)
    units = _units(model)
    owner, unit_params = _owners(units)
    orphans = [p for p in model.parameters() if id(p) not in owner]
    calls = _traced_calls(model, units, input_size)
    rows, totals, size_bits = _layer_costs(model, units, unit_params, calls)
    if orphans:
        n = sum(p.numel() for p in orphans)
        rows.append(LayerRow("(parameters outside layers)", "Parameter", n, 0, None))
        totals = totals + Cost(0, 0, 0, n, 0, 0)
        size_bits += sum(math.ceil(p.numel() * _bits(p) / 8) * 8 for p in orphans)

    params = list(model.parameters())
    param_bits = 0
    for p in params:
        mod, local = owner.get(id(p), (None, ""))
        override = mod.storage_bits().get(local) if mod is not None and is_operator(mod) else None
        param_bits += p.numel() * (override if override is not None else _bits(p))
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return Profile(
        params=sum(p.numel() for p in params),
        param_bits=param_bits,
        buffers=buffers,
        macs=totals.macs,
        adds=totals.adds,
        deploy_params=totals.deploy_params,
        deploy_macs=totals.deploy_macs,
        deploy_adds=totals.deploy_adds,
        size_bytes=size_bits // 8,
        input_size=input_size,
        layers=rows,
    )
