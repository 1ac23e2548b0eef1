"""What a careless or hostile user tried, each defect with its test: resuming a finished or result-less run,
image folders whose class names differ between splits, convert on models nobody registered, damaged or
incomplete checkpoints, config values of the wrong type, model options that clash, values that used to end in
a traceback; and every subcommand given wrong values for its options: one line on stderr, exit 2 or 1."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import factorconv as fc
from factorconv.cli import main
from factorconv.data import DatasetError, load_dataset
from factorconv.data.idx import read_idx
from factorconv.train import fit, load_checkpoint, resolve_config, save_checkpoint
from factorconv.train.checkpoint import CheckpointError

SMOKE = {"data": "synthetic", "model": "resnet20", "width": 0.25, "progress": "off", "threads": 1,
         "train_subset": 128, "test_subset": 64, "epochs": 1.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished smoke run, shared by the tests that only read it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    torch.set_num_threads(1)
    fit(resolve_config("smoke", overrides={**SMOKE, "run_dir": str(run)}))
    return run


def _one_line_error(capsys, status: int, needle: str) -> None:
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert status in (1, 2)


# 1 ---------------------------------------------------------------------------------------- resuming a run


def test_a_run_without_result_json_or_finished_resumes(tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)
    run = tmp_path / "r"
    first = fit(resolve_config("smoke", overrides={**SMOKE, "run_dir": str(run)}))
    (run / "result.json").unlink()  # killed after its last checkpoint, before result.json
    assert main(["--threads", "1", "train", "--resume", str(run), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("test_acc", "test_loss", "train_loss", "train_acc", "steps"):
        assert again[key] == first[key], key
    assert json.loads((run / "result.json").read_text())["test_acc"] == first["test_acc"]
    assert main(["--threads", "1", "train", "--resume", str(run), "--json"]) == 0  # a finished run: the same
    assert json.loads(capsys.readouterr().out)["test_acc"] == first["test_acc"]
    status = main(["--threads", "1", "train", "--resume", str(run), "--epochs", "0.5"])
    _one_line_error(capsys, status, "cannot be shortened")


def test_a_study_holding_a_run_without_result_recovers(tmp_path: Path) -> None:
    from factorconv.study import StudySpec, run_study

    torch.set_num_threads(1)
    spec = dict(model="resnet20", convs=["conv"], budget="none", data="synthetic", preset="smoke", seeds=1,
                overrides={k: v for k, v in SMOKE.items() if k not in ("data", "model", "width", "threads")})
    first = run_study(StudySpec(**spec), tmp_path, measure_latency=False)
    next(tmp_path.glob("runs/conv/*/seed0/result.json")).unlink()
    again = run_study(StudySpec(**spec), tmp_path, measure_latency=False)
    assert again["rows"][0]["runs"][0]["acc"] == first["rows"][0]["runs"][0]["acc"]


# 2 ---------------------------------------------------------------------------------------- image folders


def _folders(root: Path, train: list[str], test: list[str]) -> None:
    from PIL import Image

    for split, classes in (("train", train), ("test", test)):
        for i, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            Image.new("L", (4, 4), color=20 * i).save(root / split / c / "a.png")


def test_image_folder_test_labels_follow_the_training_class_names(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    _folders(tmp_path / "ok", ["bird", "cat", "dog"], ["cat", "dog"])
    train = load_dataset("folder", "train", tmp_path / "ok", cache=False)
    test = load_dataset("folder", "test", tmp_path / "ok", cache=False)
    assert test.classes == train.classes == ["bird", "cat", "dog"]
    assert test.labels.tolist() == [1, 2]  # cat and dog by name, not 0 and 1 by their own sorted order
    _folders(tmp_path / "bad", ["cat", "dog", "fish"], ["ant", "cat", "dog"])
    with pytest.raises(DatasetError, match="class 'ant' is not one of the training classes"):
        load_dataset("folder", "test", tmp_path / "bad", cache=False)


def test_a_decompression_bomb_is_refused(tmp_path: Path, monkeypatch) -> None:
    Image = pytest.importorskip("PIL.Image")
    _folders(tmp_path, ["a"], ["a"])
    Image.new("L", (64, 64)).save(tmp_path / "train" / "a" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64x64 is then over twice the limit: a bomb
    with pytest.raises(DatasetError, match=r"big\.png: refused, too large to decode safely"):
        load_dataset("folder", "train", tmp_path, cache=False)


# 3 ---------------------------------------------------------------------------------------- convert


def test_acdc_converts_any_model_and_asks_for_an_input_only_when_it_needs_one() -> None:
    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                             nn.Linear(8 * 28 * 28, 10))

    x = torch.randn(2, 1, 28, 28)
    for share in ("net", "layer"):
        model = fc.convert(net(), "acdc", conv_kwargs={"share": share})  # no forward pass is run
        assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match=r"share=.stage.*input_size=\(C, H, W\).*example="):
        fc.convert(net(), "acdc", conv_kwargs={"share": "stage"})
    staged = fc.convert(net(), "acdc", conv_kwargs={"share": "stage"}, input_size=(1, 28, 28))
    assert len({id(m.bank) for m in staged.modules() if isinstance(m, fc.ops.acdc.ACDCConv2d)}) == 1
    with pytest.raises(ValueError, match="forward pass failed on the example input"):
        fc.convert(net(), "acdc", conv_kwargs={"share": "stage"}, input_size=(1, 32, 32))

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x)) + y

    fc.convert(TwoInputs(), "acdc")
    two = fc.convert(TwoInputs(), "acdc", conv_kwargs={"share": "stage"},
                     example=(torch.zeros(1, 3, 8, 8), torch.zeros(1)))
    assert two(torch.randn(1, 3, 8, 8), torch.zeros(1)).shape == (1, 8, 8, 8)


# 4 ---------------------------------------------------------------------------------------- checkpoints


def test_damaged_or_incomplete_checkpoints_are_one_clear_line(tmp_path: Path, trained: Path, capsys) -> None:
    good = (trained / "checkpoint.pt").read_bytes()
    flipped = bytearray(good)
    middle = len(flipped) // 2
    for i in range(middle, middle + 2000):  # inside the payload: the zip container stays readable
        flipped[i] ^= 0xFF
    bad = tmp_path / "flipped" / "checkpoint.pt"
    bad.parent.mkdir()
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="is damaged: its contents do not match the digest"):
        load_checkpoint(bad)
    for command in (["eval", str(bad.parent)], ["export", str(bad.parent)]):
        _one_line_error(capsys, main(command), "is damaged")

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _one_line_error(capsys, main(["eval", str(empty)]), "is empty (0 bytes)")

    state = load_checkpoint(trained)
    no_config = {k: v for k, v in state.items() if k != "config"}
    torch.save({"format": 1, **no_config}, tmp_path / "noconfig.pt")
    _one_line_error(capsys, main(["eval", str(tmp_path / "noconfig.pt")]), "has no config")

    other = dict(state, config={**state["config"], "width": 0.5})  # weights of width 0.25
    save_checkpoint(other, tmp_path / "mismatch.pt")
    _one_line_error(capsys, main(["eval", str(tmp_path / "mismatch.pt")]),
                    "weights do not fit the model its config describes")


def test_stale_temporary_checkpoints_are_cleaned(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".checkpoint.pt.tmp{int(dead.stdout)}"
    stale.write_bytes(b"half a checkpoint")
    save_checkpoint({"model": {}, "config": {}}, tmp_path / "checkpoint.pt")
    assert not stale.exists() and (tmp_path / "checkpoint.pt").exists()


# 5, 6, 7 ------------------------------------------------------------------------------------ bad values

BAD_CONFIG_VALUES = ["lr=abc", "lr=nan", "lr=inf", "epochs=abc", "momentum=x", "weight_decay=x", "warmup=x",
                     "grad_clip=x", "augment_pad=x", "onecycle_pct=x", "seed=abc", "seed=-1", "channels_last=maybe",
                     "nesterov=maybe", "deterministic=maybe", "batch_size=1.5", "milestones=[1,'a']"]


@pytest.mark.parametrize("setting", BAD_CONFIG_VALUES)
def test_config_values_are_validated_by_their_declared_type(setting: str, tmp_path: Path, capsys) -> None:
    key = setting.split("=")[0]
    _one_line_error(capsys, main(["train", "--data", "synthetic", "--set", setting]), f"config field {key!r}")
    config = tmp_path / "c.json"
    from factorconv.cli import parse_value

    config.write_text(json.dumps({key: parse_value(setting.split("=", 1)[1])}, default=str))
    _one_line_error(capsys, main(["train", "--data", "synthetic", "--config", str(config)]), f"config field {key!r}")
    _one_line_error(capsys, main(["compare", "--data", "synthetic", "--set", setting, "--out", str(tmp_path / "s")]),
                    f"config field {key!r}")


CLASHING = ["width=2", "conv=dsep", "num_classes=5", "in_chans=3", "conv_kwargs={}"]


@pytest.mark.parametrize("option", CLASHING)
def test_model_options_that_clash_with_settings(option: str, capsys) -> None:
    key = option.split("=")[0]
    _one_line_error(capsys, main(["profile", "resnet20", "--model-opt", option]), f"{key!r} is not a model option")
    _one_line_error(capsys, main(["train", "--data", "synthetic", "--model-opt", option]),
                    f"{key!r} is not a model option")


def test_layers_by_name_and_bad_layer_names(capsys) -> None:
    assert main(["profile", "resnet20", "--model-opt", "norm_layer=groupnorm", "--model-opt", "act_layer=silu",
                 "--summary"]) == 0
    capsys.readouterr()
    _one_line_error(capsys, main(["profile", "resnet20", "--model-opt", "norm_layer=foo"]), "norm_layer='foo'")


def test_models_too_large_for_memory_are_refused_before_allocating(capsys) -> None:
    _one_line_error(capsys, main(["profile", "resnet20", "--width", "1000"]), "GiB of memory is available")
    _one_line_error(capsys, main(["profile", "resnet20", "--conv", "acdc", "--opt", "atoms=100000000"]),
                    "GiB of memory is available")


def test_broken_pipe_and_interrupts_end_quietly(tmp_path: Path) -> None:
    piped = subprocess.run(f"{sys.executable} -m factorconv list | head -1", shell=True, capture_output=True,
                           text=True, timeout=120)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr
    script = tmp_path / "interrupt.py"
    script.write_text(
        "import json, sys\n"
        "from factorconv.cli import main\n"
        "from factorconv.train import engine\n"
        "def interrupt(event, info):\n"
        "    if event == 'step' and info['step'] == 3:\n"
        "        raise KeyboardInterrupt\n"
        "orig = engine.Trainer.__init__\n"
        "def init(self, config, *, resume=False, callbacks=()):\n"
        "    orig(self, config, resume=resume, callbacks=[*callbacks, interrupt])\n"
        "engine.Trainer.__init__ = init\n"
        "sys.exit(main(sys.argv[1:]))\n")
    run = tmp_path / "r"
    done = subprocess.run([sys.executable, str(script), "--threads", "1", "train", "--data", "synthetic", "--preset",
                           "smoke", "--width", "0.25", "--run-dir", str(run), "--set", "checkpoint_every=2",
                           "--set", "progress=off"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert f"factorconv train --resume {run}" in done.stderr
    assert load_checkpoint(run)["step"] == 2


# 8 ---------------------------------------------------------------------------------------- small ones


@pytest.mark.parametrize("conv", fc.list_convs())
def test_every_operator_takes_unbatched_input_and_names_its_channels(conv: str) -> None:
    op = fc.create_conv2d(4, 8, 3, conv=conv, padding=1, **({"norm": True} if conv == "dsep" else {}))
    x = torch.randn(4, 6, 6)
    for mode in (True, False):
        op.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(op(x), op(x.unsqueeze(0)).squeeze(0))
    with pytest.raises(RuntimeError, match=r"\(N, 4, H, W\) or \(4, H, W\)|to have 4 channels"):
        op(torch.randn(1, 5, 6, 6))


def test_an_overflowing_idx_header_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "forged-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"abc")
    with pytest.raises(DatasetError, match=r"forged-idx3-ubyte: IDX header says"):
        read_idx(path)


@pytest.mark.parametrize("conv", fc.list_convs())
def test_torch_jit_script_works_where_documented_and_on_every_deploy_form(conv: str) -> None:
    """Each operator says whether it scripts as trained (its class's `scriptable` flag; docs/deploy.md says
    why most do not, and what to script instead); the flag is checked both ways."""
    op = fc.create_conv2d(4, 8, 3, conv=conv, padding=1).eval()
    x = torch.randn(2, 4, 6, 6)
    name = type(op).__name__
    try:
        scripted = torch.jit.script(op)
    except Exception as err:  # TorchScript raises several kinds
        assert not getattr(op, "scriptable", False), (
            f"{name} says scriptable = True but torch.jit.script fails ({type(err).__name__}); set "
            f"scriptable = False on {name}, or make it script")
    else:
        assert getattr(op, "scriptable", False), (
            f"torch.jit.script compiles {name}: set scriptable = True on {name} (docs/operators.md)")
        torch.testing.assert_close(scripted(x), op(x))
    deployed = fc.deploy(op)
    torch.testing.assert_close(torch.jit.script(deployed)(x), op(x), rtol=1e-5, atol=1e-5)


# every subcommand, wrong values for every option --------------------------------------------------------


def _wrong_values(tmp_path: Path, trained: Path) -> list[tuple[list[str], str]]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    run = str(trained)
    return [
        (["--threads", "-3", "list"], "--threads"), (["--threads", "x", "list"], "--threads"),
        (["list", "--nope"], "unrecognized arguments"),
        (["profile", "nonet"], "unknown model"), (["profile", "resnet20", "--conv", "nope"], "unknown conv"),
        (["profile", "resnet20", "--width", "-1"], "--width"), (["profile", "resnet20", "--width", "inf"], "--width"),
        (["profile", "resnet20", "--input", "3x32"], "--input"),
        (["profile", "resnet20", "--num-classes", "0"], "--num-classes"),
        (["profile", "resnet20", "--opt", "x"], "--opt"), (["profile", "resnet20", "--model-opt", "x"], "--model-opt"),
        (["train", "--model", "nonet"], "unknown model"), (["train", "--conv", "nope"], "unknown conv"),
        (["train", "--width", "0"], "--width"), (["train", "--epochs", "-1"], "--epochs"),
        (["train", "--seed", "-2"], "--seed"), (["train", "--preset", "nope"], "unknown preset"),
        (["train", "--config", str(tmp_path / "missing.json")], "missing.json"),
        (["train", "--data", "nope", "--run-dir", str(tmp_path / "r1")], "nope"),
        (["train", "--set", "nope=1"], "unknown config field 'nope'"),
        (["train", "--resume", str(tmp_path / "nothing")], "no checkpoint at"),
        (["train", "--data", "synthetic", "--run-dir", str(afile / "r")], "afile"),
        (["eval", str(tmp_path / "nothing")], "no checkpoint at"), (["eval", run, "--device", "tpu"], "--device"),
        (["compare", "--convs", "conv,nope"], "nope"), (["compare", "--budget", "flops=1M"], "--budget"),
        (["compare", "--budget", "params=10", "--data", "synthetic", "--out", str(tmp_path / "c1")], "params=10"),
        (["compare", "--seeds", "0"], "--seeds"), (["compare", "--workers", "0"], "--workers"),
        (["compare", "--threads-per-run", "0"], "--threads-per-run"), (["compare", "--reference", "ssep"], "ssep"),
        (["compare", "--preset", "nope"], "unknown preset"), (["compare", "--model", "nonet"], "unknown model"),
        (["compare", "--latency-batch", "0"], "--latency-batch"),
        (["compare", "--latency-repeats", "-1"], "--latency-repeats"),
        (["compare", "--opt", "x"], "--opt"), (["compare", "--model-opt", "osep:x"], "--model-opt"),
        (["compare", "--data", "synthetic", "--convs", "conv", "--budget", "none", "--out", str(afile)], "afile"),
        (["report", str(tmp_path / "nothing")], "no study"),
        (["export", str(tmp_path / "nothing")], "no checkpoint at"), (["export", run, "--format", "pdf"], "--format"),
        (["export", run, "--check-batch", "-1"], "--check-batch"), (["export", run, "--check-images", "0"],
                                                                    "--check-images"),
        (["export", run, "--tolerance", "-1"], "--tolerance"), (["export", run, "--out", str(afile / "m.onnx")],
                                                                "afile"),
        (["bench", "nope"], "suite"), (["bench", "ops", "--convs", "nope"], "unknown conv"),
        (["bench", "ops", "--batch", "0"], "--batch"), (["bench", "ops", "--repeats", "0"], "--repeats"),
        (["bench", "models", "--model", "nonet"], "unknown model"),
    ]


def test_every_subcommand_rejects_wrong_values_in_one_line(tmp_path: Path, trained: Path, capsys) -> None:
    for argv, needle in _wrong_values(tmp_path, trained):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's own errors exit from inside parse_args
            status = exc.code
        err = capsys.readouterr().err
        assert status in (1, 2), (argv, status, err)
        assert needle in err, (argv, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_the_sigkill_points_resume_to_the_uninterrupted_run(tmp_path: Path) -> None:
    """Kill at a random step, during the temporary file's write, and after the last checkpoint (before
    result.json): every resume finishes and ends where the uninterrupted run ends."""
    import random

    script = tmp_path / "killable.py"
    script.write_text(_KILLABLE)
    # bdsc: its mask's straight-through state must survive the kill as the weights do
    base = {**SMOKE, "width": 0.5, "epochs": 2.0, "checkpoint_every": 3, "deterministic": True, "log_every": 2,
            "train_subset": 256, "conv": "bdsc", "conv_kwargs": {"p": 1, "norm": True}, "progress": "plain"}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(name: str, mode: str, at: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), json.dumps({**base, "run_dir": str(tmp_path / name)}),
                               mode, str(at)], capture_output=True, text=True, env=env, timeout=240)

    assert run("whole", "none", 0).returncode == 0
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    whole_weights = load_checkpoint(tmp_path / "whole")["model"]
    total = whole["steps"]

    def curve(name: str) -> list[tuple]:
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [(r["kind"], r["step"], r.get("train_loss"), r.get("test_acc")) for r in map(json.loads, lines)]
    points = [("step", random.Random(7).randrange(2, total)), ("write", 6), ("final", total)]
    for mode, at in points:
        name = f"{mode}{at}"
        killed = run(name, mode, at)
        assert killed.returncode == -9, (mode, killed.stderr[-500:])
        saved = load_checkpoint(tmp_path / name)["step"]
        resumed = subprocess.run([sys.executable, "-m", "factorconv", "--threads", "1", "train", "--resume",
                                  str(tmp_path / name)], capture_output=True, text=True, env=env, timeout=240)
        assert resumed.returncode == 0, (mode, resumed.stderr[-1000:])
        if mode == "step":  # mid-run: resumed from the last checkpoint before the kill, which says so
            assert 0 < saved <= at and saved % 3 == 0, (saved, at)
            assert f"resumed at step {saved}" in resumed.stderr, resumed.stderr[-500:]
        result = json.loads((tmp_path / name / "result.json").read_text())
        for key in ("test_acc", "test_loss", "train_loss", "steps", "loss_trace"):
            assert result[key] == whole[key], (mode, key)
        assert not list((tmp_path / name).glob(".checkpoint.pt.tmp*"))  # the killed writer's file is gone
        weights = load_checkpoint(tmp_path / name)["model"]
        assert all(torch.equal(value, whole_weights[key]) for key, value in weights.items()), mode
        assert curve(name) == curve("whole"), mode  # no metrics record lost or duplicated by the kill


_KILLABLE = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from factorconv.train import checkpoint, fit, resolve_config
cfg = resolve_config("smoke", overrides=json.loads(sys.argv[1]))
mode, at = sys.argv[2], int(sys.argv[3])
def kill(event, info):
    if mode == "step" and event == "step" and info["step"] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "final" and event == "checkpoint" and info["step"] == at:  # after the last checkpoint
        os.kill(os.getpid(), signal.SIGKILL)
real_save = torch.save
def save(obj, f, *args, **kwargs):
    if mode == "write" and not hasattr(f, "getvalue") and isinstance(obj, dict) and "payload" in obj:
        step = torch.load(__import__("io").BytesIO(obj["payload"].numpy().tobytes()), weights_only=True)["step"]
        if step == at:  # half the temporary file written, then killed
            f.write(b"PK half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
checkpoint.torch.save = save
fit(cfg, callbacks=[kill])
"""


@pytest.mark.parametrize("argv", [
    ["train", "--model", "nonet"], ["train", "--conv", "nope"], ["train", "--data", "synthetic", "--model", "nonet"],
    ["compare", "--data", "synthetic", "--budget", "latency=0.3ms", "--no-latency"],
    ["compare", "--data", "synthetic", "--model", "nonet"],
])
def test_a_refused_command_leaves_no_directory_behind(argv: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    """A run or study directory the command created and was then refused in (before anything was written)
    is removed: repeated typos do not fill runs/ with empty, locked directories."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) in (1, 2)
    assert "error" in capsys.readouterr().err
    assert not any((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True
    assert main([*argv, "--out" if argv[0] == "compare" else "--run-dir", str(tmp_path / "named")]) in (1, 2)
    assert not (tmp_path / "named").exists()
