"""A run's directory: config.json (the resolved config), metrics.jsonl (one JSON record per line, appended),
result.json (final metrics, profile, versions, git revision), checkpoint.pt, and `.run.lock`, held by the
process that trains the run (a second trainer of the same run is refused instead of writing beside it). JSON
files are written atomically like checkpoints. A run that starts from scratch starts its logs from scratch:
what an earlier attempt killed before its first checkpoint logged is removed."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from ..locking import DirectoryLock
from ..version import __version__

__all__ = ["EVENTS_PREFIX", "KERNEL_VARIABLES", "RUN_LOCK", "RunDir", "RunDirError", "environment", "git_revision",
           "kernel_settings", "write_json"]

RUN_LOCK = ".run.lock"
EVENTS_PREFIX = "events.out.tfevents."  # TensorBoard's event files


class RunDirError(RuntimeError):
    """A run directory that cannot be used; the message names it and why."""


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def prepare(self, resume: bool) -> None:
        """Create the directory and check it is writable; refuse to start over an existing run."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise RunDirError(f"cannot write to run directory {self.path}: {err.strerror or err}") from None
        if not resume and self.checkpoint.exists():
            raise RunDirError(f"{self.path} already holds a run (checkpoint.pt); resume it with --resume or choose "
                              "another --run-dir")
        if resume and not self.checkpoint.exists():
            raise RunDirError(f"nothing to resume: {self.checkpoint} does not exist")

    def lock(self, wait: float = 3.0) -> DirectoryLock:
        """The run's lock, to hold while training it. `wait` covers a trainer that is ending (a study worker
        whose driver died exits within a second)."""
        return _RunLock(self.path, wait)

    def start_fresh(self) -> None:
        """Remove what an earlier attempt of this run logged (it died before its first checkpoint, so nothing
        of it is resumed): its metrics, result and TensorBoard events."""
        for stale in (self.metrics, self.path / "result.json", *self.path.glob(f"{EVENTS_PREFIX}*")):
            stale.unlink(missing_ok=True)

    def write(self, name: str, obj: Any) -> None:
        try:
            write_json(self.path / name, obj)
        except OSError as err:
            raise RunDirError(f"cannot write {self.path / name}: {err.strerror or err}") from None

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        records = []
        for line in self.metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
        return records

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after `step` (by a run that died before checkpointing them)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        tmp = self.metrics.with_name(f".{self.metrics.name}.tmp{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.metrics)


class _RunLock(DirectoryLock):
    def __init__(self, path: Path, wait: float) -> None:
        super().__init__(path, RUN_LOCK, wait)

    def busy_error(self, holder: str) -> Exception:
        return RunDirError(f"{self.path.parent} is being trained by another process ({holder}); wait for it to "
                           "finish or stop it, then run this again to go on from its checkpoint")


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5,
                               check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# environment variables that select other CPU kernels (another summation order): a run trained under them
# rounds differently from one trained without, so its result says which were set
KERNEL_VARIABLES = ("MKL_CBWR", "ATEN_CPU_CAPABILITY")


def kernel_settings() -> dict[str, str]:
    """The kernel-selecting environment variables that are set ({} for the defaults)."""
    return {k: os.environ[k] for k in KERNEL_VARIABLES if os.environ.get(k)}


def environment() -> dict[str, Any]:
    return {
        "kernels": kernel_settings(),
        "factorconv": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "git": git_revision(),
    }
