"""What only a GPU can check (marker `cuda`; skipped where torch sees no GPU, run by scripts/device_check.sh):
every operator on CUDA equals its dense kernel and its CPU self, the eval cache and deploy forms on CUDA, a
training run on CUDA with autocast, and a study's runs on CUDA."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_, rel_err

import factorconv as fc

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/device_check.sh)")]


def _op(conv: str) -> torch.nn.Module:
    kwargs = {"norm": True} if conv == "dsep" else {}
    op = fc.create_conv2d(12, 24, 3, conv=conv, padding=1, stride=2, **kwargs)
    randomize_(op, torch.Generator().manual_seed(0))
    return op.eval()


@pytest.mark.parametrize("conv", fc.list_convs())
def test_every_operator_on_cuda_equals_its_dense_kernel_and_its_cpu_self(conv: str) -> None:
    op = _op(conv)
    x = torch.randn(4, 12, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        on_cpu = op(x)
        gpu = copy.deepcopy(op).cuda()
        xg = x.cuda()
        y = gpu(xg)
        dense = F.conv2d(xg, gpu.dense_weight(), gpu.dense_bias(), gpu.stride, gpu.padding, gpu.dilation,
                         gpu.groups) if hasattr(gpu, "dense_weight") else y
        assert rel_err(y, dense) < 1e-4 and rel_err(y.cpu(), on_cpu) < 1e-4
        assert rel_err(gpu(xg), y) == 0  # the cached kernel gives the same output again
        assert rel_err(fc.deploy(copy.deepcopy(gpu))(xg), y) < 1e-4
        cl = xg.contiguous(memory_format=torch.channels_last)
        assert rel_err(gpu(cl), y) < 1e-4


@pytest.mark.parametrize("conv", ["conv", "doconv", "acdc", "osep", "bdsc"])
def test_a_training_step_on_cuda_matches_cpu(conv: str) -> None:
    torch.manual_seed(0)
    model = fc.create_model("resnet20", conv=conv, width=0.25, in_chans=1, num_classes=10).double()
    gpu = copy.deepcopy(model).cuda()
    x, y = torch.randn(8, 1, 16, 16, dtype=torch.float64), torch.randint(0, 10, (8,))
    for net, data, target in ((model, x, y), (gpu, x.cuda(), y.cuda())):
        F.cross_entropy(net(data), target).backward()
    for (name, a), b in zip(model.named_parameters(), gpu.parameters(), strict=True):
        assert rel_err(b.grad.cpu(), a.grad) < 1e-6, name


def test_training_and_a_study_run_on_cuda(tmp_path: Path) -> None:
    from factorconv.study import LocalExecutor, StudySpec, run_study
    from factorconv.train import fit, resolve_config

    result = fit(resolve_config("smoke", overrides={"data": "synthetic", "device": "cuda", "amp": "bf16",
                                                    "run_dir": str(tmp_path / "run"), "progress": "off"}))
    assert result["device"].startswith("cuda") and result["amp"] == "torch.bfloat16" and result["test_acc"] > 0.2
    spec = StudySpec(convs=["conv", "dsep"], budget="params=12k", data="synthetic", preset="smoke", seeds=1,
                     overrides={"device": "cuda", "progress": "off", "steps": 20})
    done = run_study(spec, tmp_path / "study", executor=LocalExecutor(2))
    # latency is measured where models ship (a CPU runtime), whichever device trained them
    assert [r["conv"] for r in done["rows"]] == ["conv", "dsep"] and done["rows"][0]["latency"]["1"]["ms"] > 0
