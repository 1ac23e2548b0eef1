"""A training run's progress as one object: `TrainState` is exactly what a checkpoint saves next to the model,
optimizer, grad-scaler and RNG states, so a resumed run continues from it alone (the data order and the
augmentation are functions of seed, epoch and batch, and need no state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .health import LossTrace

__all__ = ["LAST_EVALS", "TrainState"]

# DO-Conv's metric: the mean test accuracy of a run's last five evaluations (epochs)
LAST_EVALS = 5


def _no_eval() -> dict[str, float | None]:
    return {"test_loss": None, "test_acc": None}


def _no_best() -> dict[str, float | None]:
    return {"test_acc": None, "epoch": None}


@dataclass
class TrainState:
    """Where a run is. `seconds` is the wall time of the run's earlier sessions (this session's is added when
    a checkpoint is written); `sums` the epoch's running loss sum, correct count and sample count;
    `last_record` the last epoch record written to metrics.jsonl (a run resumed at its end reports it);
    `recent_evals` the test accuracies of the last LAST_EVALS evaluations (DO-Conv's metric averages them)."""

    mean: list[float]
    std: list[float]
    loss_trace: LossTrace
    step: int = 0
    epoch: int = 0
    batch: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    train_seconds: float = 0.0
    seconds: float = 0.0
    best: dict[str, float | None] = field(default_factory=_no_best)
    last_eval: dict[str, float | None] = field(default_factory=_no_eval)
    last_record: dict[str, Any] = field(default_factory=dict)
    recent_evals: list[float] = field(default_factory=list)

    @classmethod
    def start(cls, mean: list[float], std: list[float], total_steps: int) -> TrainState:
        return cls(mean, std, LossTrace(total_steps))

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any], total_steps: int) -> TrainState:
        return cls(saved["mean"], saved["std"], LossTrace(total_steps, saved.get("loss_trace")),
                   step=saved["step"], epoch=saved["epoch"], batch=saved["batch"], sums=list(saved["sums"]),
                   train_seconds=saved["train_seconds"], seconds=saved["seconds"], best=dict(saved["best"]),
                   last_eval=dict(saved["last_eval"]), last_record=dict(saved.get("last_record") or {}),
                   recent_evals=list(saved.get("recent_evals") or []))

    def to_checkpoint(self, session_seconds: float) -> dict[str, Any]:
        """The checkpoint's progress fields, with this session's `session_seconds` added to the wall time."""
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch, "sums": self.sums,
                "train_seconds": self.train_seconds, "seconds": self.seconds + session_seconds, "best": self.best,
                "last_eval": self.last_eval, "mean": self.mean, "std": self.std,
                "loss_trace": self.loss_trace.state_dict(), "last_record": self.last_record,
                "recent_evals": self.recent_evals}

    def add_eval(self, test_acc: float) -> None:
        self.recent_evals = [*self.recent_evals, test_acc][-LAST_EVALS:]

    @property
    def last_evals_mean(self) -> float | None:
        """The mean of the last LAST_EVALS evaluations' accuracy; None before there were that many."""
        return sum(self.recent_evals) / LAST_EVALS if len(self.recent_evals) == LAST_EVALS else None

    @property
    def epoch_means(self) -> tuple[float, float]:
        """The epoch's mean training loss and accuracy so far."""
        return self.sums[0] / max(self.sums[2], 1), self.sums[1] / max(self.sums[2], 1)
