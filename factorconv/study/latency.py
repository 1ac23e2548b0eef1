"""Inference latency of a study's deploy forms: every (operator, budget) point's trained model (its first
seed that did not diverge) deployed with `factorconv.deploy`, and the standard backbone (nn.Conv2d, width 1),
timed interleaved in one process; ratios to the standard model, on CPU and on CUDA when present.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..bench import compare_timings, inference_fn, machine_info
from ..convert import deploy

__all__ = ["measure_latencies"]


def _load_deployed(run: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(trained model in eval mode, its deploy form) from a run's checkpoint."""
    from ..train import load_trained

    model = load_trained(run)[0]
    return model, deploy(copy.deepcopy(model)).eval()


def measure_latencies(model_name: str, points: Sequence[tuple[str, Path]], input_size: tuple[int, ...],
                      num_classes: int, *, batch: int = 1, repeats: int = 30,
                      model_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """`points` are (label, run directory); returns {"batch", "repeats", "machine", "deploy_max_logit_diff":
    {label: float}, "devices": {device: {label: {"median_ms", "ratio", "spread"}}}}."""
    from ..registry import create_model

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    models: dict[str, torch.nn.Module] = {}
    diffs: dict[str, float] = {}
    x = torch.randn(batch, *input_size)
    models["standard"] = create_model(model_name, num_classes=num_classes, in_chans=input_size[0],
                                      **(model_kwargs or {})).eval()
    for label, run in points:
        trained, deployed = _load_deployed(run)
        with torch.no_grad():
            diffs[label] = float((trained(x) - deployed(x)).abs().max())
        models[label] = deployed
    result: dict[str, Any] = {"batch": batch, "repeats": repeats, "machine": machine_info(),
                              "deploy_max_logit_diff": diffs, "devices": {}}
    for device in devices:
        inputs = x.to(device)
        if device == "cpu":  # the memory format the engine trains and evaluates in on CPU
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        runners: dict[str, Callable[[], Any]] = {}
        for name, model in models.items():
            model = copy.deepcopy(model).to(device)
            if device == "cpu":
                model = model.to(memory_format=torch.channels_last)
            runners[name] = inference_fn(model, inputs)
        timings = compare_timings(runners, baseline="standard", repeats=repeats, warmup=3, device=device)
        result["devices"][device] = {t.name: {"median_ms": 1e3 * t.median_s, "ratio": t.ratio, "spread": t.spread}
                                     for t in timings}
    return result
