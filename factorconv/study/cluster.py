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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .execution import LongestFirst, RunTask, StudyError, _failed, execute_run

__all__ = ["RayExecutor", "SubmititExecutor", "absolute_config", "require"]

Done = Callable[[RunTask, dict[str, Any]], None]


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


class RayExecutor:
    """One Ray task per run with `num_cpus` CPUs (the run's threads) and `num_gpus` GPUs. `address` is an
    existing cluster ("auto", or host:port); None starts a local Ray for the study with `local_cpus` CPUs
    (default: this machine's) and stops it afterwards. The driver collects results as runs finish."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 local_cpus: int | None = None) -> None:
        if not num_cpus > 0 or num_gpus < 0:
            raise ValueError(f"ray executor: need num_cpus > 0 and num_gpus >= 0, got {num_cpus}, {num_gpus}")
        self.address, self.num_cpus, self.num_gpus, self.local_cpus = address, num_cpus, num_gpus, local_cpus

    def run(self, tasks: Sequence[RunTask], done: Done) -> None:
        ray = require("ray", "--executor ray")
        started = False
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
                else:
                    # Ray runs its workers at niceness 15 by default: beside any other busy process a run then
                    # gets a sliver of a core (importing torch took 65 s instead of 3 on a loaded 2-core
                    # machine). The runs are the study's work, so a local Ray started here runs them at 0.
                    os.environ.setdefault("RAY_worker_niceness", "0")
                    ray.init(num_cpus=self.local_cpus or os.cpu_count(), include_dashboard=False,
                             logging_level="ERROR", log_to_driver=False)
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
                        failure = failure or _failed(task, getattr(err, "cause", None) or err)
                        continue
                    done(task, result)
            if failure is not None:
                raise failure
        finally:
            if started:
                ray.shutdown()


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
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"--slurm-gpus-per-job must be an integer >= 0, got {gpus!r}")
        self.folder, self.cluster, self.partition = Path(folder), cluster, partition
        self.time_min, self.gpus, self.cpus = time_min, gpus, cpus
        self.max_parallel, self.poll_seconds = max_parallel, poll_seconds

    def resolved_cluster(self) -> str:
        return self.cluster or ("slurm" if shutil.which("sbatch") else "local")

    def run(self, tasks: Sequence[RunTask], done: Done) -> None:
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
        failure: BaseException | None = None
        while queue or running:
            while queue and failure is None and len(running) < limit:
                task = order.pick(queue)
                running[executor.submit(execute_run, absolute_config(task.config))] = task
            finished = [job for job in running if job.done()]
            if not finished:
                time.sleep(self.poll_seconds)
                continue
            for job in finished:
                task = running.pop(job)
                try:
                    result = job.result()
                except Exception as err:  # FailedJobError carries the run's traceback in its message
                    failure = failure or _failed(task, err)
                    queue.clear()
                    continue
                order.record(task, result.get("seconds"))
                done(task, result)
        if failure is not None:
            raise failure
