"""The accuracy/size Pareto front of a study, on mean accuracies, and which of its steps the seeds can tell
apart: two neighbouring front points are distinguishable when the paired difference of their accuracies
(same seeds) has a 95% interval that excludes zero.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from .stats import TOO_FEW, paired_difference, verdict

__all__ = ["front_steps", "pareto_front"]


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[bool]:
    """Which points are non-dominated when cost is minimised and accuracy maximised: no other point is at
    most as costly and at least as accurate, and strictly better in one of the two. Equal points all stay."""
    if len(costs) != len(accuracies):
        raise ValueError("pareto_front: costs and accuracies differ in length")
    front = []
    for i, (c, a) in enumerate(zip(costs, accuracies, strict=True)):
        dominated = any(cj <= c and aj >= a and (cj < c or aj > a)
                        for j, (cj, aj) in enumerate(zip(costs, accuracies, strict=True)) if j != i)
        front.append(not dominated)
    return front


def front_steps(points: Sequence[dict[str, Any]], cost_key: str) -> list[dict[str, Any]]:
    """For the front points sorted by cost, each step up: {"from", "to", "difference" (Summary as dict of the
    paired accuracy gain), "verdict"}. A point is a dict with `cost_key`, "label" and "accs_by_seed"
    ({seed: accuracy}); the difference uses the seeds both points have."""
    ordered = sorted(points, key=lambda p: (p[cost_key], -_mean(p)))
    steps = []
    for low, high in itertools.pairwise(ordered):
        seeds = sorted(set(low["accs_by_seed"]) & set(high["accs_by_seed"]))
        if not seeds:
            steps.append({"from": low["label"], "to": high["label"], "difference": None, "verdict": TOO_FEW})
            continue
        diff = paired_difference([high["accs_by_seed"][s] for s in seeds], [low["accs_by_seed"][s] for s in seeds])
        steps.append({"from": low["label"], "to": high["label"], "difference": diff.to_dict(),
                      "verdict": verdict(diff) if diff.n > 1 else TOO_FEW})
    return steps


def _mean(point: dict[str, Any]) -> float:
    values = list(point["accs_by_seed"].values())
    return sum(values) / len(values) if values else float("-inf")
