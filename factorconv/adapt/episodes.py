"""Few-shot episodes from a classification set: the meta-train / meta-test split by classes (meta-test classes
never seen in meta-training; rotated copies of the meta-train classes as extra classes, the usual trick when
classes are few) and N-way K-shot episodes drawn deterministically from (seed, episode index)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.base import ImageSet

__all__ = ["Episode", "EpisodeSampler", "class_pool"]


@dataclass(frozen=True)
class Episode:
    """Support and query images (float, normalised) with labels 0..ways-1 in the episode's own class order."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor


def class_pool(data: ImageSet, classes: list[int], *, rotations: bool = False,
               mean: list[float] | None = None, std: list[float] | None = None) -> tuple[Tensor, Tensor]:
    """The images of `classes` (indices into data.classes) as normalised float images and pool labels
    0..n-1; with `rotations`, each class's copies rotated by 90, 180 and 270 degrees are classes of their
    own (4 per class: label 4 * i + r)."""
    if data.task != "classification":
        raise ValueError(f"few-shot episodes need a classification set, got masks ({data.name})")
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < data.num_classes for c in classes):
        raise ValueError(f"{data.name}: classes must be distinct indices in [0, {data.num_classes}), got {classes}")
    mean, std = (mean, std) if mean is not None and std is not None else data.mean_std()
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    images, labels = [], []
    for i, c in enumerate(classes):
        x = (data.images[data.labels == c].float() / 255 - m) / s
        for r in range(4 if rotations else 1):
            images.append(torch.rot90(x, r, dims=(2, 3)))
            labels.append(torch.full((len(x),), 4 * i + r if rotations else i, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


class EpisodeSampler:
    """N-way K-shot episodes over a pool: episode k picks `ways` pool classes and, per class, `shots` support
    and `queries` query images, all from a generator seeded by (seed, k): the same episodes for every model,
    so accuracies over them are paired."""

    def __init__(self, images: Tensor, labels: Tensor, *, ways: int, shots: int, queries: int, seed: int = 0) -> None:
        if min(ways, shots, queries) < 1:
            raise ValueError(f"episodes need ways, shots and queries >= 1, got {ways}, {shots}, {queries}")
        self.images, self.seed = images, seed
        self.ways, self.shots, self.queries = ways, shots, queries
        self.by_class = [torch.nonzero(labels == c).flatten() for c in labels.unique().tolist()]
        if len(self.by_class) < ways:
            raise ValueError(f"{ways}-way episodes need {ways} classes, the pool has {len(self.by_class)}")
        short = min(len(i) for i in self.by_class)
        if short < shots + queries:
            raise ValueError(f"a class with {short} images cannot give {shots} shots and {queries} queries")

    def episode(self, index: int) -> Episode:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        chosen = torch.randperm(len(self.by_class), generator=gen)[:self.ways].tolist()
        support, query = [], []
        for members in (self.by_class[c] for c in chosen):
            picked = members[torch.randperm(len(members), generator=gen)[:self.shots + self.queries]]
            support.append(picked[:self.shots])
            query.append(picked[self.shots:])
        sy = torch.arange(self.ways).repeat_interleave(self.shots)
        qy = torch.arange(self.ways).repeat_interleave(self.queries)
        return Episode(self.images[torch.cat(support)], sy, self.images[torch.cat(query)], qy)
