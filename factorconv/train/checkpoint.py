"""Checkpoints: written atomically (temporary file in the same directory, fsync, rename), so a crash or a
full disk while writing leaves the previous checkpoint as it was; read with `weights_only=True`, so a
checkpoint from elsewhere cannot run code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the file and what to do."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        kept = " (the previous checkpoint there is intact)" if path.exists() else ""
        raise CheckpointError(f"could not write checkpoint {path}: {err}{kept}") from err
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (expected a run directory holding checkpoint.pt, or the "
                              "file itself)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable factorconv checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{path} is not a factorconv checkpoint (format {FORMAT} with a model state)")
    return state
