"""Inference latency of a study's points where they ship: every (operator, budget) point's trained model (its
first seed that did not diverge) deployed for latency (`factorconv.deploy(objective="latency")`: each layer in
its fastest exact form) in the study's runtime, at each batch, and timed there side by side with the standard
backbone (nn.Conv2d, width 1) deployed the same way; the table's ratios are to that standard model.

Each point is timed interleaved with the standard model alone (a handful of models per round, each run several
times in a row at small batches: a round through every point measured their cold caches), medians over
`repeats` rounds. The record names the runtime and its version, the machine and the batches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..bench import compare_timings, machine_info
from ..deployment import TimingCache, default_runtime, deploy, get_runtime

__all__ = ["DEFAULT_LATENCY_BATCHES", "measure_latencies", "runtime_label"]

DEFAULT_LATENCY_BATCHES = (1, 32)


def runtime_label(name: str | None) -> str:
    """The runtime a study measures in ('onnxruntime 1.32.0'); ValueError naming the extra when missing."""
    name = name or default_runtime()
    if name == "best":
        return "best"
    runtime = get_runtime(name)
    if name == "torch":  # each model in whichever memory format is faster for it
        return f"torch {runtime.version()} eager"
    return runtime.label()


def _repeated(run: Callable[[], Any], times: int) -> Callable[[], None]:
    def repeated() -> None:
        for _ in range(times):
            run()

    return repeated


def measure_latencies(model_name: str, points: Sequence[tuple[str, Path]], input_size: tuple[int, ...],
                      num_classes: int, *, batches: Sequence[int] = DEFAULT_LATENCY_BATCHES,
                      runtime: str | None = None, repeats: int = 30, model_kwargs: dict[str, Any] | None = None,
                      cache: TimingCache | None = None, threads: int = 1) -> dict[str, Any]:
    """`points` are (label, run directory), timed on `threads` threads (the study's threads per run); returns
    {"runtime", "objective", "batches", "threads", "repeats", "machine",
    "deploy_max_logit_diff": {label: float}, "standard_ms": {batch: ms}, "points": {label: {batch: {"median_ms",
    "ratio", "spread", "runtime", "forms"}}}}."""
    from ..registry import create_model
    from ..train import load_trained

    runtime = runtime or default_runtime()
    cache = cache or TimingCache()
    standard = create_model(model_name, num_classes=num_classes, in_chans=input_size[0],
                            **(model_kwargs or {})).eval()
    trained = {label: load_trained(run)[0] for label, run in points}
    result: dict[str, Any] = {"runtime": runtime_label(runtime), "runtime_name": runtime, "objective": "latency",
                              "batches": list(batches), "threads": threads, "repeats": repeats,
                              "machine": machine_info(),
                              "deploy_max_logit_diff": {}, "standard_ms": {}, "points": {}}
    for batch in batches:
        x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
        inner = max(1, 8 // batch)
        shipped_standard = deploy(copy.deepcopy(standard), "latency", runtime=runtime, input_size=input_size,
                                  batch=batch, cache=cache, threads=threads)
        run_standard = _repeated(shipped_standard.deploy_report.runtime_object(threads).prepare(shipped_standard, x),
                                 inner)
        standard_ms = []
        for label, model in trained.items():
            shipped = deploy(copy.deepcopy(model), "latency", runtime=runtime, input_size=input_size, batch=batch,
                             cache=cache, threads=threads)
            report = shipped.deploy_report
            run = _repeated(report.runtime_object(threads).prepare(shipped, x), inner)
            timings = {t.name: t for t in compare_timings({"standard": run_standard, label: run},
                                                          baseline="standard", repeats=repeats, warmup=3)}
            mine = timings[label]
            standard_ms.append(1e3 * timings["standard"].median_s / inner)
            result["points"].setdefault(label, {})[str(batch)] = {
                "median_ms": 1e3 * mine.median_s / inner, "ratio": mine.ratio, "spread": mine.spread,
                "runtime": report.runtime, "forms": report.forms}
            diffs = result["deploy_max_logit_diff"]
            diffs[label] = max(diffs.get(label, 0.0), report.max_rel_diff or 0.0)
        result["standard_ms"][str(batch)] = sorted(standard_ms)[len(standard_ms) // 2] if standard_ms else None
    return result
