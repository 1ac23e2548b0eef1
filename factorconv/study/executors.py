"""Choosing where a study's runs execute: `create_executor(name, ...)` builds the local executor (worker
processes on this machine) or a cluster one (Ray, submitit). Its own module, so that the local executor and the
cluster executors both depend on `execution` (what a run is and how it executes) and not on each other."""

from __future__ import annotations

import os
from pathlib import Path

from .cluster import RayExecutor, SubmititExecutor
from .execution import Executor, LocalExecutor

__all__ = ["EXECUTORS", "create_executor"]

EXECUTORS = ("local", "ray", "submitit")


def create_executor(name: str = "local", *, workers: int | None = None, threads: int = 1, out: Path | None = None,
                    ray_address: str | None = None, gpus: int | None = None, submitit_cluster: str | None = None,
                    slurm_partition: str | None = None, slurm_time: int = 60, slurm_cpus: int | None = None
                    ) -> Executor:
    """The executor `name` (one of EXECUTORS) for a study whose runs use `threads` threads each. `gpus` is the
    GPUs per run on a cluster (default: 1 where this machine has CUDA, else 0); `workers` the local runs at a
    time (default: cores / threads); submitit keeps its logs in `out`/submitit."""
    import torch

    gpus = (1 if torch.cuda.is_available() else 0) if gpus is None else gpus
    if name == "local":
        return LocalExecutor(workers or max(1, (os.cpu_count() or 1) // threads))
    if name == "ray":
        return RayExecutor(ray_address, num_cpus=threads, num_gpus=gpus, local_cpus=workers)
    if name == "submitit":
        return SubmititExecutor(Path(out or ".") / "submitit", submitit_cluster, slurm_partition, slurm_time, gpus,
                                slurm_cpus or threads, max_parallel=workers)
    raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
