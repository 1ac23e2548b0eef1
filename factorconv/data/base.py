"""The in-memory image set every reader returns (`ImageSet`: a label per image for classification, or a label
per pixel for segmentation), and the one error type data problems raise (`DatasetError`): a message naming the
path, what was expected there, and how to get it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..checks import is_int

__all__ = ["IGNORE_INDEX", "DatasetError", "ImageSet", "file_md5", "largest_class", "select_classes"]

# The label of pixels no class is scored on (segmentation masks: object borders, padding), as in VOC's masks
IGNORE_INDEX = 255


def largest_class(masks: Tensor) -> int:
    """The largest class index in uint8 masks, IGNORE_INDEX pixels left out (0 when there is none)."""
    top = int(masks.max()) if masks.numel() else 0
    if top == IGNORE_INDEX:  # a second pass only when some pixel is ignored
        top = int(masks.masked_fill(masks == IGNORE_INDEX, 0).max())
    return top


class DatasetError(RuntimeError):
    """A data set that is missing, corrupt or not in the expected format. The message is for the user."""


@dataclass
class ImageSet:
    """uint8 images (N, C, H, W) with int64 labels (N,) in [0, len(classes)) for classification, or uint8
    per-pixel masks (N, H, W) in [0, len(classes)) or IGNORE_INDEX for segmentation (`task`). Masks stay uint8
    in memory (an eighth of int64's); the loader widens each batch."""

    images: Tensor
    labels: Tensor
    classes: list[str]
    name: str = "images"
    source: str = ""
    _stats: tuple[list[float], list[float]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} "
                               f"{tuple(self.images.shape)}")
        if self.labels.dim() == 3:  # per-pixel masks
            if tuple(self.labels.shape) != (len(self.images), *self.images.shape[2:]):
                raise DatasetError(f"{self.name}: masks of shape {tuple(self.labels.shape)} do not match images "
                                   f"{tuple(self.images.shape)} (expected (N, H, W) = "
                                   f"{(len(self.images), *self.images.shape[2:])})")
            if self.labels.dtype != torch.uint8:
                raise DatasetError(f"{self.name}: masks must be uint8 (class indices, {IGNORE_INDEX} = ignore), "
                                   f"got {self.labels.dtype}")
            if len(self.classes) > IGNORE_INDEX:
                raise DatasetError(f"{self.name}: {len(self.classes)} classes do not fit uint8 masks beside the "
                                   f"ignore label {IGNORE_INDEX}")
            top = largest_class(self.labels)
            if top >= len(self.classes):
                raise DatasetError(f"{self.name}: mask values reach {top} but there are "
                                   f"{len(self.classes)} classes (values are class indices, {IGNORE_INDEX} = ignore; "
                                   f"{self.source or 'unknown source'})")
            return
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise DatasetError(f"{self.name}: {len(self.images)} images but labels of shape "
                               f"{tuple(self.labels.shape)} (expected ({len(self.images)},) class labels, or "
                               f"({len(self.images)}, H, W) masks)")
        self.labels = self.labels.long()
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DatasetError(f"{self.name}: labels span [{int(self.labels.min())}, {int(self.labels.max())}] "
                               f"but there are {len(self.classes)} classes ({self.source or 'unknown source'})")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def task(self) -> str:
        """"segmentation" for per-pixel masks, else "classification"."""
        return "segmentation" if self.labels.dim() == 3 else "classification"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.images.shape[2], self.images.shape[3])

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the pixels scaled to [0, 1] (computed once, in float64)."""
        if self._stats is None:
            x = self.images.transpose(0, 1).reshape(self.channels, -1)
            total = x.shape[1]
            sums = torch.zeros(self.channels, dtype=torch.float64)
            squares = torch.zeros(self.channels, dtype=torch.float64)
            for chunk in x.split(1 << 22, dim=1):  # bounded memory for large sets
                c = chunk.double() / 255
                sums += c.sum(1)
                squares += c.square().sum(1)
            mean = sums / max(total, 1)
            std = (squares / max(total, 1) - mean.square()).clamp_min(1e-12).sqrt()
            self._stats = (mean.tolist(), std.tolist())
        return self._stats

    def fingerprint(self) -> str:
        """A digest of the images, labels and class names: the data a run saw, wherever its files were (a
        changed data set has another fingerprint; a moved or copied one keeps it)."""
        digest = hashlib.blake2b(digest_size=12)
        digest.update(repr((tuple(self.images.shape), tuple(self.labels.shape), self.classes)).encode())
        for tensor in (self.images, self.labels):
            digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().data)
        return digest.hexdigest()

    def subset(self, count: int | None, seed: int = 0) -> ImageSet:
        """The first `count` images of a seeded shuffle (all of them when count is None or too large)."""
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise ValueError(f"subset size must be positive, got {count}")
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name, self.source)


    def split_off(self, count: int, seed: int) -> tuple[ImageSet, ImageSet]:
        """(the rest, `count` images of a seeded shuffle): a validation split held out of a training set."""
        if not 1 <= count < len(self):
            raise ValueError(f"{self.name}: cannot hold out {count} of {len(self)} images (need 1 <= count < "
                             f"{len(self)})")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        held, rest = order[:count].sort().values, order[count:].sort().values
        return (ImageSet(self.images[rest], self.labels[rest], self.classes, self.name, self.source),
                ImageSet(self.images[held], self.labels[held], self.classes, f"{self.name} (held out)", self.source))


def dataset_fingerprint(train: ImageSet, test: ImageSet) -> str:
    """The fingerprint of a data set's two splits, as a run and a study record it."""
    return hashlib.blake2b(f"{train.fingerprint()} {test.fingerprint()}".encode(), digest_size=12).hexdigest()


def select_classes(images: ImageSet, classes: list[int]) -> ImageSet:
    """Only the images of `classes` (indices into images.classes), relabelled 0..len(classes)-1 in that order:
    a transfer task on held-out classes."""
    if images.task != "classification":
        raise ValueError(f"{images.name}: choosing classes needs a classification set (one label per image), not "
                         "per-pixel masks")
    if not classes or len(set(classes)) != len(classes) or any(
            not is_int(c) or not 0 <= c < images.num_classes for c in classes):
        raise ValueError(f"{images.name}: classes must be distinct class indices in [0, {images.num_classes}), "
                         f"got {classes!r}")
    keep = torch.isin(images.labels, torch.tensor(classes))
    relabel = torch.full((images.num_classes,), -1, dtype=torch.long)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    return ImageSet(images.images[keep], relabel[images.labels[keep]], [images.classes[c] for c in classes],
                    images.name, images.source)


def file_md5(path: str | Path | bytes) -> str:
    """MD5 of a file (or of bytes): the checksum the data sets' publishers give."""
    digest = hashlib.md5(usedforsecurity=False)
    if isinstance(path, bytes):
        digest.update(path)
        return digest.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
