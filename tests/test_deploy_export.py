"""The deploy path of every model × operator: the folded / deployed model exports to ONNX and onnxruntime
matches PyTorch within 1e-4; `fold(model)` scripts with TorchScript; `factorconv export` on a trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import factorconv as fc
from factorconv.cli import main
from factorconv.convert import iter_operators
from factorconv.export import check_export, export_form, export_model

pytest.importorskip("onnxruntime")

MODELS = {  # small but complete: every block type the zoo uses once
    "resnet20": ((3, 32, 32), {"width": 0.5}),
    "preact_resnet20": ((3, 32, 32), {"width": 0.5}),
    "vgg16": ((3, 32, 32), {"width": 0.125}),
    "mobilenet_v1": ((3, 64, 64), {"width": 0.25, "num_classes": 10}),
    "densenet40": ((3, 32, 32), {}),
}
MATRIX = [(m, c) for m in MODELS for c in fc.list_convs() if (m, c) != ("densenet40", "dw")]


def trained_like(name: str, conv: str, seed: int = 0) -> nn.Module:
    """A model whose every parameter is off its initial value and whose BatchNorm statistics are those of its
    inputs (as after training): the logits stay moderate, so an absolute tolerance means what it says."""
    size, kwargs = MODELS[name]
    torch.manual_seed(seed)
    model = fc.create_model(name, conv=conv, in_chans=size[0], **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = p.std() if p.numel() > 1 else p.abs()
            p.add_(0.1 * float(scale) * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # a cumulative average over the calibration batch
        model.train()(torch.randn(8, *size, generator=gen))
    return model.eval()


@pytest.mark.export
@pytest.mark.parametrize(("model_name", "conv"), MATRIX)
def test_deployed_model_exports_to_onnx_and_matches(tmp_path: Path, model_name: str, conv: str) -> None:
    torch.set_num_threads(1)
    model = trained_like(model_name, conv)
    shipped = export_form(model, fold=True)
    assert all(type(op) is nn.Conv2d for _, op in iter_operators(shipped)), "an operator was left undeployed"
    size = MODELS[model_name][0]
    path = export_model(shipped, tmp_path / "m.onnx", "onnx", torch.randn(1, *size))
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(3, *size, generator=gen)]  # another batch size than the export's: the axis is dynamic
    report = check_export(path, "onnx", model, inputs)
    assert report["max_abs_error"] < 1e-4, report
    assert report["top1_agreement"] == 1.0


@pytest.mark.export
@pytest.mark.parametrize(("model_name", "conv"), [(m, c) for m, c in MATRIX if m in ("resnet20", "mobilenet_v1")])
def test_folded_model_is_scriptable(model_name: str, conv: str) -> None:
    torch.set_num_threads(1)
    model = trained_like(model_name, conv)
    folded = fc.fold(export_form(model))
    scripted = torch.jit.script(folded)
    x = torch.randn(2, *MODELS[model_name][0])
    with torch.no_grad():
        assert (scripted(x) - model(x)).abs().max() < 1e-4


def test_export_form_keeps_the_original_and_packs_bdsc() -> None:
    model = trained_like("resnet20", "bdsc")
    packed = export_form(model, pack=True)
    assert any(type(m).__name__ == "PackedBDSC" for m in packed.modules())
    assert any(type(m).__name__ == "BalancedDecoupledConv2d" for m in model.modules())  # untouched
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (packed(x) - model(x)).abs().max() < 1e-4


def test_export_rejects_unknown_format_and_leaves_no_partial_file(tmp_path: Path) -> None:
    model = trained_like("resnet20", "conv")
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(model, tmp_path / "m.x", "tflite", torch.randn(1, 3, 32, 32))

    class Unexportable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvals(x[0, 0]).real.sum().expand(1, 10)  # no ONNX symbolic for eigvals

    with pytest.raises(ValueError, match="onnx export of Unexportable failed"):
        export_model(Unexportable(), tmp_path / "bad.onnx", "onnx", torch.randn(1, 3, 4, 4))
    assert not list(tmp_path.iterdir())


@pytest.mark.export
def test_export_command_on_a_trained_run(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["--threads", "1", "train", "--data", "synthetic", "--preset", "smoke", "--conv", "bdsc",
                 "--width", "0.25", "--run-dir", str(run), "--set", "progress=off", "--set", "steps=4"]) == 0
    capsys.readouterr()
    for fmt in ("onnx", "torchscript", "state_dict"):
        assert main(["export", str(run), "--format", fmt, "--fold", "--check", "--check-images", "64",
                     "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert Path(report["file"]).is_file() and report["fold"] is True
        for key in ("check_random", "check_real"):
            assert report[key]["max_rel_error"] < 1e-4 and report[key]["top1_agreement"] == 1.0
    # a check over the tolerance fails the command, with --json too (onnxruntime differs by float round-off)
    assert main(["export", str(run), "--fold", "--check", "--check-images", "64", "--tolerance", "0", "--json",
                 "--force"]) == 1
    assert json.loads(capsys.readouterr().out)["check_real"]["max_abs_error"] > 0
    assert main(["export", str(tmp_path / "nothing"), "--check"]) == 1
    assert "no checkpoint" in capsys.readouterr().err
