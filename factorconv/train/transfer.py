"""Transfer: a run may start from another run's weights (`init_from`) and train only a part of its model
(`train_only`: ACDC's adaptation experiments fine-tune only the atoms, only the shared coefficients, only
the BatchNorms or only the classifier), on a subset of the data set's classes (`classes`, relabelled 0..k-1)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..ops.acdc import ACDCConv2d, CoefficientBank
from .checkpoint import CheckpointError, load_checkpoint

__all__ = ["load_initial_weights", "select_trainable"]


def load_initial_weights(model: nn.Module, source: str | Path) -> tuple[int, list[str]]:
    """Copy every tensor of the run at `source` (directory or checkpoint) whose name and shape match one of
    `model`'s; return (how many were copied, the names left as initialised: a classifier for other classes).
    ValueError when nothing matches (another architecture)."""
    try:
        saved = load_checkpoint(source)["model"]
    except CheckpointError as err:
        raise ValueError(f"init_from: {err}") from None
    own = model.state_dict()
    copied = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    if not copied:
        raise ValueError(f"init_from: no tensor of {source} fits this model (another architecture?)")
    model.load_state_dict(copied, strict=False)
    return len(copied), sorted(k for k in own if k not in copied)


def _head(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("train_only='head': the model has no nn.Linear classifier")
    return linears[-1]


def select_trainable(model: nn.Module, part: str) -> list[nn.Parameter]:
    """Leave requires_grad on only the parameters of `part` ("all", or "atoms", "coefficients", "bn", "head",
    several joined by "+") and return them; ValueError when the model has none of a part."""
    if part == "all":
        return [p for p in model.parameters() if p.requires_grad]
    keep = {id(p) for one in part.split("+") for p in _part(model, one)}
    with torch.no_grad():
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
    return [p for p in model.parameters() if id(p) in keep]


def _part(model: nn.Module, part: str) -> list[nn.Parameter]:
    if part == "atoms":
        chosen = [m.atoms for m in model.modules() if isinstance(m, ACDCConv2d)]
    elif part == "coefficients":
        chosen = [m.coefficients for m in model.modules() if isinstance(m, CoefficientBank)]
    elif part == "bn":
        chosen = [p for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()]
    elif part == "head":
        chosen = list(_head(model).parameters())
    else:
        raise ValueError(f"train_only must be one of all, atoms, coefficients, bn, head, got {part!r}")
    if not chosen:
        raise ValueError(f"train_only={part!r}: the model has no {part} to train (atoms and coefficients are "
                         "ACDC's: conv='acdc')")
    return chosen
