"""ACDC across a model: which layers share one coefficient bank (`share_coefficients`: the layer, its stage
or the whole net, found by one forward pass where stages are needed), the joint fit of a unit initialised from
convs, and `expand` (the paper's appendix E: less sharing or more atoms for a trained model, outputs unchanged).
The layer itself (`factorconv.ops.acdc`) knows only its own bank; this module is its `finalize` in the
registry, run by create_model and convert on the whole model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checks import is_int
from .ops.acdc import SHARES, ACDCConv2d, CoefficientBank, orthogonal_atoms
from .ops.fitting import fit_shared_coefficients
from .registry import set_finalize

__all__ = ["expand", "share_coefficients"]


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
    from .registry import model_entry

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
                m.fit_error = m.kernel_error(t)
    for m in members:
        m._fit_target = None  # only needed until the joint fit
    return bank


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
        not is_int(atoms) or atoms < max(lay.atoms_count for lay in layers)
    ):
        raise ValueError(f"expand: atoms must be an int >= the current number of atoms, got {atoms!r}")
    for layer in layers:
        a, d = old[layer]
        if share is not None:
            layer.share = share
        if atoms is not None and atoms > layer.atoms_count:
            extra = atoms - layer.atoms_count
            fresh = torch.empty(d.shape[0], extra, *d.shape[2:], dtype=d.dtype, device=d.device)
            orthogonal_atoms(fresh)
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


set_finalize("acdc", share_coefficients)
