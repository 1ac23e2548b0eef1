"""A paper's claim against a study's paired difference: the paper says row X is better (or worse) than the
reference by some points; our paired difference over seeds, with its 95% interval, either agrees in direction
and is distinguishable from 0, is not distinguishable, or is distinguishable in the opposite direction."""

from __future__ import annotations

from ..study.stats import Summary

__all__ = ["HOLDS", "NOT_DISTINGUISHABLE", "OPPOSITE", "TOO_FEW", "claim_verdict"]

HOLDS = "same direction, distinguishable"
NOT_DISTINGUISHABLE = "not distinguishable"
OPPOSITE = "opposite"
TOO_FEW = "too few seeds"
AGREES_NO_DIFFERENCE = "no difference, as the paper"
DIFFERS = "a difference the paper does not show"


def claim_verdict(paper_delta: float, ours: Summary) -> str:
    """The verdict on a claimed difference `paper_delta` (row minus reference, points) from our paired
    difference `ours`. A claim of no difference (paper_delta == 0) holds when our interval contains 0."""
    if ours.ci_low is None or ours.ci_high is None:
        return TOO_FEW
    excludes_zero = ours.ci_low > 0 or ours.ci_high < 0
    if paper_delta == 0:
        return DIFFERS if excludes_zero else AGREES_NO_DIFFERENCE
    if not excludes_zero:
        return NOT_DISTINGUISHABLE
    return HOLDS if (ours.mean > 0) == (paper_delta > 0) else OPPOSITE
