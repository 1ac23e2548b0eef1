"""Image folders (one sub-directory per class) read with Pillow into a uint8 tensor, optionally resized,
and cached as a tensor file keyed by the folder's contents so a second run does not decode again."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import DatasetError, ImageSet

__all__ = ["HIGH_DEPTH_MODES", "IMAGE_EXTENSIONS", "class_names", "decode_errors", "read_image_folder", "read_pixels"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@contextlib.contextmanager
def decode_errors(path: Path) -> Iterator[None]:
    """Decoding `path` with Pillow: a file it cannot read, or one too large to decode safely, becomes one
    DatasetError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except Image.DecompressionBombError as err:
        raise DatasetError(f"{path}: refused, too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable image ({err})") from None


# Pillow's modes for more than 8 bits per sample (16-bit grayscale PNGs open as one of these); their values
# are scaled to 8 bits, never clipped at 255
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def read_pixels(img: Any, mode: str, path: Path) -> Any:
    """`img` (a Pillow image) in `mode` ("RGB" or "L") at 8 bits: 16-bit samples scaled by 255/65535 (rounded),
    as Pillow already does for 16-bit RGB; floating-point or out-of-range samples refused naming the file."""
    from PIL import Image

    if img.mode == "F":
        raise DatasetError(f"{path}: floating-point pixels (mode F) are not read; save it as an 8- or 16-bit image")
    if img.mode in HIGH_DEPTH_MODES:
        samples = np.asarray(img).astype(np.int64)
        if samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise DatasetError(f"{path}: {img.mode} samples span [{samples.min()}, {samples.max()}], beyond the "
                               "16-bit range 0..65535 this reader scales to 8 bits")
        img = Image.fromarray(((samples * 255 + 32767) // 65535).astype(np.uint8), "L")
    return img.convert(mode)


def class_names(root: Path) -> list[str]:
    """The class sub-directories of an image folder, sorted."""
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist (expected {root}/<class>/<image> files, one "
                           "sub-directory per class)")
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _listing(root: Path, classes: Sequence[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    found = class_names(root)
    if classes is None:
        classes = found
    else:  # labels come from another split's classes, matched by name
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise DatasetError(f"image folder {root}: class {unknown[0]!r} is not one of the training classes "
                               f"({', '.join(classes)}); the test classes must be a subset of the training classes")
    index = {c: i for i, c in enumerate(classes)}
    files = [(f, index[c]) for c in found for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()]
    if not files:
        raise DatasetError(f"image folder {root} has no images (expected {root}/<class>/<image> with one of "
                           f"{', '.join(IMAGE_EXTENSIONS)})")
    return list(classes), files


def _fingerprint(files: list[tuple[Path, int]], size: tuple[int, int] | None, mode: str,
                 classes: Sequence[str]) -> str:
    h = hashlib.sha256(f"v2 {size} {mode} {list(classes)}".encode())  # v2: 16-bit images scaled, not clipped
    for f, label in files:
        st = f.stat()
        h.update(f"{f}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def read_image_folder(
    root: str | Path,
    size: int | tuple[int, int] | None = None,
    mode: str = "RGB",
    cache_dir: str | Path | None = None,
    classes: Sequence[str] | None = None,
) -> ImageSet:
    """All images under `root/<class>/`, as uint8 (N, C, H, W) with classes in sorted order, or labelled by
    their index in `classes` (another split's classes: a test folder is labelled by the training classes'
    names, so a test set with other or fewer classes still gets the right labels; a class not in `classes`
    is an error).

    `size` resizes every image (bilinear); without it all images must already share one size. `mode` is
    the Pillow mode ("RGB" or "L"). With `cache_dir`, the decoded tensor is stored there under a name
    derived from the file list, sizes and modification times, and reused while those are unchanged.
    """
    try:
        from PIL import Image
    except ImportError as err:
        raise DatasetError("reading image folders needs Pillow: pip install 'factorconv[data]'") from err
    if mode not in ("RGB", "L"):
        raise ValueError(f"read_image_folder: mode must be 'RGB' or 'L', got {mode!r}")
    root = Path(root)
    hw = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
    classes, files = _listing(root, classes)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"folder-{_fingerprint(files, hw, mode, classes)}.pt"
        if cache.is_file():
            try:
                saved = torch.load(cache, weights_only=True)
                return ImageSet(saved["images"], saved["labels"], list(saved["classes"]), root.name, str(root))
            except Exception:  # a stale or damaged cache is rebuilt, never trusted
                cache.unlink(missing_ok=True)
    arrays = []
    for f, _ in files:
        with decode_errors(f), Image.open(f) as img:
            img = read_pixels(img, mode, f)
            if hw is not None and img.size != (hw[1], hw[0]):
                img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(img, dtype=np.uint8))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DatasetError(f"image folder {root}: images have different sizes ({sorted(shapes)[:3]} ...); pass a "
                           "size to resize them (--set image_size=32)")
    stacked = torch.from_numpy(np.stack(arrays))
    images = stacked.unsqueeze(1) if stacked.dim() == 3 else stacked.permute(0, 3, 1, 2)
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    result = ImageSet(images.contiguous(), labels, classes, root.name, str(root))
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            torch.save({"images": result.images, "labels": labels, "classes": classes}, tmp)
            os.replace(tmp, cache)
        except OSError:
            pass  # caching is an optimisation; an unwritable cache directory only costs the decode
    return result
