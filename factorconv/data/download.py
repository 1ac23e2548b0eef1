"""Fetching a data set's files from their official URLs: streamed to a temporary file, checked against the
published MD5, then renamed into place, so an interrupted or corrupt download never looks complete."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .base import DatasetError, file_md5

__all__ = ["download_file"]


def download_file(urls: Sequence[str], dest: str | Path, md5: str | None, timeout: float = 60.0) -> Path:
    """Download the first of `urls` that works to `dest` (kept if it already has the right MD5)."""
    dest = Path(dest)
    if dest.is_file() and (md5 is None or file_md5(dest) == md5):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"cannot create {dest.parent} for the download: {err.strerror or err}") from None
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    failures = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                for block in iter(lambda r=response: r.read(1 << 20), b""):
                    out.write(block)
        except (urllib.error.URLError, OSError, ValueError) as err:
            failures.append(f"{url}: {getattr(err, 'reason', err)}")
            tmp.unlink(missing_ok=True)
            continue
        if md5 is not None and file_md5(tmp) != md5:
            failures.append(f"{url}: MD5 {file_md5(tmp)} is not the published {md5}")
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, dest)
        return dest
    raise DatasetError(f"could not download {dest.name} ({'; '.join(failures)}); put the file in {dest.parent} "
                       "by hand")
