"""Where commands may write: the files factorconv keeps in a run or study directory are never replaced by a
command's output, an output file that exists is replaced only when the user says `--force`, and a write that
fails (a read-only directory, a full disk) is one `OutputError` line naming the file, with nothing half-written.

A run directory is one holding a training run's files (checkpoint.pt, config.json, metrics.jsonl, result.json);
a study directory one holding study.json. Their files (`OWNED`) are what `eval`, `--resume`, `report` and a
rerun read back: a command that overwrote one would lose the run or the study.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = ["OWNED", "OutputError", "check_output", "check_outputs", "is_write_failure", "owner_of", "write_atomic",
           "write_error", "writing"]

RUN_FILES = ("checkpoint.pt", "config.json", "metrics.jsonl", "result.json", ".run.lock")
STUDY_FILES = ("study.json", "results.json", "report.md", "study.png", "latency.json", ".study.lock",
               "reproduce.md", "reproduce.json", "tune.db")
OWNED = frozenset(RUN_FILES + STUDY_FILES)


class OutputError(RuntimeError):
    """An output that may not or could not be written; the message names the file and what to do."""


def owner_of(path: str | Path) -> str | None:
    """"run directory" or "study directory" when `path` is one of the files factorconv keeps there, else None."""
    path = Path(path)
    if path.name not in OWNED:
        return None
    folder = path.parent
    if any((folder / name).exists() for name in RUN_FILES):
        return "run directory"
    if any((folder / name).exists() for name in STUDY_FILES):
        return "study directory"
    return None


def check_output(path: str | Path, *, force: bool = False, flag: str = "--out") -> Path:
    """`path` as an output file: refused when factorconv owns it (even with `force`), when it is a directory,
    or when it exists and `force` is not set."""
    path = Path(path)
    owner = owner_of(path)
    if owner is not None:
        raise OutputError(f"{path} is the {owner}'s own {path.name}; factorconv never overwrites it (not even with "
                          f"--force): choose another {flag}")
    if path.is_dir():
        raise OutputError(f"{path} is a directory; {flag} names the file to write")
    if path.exists() and not force:
        raise OutputError(f"{path} exists; pass --force to replace it, or choose another {flag}")
    return path


def check_outputs(paths: Iterable[Path], *, force: bool = False, flag: str = "--out") -> None:
    """`check_output` for every file a command is about to write, before it writes any."""
    for path in paths:
        check_output(path, force=force, flag=flag)


def write_error(err: BaseException, path: str | Path, verb: str = "write") -> str:
    """One line for a failed write (or other `verb`) of `path`: 'no space left on device' for a full disk,
    whatever raised it (torch.save reports one as '[enforce fail at inline_container.cc:...] ... file write
    failed')."""
    path = Path(path)
    code = getattr(err, "errno", None)
    if code == errno.ENOSPC or (code is None and _disk_full(path)):
        return f"cannot {verb} {path}: no space left on device"
    if code in (errno.EACCES, errno.EPERM):
        return f"cannot {verb} {path}: permission denied"
    if code == errno.EROFS:
        return f"cannot {verb} {path}: read-only file system"
    if isinstance(err, OSError) and err.strerror:
        return f"cannot {verb} {path}: {err.strerror}"
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"cannot {verb} {path}: {first[:200]}"


def _disk_full(path: Path) -> bool:
    folder = path if path.is_dir() else path.parent
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 64 * 1024


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path`: a failure (OSError, or a
    RuntimeError from torch.save on a full disk) leaves `path` as it was and raises OutputError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if not isinstance(err, OSError) and not is_write_failure(err):
            raise
        raise OutputError(write_error(err, path)) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def is_write_failure(err: BaseException) -> bool:
    """Whether `err` is torch.save's (or the exporters') report of a failed file write."""
    text = str(err)
    return "inline_container" in text or "file write failed" in text or "PytorchStreamWriter" in text


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into one OutputError line."""
    try:
        yield
    except OSError as err:
        raise OutputError(write_error(err, path)) from None
