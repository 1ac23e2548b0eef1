"""One driver per study directory: `StudyLock(out)` holds an exclusive lock on `out/.study.lock` while a
driver plans, runs and reports; a second driver on the same directory is refused with who holds it.

The lock is an `fcntl.flock` on an open file, so it dies with its process (a driver killed with SIGKILL leaves
no stale lock) and the holder's pid, host and start time written into the file are only a description. On
file systems without flock (some network mounts) the lock is skipped with nothing worse than today's risk:
two drivers would both train the same runs, each written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from .execution import StudyError

__all__ = ["LOCK_NAME", "StudyLock"]

LOCK_NAME = ".study.lock"


class StudyLock:
    """`with StudyLock(out): ...` — raises StudyError naming the holder when another driver has the study."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self._file = None

    def __enter__(self) -> StudyLock:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock
            return self
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = _describe(self._file.read())
            self._file.close()
            self._file = None
            raise StudyError(f"{self.path.parent} is being run by another driver ({holder}); wait for it to finish "
                             "or stop it, then rerun this command to go on from what it finished") from None
        except OSError:  # a file system without flock: carry on unlocked
            return self
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        self._file.flush()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.truncate(0)
            self._file.close()  # closing releases the flock
            self._file = None


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']} since {since}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
