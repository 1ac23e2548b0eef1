"""Executors beyond one machine, behind the same `Executor` interface as the local one: `RayExecutor` (one Ray
task per run, on an existing cluster or a local Ray started for the study) and `SubmititExecutor` (one job per
run through submitit: Slurm, or local subprocesses). Both need the `cluster` extra
(`pip install 'factorconv[cluster]'`); without it, choosing them says what to install.

Every run executes `execute_run(config)` wherever it lands, with its thread count in its config, so it gives
the numbers it gives anywhere; paths in the config are made absolute (the driver's working directory), so the
study directory must be on a file system the workers share (on Slurm: not /tmp).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checks import is_int
from .execution import (
    Done,
    Failed,
    LongestFirst,
    RunTask,
    StudyError,
    driver_identity,
    execute_run,
    execute_run_watched,
    notify_failed,
    run_failed,
)
from .reaper import start_reaper

__all__ = ["CONNECT_TIMEOUT", "RayExecutor", "SubmititExecutor", "absolute_config", "reach", "require"]

def require(module: str, option: str) -> Any:
    """Import an optional dependency or say which extra provides it."""
    try:
        return __import__(module)
    except ImportError:
        raise StudyError(f"{option} needs {module}: pip install 'factorconv[cluster]' (or pip install {module}), "
                         "or use --executor local") from None


def absolute_config(config: dict[str, Any], cwd: Path | None = None) -> dict[str, Any]:
    """The config with its paths made absolute against the driver's working directory."""
    cwd = cwd or Path.cwd()
    out = dict(config)
    for key in ("run_dir", "data_dir"):
        if out.get(key) and not Path(out[key]).is_absolute():
            out[key] = str(cwd / out[key])
    return out


# seconds a Ray cluster's address gets to accept a connection before the study says it cannot be reached
CONNECT_TIMEOUT = 10.0


def reach(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse, in at most `timeout` seconds, a Ray address (host:port or ray://host:port) that accepts no TCP
    connection: `ray.init` would retry it for many minutes with only warnings. 'auto' and other forms are left
    to Ray."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__).lower()
        raise StudyError(f"--ray-address {address}: no Ray cluster reachable there within {timeout:g} s ({why}); "
                         "start one with `ray start --head` on that machine, or leave --ray-address out for a "
                         "local Ray") from None


class RayExecutor:
    """One Ray task per run with `num_cpus` CPUs (the run's threads) and `num_gpus` GPUs. `address` is an
    existing cluster ("auto", or host:port); None starts a local Ray for the study with `local_cpus` CPUs
    (default: this machine's) and stops it afterwards. The driver collects results as runs finish."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 local_cpus: int | None = None, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        if not num_cpus > 0 or num_gpus < 0:
            raise ValueError(f"ray executor: need num_cpus > 0 and num_gpus >= 0, got {num_cpus}, {num_gpus}")
        self.address, self.num_cpus, self.num_gpus, self.local_cpus = address, num_cpus, num_gpus, local_cpus
        if address:  # before the study writes anything: an address nothing answers at is refused now
            reach(address, connect_timeout)

    def run(self, tasks: Sequence[RunTask], done: Done, failed: Failed | None = None) -> None:
        ray = require("ray", "--executor ray")
        started, reaper = False, None
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
                else:
                    # Ray runs its workers at niceness 15 by default: beside any other busy process a run then
                    # gets a sliver of a core (importing torch took 65 s instead of 3 on a loaded 2-core
                    # machine). The runs are the study's work, so a local Ray started here runs them at 0.
                    os.environ.setdefault("RAY_worker_niceness", "0")
                    context = ray.init(num_cpus=self.local_cpus or os.cpu_count(), include_dashboard=False,
                                       logging_level="ERROR", log_to_driver=False)
                    session = (getattr(context, "address_info", None) or {}).get("session_dir")
                    reaper = start_reaper(os.getpid(), session) if session else None
            except StudyError:
                raise
            except Exception as err:
                raise StudyError(f"--executor ray: cannot start or reach Ray ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''})") from None
            started = True
        try:
            remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)(execute_run)
            refs = {remote.remote(absolute_config(task.config)): task for task in tasks}
            failure: BaseException | None = None
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    task = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # the run's own exception, wrapped by Ray
                        error = run_failed(task, getattr(err, "cause", None) or err)
                        notify_failed(failed, task, error)
                        failure = failure or error
                        continue
                    done(task, result)
            if failure is not None:
                raise failure
        finally:
            if started:
                ray.shutdown()
            if reaper is not None:  # the local Ray ended normally: nothing is left to reap
                reaper.terminate()
                reaper.wait()


class SubmititExecutor:
    """One submitit job per run. `cluster`: "slurm", "local" (subprocesses of this machine), "debug" (in this
    process) or None: Slurm where `sbatch` exists, else local. Slurm jobs ask for `partition`, `time_min`
    minutes, `gpus` GPUs and `cpus` CPUs each; local jobs run `max_parallel` at a time (default: cores / cpus).
    Logs and submitit's pickles go to `folder` (the study's submitit/ directory)."""

    name = "submitit"

    def __init__(self, folder: str | Path, cluster: str | None = None, partition: str | None = None,
                 time_min: int = 60, gpus: int = 0, cpus: int = 1, max_parallel: int | None = None,
                 poll_seconds: float = 0.5) -> None:
        if cluster not in (None, "slurm", "local", "debug"):
            raise ValueError(f"--submitit-cluster must be slurm, local or debug, got {cluster!r}")
        for name, value in (("--slurm-time", time_min), ("--slurm-cpus-per-job", cpus)):
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not is_int(gpus) or gpus < 0:
            raise ValueError(f"--slurm-gpus-per-job must be an integer >= 0, got {gpus!r}")
        self.folder, self.cluster, self.partition = Path(folder), cluster, partition
        self.time_min, self.gpus, self.cpus = time_min, gpus, cpus
        self.max_parallel, self.poll_seconds = max_parallel, poll_seconds
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise StudyError("--submitit-cluster slurm: Slurm is not available here (no sbatch on PATH); run on a "
                             "Slurm login node, or use --submitit-cluster local")

    def resolved_cluster(self) -> str:
        return self.cluster or ("slurm" if shutil.which("sbatch") else "local")

    def run(self, tasks: Sequence[RunTask], done: Done, failed: Failed | None = None) -> None:
        submitit = require("submitit", "--executor submitit")
        cluster = self.resolved_cluster()
        executor = submitit.AutoExecutor(folder=str(self.folder.resolve() / "%j"), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": self.time_min, "cpus_per_task": self.cpus, "name": "factorconv"}
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if cluster == "slurm" and self.partition:
            params["slurm_partition"] = self.partition
        executor.update_parameters(**params)
        # Slurm queues everything itself; a local machine runs as many as its cores take
        limit = len(tasks) if cluster == "slurm" else (self.max_parallel or max(1, (os.cpu_count() or 1) // self.cpus))
        queue, order, running = list(tasks), LongestFirst(), {}
        driver = driver_identity()
        failure: BaseException | None = None
        while queue or running:
            while queue and failure is None and len(running) < limit:
                task = order.pick(queue)
                running[executor.submit(execute_run_watched, absolute_config(task.config), driver)] = task
            finished = [job for job in running if job.done()]
            if not finished:
                time.sleep(self.poll_seconds)
                continue
            for job in finished:
                task = running.pop(job)
                try:
                    result = job.result()
                except Exception as err:  # FailedJobError carries the run's traceback in its message
                    error = run_failed(task, err, _job_cause(err), _job_log(job))
                    notify_failed(failed, task, error)
                    failure = failure or error
                    queue.clear()
                    continue
                order.record(task, result.get("seconds"))
                done(task, result)
        if failure is not None:
            raise failure


def _job_cause(err: BaseException) -> str:
    """The run's own error from a submitit FailedJobError (the last line of the job's traceback), else the
    error itself."""
    text = str(err)
    if "----------------------" in text:
        trace = text.split("----------------------")[1].strip().splitlines()
        last = next((line.strip() for line in reversed(trace) if line.strip()), "")
        if last:
            return last[:300]
    return f"{type(err).__name__}: {(text.splitlines() or [''])[0][:300]}"


def _job_log(job: Any) -> str | None:
    try:
        return str(job.paths.stderr)
    except Exception:  # a job without paths (the debug cluster)
        return None
