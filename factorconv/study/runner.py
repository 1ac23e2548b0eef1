"""Running a study end to end: `run_study(spec, out)` checks the spec against what `out` already holds (a
study may grow: more operators, seeds or budget values), matches widths to the budgets, plans one run per
(operator, width, seed), hands the unfinished ones to an executor, measures the deploy forms' latency and
writes the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..bench import machine_info
from ..locking import remove_if_unused
from ..train.health import DIVERGED
from ..train.rundir import write_json
from .execution import Executor, LocalExecutor, RunTask, StudyError, finished_result, log
from .latency import measure_latencies, runtime_label
from .lock import LOCK_NAME, StudyLock
from .progress import StudyProgress
from .records import read_json_record, read_run_result
from .report import build_report, run_dir_of
from .spec import Budget, StudySpec, match_widths, parse_budgets

__all__ = ["DataInfo", "data_info", "plan_runs", "run_config", "run_study"]


def _merge_saved(spec: StudySpec, saved: dict[str, Any], out: Path, data: DataInfo) -> None:
    """Grow `spec` by what the saved study has (operators, seeds, budget values, options), or refuse a
    directory that holds a study computing something else, or made on other data, naming each difference."""
    try:
        old = StudySpec.from_dict(saved)
    except (TypeError, ValueError) as err:
        raise StudyError(f"{out / 'study.json'} is not a study this version can read ({err}); choose another "
                         "--out") from None
    mine, theirs = spec.identity(), old.identity()
    common = [c for c in spec.convs if c in old.convs]  # operators added now have nothing to agree with
    for key in ("conv_kwargs", "model_kwargs"):
        mine[key] = {c: mine[key][c] for c in common}
        theirs[key] = {c: theirs[key][c] for c in common}
    seen = saved.get("data_fingerprint")
    if seen is not None:  # studies recorded before fingerprints were kept have none to compare
        mine["data"] = (spec.data, data.fingerprint)
        theirs["data"] = (old.data, seen)
    absent = "(not set)"
    diff = [f"{k}: {_setting(mine.get(k, absent))} here, {_setting(theirs.get(k, absent))} there"
            for k in sorted(mine.keys() | theirs.keys()) if mine.get(k, absent) != theirs.get(k, absent)]
    if diff:
        if seen is not None and mine["data"] != theirs["data"]:
            diff.append(f"its data came from {saved.get('data_source') or old.data_dir or 'the default place'}")
        raise StudyError(f"{out} holds a study with other settings ({'; '.join(diff)}); choose another --out")
    budgets = sorted(set(old.budgets) | set(spec.budgets))
    if budgets:
        unit = "ms" if budgets[0].by == "latency" else ""
        spec.budget = f"{budgets[0].by}=" + ",".join(format(b.value, ".15g") + unit for b in budgets)
    spec.convs = list(dict.fromkeys(old.convs + spec.convs))
    spec.seeds = max(spec.seeds, old.seeds)
    spec.conv_kwargs = {**old.conv_kwargs, **spec.conv_kwargs}
    spec.model_kwargs = {**old.model_kwargs, **spec.model_kwargs}
    if spec.reference is None:
        spec.reference = old.reference


def _latency_widths_recorded(spec: StudySpec, saved: dict[str, Any] | None, timed: list[Budget]
                             ) -> dict[tuple[str, Budget | None], tuple[float, int | None]] | None:
    """The widths a latency budget was matched to when the study was made, when every operator has one: they
    were measured on that machine, and a rerun (here or on another machine) keeps them rather than training
    other widths into the same study. Says so when this machine is another."""
    if not timed or not saved:
        return None
    recorded = saved.get("widths", {})
    budgets = spec.budgets
    if not all(conv in recorded.get(str(b), {}) for b in budgets for conv in spec.convs):
        return None
    where = saved.get("latency_budget", {})
    here = machine_info()["cpu"]
    if where.get("cpu") and where["cpu"] != here:
        log(f"the latency budget {timed[0]} was measured on {where['cpu']} in {where.get('runtime', '?')}; this "
            f"machine is {here}: keeping the widths measured there")
    return {(conv, b): (recorded[str(b)][conv], None) for b in budgets for conv in spec.convs}


def _setting(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2:  # (data set, fingerprint)
        return f"{value[0]} with fingerprint {value[1]}"
    return json.dumps(value, default=str) if not isinstance(value, str) else value


@dataclass(frozen=True)
class DataInfo:
    """What a study needs to know of its data set: image shape (C, H, W), classes, and the fingerprint every
    run must see (`ImageSet.fingerprint` of both splits)."""

    input_size: tuple[int, int, int]
    num_classes: int
    fingerprint: str
    source: str


def data_info(spec: StudySpec) -> DataInfo:
    from ..data import load_dataset
    from ..data.base import dataset_fingerprint
    from ..train import resolve_config

    cfg = resolve_config(spec.preset, None, {"data": spec.data, "data_dir": spec.data_dir, **spec.overrides})
    train = load_dataset(cfg.data, "train", cfg.data_dir, cfg.download, cfg.data_verify, cfg.image_size)
    test = load_dataset(cfg.data, "test", cfg.data_dir, False, cfg.data_verify, cfg.image_size)
    return DataInfo(tuple(test.images.shape[1:]), test.num_classes, dataset_fingerprint(train, test),
                    cfg.data_dir or f"{cfg.data}'s default place")


def run_config(spec: StudySpec, run_dir: Path, conv: str, width: float, seed: int, quiet: bool,
                data_fingerprint: str | None) -> dict[str, Any]:
    from ..train import resolve_config

    entry = spec.entry(conv)
    fields = {"model": entry.model, "conv": entry.operator, "width": width, "conv_kwargs": entry.conv_kwargs,
              "model_kwargs": entry.model_kwargs, "data": spec.data, "data_dir": spec.data_dir, "seed": seed,
              "threads": spec.threads, "run_dir": str(run_dir), "data_fingerprint": data_fingerprint}
    overrides = {k: v for k, v in {**spec.overrides, **entry.overrides}.items() if k != "model_kwargs"}
    if quiet:
        overrides.setdefault("progress", "off")
    cfg = resolve_config(spec.preset, None, {**{k: v for k, v in fields.items() if v is not None}, **overrides})
    return cfg.to_dict()


def plan_runs(spec: StudySpec, out: Path, widths: dict[tuple[str, Budget | None], tuple[float, int | None]],
              quiet: bool = False, data_fingerprint: str | None = None) -> list[RunTask]:
    """One task per distinct (operator, width, seed), seed-major so that early results cover every operator;
    two budgets that give an operator the same width share its runs. With `data_fingerprint`, every run
    refuses other data."""
    tasks: dict[Path, RunTask] = {}
    budgets: list[Budget | None] = list(spec.budgets) or [None]
    for seed in range(spec.seeds):
        for budget in budgets:
            for conv in spec.convs:
                width = widths[(conv, budget)][0]
                run_dir = run_dir_of(out, conv, width, seed)
                if run_dir not in tasks:
                    where = f" @ {budget}" if budget else ""
                    tasks[run_dir] = RunTask(run_config(spec, run_dir, conv, width, seed, quiet, data_fingerprint),
                                             f"{conv}{where} (width {width:g}) seed {seed}", f"{conv}@{width:g}")
    return list(tasks.values())


def _describe(result: dict[str, Any]) -> str:
    if result.get("status") == DIVERGED:
        return "DIVERGED (" + result.get("health", {}).get("reason", "non-finite loss") + ")"
    health = result.get("health") or {}
    flag = "" if health.get("status", "ok") == "ok" else f" [{health['status']}]"
    return f"{100 * result['test_acc']:.2f}%{flag}, {result.get('train_seconds', 0):.0f} s training"


def run_study(spec: StudySpec, out: str | Path, *, executor: Executor | None = None,
              measure_latency: bool = True) -> dict[str, Any]:
    """Run (or finish) the study in `out` and write its report; returns the results (also results.json)."""
    spec.validate()
    executor = executor or LocalExecutor(1)
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StudyError(f"cannot use {out} as the study directory: {err.strerror or err}") from None
    try:
        with StudyLock(out):
            return _run_locked(spec, out, executor, measure_latency)
    except BaseException:
        if created:  # refused before it wrote anything (a runtime not installed, a data set missing)
            remove_if_unused(out, LOCK_NAME)
        raise


def _run_locked(spec: StudySpec, out: Path, executor: Executor, measure_latency: bool) -> dict[str, Any]:
    if measure_latency:  # a runtime that is not installed: one line now, not after the training
        runtime_label(spec.latency_runtime)
    saved = read_json_record(out / "study.json", "study file")
    data = data_info(spec)
    if saved is not None:
        _merge_saved(spec, saved, out, data)
    budgets = parse_budgets(spec.budget)
    input_size, num_classes = data.input_size, data.num_classes
    timed = [b for b in budgets if b.by == "latency"]
    if timed and not measure_latency:
        raise StudyError(f"--budget {timed[0]} is met by measuring latency; leave out --no-latency")
    widths = _latency_widths_recorded(spec, saved, timed) or match_widths(spec, input_size, num_classes)
    by_budget: dict[str, dict[str, float]] = {}
    for (conv, budget), (width, _) in widths.items():
        by_budget.setdefault(str(budget) if budget else "none", {})[conv] = width
    try:
        extra = {"latency_budget": (saved or {}).get("latency_budget") or {
            "runtime": runtime_label(spec.latency_runtime), "batch": spec.latency_batch[0],
            "cpu": machine_info()["cpu"]}} if timed else {}
        write_json(out / "study.json", {**asdict(spec), "widths": by_budget, "data_fingerprint": data.fingerprint,
                                        "data_source": data.source, **extra})
    except OSError as err:
        raise StudyError(f"cannot write {out / 'study.json'}: {err.strerror or err}") from None

    workers = getattr(executor, "workers", 1)
    tasks = plan_runs(spec, out, widths, quiet=workers > 1, data_fingerprint=data.fingerprint)
    pending, finished = [], []
    for task in tasks:
        done = finished_result(task.config)
        if done is None:
            pending.append(task)
        else:
            finished.append((task, done))
    if finished:
        log(f"{len(finished)} of {len(tasks)} runs finished before: skipped")
    t0 = time.perf_counter()

    if pending:
        log(f"training {len(pending)} runs on the {executor.name} executor"
            + (f" ({workers} at a time, {spec.threads} thread(s) each)" if workers > 1 else ""))
        progress = StudyProgress(pending, finished, workers)

        def report(task: RunTask, result: dict[str, Any]) -> None:
            progress.finished(task, result, f"[{progress.done + 1}/{len(tasks)}] {task.label}: {_describe(result)}")

        def failed(task: RunTask, error: BaseException) -> None:
            progress.failed_run(task, f"[failed] {task.label}: {error}")

        try:
            executor.run(pending, report, failed)
        except KeyboardInterrupt as err:
            err.resume_hint = (f"finished runs are kept in {out}, interrupted ones resume from their checkpoints: "
                               "rerun the same command to go on")
            raise
        finally:
            progress.close()
        log(f"trained {len(pending)} runs in {time.perf_counter() - t0:.0f} s")
    if measure_latency:
        points = []
        for (conv, budget), (width, _) in widths.items():
            for seed in range(spec.seeds):
                run = run_dir_of(out, conv, width, seed)
                result = read_run_result(run / "result.json", "test_acc") or {}
                if result.get("status") == "done":
                    points.append((conv + (f" @ {budget}" if budget else ""), run))
                    break
        log(f"measuring inference latency of {len(points)} deploy forms (their latency forms) side by side in "
            f"{runtime_label(spec.latency_runtime)} at batch {', '.join(map(str, spec.latency_batch))} ...")
        write_json(out / "latency.json", measure_latencies(
            spec.model, points, input_size, num_classes, batches=spec.latency_batch, runtime=spec.latency_runtime,
            repeats=spec.latency_repeats, model_kwargs=spec.overrides.get("model_kwargs", {}), threads=spec.threads))
    return build_report(out)
