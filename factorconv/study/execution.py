"""Executing a study's runs: `RunTask` (one training run: its config and a label), `execute_run` (what runs a
task anywhere: reuse a finished result, resume a checkpoint, or train), and the `Executor` interface with the
local implementation (`LocalExecutor`: in this process, or N worker processes).

An executor only decides where and when `execute_run` is called; a run's numbers are decided by its config
alone (the threads of a run are a config field), so the same task gives the same result on any executor, in
any order, and a study can be finished on another executor than the one it started on. A cluster executor
implements `Executor.run` the same way.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..checks import is_int
from ..locking import process_alive
from .errors import StudyError
from .records import FINISHED
from .spec import BOOKKEEPING

__all__ = ["BOOKKEEPING", "Done", "Executor", "Failed", "LocalExecutor", "LongestFirst", "RunTask", "StudyError",
           "driver_identity", "execute_run", "execute_run_watched", "finished_result", "init_worker", "notify_failed",
           "run_failed"]



@dataclass(frozen=True)
class RunTask:
    """One training run of a study: the full training config (a dict, so any executor can ship it) and a
    label for progress lines."""

    config: dict[str, Any]
    label: str
    # runs with the same key take about as long (same operator and width): an executor may use the ones that
    # finished to start the longest remaining runs first
    cost_key: str = ""

    @property
    def run_dir(self) -> Path:
        return Path(self.config["run_dir"])


def _config_defaults() -> dict[str, Any]:
    from ..train import TrainConfig

    return TrainConfig().to_dict()


def _computing(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in BOOKKEEPING}


def finished_result(config: dict[str, Any], finished: tuple[str, ...] = FINISHED) -> dict[str, Any] | None:
    """The result.json of the run `config` describes when it finished (done, or diverged: rerunning a
    deterministic run that diverged would diverge again; `finished` names the statuses that count); None when
    it has not. A finished run whose saved config computes something else, or that saw other data than
    `config`'s data_fingerprint, is an error, never silently reused (a run recorded before fingerprints were
    kept is taken as it is). A run scored on a held-out split (`holdout`) has val_acc where others have
    test_acc."""
    from .records import read_run_result

    run = Path(config["run_dir"])
    done = read_run_result(run / "result.json", "val_acc" if config.get("holdout") else "test_acc", finished)
    if done is None:
        return None
    seen, expected = done.get("data_fingerprint"), config.get("data_fingerprint")
    if seen is not None and expected is not None and seen != expected:
        raise StudyError(f"{run} holds a finished run trained on other data (fingerprint {seen}; this study's data "
                         f"has {expected}): the data set changed; use another --out for a study on this data")
    # what a run saw is judged by its result's fingerprint above, whatever its config said
    saved, wanted = _computing(done.get("config", {})), _computing(config)
    saved.pop("data_fingerprint", None)
    wanted.pop("data_fingerprint", None)
    # a field added to TrainConfig after the run was saved holds its default there (what that run computed)
    defaults = _config_defaults()
    changed = sorted(k for k in saved.keys() | wanted.keys()
                     if saved.get(k, defaults.get(k)) != wanted.get(k, defaults.get(k)))
    if changed:
        raise StudyError(f"{run} holds a finished run with different settings ({', '.join(changed)}); use another "
                         "--out for a different study, or delete that run to retrain it")
    return done


def execute_run(config: dict[str, Any]) -> dict[str, Any]:
    """Train the run `config` describes, or resume it from its checkpoint, or return its finished result.
    A run whose loss goes non-finite returns its result with status "diverged" (the study reports it), one a
    callback ended early its result with status "pruned" (a tuning trial)."""
    from ..train import DivergedError, PrunedError, TrainConfig, fit

    done = finished_result(config)
    if done is not None:
        return done
    cfg = TrainConfig.from_dict(config)
    resume = (Path(cfg.run_dir) / "checkpoint.pt").exists()
    try:
        return fit(cfg, resume=resume)
    except (DivergedError, PrunedError) as err:
        return err.result


Done = Callable[[RunTask, dict[str, Any]], None]
Failed = Callable[[RunTask, BaseException], None]


class Executor(Protocol):
    """Where a study's runs execute. `run` calls `execute_run(task.config)` for every task, somewhere, and
    `done(task, result)` in the calling process as each finishes (in any order), `failed(task, error)` (when
    given) as one fails; it raises StudyError when a run fails for another reason than divergence, after the
    runs already started have ended."""

    name: str

    def run(self, tasks: Sequence[RunTask], done: Done, failed: Failed | None = None) -> None: ...


def notify_failed(failed: Failed | None, task: RunTask, error: BaseException) -> None:
    if failed is not None:
        failed(task, error)


def _exit_when(gone: Callable[[], bool], interval: float = 1.0) -> None:
    """Watch, in a daemon thread, for `gone()` (the study process has ended), then end this process at once.

    A study killed by a signal it cannot catch (SIGTERM from a scheduler or `kill`, SIGKILL) leaves its worker
    processes running: each would finish its training run unseen and, if the study were started again, train
    the same run directory beside the new worker (the run's lock now refuses that, but the orphan would still
    hold the run). Ending here loses at most the current run's progress since its last checkpoint, which a
    rerun resumes from."""

    def watch() -> None:
        while not gone():
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="factorconv-orphan-watch", daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    """For a worker process of the study process `parent`: end when the worker is orphaned."""
    _exit_when(lambda: os.getppid() != parent)


def execute_run_watched(config: dict[str, Any], driver: tuple[str, int]) -> dict[str, Any]:
    """`execute_run` in a job that is not the study process's child (a submitit job runs under a controller
    process that outlives the driver by design): on the driver's machine (`driver` is its host name and pid),
    the job ends when the driver is gone. A job on another machine cannot see the driver; the run's lock keeps
    a second trainer from writing beside it."""
    host, pid = driver
    if socket.gethostname() == host:
        _exit_when(lambda: not process_alive(pid))
    return execute_run(config)


def driver_identity() -> tuple[str, int]:
    """What `execute_run_watched` watches: this process's host name and pid."""
    return socket.gethostname(), os.getpid()


def init_worker(devices: Any, parent: int) -> None:
    """In a fresh worker process: end with the study process `parent`, and take one GPU of the queue (each
    worker its own device) when there are GPUs."""
    _exit_when_orphaned(parent)
    try:
        index = devices.get_nowait()
    except Exception:  # no GPU queue, or more workers than GPUs: they share the default device
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)


class LocalExecutor:
    """`workers` runs at a time on this machine: in this process when 1, else in worker processes (spawned,
    so each starts clean; on a machine with GPUs each worker gets its own device)."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        if not is_int(workers) or workers < 1:
            raise ValueError(f"--workers must be a positive integer, got {workers!r}")
        self.workers = workers

    def run(self, tasks: Sequence[RunTask], done: Done, failed: Failed | None = None) -> None:
        if self.workers == 1 or len(tasks) <= 1:
            for task in tasks:
                try:
                    result = _guarded(task)
                except StudyError as err:
                    notify_failed(failed, task, err)
                    raise
                done(task, result)
            return
        ctx = multiprocessing.get_context("spawn")
        devices = ctx.Queue()
        import torch

        for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            devices.put(index)
        queue, seconds = list(tasks), LongestFirst()
        failure: BaseException | None = None
        with futures.ProcessPoolExecutor(min(self.workers, len(tasks)), mp_context=ctx, initializer=init_worker,
                                         initargs=(devices, os.getpid())) as pool:
            running: dict[futures.Future, RunTask] = {}
            try:
                while queue or running:
                    while queue and failure is None and len(running) < self.workers:
                        task = seconds.pick(queue)
                        running[pool.submit(execute_run, task.config)] = task
                    finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                    for future in finished:
                        task = running.pop(future)
                        try:
                            result = future.result()
                        except BaseException as err:  # reported once the running ones end
                            error = run_failed(task, err)
                            notify_failed(failed, task, error)
                            failure = failure or error
                            queue.clear()
                            continue
                        seconds.record(task, result.get("seconds"))
                        done(task, result)
            except KeyboardInterrupt:
                for other in running:
                    other.cancel()
                raise
        if failure is not None:
            raise failure


class LongestFirst:
    """The order runs start in when several execute at once: runs whose cost is not known yet first (in plan
    order), then the longest known (mean seconds of the finished runs with the same cost key), so that the
    last runs to start are the short ones and no worker idles long at the end. Order never changes results."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def record(self, task: RunTask, seconds: float | None) -> None:
        if seconds is not None:
            self.seconds.setdefault(task.cost_key, []).append(float(seconds))

    def pick(self, queue: list[RunTask]) -> RunTask:
        unknown = [t for t in queue if t.cost_key not in self.seconds]
        task = unknown[0] if unknown else max(
            queue, key=lambda t: sum(self.seconds[t.cost_key]) / len(self.seconds[t.cost_key]))
        queue.remove(task)
        return task


def run_failed(task: RunTask, err: BaseException, cause: str | None = None,
               log_path: str | None = None) -> StudyError:
    """The study's error for a run that failed with `err` (`cause`: what failed, when `err` only wraps it;
    `log_path`: where its output is), saying what a rerun does with it."""
    if isinstance(err, StudyError):
        return err
    cause = cause or f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    log_note = f"; its log: {log_path}" if log_path else ""
    if (task.run_dir / "checkpoint.pt").exists():
        then = f"its run directory {task.run_dir} keeps its last checkpoint, and rerunning the study resumes it"
    else:
        then = f"it had written no checkpoint in {task.run_dir}, so rerunning the study starts it again"
    return StudyError(f"{task.label} failed ({cause}){log_note}; {then}")


def _guarded(task: RunTask) -> dict[str, Any]:
    from ..train import TrainError

    try:
        return execute_run(task.config)
    except StudyError:
        raise
    except (TrainError, ValueError, OSError) as err:
        raise run_failed(task, err) from None


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
