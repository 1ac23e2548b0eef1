"""Statistics of a study: per-operator summaries over seeds (mean, sample std, Student-t 95% confidence
interval), paired differences to a reference operator with their intervals, and the verdicts drawn from them.

Seeds are paired: seed k gives every operator the same data order and augmentation draws, so the difference
acc(op, k) - acc(ref, k) cancels what the seed does to both, and its interval is far narrower than either
accuracy's. Only numpy-free arithmetic is used (the Student t quantile comes from the regularised incomplete
beta function), so the core keeps its two dependencies.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

__all__ = ["BETTER", "NOT_DISTINGUISHABLE", "TOO_FEW", "WORSE", "Summary", "Welch", "estimate_text",
           "paired_difference", "summarize", "t_quantile", "variance_ratio_p", "verdict", "welch_difference",
           "welch_test"]

BETTER, WORSE, NOT_DISTINGUISHABLE, TOO_FEW = "better", "worse", "not distinguishable", "too few seeds"
CONFIDENCE = 0.95


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b) by its continued fraction (Lentz's method)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point: use the symmetry
        return 1.0 - _incomplete_beta(1 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 400):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _incomplete_beta(df / (df + t * t), df / 2, 0.5)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t distribution with `df` degrees of freedom (bisection on the CDF)."""
    if not 0 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and the Student-t confidence interval of `n` values (std and interval are None for
    one value: a single run says nothing about its spread)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2

    def contains(self, value: float) -> bool:
        return self.ci_low is not None and self.ci_low <= value <= self.ci_high

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "half_width": self.half_width}


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Summary of `values`; the interval is mean ± t_{(1+confidence)/2, n-1} · std / sqrt(n)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize: no values")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Summary(1, mean, None, None, None)
    std = statistics.stdev(values)
    half = t_quantile((1 + confidence) / 2, len(values) - 1) * std / math.sqrt(len(values))
    return Summary(len(values), mean, std, mean - half, mean + half)


def paired_difference(values: Sequence[float], reference: Sequence[float],
                      confidence: float = CONFIDENCE) -> Summary:
    """Summary of values[k] - reference[k] over the seeds both have (paired: same k, same data order)."""
    if len(values) != len(reference):
        raise ValueError(f"paired_difference: {len(values)} values against {len(reference)} reference values; "
                         "pair them by seed first")
    return summarize([v - r for v, r in zip(values, reference, strict=True)], confidence)


class Welch(NamedTuple):
    difference: float
    low: float
    high: float
    p: float  # two-sided
    df: float  # Welch-Satterthwaite


def welch_test(a: Summary, b: Summary, confidence: float = CONFIDENCE) -> Welch:
    """a.mean - b.mean from two summaries, its Welch interval (low, high), two-sided p-value and degrees of
    freedom: the samples need not be paired, equal in size or equal in spread (two studies of one operator on
    two machines, say). Each needs two values and some spread between them."""
    if a.std is None or b.std is None:
        raise ValueError(f"welch_difference: need at least 2 values on each side, got {a.n} and {b.n}")
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    if va + vb == 0:
        raise ValueError("welch_difference: both samples are constant; their difference has no interval")
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    se = math.sqrt(va + vb)
    half = t_quantile((1 + confidence) / 2, df) * se
    diff = a.mean - b.mean
    return Welch(diff, diff - half, diff + half, min(1.0, 2 * (1 - _t_cdf(abs(diff) / se, df))), df)


def welch_difference(values: Sequence[float], reference: Sequence[float],
                     confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """mean(values) - mean(reference) and its Welch interval (low, high) (`welch_test` on their summaries)."""
    welch = welch_test(summarize(values), summarize(reference), confidence)
    return welch.difference, welch.low, welch.high


def variance_ratio_p(ratio: float, df_num: int, df_den: int) -> float:
    """Two-sided p-value of a ratio of two sample variances (>= 1) under the F(df_num, df_den) distribution."""
    cdf = _incomplete_beta(df_num * ratio / (df_num * ratio + df_den), df_num / 2, df_den / 2)
    return min(1.0, 2 * (1 - cdf))


def estimate_text(summary: dict[str, Any] | None, signed: bool = False, missing: str = "-") -> str:
    """A summary (as a dict) as "mean [low, high]", or "mean" alone when it has no interval (one seed)."""
    if not summary:
        return missing
    fmt = "{:+.2f}" if signed else "{:.2f}"
    if summary.get("ci_low") is None:
        return fmt.format(summary["mean"])
    return f"{fmt.format(summary['mean'])} [{fmt.format(summary['ci_low'])}, {fmt.format(summary['ci_high'])}]"


def verdict(difference: Summary) -> str:
    """better / worse when the interval of the difference excludes 0, else not distinguishable."""
    if difference.ci_low is None:
        return TOO_FEW
    if difference.ci_low > 0:
        return BETTER
    if difference.ci_high < 0:
        return WORSE
    return NOT_DISTINGUISHABLE
