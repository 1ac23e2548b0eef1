"""Stopping what a study started when the study process dies: a local Ray started for a study ends its tasks,
raylet and GCS when the driver is killed, but leaves `ray::DashboardAgent` and `ray::RuntimeEnvAgent` running
(measured with Ray 2.60: both still alive, orphaned, 8 s after a SIGKILL of the driver).

`start_reaper(driver_pid, session_dir)` starts `python -m factorconv.study.reaper PID DIR` in its own session;
it waits for the driver to end, then stops (SIGTERM, then SIGKILL) every process of this machine that has a
file of the Ray session directory open or names it on its command line. The executor stops the reaper itself
after a normal `ray.shutdown()`. Linux only (it reads /proc); elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..locking import process_alive

__all__ = ["processes_using", "start_reaper"]


def start_reaper(driver_pid: int, session_dir: str) -> subprocess.Popen | None:
    """The reaper process for the Ray session in `session_dir` of the driver `driver_pid` (None off Linux)."""
    if not Path("/proc").is_dir():
        return None
    return subprocess.Popen([sys.executable, "-m", "factorconv.study.reaper", str(driver_pid), session_dir],
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def processes_using(session_dir: str) -> list[int]:
    """Pids of this machine's processes (other than this one) with an open file under `session_dir`, or with
    it on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if session_dir in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
                continue
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd).startswith(session_dir):
                    found.append(int(entry.name))
                    break
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _stop(pids: list[int], grace: float = 3.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(process_alive(p) for p in pids):
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    driver, session_dir = int(argv[0]), argv[1].rstrip("/")
    while process_alive(driver):
        time.sleep(1.0)
    time.sleep(2.0)  # Ray's own shutdown of the raylet and GCS goes first
    _stop(processes_using(session_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
