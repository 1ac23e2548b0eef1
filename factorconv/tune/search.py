"""The search: each operator's trials, equal in number, asked of its sampler one at a time as workers free up,
matched to the budget, trained on the workers and told back to the study storage.

A trial counts once it is told complete or pruned; `trials` counted per operator is the study's effort, the same
for every operator. Pruned trials are of three kinds, each recorded with its reason: stopped by the pruner on
its validation accuracy, refused before training because no width meets the budget with its configuration
(never trained at the wrong size) or because the operator rejects the configuration, and diverged. A trial
left running by a driver that died is failed and its parameters queued again (its run resumes, or is taken as
finished): it is never counted twice. Trials of another live driver sharing the storage count as running.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..budget import match_buildable_width
from ..locking import process_alive
from ..study.execution import BOOKKEEPING, log
from ..study.runner import DataInfo, run_config
from ..study.spec import MAX_BUDGET_FACTOR, StudySpec, match_widths, parse_budgets
from .pool import LocalPool, RayPool
from .spec import TUNE_SEED, TuneSpec
from .storage import (
    HEARTBEAT_SECONDS,
    TuneError,
    create_pruner,
    create_sampler,
    distributions,
    open_storage,
    require_optuna,
)
from .trial import run_trial

__all__ = ["Search", "open_studies"]

# seconds a RUNNING trial without a driver of record may be young: it is being set up by a live driver
_UNCLAIMED_GRACE = 120.0
# draws of an already-tried configuration in a row before the duplicate is accepted
MAX_REDRAWS = 10


def open_studies(spec: TuneSpec, url: str) -> dict[str, Any]:
    """{operator: its Optuna study} in the storage at `url` (created when new). The sampler's seed is offset by
    the trials the study already holds: a driver that goes on after another stopped would otherwise draw the
    same random start again (the same configurations, the same runs)."""
    optuna = require_optuna()
    storage = open_storage(url)
    studies = {}
    for op in spec.convs:
        study = optuna.create_study(study_name=spec.study_name(op), storage=storage, direction="maximize",
                                    load_if_exists=True, pruner=create_pruner(spec.pruner, spec.trials))
        study.sampler = create_sampler(op, spec.sampler_seed + len(study.get_trials(deepcopy=False)), spec.trials)
        studies[op] = study
    return studies


def _me() -> str:
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


class Search:
    """Runs `spec`'s trials in `out` until every operator has `spec.trials` counted trials."""

    def __init__(self, spec: TuneSpec, out: Path, url: str, pool: LocalPool | RayPool, data: DataInfo) -> None:
        self.optuna = require_optuna()
        self.spec, self.out, self.url, self.pool, self.data = spec, out, url, pool, data
        self.spaces = spec.spaces()
        self.studies = open_studies(spec, url)
        self.running: dict[futures.Future, tuple[str, Any, dict[str, Any]]] = {}
        self.stop_beating = threading.Event()
        self.redraws: dict[str, int] = {}
        self.start_width: dict[str, float] = {}

    # -- counting -------------------------------------------------------------------------------------------

    def _trials(self, op: str, *states: Any) -> list[Any]:
        return self.studies[op].get_trials(deepcopy=False, states=states or None)

    def counted(self, op: str) -> int:
        ts = self.optuna.trial.TrialState
        return len(self._trials(op, ts.COMPLETE, ts.PRUNED))

    def _open_slots(self, op: str) -> int:
        ts = self.optuna.trial.TrialState
        return self.spec.trials - self.counted(op) - len(self._trials(op, ts.RUNNING))

    # -- recovery -------------------------------------------------------------------------------------------

    def recover(self) -> int:
        """Fail the running trials whose driver is gone (on this machine: its pid; elsewhere: its heartbeat) and
        queue their parameters again; returns how many."""
        ts, host, recovered = self.optuna.trial.TrialState, socket.gethostname(), 0
        for op, study in self.studies.items():
            self.optuna.storages.fail_stale_trials(study)  # other machines' dead drivers: Optuna retries them
            for trial in self._trials(op, ts.RUNNING):
                driver = trial.user_attrs.get("driver")
                if driver is None:
                    age = time.time() - trial.datetime_start.timestamp() if trial.datetime_start else 1e9
                    dead = age > _UNCLAIMED_GRACE
                else:
                    where, _, pid = driver.rpartition(":")
                    dead = where == host and not process_alive(int(pid))
                if dead:
                    study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
                    study.tell(trial.number, state=ts.FAIL)
                    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                    recovered += 1
        return recovered

    # -- one trial ------------------------------------------------------------------------------------------

    def _ask(self, op: str) -> Any | None:
        """The next trial of `op`, or None when its count is reached (also by another driver's trial)."""
        if self._open_slots(op) <= 0:
            return None
        study, ts = self.studies[op], self.optuna.trial.TrialState
        trial = study.ask(distributions(self.spaces[op].searched))
        trial.set_user_attr("driver", _me())
        before = [t for t in self._trials(op, ts.COMPLETE, ts.PRUNED, ts.RUNNING) if t.number < trial.number]
        if len(before) >= self.spec.trials:  # another driver asked for the last one first
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=ts.FAIL)
            return None
        return trial

    def _prune_before_training(self, op: str, trial: Any, reason: str, kind: str) -> None:
        trial.set_user_attr("pruned", kind)
        trial.set_user_attr("reason", reason)
        self.studies[op].tell(trial, state=self.optuna.trial.TrialState.PRUNED)
        log(f"[{op} trial {trial.number}] pruned before training ({kind}): {reason}")

    def plan(self, op: str, trial: Any) -> dict[str, Any] | None:
        """The run config of `trial` at the width that meets the budget; None (the trial told pruned, with why)
        when no width does or the operator rejects the configuration."""
        spec, space = self.spec, self.spaces[op]
        options, recipe = space.split(trial.params)
        entry = StudySpec(model=spec.model, convs=[op], budget=spec.budget, data=spec.data, data_dir=spec.data_dir,
                          preset=spec.preset, threads=spec.threads, overrides=dict(spec.overrides),
                          conv_kwargs={op: options}, width_grid=spec.width_grid,
                          run_overrides={op: {**recipe, "holdout": spec.holdout}})
        try:
            (width, count), = match_widths(entry, self.data.input_size, self.data.num_classes).values()
        except ValueError as err:
            matched = self._buildable_width(op, options, err)
            if matched is None:
                kind = "budget" if "cannot meet" in str(err) else "invalid"  # no width is near, or it is refused
                self._prune_before_training(op, trial, str(err).replace("compare: ", ""), kind)
                return None
            width, count = matched
            trial.set_user_attr("width_note", "the nearest width this configuration builds at")
        config = run_config(entry, self.out, op, width, TUNE_SEED, True, self.data.fingerprint)
        digest = hashlib.blake2b(json.dumps({k: v for k, v in config.items() if k not in BOOKKEEPING},
                                            sort_keys=True, default=str).encode(), digest_size=6).hexdigest()
        config["run_dir"] = str(self.out / "trials" / op / digest)
        for key, value in (("width", width), ("count", count), ("run_dir", config["run_dir"]),
                           ("options", options), ("recipe", recipe)):
            trial.set_user_attr(key, value)
        return config

    def _buildable_width(self, op: str, options: dict[str, Any], err: ValueError) -> tuple[float, int] | None:
        """(width, count) nearest the budget among the widths `options` build at, when the operator refused
        them at the width the search met first (IGCV2's K must divide the channels); None otherwise."""
        budgets = parse_budgets(self.spec.budget)
        if "cannot meet" in str(err) or not budgets or budgets[0].by == "latency":
            return None
        if op not in self.start_width:  # the default configuration's width: where to start looking
            default = StudySpec(model=self.spec.model, convs=[op], budget=self.spec.budget,
                                overrides=dict(self.spec.overrides), width_grid=self.spec.width_grid)
            (self.start_width[op], _), = match_widths(default, self.data.input_size, self.data.num_classes).values()
        budget = budgets[0]
        try:
            m = match_buildable_width(self.spec.model, op, budget.value, budget.by, start=self.start_width[op],
                                      grid=self.spec.width_grid, max_factor=MAX_BUDGET_FACTOR,
                                      input_size=self.data.input_size, conv_kwargs=options,
                                      num_classes=self.data.num_classes, **self.spec.overrides.get("model_kwargs", {}))
        except ValueError:
            return None
        return m.width, m.value

    def tell(self, op: str, trial: Any, result: dict[str, Any]) -> str:
        """Tell the study how `trial` ended; returns a line for the log."""
        study, ts = self.studies[op], self.optuna.trial.TrialState
        status = result.get("status")
        reason = result.get("reason") or (result.get("health") or {}).get("reason")
        for key, value in (("status", status), ("seconds", result.get("seconds")), ("reason", reason),
                           ("train_seconds", result.get("train_seconds"))):
            if value is not None:
                trial.set_user_attr(key, value)
        if status == "done":
            study.tell(trial, float(result["val_acc"]))
            return f"validation {100 * result['val_acc']:.2f}%, {result.get('train_seconds', 0):.0f} s training"
        trial.set_user_attr("pruned", "pruner" if status == "pruned" else "diverged")
        study.tell(trial, state=ts.PRUNED)
        return f"{status}: {reason or ''}"

    def _duplicate(self, op: str, trial: Any, config: dict[str, Any]) -> bool:
        """A configuration a counted or running trial already has (the sampler drew it again): the trial is
        failed as a duplicate, not counted, and another drawn; after MAX_REDRAWS in a row (a small discrete
        space) the duplicate stands, and its run is taken as finished."""
        if trial.user_attrs.get("retry_of") is not None:  # a retry shares its interrupted trial's run by design
            return False
        ts = self.optuna.trial.TrialState
        taken = {t.user_attrs.get("run_dir") for t in self._trials(op, ts.COMPLETE, ts.PRUNED, ts.RUNNING)
                 if t.number != trial.number}
        if config["run_dir"] not in taken or self.redraws.get(op, 0) >= MAX_REDRAWS:
            self.redraws[op] = 0
            return False
        self.redraws[op] = self.redraws.get(op, 0) + 1
        trial.set_user_attr("duplicate", True)
        self.studies[op].tell(trial, state=ts.FAIL)
        return True

    # -- the loop -------------------------------------------------------------------------------------------

    def _beat(self) -> None:
        """Heartbeats of this driver's running trials, so that drivers elsewhere know they live."""
        while not self.stop_beating.wait(HEARTBEAT_SECONDS):
            for op, trial, _ in list(self.running.values()):
                self.studies[op]._storage.record_heartbeat(trial._trial_id)

    def _submit(self) -> None:
        """Fill the free workers, round-robin over the operators, fewest counted first."""
        while len(self.running) < self.pool.slots:
            order = sorted(self.spec.convs, key=lambda op: (self.counted(op), self.spec.convs.index(op)))
            submitted = False
            for op in order:
                if len(self.running) >= self.pool.slots:
                    break
                trial = self._ask(op)
                if trial is None:
                    continue
                config = self.plan(op, trial)
                if config is None:
                    submitted = True  # a trial was spent (pruned before training): look again
                    continue
                if self._duplicate(op, trial, config):
                    submitted = True  # not counted: draw again
                    continue
                self.studies[op]._storage.record_heartbeat(trial._trial_id)
                report = None if self.spec.pruner == "none" else {
                    "storage": self.url, "study": self.spec.study_name(op), "trial_id": trial._trial_id,
                    "pruner": self.spec.pruner, "trials": self.spec.trials}
                self.running[self.pool.submit(run_trial, config, report)] = (op, trial, config)
                submitted = True
            if not submitted:
                return

    def run(self) -> None:
        recovered = self.recover()
        if recovered:
            log(f"{recovered} trial(s) interrupted before: queued again (their runs resume or are taken as finished)")
        beater = threading.Thread(target=self._beat, name="factorconv-tune-heartbeat", daemon=True)
        beater.start()
        failure: BaseException | None = None
        try:
            self._submit()
            while self.running:
                finished, _ = futures.wait(self.running, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    op, trial, _config = self.running.pop(future)
                    try:
                        result = future.result()
                    except Exception as err:  # the trial's own error, or a worker that died
                        failure = failure or self._failed(op, trial, err)
                        continue
                    total = sum(self.counted(o) for o in self.spec.convs) + 1
                    log(f"[{total}/{self.spec.trials * len(self.spec.convs)}] {op} trial {trial.number}: "
                        f"{self.tell(op, trial, result)}")
                if failure is None:
                    self._submit()
        finally:
            self.stop_beating.set()
        if failure is not None:
            raise failure

    def _failed(self, op: str, trial: Any, err: BaseException) -> TuneError:
        """Mark `trial` failed: a worker that died is an interruption (its parameters are queued again), any
        other error is the trial's own; the search stops once the running trials end."""
        ts = self.optuna.trial.TrialState
        died = isinstance(err, futures.process.BrokenProcessPool)
        trial.set_user_attr("interrupted" if died else "error", True if died else f"{type(err).__name__}: {err}")
        self.studies[op].tell(trial, state=ts.FAIL)
        if died:
            self.studies[op].enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            return TuneError(f"a worker process died during {op} trial {trial.number}; rerun the same command to go "
                             "on (finished trials are kept, interrupted ones run again)")
        return TuneError(f"{op} trial {trial.number} failed: {type(err).__name__}: {err} (rerun the same command "
                         "to go on; that trial stays failed and another is drawn)")
