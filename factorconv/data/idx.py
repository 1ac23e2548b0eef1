"""IDX files (MNIST, Fashion-MNIST, KMNIST), gzip-compressed or raw, read without torchvision.

An IDX file is two zero bytes, a type code, the number of dimensions, the dimensions as big-endian u32,
then the data. Everything is checked against the header, so a truncated download or a file of the wrong
kind gives a DatasetError naming the file instead of a numpy traceback.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import DatasetError, ImageSet

__all__ = ["IDX_FILES", "find_idx_file", "read_idx", "read_idx_split"]

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
          0x0E: np.dtype(">f8")}
# split -> (images file, labels file), as the MNIST family publishes them
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror or err}") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise DatasetError(f"{path}: the gzip stream is truncated or corrupt ({err}); delete the file and "
                           "fetch it again") from None


def read_idx(path: str | Path) -> Tensor:
    """The array stored in one IDX file (.gz or raw), as a tensor of the file's type."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _TYPES or not 1 <= data[3] <= 4:
        raise DatasetError(f"{path}: not an IDX file (it starts with {data[:4].hex() or 'nothing'}; an IDX file "
                           "starts with 0000 followed by a type code such as 08 and the number of dimensions)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: IDX header is truncated")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_TYPES[data[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a forged header cannot overflow the check
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise DatasetError(f"{path}: IDX header says {shape} of {dtype.name} ({expected} bytes) but the file "
                           f"holds {len(body)} bytes: truncated or corrupt; delete it and fetch it again")
    array = np.frombuffer(body, dtype=dtype).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def find_idx_file(root: Path, stem: str) -> Path | None:
    """`stem`, `stem.gz`, or the `stem` with a '.' instead of the last '-' (the form some mirrors use)."""
    dotted = stem[::-1].replace("-", ".", 1)[::-1]
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (root / name).is_file():
            return root / name
    return None


def read_idx_split(root: str | Path, split: str, classes: list[str], name: str) -> ImageSet:
    """The train or test split of an MNIST-family set stored as IDX files in `root`."""
    root = Path(root)
    images_stem, labels_stem = IDX_FILES[split]
    paths = [find_idx_file(root, images_stem), find_idx_file(root, labels_stem)]
    missing = [stem for stem, p in zip((images_stem, labels_stem), paths, strict=True) if p is None]
    if missing:
        raise DatasetError(f"{name}: {root} has no {' or '.join(m + '[.gz]' for m in missing)}")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise DatasetError(f"{paths[0]}: expected uint8 images (N, H, W), found {images.dtype} "
                           f"{tuple(images.shape)}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise DatasetError(f"{paths[1]}: {tuple(labels.shape)} labels for {len(images)} images in {paths[0]}")
    return ImageSet(images.unsqueeze(1), labels.long(), classes, name, str(root))
