"""Run health: was a finished run's training sound enough to read its accuracy as the recipe's result?

The engine keeps a loss trace: the mean training loss of each block of steps (about TRACE_POINTS blocks per
run, so the trace stays small for long runs and rides in the checkpoint). From it:

- diverged: the loss went non-finite (the engine stops such a run) or ended at least as high as it started
  (the mean of the trace's last tenth against its first tenth);
- not converged: still improving fast at its end: over the last tenth of the trace the loss fell by more than
  END_RATE times its average fall per tenth over the whole run. A schedule that anneals the learning rate
  flattens the loss at the end (measured: about 0.2 on the default study's runs); a run whose loss still falls
  at more than half its average pace was cut short, and its accuracy is a point on a slope.

A study marks such runs in its table and never averages them in silently.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["DIVERGED", "END_RATE", "MIN_POINTS", "NOT_CONVERGED", "OK", "TRACE_POINTS", "LossTrace", "assess"]

OK, DIVERGED, NOT_CONVERGED = "ok", "diverged", "not converged"
TRACE_POINTS = 50
END_RATE = 0.5
MIN_POINTS = 10  # below this a tenth of the trace is one noisy batch: too little to judge by


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
    before = statistics.fmean(points[-2 * tenth:-tenth])
    info = {"start": start, "end": end}
    if end >= start:
        return {"status": DIVERGED, **info, "end_rate": None,
                "reason": f"the training loss ended at {end:.3f}, not below where it started ({start:.3f})"}
    # the first and last tenths' means are len/tenth - 1 tenths apart: a steady fall gives a rate of 1
    rate = (before - end) / ((start - end) / (len(points) / tenth - 1))
    info["end_rate"] = rate
    if rate > END_RATE:
        return {"status": NOT_CONVERGED, **info,
                "reason": f"over the last tenth of training the loss fell at {rate:.2f}x its average pace (more than "
                          f"{END_RATE:g}x): still improving fast when it stopped"}
    return {"status": OK, **info, "reason": ""}
