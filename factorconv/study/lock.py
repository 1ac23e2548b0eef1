"""One driver per study directory: `StudyLock(out)` holds an exclusive lock on `out/.study.lock` while a
driver plans, runs and reports; a second driver on the same directory is refused with who holds it (see
`factorconv.locking`: the lock dies with its process, so a killed driver leaves none)."""

from __future__ import annotations

from pathlib import Path

from ..locking import DirectoryLock
from .errors import StudyError

__all__ = ["LOCK_NAME", "StudyLock"]

LOCK_NAME = ".study.lock"


class StudyLock(DirectoryLock):
    """`with StudyLock(out): ...` — raises StudyError naming the holder when another driver has the study."""

    def __init__(self, out: Path) -> None:
        super().__init__(out, LOCK_NAME)

    def busy_error(self, holder: str) -> Exception:
        return StudyError(f"{self.path.parent} is being run by another driver ({holder}); wait for it to finish or "
                          "stop it, then rerun this command to go on from what it finished")
