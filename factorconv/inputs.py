"""Reading files a user names (a config file, a record to compare with, a study's JSON): a regular file only
and at most a stated size, so `--config /dev/zero` or a FIFO is one clear error instead of reading until the
machine runs out of memory."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MAX_CONFIG_BYTES", "MAX_RECORD_BYTES", "read_user_text"]

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a config is a few hundred bytes
MAX_RECORD_BYTES = 256 << 20  # a study's results.json with thousands of runs is a few MB


def read_user_text(path: str | Path, what: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The text of `path`, named `what` in errors; ValueError for a missing, non-regular, too large or
    undecodable file."""
    path = Path(path)
    try:
        if not path.exists():
            raise ValueError(f"{what} {path} does not exist")
        if not path.is_file():
            raise ValueError(f"{what} {path} is not a regular file")
        size = path.stat().st_size
        if size > limit:
            raise ValueError(f"{what} {path} is {size:,} bytes, more than the {limit:,} a {what} may have")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise ValueError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if len(data) > limit:  # grew while being read
        raise ValueError(f"{what} {path} is more than the {limit:,} bytes a {what} may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text") from None
