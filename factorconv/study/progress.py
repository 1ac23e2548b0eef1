"""Progress over a study's runs: on a terminal a tqdm bar (runs done, running, failed, and an ETA from the
finished runs' times per operator and width), otherwise the plain lines a log wants, one per finished run.

The ETA is what the remaining runs would take at the mean time of the finished runs with the same operator and
width (the task's cost key; the mean of all finished runs for a key not seen yet), shared by the workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from ..terminal import BarOrLines
from .execution import RunTask

__all__ = ["StudyProgress"]


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class StudyProgress(BarOrLines):
    """`started` are the study's tasks still to run, `finished` (task, result) pairs of runs finished before;
    `workers` runs execute at a time. `mode` "auto" draws a bar on a terminal (and where tqdm is installed),
    "bar" or "plain" force one."""

    def __init__(self, pending: Sequence[RunTask], finished: Sequence[tuple[RunTask, dict[str, Any]]],
                 workers: int, stream: TextIO | None = None, mode: str = "auto") -> None:
        self.total = len(pending) + len(finished)
        self.workers = max(1, workers)
        self.remaining = list(pending)
        self.done, self.failed, self.diverged = len(finished), 0, 0
        self.seconds: dict[str, list[float]] = {}
        for task, result in finished:
            self._record(task, result)
        super().__init__(mode, stream, total=self.total, initial=self.done, unit="run")
        if self.bar is not None:
            self.bar.set_postfix_str(self.status(), refresh=True)

    def _record(self, task: RunTask, result: dict[str, Any]) -> None:
        seconds = result.get("seconds")
        if isinstance(seconds, int | float) and seconds > 0:
            self.seconds.setdefault(task.cost_key, []).append(float(seconds))

    @property
    def running(self) -> int:
        return min(self.workers, len(self.remaining))

    def eta(self) -> float | None:
        """Seconds the remaining runs should take (None before any run's time is known)."""
        if not self.remaining:
            return 0.0
        known = [s for times in self.seconds.values() for s in times]
        if not known:
            return None
        overall = sum(known) / len(known)
        each = [sum(self.seconds[t.cost_key]) / len(self.seconds[t.cost_key]) if t.cost_key in self.seconds
                else overall for t in self.remaining]
        return max(sum(each) / self.workers, max(each))  # fewer runs than workers: the longest one's time

    def status(self) -> str:
        """'12/21 done, 2 running, 0 failed, ETA 14 min' (diverged runs count as done, and are named)."""
        eta = self.eta()
        parts = [f"{self.done}/{self.total} done", f"{self.running} running", f"{self.failed} failed"]
        if self.diverged:
            parts.insert(1, f"{self.diverged} diverged")
        parts.append("ETA " + ("unknown" if eta is None else _minutes(eta)))
        return ", ".join(parts)

    def _forget(self, task: RunTask) -> None:
        self.remaining = [t for t in self.remaining if t.run_dir != task.run_dir]

    def finished(self, task: RunTask, result: dict[str, Any], line: str) -> None:
        """A run ended with `result`; `line` says how."""
        self._forget(task)
        self.done += 1
        self.diverged += result.get("status") == "diverged"
        self._record(task, result)
        self._show(line, advance=1)

    def failed_run(self, task: RunTask, line: str) -> None:
        """A run failed (its error ends the study once the running ones finish)."""
        self._forget(task)
        self.failed += 1
        self._show(line, advance=0)

    def _show(self, line: str, advance: int) -> None:
        self.write(line)
        if self.bar is not None:
            self.bar.update(advance)
            self.bar.set_postfix_str(self.status(), refresh=True)
