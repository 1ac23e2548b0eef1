"""One trial, where it trains (a worker process, a Ray task): train the run its config describes, or resume it,
or return its finished result; on the way report the validation accuracy at 25/50/75% of the steps to the
trial's study and stop when its pruner says so.

A trial's run directory is named by what it computes, so a trial interrupted with its driver and retried with
the same parameters resumes that run from its checkpoint, and one that had finished is taken as it is: a
finished trial is never trained twice.
"""

from __future__ import annotations

from typing import Any

from .spec import REPORT_AT
from .storage import create_pruner, open_storage, require_optuna

__all__ = ["PruningReporter", "run_trial"]


class PruningReporter:
    """Trainer callback: at the report points, the validation accuracy to the trial (`report`: storage URL,
    study name, trial id, pruner name, trial count) and PruneRun when the pruner says stop."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        self.trial: Any = None
        self.points: set[int] | None = None

    def _trial(self) -> Any:
        if self.trial is None:
            optuna = require_optuna()
            study = optuna.load_study(study_name=self.report["study"], storage=open_storage(self.report["storage"]),
                                      pruner=create_pruner(self.report["pruner"], self.report["trials"]))
            self.trial = optuna.trial.Trial(study, self.report["trial_id"])
        return self.trial

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event != "step":
            return
        from ..train import PruneRun

        trainer, step = info["trainer"], info["step"]
        if self.points is None:
            self.points = {max(1, round(trainer.total * f)) for f in REPORT_AT} - {trainer.total}
        if step not in self.points:
            return
        scores = trainer.evaluate()
        value = scores["val_acc"]
        trial = self._trial()
        trial.report(value, step)
        if trial.should_prune():
            raise PruneRun(f"validation accuracy {100 * value:.2f}% at step {step} of {trainer.total} is below the "
                           f"{self.report['pruner']} pruner's bar", scores)


def run_trial(config: dict[str, Any], report: dict[str, Any] | None) -> dict[str, Any]:
    """The trial's result: its finished run's, or that of training (or resuming) the run `config` describes;
    status "done" (val_acc), "pruned" (with the scores it was stopped at) or "diverged"."""
    from pathlib import Path

    from ..study.execution import finished_result
    from ..train import DivergedError, PrunedError, TrainConfig, fit

    done = finished_result(config, ("done", "diverged", "pruned"))
    if done is not None:
        return done
    cfg = TrainConfig.from_dict(config)
    resume = (Path(cfg.run_dir) / "checkpoint.pt").exists()
    callbacks = [PruningReporter(report)] if report is not None else []
    try:
        return fit(cfg, resume=resume, callbacks=callbacks)
    except (DivergedError, PrunedError) as err:
        return err.result
