"""`torchrun --nproc_per_node 2` on CPU (gloo) against one process with the same global batch.

Without BatchNorm the two runs compute the same updates (each rank's mean gradient over half the batch,
averaged by DDP, is the full batch's mean gradient; the loader gives the ranks the two halves of the same
augmented batch), so their weights agree to float rounding. With BatchNorm each rank normalises with its
half-batch statistics (SyncBatchNorm has no CPU kernel), so the runs differ, by an amount that depends on the
CPU; the test asserts that both learn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from factorconv.train import load_checkpoint

pytestmark = pytest.mark.dist

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

_SCRIPT = textwrap.dedent("""
    import json, sys
    from torch import nn
    from factorconv.registry import register_model
    from factorconv.train import fit, resolve_config

    @register_model("tiny_nobn", input_size=(1, 16, 16))
    def tiny_nobn(num_classes=10, in_chans=1, conv="conv", width=1.0, conv_kwargs=None):
        c = int(8 * width)
        return nn.Sequential(nn.Conv2d(in_chans, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 2 * c, 3, 2, 1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, num_classes))

    class TinySegmenter(nn.Sequential):
        task = "segmentation"

    @register_model("tiny_seg_nobn", input_size=(1, 32, 32))
    def tiny_seg_nobn(num_classes=11, in_chans=1, conv="conv", width=1.0, conv_kwargs=None):
        c = int(8 * width)
        return TinySegmenter(nn.Conv2d(in_chans, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=2,
                             dilation=2), nn.ReLU(), nn.Conv2d(c, num_classes, 1))

    fit(resolve_config("smoke", overrides=json.loads(sys.argv[1])))
""")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def test_ddp_without_batchnorm_matches_one_process(tmp_path: Path) -> None:
    script = tmp_path / "tiny.py"
    script.write_text(_SCRIPT)
    base = {"data": "synthetic", "model": "tiny_nobn", "epochs": 3.0, "progress": "off", "threads": 1,
            "lr": 0.1, "augment_pad": 2, "label_smoothing": 0.1, "nesterov": True}
    _run([sys.executable, str(script), json.dumps({**base, "run_dir": str(tmp_path / "one")})])
    _run([*TORCHRUN, str(script), json.dumps({**base, "run_dir": str(tmp_path / "two")})])
    one, two = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    assert one["step"] == two["step"] == 24
    for key, a in one["model"].items():
        b = two["model"][key]
        assert (a - b).norm() <= 1e-5 * a.norm(), key
    r1, r2 = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "two"))
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    assert abs(r1["train_loss"] - r2["train_loss"]) < 1e-5 and abs(r1["test_acc"] - r2["test_acc"]) <= 1 / 256


@pytest.mark.parametrize(("pad", "tolerance"), [(0, 1e-4), (12, 2.5e-4)])
def test_ddp_segmentation_matches_one_process(tmp_path: Path, pad: int, tolerance: float) -> None:
    """Per-pixel loss and the mean IoU's confusion matrix summed over ranks: two ranks compute one process's
    updates, and their evaluation is one process's. With a padding crop (pad 12) the padded pixels are not
    scored, so the ranks' batches hold different numbers of scored pixels and each rank's loss is weighted by
    its share: measured 4.8e-5 relative from one process after 16 steps (AMD EPYC), against 1.0e-3 for the
    plain per-rank means DDP averaged before."""
    script = tmp_path / "tiny.py"
    script.write_text(_SCRIPT)
    base = {"data": "synthetic-seg", "model": "tiny_seg_nobn", "epochs": 2.0, "progress": "off", "threads": 1,
            "lr": 0.1, "augment_pad": pad, "augment_flip": True}
    _run([sys.executable, str(script), json.dumps({**base, "run_dir": str(tmp_path / "one")})])
    _run([*TORCHRUN, str(script), json.dumps({**base, "run_dir": str(tmp_path / "two")})])
    one, two = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    # rounding only: each step's loss is a mean over half the scored pixels per rank against all of them in one
    # process (measured 2.4e-5 relative after 16 steps without padding, 1.7e-5 at pad 6, on an AMD EPYC)
    for key, a in one["model"].items():
        assert (a - two["model"][key]).norm() <= tolerance * a.norm(), key
    r1, r2 = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "two"))
    assert r1["task"] == r2["task"] == "segmentation" and r2["world_size"] == 2
    assert abs(r1["test_acc"] - r2["test_acc"]) < 1e-3 and abs(r1["test_pixel_acc"] - r2["test_pixel_acc"]) < 1e-4


def test_torchrun_train_command_with_batchnorm(tmp_path: Path) -> None:
    args = ["-m", "factorconv", "train", "--data", "synthetic", "--preset", "smoke", "--model", "resnet20",
            "--width", "0.5", "--epochs", "3", "--set", "lr=0.1", "--set", "train_subset=null", "--set",
            "test_subset=null", "--set", "progress=plain", "--set", "log_every=32"]
    _run([sys.executable, *args, "--run-dir", str(tmp_path / "one")])
    two = _run([*TORCHRUN, *args, "--run-dir", str(tmp_path / "two")])
    assert two.stderr.count("on 2 ranks") == 1  # only rank 0 reports
    r1, r2 = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "two"))
    assert (r1["steps"], r2["steps"], r2["world_size"]) == (96, 96, 2)
    # BatchNorm over half-batches is another computation, and how much it costs depends on the CPU's rounding:
    # one process vs two measured 91.4% vs 88.3% test accuracy (train loss 0.408 vs 0.397) on an Intel Xeon,
    # 92.2% vs 82.8% (0.368 vs 0.465) on an AMD EPYC. What holds on both: each run learns, its training loss
    # falling below a quarter of where it started, and the two-rank run is healthy.
    for r in (r1, r2):
        assert r["test_acc"] > 0.75, r["test_acc"]
        assert r["health"]["status"] == "ok" and r["health"]["end"] < 0.25 * r["health"]["start"], r["health"]
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "epoch"] == [32, 64, 96]  # written once, by rank 0
    state = load_checkpoint(tmp_path / "two")
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
