"""Where trials train: worker processes on this machine, or Ray tasks. The driver submits a trial as soon as a
worker is free (it asks the sampler for the next configuration only then, so every trial's sampling sees every
trial told before it), and waits for whichever finishes first.

Local workers are spawned fresh and end with the driver (the study's orphan watch), so SIGKILL of the driver
leaves nothing training; a worker killed on its own breaks the pool, which the driver reports after marking
its trials interrupted.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

from ..study.cluster import CONNECT_TIMEOUT, absolute_config, reach, require
from ..study.execution import init_worker

__all__ = ["LocalPool", "RayPool", "create_pool"]


class LocalPool:
    """`workers` worker processes on this machine."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.slots = workers
        ctx = multiprocessing.get_context("spawn")
        self.pool = futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                                                initargs=(None, os.getpid()))

    def submit(self, fn: Callable[..., Any], config: dict[str, Any], report: dict[str, Any] | None) -> futures.Future:
        return self.pool.submit(fn, config, report)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayPool:
    """One Ray task per trial (`threads` CPUs each) on the cluster at `address` ("auto", host:port), or on a
    local Ray with `workers` CPUs when None."""

    name = "ray"

    def __init__(self, workers: int, threads: int, address: str | None = None) -> None:
        self.ray = require("ray", "--executor ray")
        if address:
            reach(address, CONNECT_TIMEOUT)
        self.started = not self.ray.is_initialized()
        if self.started:
            if address:
                self.ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            else:
                os.environ.setdefault("RAY_worker_niceness", "0")  # see RayExecutor: trials are the work
                self.ray.init(num_cpus=workers * threads, include_dashboard=False, logging_level="ERROR",
                              log_to_driver=False)
        self.slots = max(1, int(self.ray.cluster_resources().get("CPU", workers)) // threads)
        self.threads = threads

    def submit(self, fn: Callable[..., Any], config: dict[str, Any], report: dict[str, Any] | None) -> futures.Future:
        remote = self.ray.remote(num_cpus=self.threads, max_retries=0)(fn)
        return remote.remote(absolute_config(config), report).future()

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def create_pool(executor: str, workers: int, threads: int, ray_address: str | None = None) -> LocalPool | RayPool:
    if executor == "local":
        return LocalPool(workers)
    if executor == "ray":
        return RayPool(workers, threads, ray_address)
    raise ValueError(f"tune: --executor must be local or ray, got {executor!r}")
