"""TensorBoard event files for a run (config field `log = "tensorboard"`, extra `[tensorboard]`): the records
metrics.jsonl gets, as scalars (train loss, accuracy and learning rate per log step; test loss and score per
evaluation), and the run's config as hyperparameters with its final score, all in the run directory, so that
`tensorboard --logdir STUDY` shows every run of a study side by side.

A resumed run hides what the killed process logged after its checkpoint (TensorBoard's purge step), as
metrics.jsonl is cut back to the checkpoint's step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["LOG_CHOICES", "TensorBoardLog", "tensorboard_available"]

LOG_CHOICES = ("jsonl", "tensorboard")
INSTALL = "pip install 'factorconv[tensorboard]' (or pip install tensorboard)"


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _hparam(value: Any) -> Any:
    """TensorBoard's hyperparameters are numbers, strings or booleans: anything else as JSON text."""
    if isinstance(value, bool | int | float | str):
        return value
    return "null" if value is None else json.dumps(value, sort_keys=True, default=str)


class TensorBoardLog:
    """Writes a run's records as TensorBoard events in `run_dir`; `purge_step` is the step a resumed run
    starts from."""

    def __init__(self, run_dir: Path, config: dict[str, Any], purge_step: int | None = None) -> None:
        if not tensorboard_available():
            raise ValueError(f"config field 'log' = 'tensorboard' needs TensorBoard: {INSTALL}")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        self.hparams = {k: _hparam(v) for k, v in config.items() if k not in ("run_dir",)}
        if not purge_step:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def record(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record: a log step's running training means and learning rate (train/loss,
        train/acc, lr), or an epoch's means (epoch/train_loss, epoch/train_acc) with its test scores (test/loss,
        test/acc, test/pixel_acc), at the run's step."""
        step = int(record["step"])
        names = {"train_loss": "train/loss", "train_acc": "train/acc", "lr": "lr"} if record.get("kind") == "step" \
            else {"train_loss": "epoch/train_loss", "train_acc": "epoch/train_acc", "test_loss": "test/loss",
                  "test_acc": "test/acc", "test_pixel_acc": "test/pixel_acc"}
        for key, tag in names.items():
            value = record.get(key)
            if value is not None:
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, result: dict[str, Any]) -> None:
        """The run's hyperparameters with its final scores (TensorBoard's HPARAMS tab)."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {f"hparam/{k}": float(result[k]) for k in ("test_acc", "test_loss", "best_test_acc")
                   if isinstance(result.get(k), int | float)}
        experiment, start, end = hparams(self.hparams, metrics)
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, int(result.get("steps", 0)))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
