"""What a task trains on and scores, told apart by the labels' shape: classification (a label per image,
scored by top-1 accuracy) and semantic segmentation (a label per pixel, IGNORE_INDEX pixels left out; scored by
mean IoU over the classes present in prediction or truth, as in VOC). The engine's loss, its running training
accuracy (pixel accuracy for segmentation) and evaluation all go through here.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.base import IGNORE_INDEX, DatasetError, ImageSet

__all__ = ["SCORE_NAMES", "Scores", "check_scored", "check_task", "correct_and_count", "mean_iou", "score_label",
           "task_loss"]

# the score `test_acc` holds for each task (result.json's "score")
SCORE_NAMES = {"classification": "top-1 accuracy", "segmentation": "mean IoU"}


def score_label(scores: Iterable[str | None]) -> str:
    """What a column of scores is called in tables and plots: "mIoU" when every one is a mean IoU, else
    "accuracy" (results written before scores were named are accuracies)."""
    scores = list(scores)
    return "mIoU" if scores and all(s == SCORE_NAMES["segmentation"] for s in scores) else "accuracy"


def check_task(model: nn.Module, data_task: str, model_name: str, data_name: str) -> None:
    """A model's own task (`task` attribute; classification when absent) must be the data's."""
    model_task = getattr(model, "task", "classification")
    if model_task != data_task:
        sets = ("fashion-mnist-seg, synthetic-seg or seg-folder" if model_task == "segmentation"
                else "fashion-mnist, cifar10, folder, ...")
        raise ValueError(f"model {model_name} is a {model_task} model but data set {data_name} is for {data_task}; "
                         f"use a {model_task} data set ({sets}) or a {data_task} model")


def check_scored(images: ImageSet, split: str) -> None:
    """Refuse a segmentation split in which every mask pixel is IGNORE_INDEX: nothing in it would be scored
    (its loss would be 0/0 and its mean IoU undefined)."""
    if images.task == "segmentation" and not bool((images.labels != IGNORE_INDEX).any()):
        raise DatasetError(f"{images.name} ({images.source or split}): every {split} mask pixel is {IGNORE_INDEX} "
                           f"(ignore), so nothing in the {split} split would be scored; check the masks")


def task_loss(out: Tensor, y: Tensor, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Cross-entropy over the images (classification) or the scored pixels (segmentation): their mean, or
    with `reduction="sum"` their sum."""
    if y.dim() == 3:
        return F.cross_entropy(out, y, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing,
                               reduction=reduction)
    return F.cross_entropy(out, y, label_smoothing=label_smoothing, reduction=reduction)


def correct_and_count(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Correct predictions (`pred`, the logits' argmax) and how many were scored (images, or pixels not
    ignored), as float64 tensors."""
    if y.dim() == 3:
        scored = y != IGNORE_INDEX
        return ((pred == y) & scored).sum().double(), scored.sum().double()
    return (pred == y).sum().double(), torch.tensor(len(y), dtype=torch.float64, device=y.device)


def mean_iou(confusion: Tensor) -> float:
    """Mean over classes of TP / (TP + FP + FN), from a (truth, prediction) confusion matrix; classes absent
    from both truth and prediction are left out (no 0/0)."""
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 0.0


class Scores:
    """Sums over evaluation batches: loss, correct, count, and for segmentation the confusion matrix; one
    float64 vector, so one all-reduce sums it over ranks."""

    def __init__(self, num_classes: int, segmentation: bool, device: torch.device) -> None:
        self.num_classes, self.segmentation = num_classes, segmentation
        self.sums = torch.zeros(3 + (num_classes * num_classes if segmentation else 0), dtype=torch.float64,
                                device=device)

    def add(self, out: Tensor, y: Tensor) -> None:
        pred = out.argmax(1)
        correct, count = correct_and_count(pred, y)
        if y.dim() == 3:
            scored = y != IGNORE_INDEX
            pairs = y[scored] * self.num_classes + pred[scored]
            self.sums[3:] += torch.bincount(pairs, minlength=self.num_classes ** 2).double()
        self.sums[:3] += torch.stack([task_loss(out, y, reduction="sum").double(), correct, count])

    def result(self, sums: Tensor) -> dict[str, float | None]:
        """{"test_loss", "test_acc"} (test_acc is the task's score: accuracy, or mean IoU with the pixel
        accuracy beside it as "test_pixel_acc") from the (reduced) sums; None for each when nothing was scored
        (no image, or every mask pixel ignored): a score of nothing is not a zero."""
        loss, correct, count = sums[:3].tolist()
        if count == 0:
            return {"test_loss": None, "test_acc": None} | ({"test_pixel_acc": None} if self.segmentation else {})
        if not self.segmentation:
            return {"test_loss": loss / count, "test_acc": correct / count}
        confusion = sums[3:].view(self.num_classes, self.num_classes)
        return {"test_loss": loss / count, "test_acc": mean_iou(confusion), "test_pixel_acc": correct / count}
