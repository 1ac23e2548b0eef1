"""What a trained operator learned, read from its parameters: DO-Conv's kernel shift (its paper's Figure 6),
ACDC's atoms and shared coefficients, BDSC's binary spatial configurations. Each function returns plain
tensors per layer (by module name), for the figures in `show.py` and as numbers to save."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..ops.acdc import ACDCConv2d
from ..ops.bdsc import BalancedDecoupledConv2d
from ..ops.doconv import DOConv2d

__all__ = ["acdc_atoms", "acdc_coefficients", "bdsc_configurations", "doconv_shift"]


def doconv_shift(model: nn.Module) -> dict[str, Tensor]:
    """Per DO-Conv layer (those with a D: kernels larger than 1x1), the (M, N) map H of how far the trained
    kernel W' = D∘W moved from the conventional kernel W the layer holds (D = D_diag): H[s] = Σ over output
    and input channels of |W'[.., s] - W[.., s]|. Zero for a layer whose D' is zero (an untrained one)."""
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, DOConv2d) or m.D is None:
            continue
        with torch.no_grad():
            trained = m.dense_weight()
            conventional = torch.einsum("ocd,sd->ocs", m.W, m.D_diag.to(m.W.dtype)).reshape_as(trained)
            out[name] = (trained - conventional).abs().sum((0, 1)).cpu()
    return out


def acdc_atoms(model: nn.Module) -> dict[str, Tensor]:
    """Per ACDC layer, its filter atoms: (sets, m, kh, kw) (sets > 1 for the grouped ACDC-g)."""
    return {name: m.atoms.detach().cpu() for name, m in model.named_modules() if isinstance(m, ACDCConv2d)}


def acdc_coefficients(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per coefficient bank (named by the layer that owns it), the coefficients A (out, in, m) and the layers
    that share it."""
    banks: dict[int, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if isinstance(m, ACDCConv2d):
            entry = banks.setdefault(id(m.bank), {"owner": None, "layers": [],
                                                  "coefficients": m.bank.coefficients.detach().cpu()})
            entry["layers"].append(name)
            if m.bank in m.children():
                entry["owner"] = name
    return {(e["owner"] or e["layers"][0]): e for e in banks.values()}


def bdsc_configurations(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per BDSC layer: its binary spatial configuration (out, hidden/groups, kh, kw) as 0/1 (the taps each
    intermediate channel feeds each output through), the density q (share of ones) and the density per tap
    position (kh, kw). BDSC-float layers have no binary configuration and are left out."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, BalancedDecoupledConv2d) and m.binary:
            config = (m.latent.detach() >= 0).to(torch.uint8).cpu()
            out[name] = {"configuration": config, "density": float(config.float().mean()),
                         "tap_density": config.float().mean((0, 1))}
    return out
