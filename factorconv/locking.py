"""Exclusive locks on directories: `DirectoryLock(folder, name)` holds an `fcntl.flock` on `folder/name` while
one process works in the folder (a study's driver, a run's trainer); another process asking for it is refused
with who holds it.

A flock dies with its process, so a holder killed with SIGKILL leaves no stale lock; the pid, host and start
time written into the file only describe the holder. On file systems without flock (some network mounts) the
lock is skipped with nothing worse than no lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["DirectoryLock", "LockBusy", "describe_holder", "process_alive", "remove_if_unused"]


class LockBusy(RuntimeError):
    """The lock is held by another process; `holder` describes it."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


class DirectoryLock:
    """`with DirectoryLock(folder, name, wait=0): ...`; raises LockBusy when another process holds it after
    `wait` seconds of retrying (a holder that is ending releases it within its last moments). A subclass says
    what the lock guards, and what to do, in its own `busy_error`."""

    def __init__(self, folder: str | Path, name: str, wait: float = 0.0) -> None:
        self.path = Path(folder) / name
        self.wait = wait
        self._file: IO[str] | None = None

    def __enter__(self) -> DirectoryLock:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock
            return self
        handle = open(self.path, "a+")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                handle.seek(0)
                holder = describe_holder(handle.read())
                handle.close()
                raise self.busy_error(holder) from None
            except OSError:  # a file system without flock: carry on unlocked
                handle.close()
                return self
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        handle.flush()
        self._file = handle
        return self

    def busy_error(self, holder: str) -> Exception:
        """The error raised when another process holds the lock (`holder` describes it)."""
        return LockBusy(self.path, holder)

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.truncate(0)
            self._file.close()  # closing releases the flock
            self._file = None


def describe_holder(text: str) -> str:
    """'pid 123 on host since 2026-12-05 10:00:00' from a lock file's contents."""
    try:
        info = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']} since {since}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine: not gone and not a zombie (a killed process whose parent has
    not reaped it yet still answers `kill(pid, 0)`)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:  # exists, owned by someone else
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def remove_if_unused(folder: Path, lock_name: str) -> None:
    """Remove `folder` when it holds nothing but its (released) lock file: what a command that created it and
    was then refused (an unknown model, a missing data set) would otherwise leave behind."""
    with contextlib.suppress(OSError):
        if {p.name for p in folder.iterdir()} <= {lock_name}:
            (folder / lock_name).unlink(missing_ok=True)
            folder.rmdir()

