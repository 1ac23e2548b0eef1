"""Width matching: the width multiplier whose model meets a budget on what it costs.

A budget is on the model that ships unless it says otherwise: `params` are the deploy form's parameters
(`factorconv.deploy`: DO-Conv, ACDC and decoupled fold to the plain conv, BDSC's binary entries count one
each), `size` its bytes (float parameters at 4 B, binary entries at 1 bit, BN running statistics), `macs`
the MACs of one forward at batch 1 of the trained model, and `train-params` the parameters trained (what
the papers' tables call params for over-parameterised operators). The papers matched budgets by hand
(o-ResNet20 ×3.625 to ResNet20's FLOPs); `match_width` searches the same grid (or continuous widths) by
counting models on the meta device, so nothing is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .accounting import profile
from .checks import is_number
from .registry import create_model, model_entry

__all__ = ["BY", "WidthMatch", "count_model", "match_buildable_width", "match_latency", "match_width",
           "measure_latency"]

# budget kind -> the Profile field it is measured by
PROFILE_FIELD = {"params": "deploy_params", "train-params": "params", "size": "size_bytes", "macs": "macs"}
BY = tuple(PROFILE_FIELD)


@dataclass(frozen=True)
class WidthMatch:
    """The width found, the model's count there, and the target it was matched to."""

    model: str
    conv: str
    width: float
    value: int
    target: float
    by: str

    @property
    def rel_error(self) -> float:
        return (self.value - self.target) / self.target


def count_model(
    model_name: str,
    conv: str = "conv",
    width: float = 1.0,
    by: str = "params",
    *,
    input_size: tuple[int, int, int] | None = None,
    conv_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> int:
    """The `by` count of a model (see the module docstring; MACs at batch 1 and `input_size` or the model's
    default), counted on the meta device."""
    if by not in BY:
        raise ValueError(f"count_model: by must be one of {', '.join(BY)}, got {by!r}")
    entry = model_entry(model_name)
    size = tuple(input_size) if input_size is not None else entry.input_size
    model_kwargs.setdefault("in_chans", size[0])
    with torch.device("meta"):
        model = create_model(model_name, conv=conv, width=width, conv_kwargs=conv_kwargs, **model_kwargs)
    return getattr(profile(model, size), PROFILE_FIELD[by])


def match_width(
    model_name: str,
    conv: str,
    target: float,
    by: str = "params",
    *,
    grid: float = 1 / 8,
    continuous: bool = False,
    max_width: float = 16.0,
    input_size: tuple[int, int, int] | None = None,
    conv_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> WidthMatch:
    """The width (a multiple of `grid`, or any positive number when `continuous`) whose model's `by` count
    is closest to `target`, searched by bisection (counts grow with width) between `grid` and `max_width`.
    """
    if by not in BY:
        raise ValueError(f"match_width: by must be one of {', '.join(BY)}, got {by!r}")
    if not is_number(target) or not target > 0 or math.isinf(target):
        raise ValueError(f"match_width: target must be a positive number, got {target!r}")
    if not grid > 0 or not max_width >= grid:
        raise ValueError(f"match_width: need 0 < grid <= max_width, got grid={grid}, max_width={max_width}")
    counts: dict[float, int] = {}

    def count(width: float) -> int:
        if width not in counts:
            counts[width] = count_model(model_name, conv, width, by, input_size=input_size,
                                        conv_kwargs=conv_kwargs, **model_kwargs)
        return counts[width]

    if continuous:
        lo, hi = _bracket(count, target, grid, max_width)
        width = _bisect(count, target, lo, hi, lambda lo, hi: (lo + hi) / 2, 1e-4)
    else:
        top = max(1, int(max_width / grid))
        lo, hi = _bracket(lambda k: count(k * grid), target, 1, top, start=max(1, min(top, round(1 / grid))))
        steps = _bisect(lambda k: count(k * grid), target, lo, hi, lambda lo, hi: (lo + hi) // 2, 1)
        width = steps * grid
    return WidthMatch(model_name, conv, width, count(width), float(target), by)


def match_buildable_width(
    model_name: str,
    conv: str,
    target: float,
    by: str = "params",
    *,
    start: float,
    grid: float = 1 / 8,
    max_factor: float = 1.5,
    input_size: tuple[int, int, int] | None = None,
    conv_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> WidthMatch:
    """`match_width` for a configuration the model cannot be built with at every width (IGCV2's branch size K
    must divide every layer's channels): the width on the grid, among those it builds at, whose count is
    closest to `target`, scanned outward from `start` until both sides are `max_factor` away from the target.
    Raises ValueError when no width within that factor builds."""
    best: tuple[float, float, int] | None = None  # (|log ratio|, width, count)
    k0 = max(1, round(start / grid))
    below_done = above_done = False
    for step in range(0, int(16 / grid)):
        for k in ((k0 - step, k0 + step) if step else (k0,)):
            if k < 1 or (k < k0 and below_done) or (k > k0 and above_done):
                continue
            try:
                value = count_model(model_name, conv, k * grid, by, input_size=input_size, conv_kwargs=conv_kwargs,
                                    **model_kwargs)
            except ValueError:
                continue
            ratio = value / target
            if k <= k0 and ratio < 1 / max_factor:
                below_done = True
            if k >= k0 and ratio > max_factor:
                above_done = True
            if 1 / max_factor <= ratio <= max_factor and (best is None or abs(math.log(ratio)) < best[0]):
                best = (abs(math.log(ratio)), k * grid, value)
        if (below_done or k0 - step <= 1) and above_done:
            break
    if best is None:
        raise ValueError(f"{model_name} with {conv} {conv_kwargs or {}} builds at no width whose {by} is within "
                         f"{max_factor:g}x of {target:,.0f}")
    return WidthMatch(model_name, conv, best[1], best[2], float(target), by)


def measure_latency(model_name: str, conv: str, width: float, runtime: str | None = None, batch: int = 1, *,
                    input_size: tuple[int, int, int] | None = None, conv_kwargs: dict[str, Any] | None = None,
                    threads: int | None = None, **model_kwargs: Any) -> float:
    """Milliseconds one inference of the model at `width` takes in `runtime` at `batch`, deployed for latency
    (`factorconv.deploy(objective="latency")`; random weights, seeded: timings do not depend on them), on
    `threads` threads (default torch's)."""
    from .deployment import deploy

    entry = model_entry(model_name)
    size = tuple(input_size) if input_size is not None else entry.input_size
    model_kwargs.setdefault("in_chans", size[0])
    torch.manual_seed(0)
    model = create_model(model_name, conv=conv, width=width, conv_kwargs=conv_kwargs, **model_kwargs).eval()
    deployed = deploy(model, "latency", runtime=runtime, input_size=size, batch=batch, threads=threads)
    return float(deployed.deploy_report.latency_ms)


def match_latency(model_name: str, conv: str, target_ms: float, runtime: str | None = None, batch: int = 1, *,
                  grid: float = 1 / 8, max_width: float = 16.0, **options: Any) -> WidthMatch:
    """The width on the grid whose latency-optimal deploy form runs closest to `target_ms` in `runtime` at
    `batch` on this machine, searched as `match_width` searches counts (latency grows with width; each width
    is timed once, its layers' forms from the timing cache when seen before). `value` is in microseconds."""
    if not is_number(target_ms) or not 0 < target_ms < math.inf:
        raise ValueError(f"match_latency: the target must be a positive number of ms, got {target_ms!r}")
    micros: dict[int, int] = {}

    def time_at(k: int) -> int:
        if k not in micros:
            micros[k] = round(1e3 * measure_latency(model_name, conv, k * grid, runtime, batch, **options))
        return micros[k]

    target = 1e3 * target_ms
    top = max(1, int(max_width / grid))
    lo, hi = _bracket(time_at, target, 1, top, start=max(1, min(top, round(1 / grid))))
    steps = _bisect(time_at, target, lo, hi, lambda lo, hi: (lo + hi) // 2, 1)
    return WidthMatch(model_name, conv, steps * grid, time_at(steps), target, "latency")


def _bracket(f: Callable[[Any], int], target: float, lo: Any, hi: Any, start: Any = None) -> tuple[Any, Any]:
    """A sub-interval of [lo, hi] holding the crossing of a non-decreasing f, found by doubling or halving
    from `start` (default: the middle of the range in log terms, width 1 for a grid): counting a model at the
    largest width is what costs (IGCV2 at width 16 takes 5 s to build on meta), so it is only counted when
    the budget needs it. The bisection inside gives what a bisection over [lo, hi] gives."""
    point = start if start is not None else (lo * hi) ** 0.5
    if f(point) >= target:
        while point > lo:
            smaller = max(lo, point // 2 if isinstance(point, int) else point / 2)
            if f(smaller) < target:
                return smaller, point
            point = smaller
        return lo, lo
    while point < hi:
        larger = min(hi, point * 2)
        if f(larger) >= target:
            return point, larger
        point = larger
    return hi, hi


def _bisect(
    f: Callable[[Any], int], target: float, lo: Any, hi: Any, middle: Callable[[Any, Any], Any], tol: float
) -> Any:
    """The argument in [lo, hi] whose value is closest to target, for a non-decreasing f."""
    if f(lo) >= target:
        return lo
    if f(hi) <= target:
        return hi
    while hi - lo > tol:
        mid = middle(lo, hi)
        if mid in (lo, hi):
            break
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return lo if abs(f(lo) - target) <= abs(f(hi) - target) else hi
