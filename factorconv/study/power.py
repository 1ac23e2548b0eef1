"""What a study's seeds can resolve: the smallest paired difference its test would detect with 80% power,
from the observed spread of the paired differences, and whether the spreads of a study's comparisons are
alike enough to be pooled into one better-estimated spread.

With n seeds, a spread s of the paired differences and a two-sided test at level alpha, a true difference of
(t_{1-alpha/2, n-1} + t_{power, n-1}) * s / sqrt(n) is detected with probability about `power` (the usual
approximation to the noncentral t; it is slightly optimistic at n = 3). Three seeds estimate s itself poorly:
where the comparisons' spreads are compatible (the largest and smallest variance pass a two-sided F test,
Bonferroni over the pairs), their pooled variance is used instead of each one's own, and the choice is stated.
A claimed difference below that size is "below what this study can resolve": neither a verdict nor a
refutation, only a statement about the study's size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .stats import t_quantile, variance_ratio_p

__all__ = ["ALPHA", "BELOW_RESOLUTION", "POWER", "Spread", "detectable_difference", "resolution", "spread_of_rows",
           "study_spread"]

POWER = 0.80
ALPHA = 0.05
BELOW_RESOLUTION = "below what this study can resolve"


def detectable_difference(std: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true paired difference a two-sided paired t-test on `n` seeds (level `alpha`) detects
    with probability `power`, when the differences spread with standard deviation `std`."""
    if n < 2:
        raise ValueError(f"detectable_difference: need at least 2 paired seeds, got {n}")
    if not std >= 0:
        raise ValueError(f"detectable_difference: std must be >= 0, got {std!r}")
    df = n - 1
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * std / math.sqrt(n)


@dataclass(frozen=True)
class Spread:
    """The spread a study's power statement uses: `pooled` over `comparisons` (with `std` and `df`), or each
    comparison's own (`std` None); `p_value` is the F test of the largest against the smallest variance."""

    pooled: bool
    std: float | None
    df: int
    comparisons: int
    p_value: float | None

    def describe(self) -> str:
        if self.comparisons == 0:
            return "no comparison has two paired seeds"
        if self.pooled:
            test = "" if self.p_value is None else f"; largest vs smallest variance: F test p = {self.p_value:.2f}"
            return (f"the pooled spread of the paired differences over {self.comparisons} comparison(s), "
                    f"{self.std:.2f} points on {self.df} degrees of freedom{test}")
        return (f"each comparison's own spread (their spreads differ: largest vs smallest variance, F test "
                f"p = {self.p_value:.3f} with Bonferroni over the pairs)")

    def to_dict(self) -> dict[str, Any]:
        return {"pooled": self.pooled, "std": self.std, "df": self.df, "comparisons": self.comparisons,
                "p_value": self.p_value, "description": self.describe()}


def study_spread(differences: Sequence[tuple[int, float]], alpha: float = ALPHA) -> Spread:
    """Decide between a pooled and per-comparison spread from the comparisons' paired differences, each given as
    (n, std); comparisons with fewer than 2 seeds are ignored."""
    usable = [(n, s) for n, s in differences if n >= 2 and s is not None]
    if not usable:
        return Spread(False, None, 0, 0, None)
    df = sum(n - 1 for n, _ in usable)
    pooled_std = math.sqrt(sum((n - 1) * s * s for n, s in usable) / df)
    if len(usable) == 1:
        return Spread(True, pooled_std, df, 1, None)
    (n_hi, s_hi), (n_lo, s_lo) = max(usable, key=lambda x: x[1]), min(usable, key=lambda x: x[1])
    if s_lo == 0:
        p = 1.0 if s_hi == 0 else 0.0
    else:
        pairs = len(usable) * (len(usable) - 1) // 2
        p = min(1.0, pairs * variance_ratio_p((s_hi / s_lo) ** 2, n_hi - 1, n_lo - 1))
    return Spread(p >= alpha, pooled_std if p >= alpha else None, df, len(usable), p)


def spread_of_rows(rows: Iterable[dict[str, Any]]) -> Spread:
    """`study_spread` over the paired differences of a study's rows (compare's or reproduce's: each row's
    "difference" summary, None for the reference)."""
    return study_spread([(r["difference"]["n"], r["difference"]["std"]) for r in rows if r.get("difference")])


def resolution(difference: dict[str, Any] | None, spread: Spread) -> float | None:
    """The detectable difference (80% power) of one comparison whose paired difference is `difference` (a
    Summary dict), with the study's `spread`; None when it has fewer than 2 seeds."""
    if not difference or difference.get("n", 0) < 2 or difference.get("std") is None:
        return None
    std = spread.std if spread.pooled else difference["std"]
    return detectable_difference(std, difference["n"])
