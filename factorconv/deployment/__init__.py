"""Shipping a model in the form that runs fastest where it ships: the exact forms of each operator layer
(`forms`), the runtimes that run them (`runtimes`: torch, onnxruntime, openvino), a timing cache (`cache`) and
the latency-driven choice among the forms (`choose`). `deploy(model, objective=...)` is the entry point
(`factorconv.deploy`); `objective="size"` is the size rule every operator ships by otherwise.

(The package is named `deployment`, not `deploy`, so that importing one of its modules never replaces the
function `factorconv.deploy` with the package.)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .cache import TimingCache, default_cache_path
from .choose import OBJECTIVES, DeployReport, choose_forms, default_runtime, deploy_latency
from .forms import Form, form_signature, layer_forms
from .runtimes import RUNTIMES, Runtime, get_runtime, installed_runtimes

__all__ = ["OBJECTIVES", "RUNTIMES", "DeployReport", "Form", "Runtime", "TimingCache", "choose_forms",
           "default_cache_path", "default_runtime", "deploy", "form_signature", "get_runtime", "installed_runtimes",
           "layer_forms"]


def deploy(model: nn.Module, objective: str = "size", *, runtime: str | None = None,
           input_size: tuple[int, ...] | None = None, batch: int = 1, **options: Any) -> nn.Module:
    """Replace every operator of `model` with the exact form it ships in, in place, and return the model.

    `objective="size"` (default): the factorized form where it is stored in fewer bits than the fold, else the
    fold (BDSC bit-packed). `objective="latency"`: the form of each layer that runs fastest in `runtime`
    ("torch", "onnxruntime", "openvino" or "best"; default onnxruntime where installed) at its input shape for
    inputs of `input_size` (C, H, W) at `batch`, timed on this machine (`options`: repeats, cache, threads);
    `model.deploy_report` then says what was chosen and measured. Both drop training-only modules."""
    if objective not in OBJECTIVES:
        raise ValueError(f"deploy: objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "size":
        from ..convert import deploy as size_deploy

        return size_deploy(model)
    return deploy_latency(model, runtime, input_size, batch, **options)
