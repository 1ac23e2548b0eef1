"""Semantic segmentation: masks in ImageSet, the pasted synthetic task, PNG pair folders, masks cropped and
flipped with their images, mean IoU on hand-made confusions, the model/data task check, `conv_scope`
(DO-Conv's Table 4 stages) and a DeepLabV3 run that trains, resumes bit-exactly and is scored by mIoU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from factorconv.cli import main
from factorconv.data import IGNORE_INDEX, Augment, DatasetError, ImageSet, TensorLoader, load_dataset, paste_items
from factorconv.train import TrainConfig, TrainError, fit
from factorconv.train.engine import build_model
from factorconv.train.task import Scores, mean_iou

TINY_DEEPLAB = {"model": "deeplabv3_resnet50", "width": 0.0625, "model_kwargs": {"output_stride": 16}}


def _items() -> ImageSet:
    """Two 4x4 items: class 0 a bright square with a dark (invisible) corner, class 1 all bright."""
    images = torch.full((2, 1, 4, 4), 200, dtype=torch.uint8)
    images[0, 0, 0, 0] = 0
    return ImageSet(images, torch.tensor([0, 1]), ["a", "b"], "items")


def test_pasted_masks_label_exactly_the_visible_pixels() -> None:
    pasted = paste_items(_items(), canvas=8, per_canvas=2, count=50, threshold=10, seed=3)
    assert pasted.task == "segmentation" and pasted.classes == ["background", "a", "b"]
    assert pasted.images.shape == (50, 1, 8, 8) and pasted.labels.shape == (50, 8, 8)
    # every labelled pixel is painted and every painted pixel is labelled: the mask is the visible part
    assert torch.equal(pasted.labels > 0, pasted.images[:, 0] > 0)
    assert set(pasted.labels.unique().tolist()) == {0, 1, 2}
    counts = (pasted.labels > 0).flatten(1).sum(1)
    assert counts.min() >= 15 and counts.max() <= 31  # one to two items of 15 / 16 visible pixels
    again = paste_items(_items(), canvas=8, per_canvas=2, count=50, threshold=10, seed=3)
    assert torch.equal(again.images, pasted.images) and torch.equal(again.labels, pasted.labels)
    with pytest.raises(ValueError, match="smaller than the 4x4 items"):
        paste_items(_items(), canvas=3)
    with pytest.raises(ValueError, match="needs a classification set"):
        paste_items(pasted, canvas=16)


def test_masks_are_validated() -> None:
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(DatasetError, match="do not match images"):
        ImageSet(images, torch.zeros(2, 5, 4, dtype=torch.uint8), ["x", "y"])
    with pytest.raises(DatasetError, match="must be uint8"):
        ImageSet(images, torch.zeros(2, 4, 4, dtype=torch.long), ["x", "y"])
    bad = torch.zeros(2, 4, 4, dtype=torch.uint8)
    bad[1, 2, 2] = 2
    with pytest.raises(DatasetError, match="mask values reach 2 but there are 2 classes"):
        ImageSet(images, bad, ["x", "y"])
    bad[1, 2, 2] = IGNORE_INDEX  # ignored pixels are not class indices
    assert ImageSet(images, bad, ["x", "y"]).task == "segmentation"


def test_masks_get_their_images_crop_and_flip() -> None:
    data = paste_items(_items(), canvas=8, per_canvas=1, count=64, threshold=10, seed=0)
    loader = TensorLoader(data, 16, shuffle=True, augment=Augment(pad=2, flip=True), mean=[0.0], std=[1.0], seed=5)
    seen_ignore = False
    for x, y in loader.epoch(0):
        assert y.dtype == torch.long and y.shape == (16, 8, 8)
        inside = y != IGNORE_INDEX
        seen_ignore |= bool((~inside).any())
        # pixels shifted in from outside are ignored; inside, the label says what the (shifted) image shows
        assert torch.equal((y > 0) & inside, (x[:, 0] > 0) & inside)
        assert not (x[:, 0][~inside] > 0).any()
    assert seen_ignore


def test_mean_iou_on_hand_made_confusions() -> None:
    # truth rows, prediction columns: class 0 IoU 8/(10+9-8), class 1 IoU 1/(2+3-1), class 2 absent
    confusion = torch.tensor([[8.0, 2.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert mean_iou(confusion) == pytest.approx((8 / 11 + 1 / 4) / 2)
    scores = Scores(3, True, torch.device("cpu"))
    y = torch.tensor([[[0, 1], [2, IGNORE_INDEX]]])
    perfect = torch.nn.functional.one_hot(y.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 10
    perfect[0, :, 1, 1] = torch.tensor([0.0, 0.0, 10.0])  # the ignored pixel predicted wrong: not scored anyway
    scores.add(perfect, y)
    result = scores.result(scores.sums)
    assert result["test_acc"] == 1.0 and result["test_pixel_acc"] == 1.0


def _write_png(path: Path, array: np.ndarray, mode: str) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_a_folder_of_png_pairs(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            image = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
            mask = rng.integers(0, 3, (6, 5), dtype=np.uint8)
            mask[0, 0] = IGNORE_INDEX
            _write_png(tmp_path / split / "images" / f"{i}.png", image, "RGB")
            _write_png(tmp_path / split / "masks" / f"{i}.png", mask, "L")
    # without classes.txt the test split is labelled by the training masks' classes (read without images)
    assert load_dataset("seg-folder", "test", tmp_path).classes == ["0", "1", "2"]
    _write_png(tmp_path / "val" / "masks" / "0.png", np.full((6, 5), 3, dtype=np.uint8), "L")
    with pytest.raises(DatasetError, match="has mask values up to 3 but the training masks only up to 2"):
        load_dataset("seg-folder", "test", tmp_path)
    _write_png(tmp_path / "val" / "masks" / "0.png", np.zeros((6, 5), dtype=np.uint8), "L")
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\n")
    train = load_dataset("seg-folder", "train", tmp_path)
    test = load_dataset("seg-folder", "test", tmp_path)
    assert train.images.shape == (3, 3, 6, 5) and train.labels.shape == (3, 6, 5)
    assert train.classes == ["sky", "road", "car"] and test.num_classes == 3 and len(test) == 2
    assert int(train.labels[0, 0, 0]) == IGNORE_INDEX
    _write_png(tmp_path / "val" / "masks" / "1.png", np.zeros((5, 5), dtype=np.uint8), "L")
    with pytest.raises(DatasetError, match="is 5x6 but its mask 5x5"):
        load_dataset("seg-folder", "test", tmp_path, image_size=4)
    (tmp_path / "train" / "masks" / "2.png").unlink()
    with pytest.raises(DatasetError, match=r"image 2\.png has no mask"):
        load_dataset("seg-folder", "train", tmp_path)


def test_the_model_and_the_data_must_be_of_one_task(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="is a segmentation model but data set synthetic is for classification"):
        fit(TrainConfig(**TINY_DEEPLAB, data="synthetic", steps=1, run_dir=str(tmp_path / "a"), progress="off"))
    with pytest.raises(TrainError, match="is a classification model but data set synthetic-seg is for "):
        fit(TrainConfig(model="resnet20", data="synthetic-seg", steps=1, run_dir=str(tmp_path / "b"),
                        progress="off"))


def test_conv_scope_places_the_operator_in_one_stage() -> None:
    from factorconv.ops.doconv import DOConv2d

    head = build_model(TrainConfig(**TINY_DEEPLAB, conv="doconv", conv_scope="head.*").validate(), 11, 1)
    placed = {n.split(".")[0] for n, m in head.named_modules() if isinstance(m, DOConv2d)}
    assert placed == {"head"}
    both = build_model(TrainConfig(**TINY_DEEPLAB, conv="doconv").validate(), 11, 1)
    assert {n.split(".")[0] for n, m in both.named_modules() if isinstance(m, DOConv2d)} == {"backbone", "head"}
    with pytest.raises(ValueError, match="matches no conv"):
        build_model(TrainConfig(**TINY_DEEPLAB, conv="doconv", conv_scope="neck.*").validate(), 11, 1)
    with pytest.raises(ValueError, match="conv_scope"):
        TrainConfig(**TINY_DEEPLAB, conv_scope="head.*").validate()


def test_deeplab_learns_the_synthetic_task_and_resumes_bit_exactly(tmp_path: Path, capsys) -> None:
    common = dict(TINY_DEEPLAB, data="synthetic-seg", batch_size=32, lr=0.05, schedule="onecycle", steps=24,
                  train_subset=512, test_subset=128, augment_pad=2, log_every=4, progress="off", threads=1,
                  checkpoint_every=12)
    straight = fit(TrainConfig(**common, run_dir=str(tmp_path / "straight")))
    assert straight["task"] == "segmentation" and straight["score"] == "mean IoU"
    # 24 steps learn the background (the recorded CPU-scale study shows the classes learnt: docs/segmentation.md)
    trace = straight["loss_trace"]
    assert trace[-1] < 0.75 * trace[0] and straight["test_pixel_acc"] > 0.5
    assert 0 < straight["test_acc"] < straight["test_pixel_acc"]

    class Killed(Exception):
        pass

    def kill_at_12(event: str, info: dict) -> None:
        if event == "checkpoint" and info["step"] == 12:
            raise Killed

    cut = TrainConfig(**common, run_dir=str(tmp_path / "resumed"))
    with pytest.raises(Killed):
        fit(cut, callbacks=[kill_at_12])
    resumed = fit(TrainConfig(**common, run_dir=str(tmp_path / "resumed")), resume=True)
    for key in ("test_acc", "test_loss", "test_pixel_acc", "train_loss"):
        assert resumed[key] == straight[key], key
    saved = json.loads((tmp_path / "straight" / "result.json").read_text())
    assert saved["test_acc"] == straight["test_acc"] and saved["test_pixel_acc"] == straight["test_pixel_acc"]
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "straight")]) == 0
    assert f"mean IoU {100 * straight['test_acc']:.2f}% (pixel accuracy" in capsys.readouterr().out


def test_a_study_of_segmentation_runs_reports_mean_iou() -> None:
    from factorconv.study.report import render_table, score_label

    row = {"conv": "conv", "budget": None, "width": 1.0, "train_params": 10, "deploy_params": 10,
           "size_bytes": 40, "macs": 1e6, "accuracy": {"mean": 40.0, "std": 1.0, "ci_low": 38.0, "ci_high": 42.0,
                                                        "n": 3},
           "difference": None, "verdict": None, "reference": "conv", "diverged": 0, "not_converged": 0,
           "runs": [], "score": "mean IoU"}
    assert score_label([row]) == "mIoU" and "mIoU % (mean ± std)" in render_table([row])
    assert score_label([{**row, "score": "top-1 accuracy"}]) == "accuracy"

