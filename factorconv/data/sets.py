"""The named data sets (`load_dataset("fashion-mnist", split="train")`): where each is looked for, how it is
read and downloaded, and the error that says how to get it when it is not there.

Search order: the `root` given; otherwise, for Fashion-MNIST, Debian's /usr/share/datasets/fashion-mnist
first; then $FACTORCONV_DATA/<name> and ~/.cache/factorconv/data/<name>. Downloads go to the first
writable of root / $FACTORCONV_DATA / the cache. `synthetic` is a small generated set for tests and smoke
runs; `folder` reads root/train and root/test (or root/val) image folders. Segmentation sets (per-pixel masks):
`fashion-mnist-seg` (Fashion-MNIST items pasted on 56x56 canvases), `synthetic-seg` (the synthetic patterns,
pasted) and `seg-folder` (PNG image/mask pairs under root/train and root/test or root/val).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import DatasetError, ImageSet
from .cifar import CIFAR, read_cifar
from .download import download_file
from .folder import class_names, read_image_folder
from .idx import IDX_FILES, find_idx_file, read_idx_split
from .segmentation import largest_mask_value, paste_items, read_segmentation_folder

__all__ = ["DATASETS", "DatasetInfo", "default_roots", "list_datasets", "load_dataset", "synthetic"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  # "idx" | "cifar" | "folder" | "synthetic" | "pasted" | "seg-folder"
    description: str
    classes: tuple[str, ...] = ()
    files: dict[str, str] | None = None  # file name -> published MD5 (IDX sets)
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    how_to_get: str = ""


_MNIST_CLASSES = tuple(str(i) for i in range(10))
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot")

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo(
        "fashion-mnist", "idx", "Zalando's Fashion-MNIST, 60k/10k 28x28 grayscale, 10 classes",
        _FASHION_CLASSES,
        files={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
               "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
               "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
               "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        how_to_get="on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist",
    ),
    DatasetInfo(
        "mnist", "idx", "LeCun's MNIST digits, 60k/10k 28x28 grayscale", _MNIST_CLASSES,
        files={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
               "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
               "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
               "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    ),
    DatasetInfo(
        "kmnist", "idx", "Kuzushiji-MNIST, 60k/10k 28x28 grayscale cursive Japanese",
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        files={"train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
               "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
               "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
               "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"},
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    ),
    DatasetInfo("cifar10", "cifar", "CIFAR-10, 50k/10k 32x32 RGB, 10 classes (python batches)"),
    DatasetInfo("cifar100", "cifar", "CIFAR-100, 50k/10k 32x32 RGB, 100 fine classes (python batches)"),
    DatasetInfo("folder", "folder", "image folders: root/train/<class>/*, root/test/<class>/* (or val/)"),
    DatasetInfo("synthetic", "synthetic", "generated 16x16 grayscale patterns, 10 classes (tests, smoke runs)"),
    DatasetInfo("fashion-mnist-seg", "pasted",
                "segmentation: two Fashion-MNIST items per 56x56 canvas, masks of 11 classes (background + 10); "
                "30k/5k canvases", system_dirs=("/usr/share/datasets/fashion-mnist",),
                how_to_get="on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist"),
    DatasetInfo("synthetic-seg", "pasted", "segmentation: two synthetic 16x16 patterns per 32x32 canvas, 11 "
                "classes (tests, smoke runs)"),
    DatasetInfo("seg-folder", "seg-folder", "segmentation PNG pairs: root/train/images/<name>.png with "
                "root/train/masks/<name>.png, the same under test/ (or val/); root/classes.txt names the classes"),
)}

# the pasted sets: (the classification set items come from, canvas, items per canvas, the threshold of the
# visible part; None = every pixel)
_PASTED = {"fashion-mnist-seg": ("fashion-mnist", 56, 2, 10), "synthetic-seg": ("synthetic", 32, 2, None)}


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(list_datasets())}")
    return DATASETS[name]


def default_roots(name: str) -> list[Path]:
    """Where `name` is looked for when no root is given, in order."""
    info = _info(name)
    roots = [Path(d) for d in info.system_dirs]
    if os.environ.get("FACTORCONV_DATA"):
        roots.append(Path(os.environ["FACTORCONV_DATA"]) / name)
    roots.append(Path.home() / ".cache" / "factorconv" / "data" / name)
    return roots


def _candidates(name: str, root: str | Path | None) -> list[Path]:
    if root is None:
        return default_roots(name)
    root = Path(root)
    return [root, root / name]


def _has_idx(root: Path, split: str) -> bool:
    return all(find_idx_file(root, stem) is not None for stem in IDX_FILES[split])


def _missing(info: DatasetInfo, searched: list[Path], expected: str) -> DatasetError:
    ways = [w for w in (info.how_to_get, "download=True (--set download=true) where the network allows",
                        "or put the files in a directory and pass it as root (--data-dir DIR)") if w]
    places = ", ".join(str(p) for p in searched)
    return DatasetError(f"{info.name}: not found in {places} (expected {expected}); get it: {'; '.join(ways)}")


def _download_root(name: str, root: str | Path | None) -> Path:
    if root is not None:
        return Path(root)
    if os.environ.get("FACTORCONV_DATA"):
        return Path(os.environ["FACTORCONV_DATA"]) / name
    return Path.home() / ".cache" / "factorconv" / "data" / name


def _load_idx(info: DatasetInfo, split: str, root: str | Path | None, download: bool) -> ImageSet:
    searched = _candidates(info.name, root)
    found = next((d for d in searched if _has_idx(d, split)), None)
    if found is None and download:
        found = _download_root(info.name, root)
        for stem in IDX_FILES[split]:
            file = f"{stem}.gz"
            download_file([m + file for m in info.mirrors], found / file, (info.files or {}).get(file))
    if found is None:
        raise _missing(info, searched, " and ".join(f"{s}.gz" for s in IDX_FILES[split]))
    return read_idx_split(found, split, list(info.classes), info.name)


def _load_cifar(info: DatasetInfo, split: str, root: str | Path | None, download: bool,
                verify: bool) -> ImageSet:
    layout = CIFAR[info.name]
    searched = _candidates(info.name, root)

    def present(d: Path) -> bool:
        return d.is_file() or (d / layout.folder).is_dir() or (d / layout.test[0][0]).is_file() or \
            (d / layout.archive).is_file()

    found = next((d for d in searched if present(d)), None)
    if found is None and download:
        found = _download_root(info.name, root)
        download_file(layout.urls, found / layout.archive, layout.archive_md5)
    if found is None:
        raise _missing(info, searched, f"{layout.folder}/ or {layout.archive}")
    return read_cifar(found, info.name, split, verify)


def _split_dir(name: str, split: str, root: str | Path | None, layout: str) -> tuple[Path, Path]:
    """(root, the split's directory) of a folder set: root/train, or root/test or root/val; `layout` is what
    the error says belongs in it."""
    names = ("train",) if split == "train" else ("test", "val")
    if root is None:
        raise DatasetError(f"{name}: needs a root directory holding train/ and test/ (or val/) directories, each "
                           f"{layout} (--data-dir DIR)")
    root = Path(root)
    sub = next((root / n for n in names if (root / n).is_dir()), None)
    if sub is None:
        raise DatasetError(f"{name}: {root} has no {' or '.join(names)}/ directory (expected "
                           f"{root}/{names[0]}/{layout})")
    return root, sub


def _load_folder(split: str, root: str | Path | None, image_size: int | None, cache: bool) -> ImageSet:
    root, sub = _split_dir("folder", split, root, "<class>/<image>")
    cache_dir = Path.home() / ".cache" / "factorconv" / "folders" if cache else None
    # the test split is labelled by the training split's class names, not by its own sorted order
    classes = class_names(root / "train") if split == "test" and (root / "train").is_dir() else None
    return read_image_folder(sub, image_size, cache_dir=cache_dir, classes=classes)


def _load_pasted(info: DatasetInfo, split: str, root: str | Path | None, download: bool) -> ImageSet:
    base, canvas, per_canvas, threshold = _PASTED[info.name]
    items = synthetic(split) if base == "synthetic" else _load_idx(DATASETS[base], split, root, download)
    return paste_items(items, canvas=canvas, per_canvas=per_canvas, threshold=threshold,
                       seed=0 if split == "train" else 1, name=info.name)


def _load_segmentation_folder(split: str, root: str | Path | None, image_size: int | None) -> ImageSet:
    root, sub = _split_dir("seg-folder", split, root, "images/<name>.png with masks/<name>.png")
    classes_file = root / "classes.txt"
    classes = None
    if classes_file.is_file():
        classes = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    result = read_segmentation_folder(sub, classes, image_size)
    if classes is None and split == "test" and (root / "train").is_dir():  # label both splits alike
        train_count = largest_mask_value(root / "train") + 1  # the training masks only, not their images
        if train_count < result.num_classes:
            raise DatasetError(f"seg-folder: {sub} has mask values up to {result.num_classes - 1} but the training "
                               f"masks only up to {train_count - 1}; name the classes in {classes_file}")
        result = ImageSet(result.images, result.labels, [str(i) for i in range(train_count)], result.name,
                          result.source)
    return result


def synthetic(split: str = "train", size: int = 16, channels: int = 1, num_classes: int = 10,
              train_count: int = 2048, test_count: int = 512, seed: int = 0) -> ImageSet:
    """A deterministic, learnable toy set: each class is a fixed smooth random pattern, each image that
    pattern shifted by up to 1 pixel each way, scaled in contrast and with pixel noise."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(num_classes, channels, 4, 4, generator=gen)
    prototypes = F.interpolate(low, size=(size + 2, size + 2), mode="bilinear", align_corners=False)
    count = train_count if split == "train" else test_count
    gen.manual_seed(seed + (1 if split == "train" else 2))
    labels = torch.randint(0, num_classes, (count,), generator=gen)
    dy, dx = torch.randint(0, 3, (2, count), generator=gen)
    rows = (dy[:, None] + torch.arange(size))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(size))[:, None, None, :]
    images = prototypes[labels][torch.arange(count)[:, None, None, None], torch.arange(channels)[None, :, None, None],
                                rows, cols]
    contrast = 0.7 + 0.6 * torch.rand(count, 1, 1, 1, generator=gen)
    noise = 0.1 * torch.randn(images.shape, generator=gen)
    pixels = ((images - 0.5) * contrast + 0.5 + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
    return ImageSet(pixels, labels, [f"pattern{i}" for i in range(num_classes)], "synthetic", f"seed {seed}")


def load_dataset(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    download: bool = False,
    verify: bool = True,
    image_size: int | None = None,
    cache: bool = True,
) -> ImageSet:
    """A named data set's train or test split as an `ImageSet` (uint8 in memory).

    `verify` checks CIFAR batches against the published MD5s before unpickling them (they are unpickled
    by a restricted unpickler either way); `image_size` resizes image folders; `cache` keeps a decoded
    tensor of image folders under ~/.cache/factorconv.
    """
    info = _info(name)
    if split not in ("train", "test"):
        raise ValueError(f"load_dataset: split must be 'train' or 'test', got {split!r}")
    if root is not None and info.name not in ("synthetic", "synthetic-seg") and not Path(root).exists() \
            and not download:
        fetch = "; pass download=True (--set download=true) to fetch it there" if info.kind in ("idx", "cifar") else ""
        raise DatasetError(f"{name}: data directory {root} does not exist{fetch}")
    if info.kind == "idx":
        return _load_idx(info, split, root, download)
    if info.kind == "cifar":
        return _load_cifar(info, split, root, download, verify)
    if info.kind == "folder":
        return _load_folder(split, root, image_size, cache)
    if info.kind == "pasted":
        return _load_pasted(info, split, root, download)
    if info.kind == "seg-folder":
        return _load_segmentation_folder(split, root, image_size)
    return synthetic(split)

