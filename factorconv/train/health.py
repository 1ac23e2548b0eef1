"""Run health: was a finished run's training sound enough to read its accuracy as the recipe's result?

The engine keeps a loss trace: the mean training loss of each block of steps (about TRACE_POINTS blocks per
run, so the trace stays small for long runs and rides in the checkpoint). From it:

- diverged: the loss went non-finite (the engine stops such a run) or ended at least as high as it started
  (the mean of the trace's last tenth against its first tenth);
- not converged: still improving fast at its end: the slope of a least-squares line through the last
  END_WINDOW of the trace is more than END_RATE times the run's average pace (from the first tenth's mean
  to the last tenth's). A line through many points, not the last tenth against the one before: windows of
  different batches differ in difficulty, and on the same data order (a paired seed) that moved a two-window
  comparison for every operator alike. Measured on the default study's annealed runs: 0.07 to 0.33; an
  exponential decay cut at one time constant gives 0.68, at three 0.26.

A study marks such runs in its table and never averages them in silently.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["DIVERGED", "END_RATE", "END_WINDOW", "MIN_POINTS", "NOT_CONVERGED", "OK", "TRACE_POINTS", "LossTrace",
           "assess"]

OK, DIVERGED, NOT_CONVERGED = "ok", "diverged", "not converged"
TRACE_POINTS = 50
END_RATE = 0.5
END_WINDOW = 0.3
MIN_POINTS = 20  # below this (runs of fewer than 20 steps) a tenth of the trace is a batch or two: too noisy


class LossTrace:
    """Block means of the per-step training loss, `every` steps per block."""

    def __init__(self, total_steps: int, state: dict[str, Any] | None = None) -> None:
        if state:
            self.every, self.points = int(state["every"]), list(state["points"])
            self._sum, self._count = float(state["sum"]), int(state["count"])
        else:
            self.every, self.points = max(1, total_steps // TRACE_POINTS), []
            self._sum, self._count = 0.0, 0

    def add(self, loss: float) -> None:
        self._sum += loss
        self._count += 1
        if self._count == self.every:
            self.points.append(self._sum / self._count)
            self._sum, self._count = 0.0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "points": list(self.points), "sum": self._sum, "count": self._count}

    def finished(self) -> list[float]:
        """The block means, with a last partial block when one is open."""
        return self.points + ([self._sum / self._count] if self._count else [])


def assess(points: Sequence[float], nonfinite: bool = False) -> dict[str, Any]:
    """{"status": ok | diverged | not converged, "start", "end", "end_rate", "reason"} from a loss trace."""
    if nonfinite:
        return {"status": DIVERGED, "reason": "the training loss became NaN/inf"}
    points = [float(p) for p in points]
    if any(not math.isfinite(p) for p in points):
        return {"status": DIVERGED, "reason": "the training loss became NaN/inf"}
    if len(points) < MIN_POINTS:
        return {"status": OK, "reason": f"a run of {len(points)} loss points is too short to judge"}
    tenth = max(1, len(points) // 10)
    start, end = statistics.fmean(points[:tenth]), statistics.fmean(points[-tenth:])
    info = {"start": start, "end": end}
    if end >= start:
        return {"status": DIVERGED, **info, "end_rate": None,
                "reason": f"the training loss ended at {end:.3f}, not below where it started ({start:.3f})"}
    tail = points[-max(3, round(END_WINDOW * len(points))):]
    xs = range(len(tail))
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(tail)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, tail, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs)
    average = (start - end) / (len(points) - tenth)  # per point, between the first and last tenths' centres
    rate = -slope / average
    info["end_rate"] = rate
    if rate > END_RATE:
        return {"status": NOT_CONVERGED, **info,
                "reason": f"over the last {100 * END_WINDOW:g}% of training the loss fell at {rate:.2f}x its average "
                          f"pace (more than {END_RATE:g}x): still improving fast when it stopped"}
    return {"status": OK, **info, "reason": ""}
