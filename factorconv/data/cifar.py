"""CIFAR-10/100 "python version" batches, from their directory or the official .tar.gz, read safely.

The batches are pickles, and unpickling runs whatever the file names. So every batch is checked against
the publisher's MD5 before it is unpickled (`verify=True`, the default), and it is unpickled by
`SafeUnpickler`, which builds numpy arrays and plain containers and refuses every other global: a file
that would execute code raises DatasetError even when its checksum was not checked. The archive is read in
memory (nothing is extracted to disk, so its member names cannot escape the data directory).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import DatasetError, ImageSet, file_md5

__all__ = ["CIFAR", "CifarLayout", "SafeUnpickler", "read_cifar", "safe_unpickle"]


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and their official MD5s."""

    folder: str
    archive: str
    archive_md5: str
    train: tuple[tuple[str, str], ...]
    test: tuple[tuple[str, str], ...]
    meta: tuple[str, str]
    label_key: str
    names_key: str
    urls: tuple[str, ...]


CIFAR = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        train=(("data_batch_1", "c99cafc152244af753f735de768cd75f"),
               ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
               ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
               ("data_batch_4", "634d18415352ddfa80567beed471001a"),
               ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")),
        test=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        label_key="labels", names_key="label_names",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "https://cave.cs.toronto.edu/kriz/cifar-10-python.tar.gz"),
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python", archive="cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta=("meta", "7973b15100ade9c7d40fb424638fde48"),
        label_key="fine_labels", names_key="fine_label_names",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
              "https://cave.cs.toronto.edu/kriz/cifar-100-python.tar.gz"),
    ),
}

# What a CIFAR batch may contain: numpy arrays (and the dtype/reconstruct helpers their pickles name) and,
# for pickles written by Python 3 with protocol 2, the bytes constructor. Nothing else is ever built.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists, strings and numbers; any other global raises DatasetError."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DatasetError(f"{self.source}: refusing to unpickle {module}.{name}: a CIFAR batch holds only numpy "
                           "arrays, lists and strings, so this file is not one (it may be malicious)")

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetError(f"{self.source}: refusing a pickle with persistent ids (not a CIFAR batch)")


def safe_unpickle(data: bytes, source: str) -> Any:
    """`SafeUnpickler` over bytes; malformed pickles also raise DatasetError."""
    try:
        return SafeUnpickler(io.BytesIO(data), source).load()
    except DatasetError:
        raise
    except Exception as err:  # a malformed stream can fail in many ways inside pickle
        raise DatasetError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None


class _Source:
    """The batches of one layout, from a directory or from the archive (read in memory)."""

    def __init__(self, root: Path, layout: CifarLayout, name: str) -> None:
        self.layout, self.name = layout, name
        candidates = [root / layout.folder, root] if root.is_dir() else []
        self.directory = next((d for d in candidates if (d / layout.test[0][0]).is_file()), None)
        self.members: dict[str, bytes] | None = None
        self.archive: Path | None = None
        if self.directory is None:
            archive = root if root.is_file() else root / layout.archive
            if archive.is_file():
                self.archive = archive
        if self.directory is None and self.archive is None:
            raise DatasetError(
                f"{name}: no CIFAR batches under {root} (expected {root / layout.folder}/ with "
                f"{', '.join(n for n, _ in layout.train + layout.test)} and {layout.meta[0]}, or the archive "
                f"{root / layout.archive}); get it from {layout.urls[0]} or pass download=True (--set download=true)")

    def read(self, member: str, md5: str, verify: bool) -> bytes:
        if self.directory is not None:
            path = self.directory / member
            try:
                data = path.read_bytes()
            except OSError as err:
                raise DatasetError(f"{self.name}: cannot read {path}: {err.strerror or err} (expected the "
                                   f"files of {self.layout.folder}/ there)") from None
            where = str(path)
        else:
            data = self._archive_members(verify).get(member)
            where = f"{self.archive}:{self.layout.folder}/{member}"
            if data is None:
                raise DatasetError(f"{self.name}: {self.archive} has no {self.layout.folder}/{member}")
        if verify and file_md5(data) != md5:
            raise DatasetError(f"{where}: MD5 {file_md5(data)} is not the published {md5}: the file is corrupt or "
                               "not the official one; fetch it again (or pass verify=False for a re-packed set, "
                               "which is still unpickled safely)")
        return data

    def _archive_members(self, verify: bool) -> dict[str, bytes]:
        if self.members is None:
            assert self.archive is not None
            if verify and file_md5(self.archive) != self.layout.archive_md5:
                raise DatasetError(f"{self.archive}: MD5 is not the published {self.layout.archive_md5}: truncated "
                                   "or not the official archive; fetch it again")
            try:
                members: dict[str, bytes] = {}
                with tarfile.open(self.archive, "r:*") as tar:
                    for m in tar.getmembers():
                        f = tar.extractfile(m) if m.isfile() else None
                        if f is not None:
                            members[m.name.rsplit("/", 1)[-1]] = f.read()
                self.members = members
            except (tarfile.TarError, OSError, EOFError) as err:
                raise DatasetError(f"{self.archive}: not a readable tar archive ({err}); fetch it again") from None
        return self.members


def _batch(entry: Any, label_key: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
        raise DatasetError(f"{where}: expected a dict with 'data' and '{label_key}' (a CIFAR batch)")
    data, labels = entry["data"], np.asarray(entry[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{where}: 'data' must be uint8 of shape (N, 3072), got "
                           f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise DatasetError(f"{where}: {labels.shape} labels for {data.shape[0]} images")
    return data, labels


def read_cifar(root: str | Path, variant: str = "cifar10", split: str = "train", verify: bool = True) -> ImageSet:
    """CIFAR-10 or CIFAR-100 (`variant`) train or test split from `root` (the extracted folder, its parent, or
    the .tar.gz)."""
    if variant not in CIFAR:
        raise ValueError(f"read_cifar: variant must be one of {sorted(CIFAR)}, got {variant!r}")
    if split not in ("train", "test"):
        raise ValueError(f"read_cifar: split must be 'train' or 'test', got {split!r}")
    layout = CIFAR[variant]
    source = _Source(Path(root), layout, variant)
    meta = safe_unpickle(source.read(*layout.meta, verify), f"{variant} {layout.meta[0]}")
    names = meta.get(layout.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str | bytes) for n in names):
        raise DatasetError(f"{variant} {layout.meta[0]}: expected a dict with the list '{layout.names_key}'")
    classes = [n.decode() if isinstance(n, bytes) else n for n in names]
    images, labels = [], []
    for member, md5 in getattr(layout, split):
        data, lab = _batch(safe_unpickle(source.read(member, md5, verify), f"{variant} {member}"),
                           layout.label_key, f"{variant} {member}")
        images.append(data)
        labels.append(lab)
    pixels = torch.from_numpy(np.concatenate(images)).view(-1, 3, 32, 32)
    return ImageSet(pixels.contiguous(), torch.from_numpy(np.concatenate(labels).astype(np.int64)), classes,
                    variant, str(root))
