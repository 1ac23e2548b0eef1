"""Timings of deploy forms kept on disk, so that a second deploy on the same machine takes seconds: one JSON
file (default `~/.cache/factorconv/timings.json`, or `$FACTORCONV_CACHE_DIR/timings.json`) of median
milliseconds keyed by what a timing depends on: the runtime (name, version, threads, settings), the machine
(CPU model and cores), the form's structure (`form_signature`: not its weights) and the input shape. A new
runtime version or another machine misses the cache and is timed afresh.

Writers merge under a lock and replace the file atomically, so study workers deploying at once lose nothing; an
unreadable file is treated as empty (it is only a cache).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..bench import machine_info
from ..locking import DirectoryLock
from ..train.rundir import write_json
from .runtimes import Runtime

__all__ = ["TimingCache", "default_cache_path"]


def default_cache_path() -> Path:
    root = os.environ.get("FACTORCONV_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "factorconv") / "timings.json"


def _machine() -> str:
    info = machine_info()
    return f"{info['cpu']};cores={info['cores']}"


class TimingCache:
    """Median milliseconds by (runtime, machine, form signature, input shape)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.machine = _machine()
        self._entries: dict[str, Any] | None = None

    def key(self, runtime: Runtime, signature: str, shape: tuple[int, ...]) -> str:
        text = json.dumps([runtime.key(), self.machine, signature, list(shape)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> float | None:
        if self._entries is None:
            self._entries = self._read()
        entry = self._entries.get(key)
        return float(entry["ms"]) if isinstance(entry, dict) and isinstance(entry.get("ms"), int | float) else None

    def put(self, timings: dict[str, dict[str, Any]]) -> None:
        """Add entries {key: {"ms": median, ...}}, merged with what other processes wrote meanwhile."""
        if not timings:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with DirectoryLock(self.path.parent, ".timings.lock", wait=30):
                entries = self._read()
                entries.update(timings)
                write_json(self.path, entries)
        except (OSError, RuntimeError):
            return  # an unwritable cache only costs the next deploy its timing
        self._entries = entries
