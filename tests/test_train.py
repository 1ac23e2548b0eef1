"""The training engine on the synthetic set: it learns, writes its run files, resumes bit-exactly after a
SIGKILL, stops on non-finite values keeping the last good checkpoint, refuses bad run directories and
unsafe checkpoints; configs, presets and schedules; the train/eval commands."""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch

import factorconv as fc
from factorconv.cli import main
from factorconv.train import (
    PRESETS,
    CheckpointError,
    TrainConfig,
    TrainError,
    fit,
    load_checkpoint,
    lr_at,
    resolve_config,
    save_checkpoint,
)
from factorconv.train.rundir import kernel_settings

ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path: Path, name: str = "run", **overrides) -> TrainConfig:
    values = {"data": "synthetic", "model": "resnet20", "width": 0.5, "run_dir": str(tmp_path / name),
              "progress": "off", "threads": 1, **overrides}
    return resolve_config("smoke", overrides=values)


def test_training_learns_and_writes_its_run_files(tmp_path: Path) -> None:
    cfg = small(tmp_path, epochs=3.0, lr=0.1, log_every=32, train_subset=None)
    result = fit(cfg)
    assert result["test_acc"] > 0.8  # ten classes: chance is 0.1
    assert result["steps"] == 96 and result["epochs"] == 3
    run = Path(cfg.run_dir)
    assert json.loads((run / "result.json").read_text())["test_acc"] == result["test_acc"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["lr"] == 0.1 and saved["input_size"] == [1, 16, 16] and len(saved["mean"]) == 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and all("test_acc" in r for r in epochs)
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert [r["step"] for r in records if r["kind"] == "step"] == [32, 64, 96]
    model = fc.train.build_model(cfg, 10, 1)
    assert result["profile"]["params"] == fc.count_params(model)
    assert result["environment"]["torch"] == torch.__version__
    assert result["environment"]["kernels"] == kernel_settings()  # {} unless MKL_CBWR / ATEN_CPU_CAPABILITY are set


def test_the_kernel_settings_a_run_records(monkeypatch) -> None:
    monkeypatch.delenv("MKL_CBWR", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert kernel_settings() == {}
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert kernel_settings() == {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}


def test_the_last_five_evaluations_metric_survives_a_resume(tmp_path: Path) -> None:
    """DO-Conv's metric: the mean test accuracy of the last five evaluations, None with fewer; the window is
    part of the checkpoint, so a run resumed mid-way reports what an uninterrupted one does."""
    tiny = {"train_subset": 64, "test_subset": 64, "batch_size": 32, "schedule": "constant"}
    cfg = small(tmp_path, epochs=7.0, **tiny)
    result = fit(cfg)
    evals = [r["test_acc"] for r in map(json.loads, (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines())
             if "test_acc" in r]
    assert len(evals) == 7 and result["last5_test_acc"] == pytest.approx(sum(evals[-5:]) / 5)
    assert fit(small(tmp_path, "short", epochs=3.0, **tiny))["last5_test_acc"] is None
    cut = small(tmp_path, "cut", epochs=4.0, **tiny)
    fit(cut)
    resumed = fit(resolve_config(None, None, {"epochs": 7.0}, base=cut.to_dict()), resume=True)
    assert resumed["last5_test_acc"] == result["last5_test_acc"]


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = small(tmp_path, lr=1e9, weight_decay=0.0, schedule="constant", checkpoint_every=1, momentum=0.0)
    with pytest.raises(TrainError, match=r"became NaN/inf .*the last good checkpoint, .*checkpoint\.pt, is intact"):
        fit(cfg)
    state = load_checkpoint(cfg.run_dir)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_unusable_run_directories(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(TrainError, match=r"cannot write to run directory .*afile/run"):
        fit(small(tmp_path, "afile/run"))
    cfg = small(tmp_path, epochs=1.0, train_subset=128, test_subset=64)
    fit(cfg)
    before = (Path(cfg.run_dir) / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainError, match=r"already holds a run .*--resume"):
        fit(cfg)
    assert (Path(cfg.run_dir) / "checkpoint.pt").read_bytes() == before
    with pytest.raises(TrainError, match=r"cannot resume .* with lr=0\.5"):
        fit(small(tmp_path, epochs=1.0, train_subset=128, test_subset=64, lr=0.5), resume=True)
    with pytest.raises(TrainError, match=r"nothing to resume"):
        fit(small(tmp_path, "fresh"), resume=True)


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}, "step": 1}, path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"no space left on device \(the previous checkpoint there is intact\)"):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "config": {}, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_are_loaded_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": 1, "model": _Exploit(str(marker))}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"not a readable factorconv checkpoint"):
        load_checkpoint(path)
    torch.save({"format": 1, "model": {"w": torch.ones(1)}, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"not a readable factorconv checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*nowhere"):
        load_checkpoint(tmp_path / "nowhere")


# -- config, presets, schedules ---------------------------------------------------------------------------


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    cfg = resolve_config("osep", overrides={"conv_kwargs.p": 3, "epochs": 5, "milestones": [2, 4], "conv": "bdsc"})
    assert cfg.conv_kwargs == {"p": 3} and cfg.epochs == 5.0 and cfg.milestones == [2.0, 4.0]
    assert cfg.weight_decay == 1e-4 and cfg.preset == "osep"
    with pytest.raises(ValueError, match=r"unknown config field 'learning_rate'|unknown config field 'lr_rate'"):
        resolve_config(overrides={"lr_rate": 0.1})
    with pytest.raises(ValueError, match=r"'schedule' = 'linear': expected one of constant, step"):
        resolve_config(overrides={"schedule": "linear"})
    with pytest.raises(ValueError, match=r"'nesterov' = True: expected false when momentum is 0"):
        resolve_config(overrides={"nesterov": True, "momentum": 0.0})
    with pytest.raises(ValueError, match=r"'step_size' = None: expected a positive number for schedule 'step'"):
        resolve_config(overrides={"schedule": "step"})
    with pytest.raises(ValueError, match=r"'lr' is not a mapping"):
        resolve_config(overrides={"lr.x": 1})
    with pytest.raises(ValueError, match=r"unknown preset 'fast'; expected one of acdc, bdsc"):
        resolve_config("fast")
    (tmp_path / "c.json").write_text(json.dumps({"preset": "igcv2", "batch_size": 32}))
    cfg = resolve_config(config_file=tmp_path / "c.json", overrides={"lr": 0.05})
    assert (cfg.preset, cfg.batch_size, cfg.lr, cfg.nesterov) == ("igcv2", 32, 0.05, True)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        resolve_config(config_file=tmp_path / "bad.json")


def test_yaml_config_file(tmp_path: Path) -> None:
    pytest.importorskip("yaml", reason="PyYAML is part of the dev extra")
    (tmp_path / "c.yaml").write_text("preset: bdsc\nconv: bdsc\nconv_kwargs:\n  p: 2\nsteps: 1000\n")
    cfg = resolve_config(config_file=tmp_path / "c.yaml")
    assert (cfg.conv_kwargs, cfg.steps, cfg.nesterov, cfg.batch_size) == ({"p": 2}, 1000, True, 64)


def test_every_preset_resolves_and_the_papers_recipes_are_as_stated() -> None:
    for name in PRESETS:
        assert resolve_config(name).preset == name
    osep = resolve_config("osep")
    assert (osep.lr, osep.batch_size, osep.epochs, osep.milestones, osep.weight_decay) == (
        0.1, 128, 200.0, [100.0, 150.0], 1e-4)
    assert lr_at(osep, 99 * 391 + 390, 391, 200 * 391) == 0.1
    assert math.isclose(lr_at(osep, 100 * 391, 391, 200 * 391), 0.01)
    assert math.isclose(lr_at(osep, 150 * 391, 391, 200 * 391), 0.001)
    bdsc = resolve_config("bdsc")
    assert (bdsc.nesterov, bdsc.batch_size, bdsc.steps) == (True, 64, 180_000)
    assert lr_at(bdsc, 49_999, 782, 180_000) == 0.1 and math.isclose(lr_at(bdsc, 50_000, 782, 180_000), 0.01)
    assert math.isclose(lr_at(bdsc, 179_999, 782, 180_000), 1e-4)
    igcv2 = resolve_config("igcv2")
    assert (igcv2.epochs, igcv2.milestones, igcv2.batch_size) == (400.0, [200.0, 300.0, 350.0], 64)
    acdc = resolve_config("acdc")
    assert (acdc.epochs, acdc.milestones) == (350.0, [150.0, 250.0])
    doconv = resolve_config("doconv")
    assert (doconv.steps, doconv.milestones) == (64_000, [32_000.0, 48_000.0])


def test_schedules() -> None:
    cfg = TrainConfig(schedule="onecycle", lr=0.2, onecycle_pct=0.25)
    values = [lr_at(cfg, s, 10, 100) for s in range(100)]
    assert math.isclose(values[0], 0.2 / 25) and max(values) == values[25] == 0.2
    assert values[-1] < 1e-3 and all(a >= b for a, b in itertools.pairwise(values[25:]))
    cos = TrainConfig(schedule="cosine", lr=0.1)
    assert lr_at(cos, 0, 10, 100) == 0.1 and math.isclose(lr_at(cos, 50, 10, 100), 0.05)
    warm = TrainConfig(schedule="constant", lr=0.1, warmup=2.0)
    assert math.isclose(lr_at(warm, 4, 5, 100), 0.05) and lr_at(warm, 10, 5, 100) == 0.1
    step = TrainConfig(schedule="step", step_size=3.0, gamma=0.5, lr=1.0)
    assert [lr_at(step, e * 10, 10, 100) for e in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 0.25]


# -- command line ----------------------------------------------------------------------------------------


def test_train_and_eval_commands(tmp_path: Path, capsys) -> None:
    run = tmp_path / "cli"
    args = ["--threads", "1", "train", "--data", "synthetic", "--preset", "smoke", "--model", "resnet20", "--width",
            "0.5", "--conv", "dsep", "--opt", "norm=true", "--run-dir", str(run), "--set", "progress=off",
            "--set", "train_subset=128", "--set", "test_subset=64", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["conv"] == "dsep" and result["config"]["conv_kwargs"] == {"norm": True}
    assert main(["eval", str(run), "--fold", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["test_acc"] == pytest.approx(result["test_acc"]) and scored["images"] == 64
    assert scored["folded_test_acc"] == pytest.approx(scored["test_acc"]) and scored["folded_max_logit_diff"] < 1e-4
    assert main(["train", "--resume", str(run), "--set", "lr=1"]) == 2
    assert "cannot change lr" in capsys.readouterr().err
    # flags that repeat the saved config change nothing: the original command line with --resume added works
    assert main(["--threads", "1", "train", "--resume", str(run), "--data", "synthetic", "--model", "resnet20",
                 "--width", "0.5", "--conv", "dsep", "--opt", "norm=true", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == result["test_acc"]
    assert main(["train", "--data", "nope", "--print-config"]) == 0  # printing does not load anything
    assert json.loads(capsys.readouterr().out)["data"] == "nope"
    assert main(["train", "--data", "synthetic", "--set", "sched=cosine"]) == 2
    assert "unknown config field 'sched'; did you mean 'schedule'?" in capsys.readouterr().err
    assert main(["train", "--list-presets"]) == 0
    assert "bdsc" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "missing")]) == 1
    assert "no checkpoint at" in capsys.readouterr().err


def test_missing_data_is_one_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["train", "--data", "cifar10", "--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "r"),
                 "--set", "progress=off"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("factorconv train: error: cifar10: not found in") and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_transfer_from_a_run_to_held_out_classes_training_only_a_part(tmp_path: Path) -> None:
    """ACDC's adaptation setting: train on classes 0-4, then start from that run on classes 5-9 with only the
    coefficients (or the head, the BatchNorms) trained; everything else stays exactly as loaded."""
    tiny = {"train_subset": 256, "test_subset": 128, "steps": 6, "conv": "acdc", "conv_kwargs": {"atoms": 4}}
    source = small(tmp_path, "source", classes=[0, 1, 2, 3, 4], **tiny)
    fit(source)
    before = load_checkpoint(source.run_dir)["model"]
    for part, changed in (("coefficients", (".coefficients",)), ("head", ("fc.",)), ("bn", ("bn",)),
                          ("atoms+head", (".atoms", "fc."))):
        cfg = small(tmp_path, part, classes=[5, 6, 7, 8, 9], init_from=source.run_dir, train_only=part, **tiny)
        result = fit(cfg)
        after = load_checkpoint(cfg.run_dir)["model"]
        for name, value in after.items():
            if name.startswith("fc.") and "head" not in part:
                continue  # a fresh classifier for the new classes (and not trained unless it is the part)
            if "running_" in name or "num_batches" in name:
                continue  # BatchNorm statistics follow the new data in training mode
            moved = not torch.equal(value, before[name])
            assert moved == any(c in name for c in changed), (part, name)
        assert 0 < result["trained_params"] < result["profile"]["params"]
        assert result["test_acc"] is not None
    with pytest.raises(ValueError, match="the model has no atoms to train"):
        fit(small(tmp_path, "plain", train_only="atoms", steps=1))
    for bad in ("atoms+atoms", "all+head", "atoms+wings"):
        with pytest.raises(ValueError, match=r"joined by '\+'"):
            small(tmp_path, "bad", train_only=bad).validate()
    with pytest.raises(ValueError, match=r"classes must be distinct class indices in \[0, 10\)"):
        fit(small(tmp_path, "bad", classes=[3, 3]))


def test_darts_trains_with_its_auxiliary_loss_and_cutout(tmp_path: Path) -> None:
    darts = {"model": "darts_cifar", "conv": "dsep", "model_kwargs": {"cells": 3, "drop_path": 0.2, "channels": 8},
             "train_subset": 64, "test_subset": 32, "steps": 2, "batch_size": 16, "cutout": 8}
    with_aux = fit(small(tmp_path, "aux", aux_weight=0.4, **darts))
    without = fit(small(tmp_path, "none", aux_weight=0.0, **darts))
    # the same first batch and weights: the first loss differs by the weighted auxiliary term only
    assert with_aux["loss_trace"][0] > without["loss_trace"][0]
    assert with_aux["test_acc"] is not None  # evaluation runs the network without its head
