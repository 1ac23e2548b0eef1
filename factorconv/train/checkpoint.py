"""Checkpoints: written atomically (temporary file in the same directory, fsync, rename), so a crash or a
full disk while writing leaves the previous checkpoint as it was; verified on load (a SHA-256 digest of the
payload is stored beside it, so a damaged file is refused instead of loading garbage weights); read with
`weights_only=True`, so a checkpoint from elsewhere cannot run code.

Format 2, a file `torch.load` reads as {"format": 2, "sha256": hex digest, "payload": uint8 tensor}, where the
payload is the `torch.save` bytes of the state. Format 1 (the state itself, no digest) is still read, unverified.
Temporary files a killed writer left behind (`.checkpoint.pt.tmp<pid>`) are removed by the next write.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from ..locking import process_alive
from ..outputs import write_error

__all__ = ["REQUIRED_KEYS", "CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = 2
# What every training checkpoint holds (the engine's and evaluation's needs); a file without them is refused.
REQUIRED_KEYS = ("model", "config")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the file and what to do."""


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of this checkpoint whose writer is gone (killed mid-write): they are never read."""
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _remove_stale_temps(path)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        wrapped = {"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
                   "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
        with open(tmp, "wb") as f:
            torch.save(wrapped, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:
        why = write_error(err, path)  # before the partial file goes: a full disk is then still full
        tmp.unlink(missing_ok=True)
        kept = " (the previous checkpoint there is intact)" if path.exists() else ""
        raise CheckpointError(f"could not save the checkpoint: {why}{kept}") from err
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved by `save_checkpoint`, verified; CheckpointError (one line naming the file and what is
    wrong) for a missing, truncated, damaged, foreign or incomplete file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (expected a run directory holding checkpoint.pt, or the "
                              "file itself)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint; a run that was killed before its first "
                              "checkpoint has nothing to resume")
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable factorconv checkpoint ({type(err).__name__}: "
                              f"{_first_line(err)})") from None
    if not isinstance(outer, dict) or outer.get("format") not in (1, FORMAT):
        raise CheckpointError(f"{path} is not a factorconv checkpoint (format {FORMAT} with a verified payload)")
    if outer["format"] == 1:
        state = outer
    else:
        payload = outer.get("payload")
        if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8 or not isinstance(
                outer.get("sha256"), str):
            raise CheckpointError(f"{path} is not a factorconv checkpoint (its payload or digest is missing)")
        data = payload.numpy().tobytes()
        if hashlib.sha256(data).hexdigest() != outer["sha256"]:
            raise CheckpointError(f"{path} is damaged: its contents do not match the digest stored with them "
                                  "(the file was changed or corrupted after it was written); retrain, or restore it "
                                  "from a copy")
        try:
            state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{path} holds a payload that cannot be read ({type(err).__name__}: "
                                  f"{_first_line(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a factorconv checkpoint (its payload is not a mapping)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a complete factorconv checkpoint: it has no {' or '.join(missing)}")
    return state
