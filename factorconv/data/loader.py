"""The tensor loader: a uint8 data set kept in memory on the training device, batched by a seeded per-epoch
permutation, augmented and normalised with tensor ops, and sharded by rank. Segmentation masks get the same
crop and flip as their images (padding is labelled IGNORE_INDEX; cutout leaves the mask as it is).

Everything random is a function of (seed, epoch, batch index): the permutation of epoch e and the crops
and flips of global batch k are drawn for the whole global batch and each rank takes its slice. So a run
resumed at batch k sees exactly the batches it would have seen, and N ranks see together exactly what one
process sees with the same global batch (the shards of a batch are disjoint and complete).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import IGNORE_INDEX, ImageSet

__all__ = ["Augment", "TensorLoader"]


@dataclass(frozen=True)
class Augment:
    """Random crop after zero-padding by `pad` pixels (0: none), random horizontal flip, and cutout (DeVries &
    Taylor; DARTS's evaluation recipe): a `cutout`×`cutout` square (0: none) at a random centre, clipped to the
    image, set to zero after normalisation."""

    pad: int = 0
    flip: bool = False
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"Augment: pad must be >= 0, got {self.pad}")
        if self.cutout < 0:
            raise ValueError(f"Augment: cutout must be >= 0, got {self.cutout}")

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip or self.cutout > 0


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix-style), so nearby (seed, epoch, batch) give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return h >> 1


class TensorLoader:
    """Batches of (normalised float images, int64 labels or (N, H, W) masks) on `device`.

    `batch_size` is the global batch; each of `world_size` ranks gets batch_size / world_size of it.
    `drop_last` drops an incomplete final batch; a final batch too small to give every rank a sample is
    always dropped when shuffling (training), never when evaluating (ranks may then get empty shards).
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        shuffle: bool,
        augment: Augment | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"TensorLoader: batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"TensorLoader: need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        if batch_size % world_size:
            raise ValueError(f"TensorLoader: the global batch size {batch_size} must be a multiple of the "
                             f"{world_size} ranks")
        if len(data) == 0:
            raise ValueError(f"TensorLoader: the data set {data.name!r} is empty")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.num_classes, self.task = data.num_classes, data.task
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.augment = augment or Augment()
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.channels_last = channels_last
        mean, std = (mean, std) if mean is not None and std is not None else data.mean_std()
        if len(mean) != data.channels or len(std) != data.channels:
            raise ValueError(f"TensorLoader: mean/std need {data.channels} values, got {len(mean)}/{len(std)}")
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._scale, self._shift = 1 / (255 * std_t), -mean_t / std_t  # x/255 - mean) / std as one fma

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        n, b = self.num_samples, self.batch_size
        full, rest = divmod(n, b)
        if rest and not self.drop_last and not (self.shuffle and rest < self.world_size):
            return full + 1
        return full

    def permutation(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples, device=self.device)
        gen = torch.Generator().manual_seed(_mix(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=gen).to(self.device)

    def global_batch(self, epoch: int, index: int, order: Tensor | None = None) -> Tensor:
        order = self.permutation(epoch) if order is None else order
        return order[index * self.batch_size:(index + 1) * self.batch_size]

    def shard(self, batch: Tensor) -> Tensor:
        return batch[self.rank::self.world_size]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of `epoch` from batch `start` on (for resuming mid-epoch)."""
        order = self.permutation(epoch)
        for index in range(start, len(self)):
            batch = self.global_batch(epoch, index, order)
            shifts, flips, centres = self._draw(epoch, index, len(batch))
            mine = slice(self.rank, None, self.world_size)
            idx = batch[mine]
            my_shifts = shifts[mine] if shifts is not None else None
            my_flips = flips[mine] if flips is not None else None
            x = self.transform(self.images[idx], my_shifts, my_flips)
            y = self.labels[idx]
            if y.dim() == 3:
                y = self.transform_masks(y, my_shifts, my_flips)
            yield (x if centres is None else self._cut(x, centres[mine])), y

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(0)

    def _draw(self, epoch: int, index: int, count: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        if not (self.shuffle and self.augment.active):
            return None, None, None
        gen = torch.Generator().manual_seed(_mix(self.seed, epoch, index, 1))
        pad = self.augment.pad
        shifts = torch.randint(0, 2 * pad + 1, (count, 2), generator=gen) if pad else None
        flips = torch.rand(count, generator=gen) < 0.5 if self.augment.flip else None
        centres = None
        if self.augment.cutout:  # a stream of its own: crops and flips are the same with or without cutout
            h, w = self.images.shape[-2:]
            cut = torch.Generator().manual_seed(_mix(self.seed, epoch, index, 2))
            centres = torch.stack([torch.randint(0, h, (count,), generator=cut),
                                   torch.randint(0, w, (count,), generator=cut)], 1)
        return shifts, flips, centres

    def _cut(self, x: Tensor, centres: Tensor) -> Tensor:
        half = self.augment.cutout // 2
        h, w = x.shape[-2:]
        centres = centres.to(x.device)
        rows = torch.arange(h, device=x.device)[None, :]
        cols = torch.arange(w, device=x.device)[None, :]
        inside_r = (rows >= centres[:, :1] - half) & (rows < centres[:, :1] - half + self.augment.cutout)
        inside_c = (cols >= centres[:, 1:] - half) & (cols < centres[:, 1:] - half + self.augment.cutout)
        keep = ~(inside_r[:, :, None] & inside_c[:, None, :])
        return x * keep[:, None].to(x.dtype)

    def _crop_flip(self, x: Tensor, shifts: Tensor | None, flips: Tensor | None, fill: int) -> Tensor:
        """Crop (by gather from the padded batch, padding = `fill`) and flip (N, C, H, W)."""
        if shifts is not None and len(x):
            pad = self.augment.pad
            b, c, h, w = x.shape
            padded = F.pad(x, (pad, pad, pad, pad), value=fill)
            shifts = shifts.to(self.device)
            rows = (shifts[:, :1] + torch.arange(h, device=self.device))[:, None, :, None]
            cols = (shifts[:, 1:] + torch.arange(w, device=self.device))[:, None, None, :]
            x = padded[torch.arange(b, device=self.device)[:, None, None, None],
                       torch.arange(c, device=self.device)[None, :, None, None], rows, cols]
        if flips is not None and len(x):
            x = torch.where(flips.to(self.device)[:, None, None, None], x.flip(3), x)
        return x

    def transform_masks(self, masks: Tensor, shifts: Tensor | None, flips: Tensor | None) -> Tensor:
        """The images' crop and flip applied to their uint8 masks (N, H, W); padding is IGNORE_INDEX, so
        pixels shifted in from outside the image are not scored. int64 out."""
        return self._crop_flip(masks[:, None], shifts, flips, IGNORE_INDEX)[:, 0].long()

    def transform(self, images: Tensor, shifts: Tensor | None, flips: Tensor | None) -> Tensor:
        """Crop (by gather from the zero-padded images), flip, normalise; uint8 in, float32 out."""
        x = self._crop_flip(images, shifts, flips, 0)
        out = torch.addcmul(self._shift, x.float(), self._scale)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def steps_for(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * len(self)))
