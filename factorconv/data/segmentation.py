"""Segmentation data: image + per-pixel mask pairs as an `ImageSet` with (N, H, W) uint8 masks.

Two sources: `paste_items` builds a synthetic task from any classification set (items pasted at random places
on blank canvases, each item's visible pixels labelled with its class + 1, the rest background 0: the CPU-scale
task of DO-Conv's Table 4, and a fixture for tests), and `read_segmentation_folder` reads a folder of PNG pairs
(`images/<name>.png` with `masks/<name>.png`, mask values class indices and 255 = ignore, as Pascal VOC's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import IGNORE_INDEX, DatasetError, ImageSet, largest_class
from .folder import HIGH_DEPTH_MODES, decode_errors, read_pixels

__all__ = ["largest_mask_value", "paste_items", "read_segmentation_folder"]


def paste_items(items: ImageSet, *, canvas: int, per_canvas: int = 2, count: int | None = None,
                threshold: int | None = 10, seed: int = 0, name: str | None = None) -> ImageSet:
    """Canvases of `canvas` x `canvas` pixels, each with `per_canvas` items of `items` (a classification set)
    pasted at uniformly random places, later items over earlier ones. An item's pixels brighter than
    `threshold` (every pixel when None) are its visible part: painted on the canvas and labelled class + 1 in
    the mask; everything else is background (class 0). `count` canvases (default: every item used once,
    len(items) // per_canvas), drawn deterministically from `seed`. Classes: "background" then the items'."""
    if items.task != "classification":
        raise ValueError(f"paste_items: needs a classification set to paste from, got masks ({items.name})")
    h, w = items.image_size
    if canvas < max(h, w):
        raise ValueError(f"paste_items: canvas {canvas} is smaller than the {h}x{w} items")
    if per_canvas < 1:
        raise ValueError(f"paste_items: per_canvas must be >= 1, got {per_canvas}")
    if len(items.classes) + 1 > IGNORE_INDEX:
        raise ValueError(f"paste_items: {len(items.classes)} classes + background do not fit uint8 masks")
    count = len(items) // per_canvas if count is None else count
    if count < 1:
        raise ValueError(f"paste_items: {len(items)} items make no canvas of {per_canvas}")
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(items), generator=gen)
    if count * per_canvas > len(items):  # more canvases than items: reuse them in further shuffles
        extra = [torch.randperm(len(items), generator=gen) for _ in range(count * per_canvas // len(items))]
        chosen = torch.cat([chosen, *extra])
    chosen = chosen[:count * per_canvas].view(count, per_canvas)
    tops = torch.randint(0, canvas - h + 1, (count, per_canvas), generator=gen)
    lefts = torch.randint(0, canvas - w + 1, (count, per_canvas), generator=gen)
    images = torch.zeros(count, items.channels, canvas, canvas, dtype=torch.uint8)
    masks = torch.zeros(count, canvas, canvas, dtype=torch.uint8)
    pixels, labels = items.images, items.labels
    visible_all = (pixels.amax(1) > threshold) if threshold is not None else torch.ones(
        len(items), h, w, dtype=torch.bool)
    for k in range(per_canvas):  # one vectorised paste per layer: the later layer is on top
        idx = chosen[:, k]
        rows = (tops[:, k, None] + torch.arange(h))[:, :, None]  # (count, h, 1)
        cols = (lefts[:, k, None] + torch.arange(w))[:, None, :]  # (count, 1, w)
        n = torch.arange(count)[:, None, None]
        visible = visible_all[idx]
        region = (n[:, None], torch.arange(items.channels)[None, :, None, None], rows[:, None], cols[:, None])
        images[region] = torch.where(visible[:, None], pixels[idx], images[region])
        masks[n, rows, cols] = torch.where(visible, (labels[idx] + 1).to(torch.uint8)[:, None, None],
                                           masks[n, rows, cols])
    return ImageSet(images, masks, ["background", *items.classes], name or f"{items.name}-seg",
                    f"{items.name} items pasted {per_canvas} per {canvas}x{canvas} canvas, seed {seed}")


def _pairs(split_dir: Path) -> list[tuple[Path, Path]]:
    images, masks = split_dir / "images", split_dir / "masks"
    for d in (images, masks):
        if not d.is_dir():
            raise DatasetError(f"segmentation folder {split_dir}: no {d.name}/ directory (expected "
                               f"{split_dir}/images/<name>.png and {split_dir}/masks/<name>.png)")
    found = sorted(f for f in images.iterdir() if f.suffix.lower() == ".png" and f.is_file())
    if not found:
        raise DatasetError(f"segmentation folder {images} has no .png images")
    pairs = []
    for f in found:
        mask = masks / f"{f.stem}.png"
        if not mask.is_file():
            raise DatasetError(f"segmentation folder {split_dir}: image {f.name} has no mask {mask}")
        pairs.append((f, mask))
    return pairs


def _read_mask(mask_file: Path, size: int | None = None, image_file: Path | None = None,
               image_size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask PNG as uint8 class indices (grayscale or palette), checked against its image's size, resized
    (nearest) to `size`."""
    from PIL import Image

    with decode_errors(mask_file), Image.open(mask_file) as mask:
        if mask.mode in HIGH_DEPTH_MODES:  # a 16-bit mask: its values are class indices as they are
            values = np.asarray(mask).astype(np.int64)
            if values.size and (values.min() < 0 or values.max() > 255):
                raise DatasetError(f"{mask_file}: a 16-bit mask holds values up to {values.max()}; class indices "
                                   "must be 0..254 (255 = ignore)")
            mask = Image.fromarray(values.astype(np.uint8), "L")
        if mask.mode not in ("L", "P"):
            raise DatasetError(f"{mask_file}: a mask must be a grayscale or palette PNG of class indices, "
                               f"got mode {mask.mode}")
        if image_size is not None and mask.size != image_size:
            raise DatasetError(f"{image_file} is {image_size[0]}x{image_size[1]} but its mask "
                               f"{mask.size[0]}x{mask.size[1]}")
        if size is not None and mask.size != (size, size):
            mask = mask.resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(mask, dtype=np.uint8)


def largest_mask_value(split_dir: str | Path) -> int:
    """The largest class index in the masks of a split folder (255 = ignore left out), reading the masks only."""
    return max(largest_class(torch.tensor(_read_mask(mask))) for _, mask in _pairs(Path(split_dir)))


def read_segmentation_folder(split_dir: str | Path, classes: list[str] | None = None,
                             size: int | None = None) -> ImageSet:
    """The PNG pairs of `split_dir` (`images/<name>.png`, `masks/<name>.png`): images as RGB (grayscale when
    every image is), masks as class indices (a palette or grayscale PNG; 255 = ignore). `classes` names the
    classes (default: "0".."k" for the largest index seen); `size` resizes (images bilinear, masks nearest)."""
    try:
        from PIL import Image
    except ImportError as err:
        raise DatasetError("reading segmentation folders needs Pillow: pip install 'factorconv[data]'") from err
    split_dir = Path(split_dir)
    pairs = _pairs(split_dir)
    images, masks = [], []
    gray = True
    for image_file, mask_file in pairs:
        with decode_errors(image_file), Image.open(image_file) as img:
            gray = gray and img.mode in ("L", "1", *HIGH_DEPTH_MODES)
            img = read_pixels(img, "RGB", image_file)
            image_size = img.size
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            images.append(np.asarray(img, dtype=np.uint8))
        masks.append(_read_mask(mask_file, size, image_file, image_size))
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DatasetError(f"segmentation folder {split_dir}: images have different sizes ({sorted(shapes)[:3]} "
                           "...); pass a size to resize them (--set image_size=64)")
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    if gray:
        pixels = pixels[:, :1]
    labels = torch.from_numpy(np.stack(masks))
    if classes is None:
        classes = [str(i) for i in range(largest_class(labels) + 1)]
    return ImageSet(pixels.contiguous(), labels, list(classes), split_dir.name, str(split_dir))
