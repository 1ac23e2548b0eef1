"""Side-by-side timing: the only kind of speed claim factorconv makes.

`compare_timings` runs several callables interleaved (each repetition runs every candidate once, in a
rotating order, so drift in machine load hits all of them alike) and reports medians and ratios to a
baseline. `machine_info` describes where the numbers were taken.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Timing", "compare_timings", "machine_info"]


@dataclass
class Timing:
    """One candidate over interleaved repetitions: its median seconds and its ratio to the baseline.

    `ratio` is the median over repetitions of (this candidate's time / the baseline's time in the same
    repetition): pairing cancels slow drifts of a shared machine that a ratio of medians would keep.
    """

    name: str
    median_s: float
    ratio: float
    samples: list[float]

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (how noisy the measurement was)."""
        qs = statistics.quantiles(self.samples, n=4) if len(self.samples) >= 4 else [self.median_s] * 3
        return (qs[2] - qs[0]) / self.median_s if self.median_s else 0.0


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def compare_timings(
    candidates: dict[str, Callable[[], Any]],
    *,
    baseline: str | None = None,
    repeats: int = 30,
    warmup: int = 3,
    device: torch.device | str | None = None,
) -> list[Timing]:
    """Time each callable `repeats` times, interleaved, after `warmup` untimed rounds.

    Returns one Timing per candidate, in the given order, with ratios to `baseline` (default: the first).
    """
    names = list(candidates)
    if not names:
        raise ValueError("compare_timings: no candidates")
    baseline = names[0] if baseline is None else baseline
    if baseline not in candidates:
        raise ValueError(f"compare_timings: baseline {baseline!r} is not a candidate ({', '.join(names)})")
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    _sync(device)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            candidates[name]()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    base = samples[baseline]
    out = []
    for n in names:
        paired = statistics.median(s / b for s, b in zip(samples[n], base, strict=True))
        out.append(Timing(n, statistics.median(samples[n]), paired, samples[n]))
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, cores, threads, torch version (and the GPU when CUDA is available)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def train_step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One SGD step (forward, cross-entropy, backward, update) of `model` on (x, y), as a closure."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def inference_fn(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One eval-mode forward under inference_mode, as a closure."""
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


# torch.profiler op names -> the categories a report speaks of (first match of a substring wins)
_CATEGORIES = (
    ("conv", ("conv",)),
    ("batchnorm", ("batch_norm",)),
    ("gather/shuffle", ("index_select", "index_add", "gather", "constant_pad", "transpose", "reshape")),
    ("copy/layout", ("copy_", "clone", "contiguous", "_to_copy")),
    ("matmul", ("mm", "matmul", "einsum", "linear")),
    ("elementwise", ("relu", "threshold", "add", "mul", "sub", "div", "fill_", "zero_", "sum", "mean")),
)


def time_breakdown(fn: Callable[[], Any], repeats: int = 5) -> dict[str, float]:
    """Where the time of `fn` goes: self CPU time per category (conv, gather/shuffle, batchnorm, matmul,
    elementwise, other), as fractions of the total, from torch.profiler over `repeats` calls."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key.removeprefix("aten::")
        if not event.key.startswith("aten::"):
            continue
        category = next((c for c, keys in _CATEGORIES if any(k in name for k in keys)), "other")
        totals[category] = totals.get(category, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
