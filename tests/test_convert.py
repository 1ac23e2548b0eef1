"""convert(): which layers it replaces, how, and fold() back to the same logits."""

import copy

import pytest
import torch
from helpers import randomize_, rel_err
from torch import nn

import factorconv as fc
from factorconv.ops import DepthwiseSeparableConv2d, SpatialSeparableConv2d, StandardConv2d


def _resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = fc.create_model("resnet20")
    randomize_(model)
    return model.eval()


@pytest.mark.parametrize("conv", ["dsep", "ssep", "dw"])
def test_convert_then_fold_keeps_eval_logits(conv: str) -> None:
    model = fc.convert(_resnet(), conv)
    randomize_(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        folded = fc.fold(model)
        after = folded(x)
    assert rel_err(after, before) < 1e-5
    assert not any(isinstance(m, fc.ConvOperator) for m in folded.modules())


def test_convert_replaces_spatial_body_convs_only() -> None:
    model = fc.convert(fc.create_model("resnet20", shortcut="B"), "dsep")
    assert isinstance(model.conv1, StandardConv2d)  # stem kept
    assert isinstance(model.layer2[0].conv1, DepthwiseSeparableConv2d)
    assert isinstance(model.layer2[0].shortcut[0], StandardConv2d)  # 1x1 projection kept
    assert model.layer2[0].conv1.stride == (2, 2)
    assert isinstance(model.fc, nn.Linear)
    fc.convert(model, "ssep", replace_stem=True, include="conv1")
    assert isinstance(model.conv1, SpatialSeparableConv2d)


def test_include_exclude_patterns() -> None:
    model = fc.convert(fc.create_model("resnet20"), "ssep", include="layer3.*", exclude="layer3.2.*")
    assert isinstance(model.layer3[0].conv1, SpatialSeparableConv2d)
    assert isinstance(model.layer3[2].conv1, StandardConv2d)
    assert isinstance(model.layer1[0].conv1, StandardConv2d)


def test_init_from_conv_is_exact_where_representable() -> None:
    model = _resnet()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    # ssep with mid = out*kw >= rank of every (out*kw x in*kh) matrix: exact
    converted = fc.convert(model, "ssep", conv_kwargs={"mid_channels": 192}, init="from_conv").eval()
    with torch.no_grad():
        assert rel_err(converted(x), ref) < 1e-5
    for _, op in fc.iter_operators(converted):
        if isinstance(op, SpatialSeparableConv2d):
            assert op.fit_error < 1e-5


def test_init_from_conv_reports_error_when_approximate() -> None:
    model = fc.convert(_resnet(), "dsep", init="from_conv")
    errors = [op.fit_error for _, op in fc.iter_operators(model) if isinstance(op, DepthwiseSeparableConv2d)]
    assert len(errors) == 18 and all(0 < e < 1 for e in errors)


def test_convert_keeps_device_dtype_and_mode() -> None:
    model = fc.create_model("resnet20").double().train()
    model.layer1.eval()
    fc.convert(model, "dsep")
    assert model.layer1[0].conv1.first.weight.dtype == torch.float64
    assert not model.layer1[0].conv1.training and model.layer2[0].conv1.training


def test_convert_error_names_the_layer() -> None:
    model = fc.create_model("resnet20")
    with pytest.raises(ValueError, match=r"layer 'layer1\.0\.conv1'.*mid_channels"):
        fc.convert(model, "ssep", conv_kwargs={"mid_channels": 0})
    with pytest.raises(ValueError, match="init"):
        fc.convert(model, "ssep", init="magic")
    with pytest.raises(ValueError, match="unknown conv"):
        fc.convert(model, "nope")


def test_convert_a_bare_conv_and_fold_an_operator() -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1)
    op = fc.convert(conv, "ssep", init="from_conv")
    assert isinstance(op, SpatialSeparableConv2d)
    folded = fc.fold(op)
    assert type(folded) is nn.Conv2d
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        assert rel_err(folded(x), op(x)) < 1e-5


def test_deploy_keeps_factorized_forms_when_smaller() -> None:
    model = fc.create_model("resnet20", conv="dsep", conv_kwargs={"norm": True})
    randomize_(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    prof = fc.profile(model)
    deployed = fc.deploy(model)
    with torch.no_grad():
        assert rel_err(deployed(x), ref) < 1e-5
    assert fc.count_params(deployed) == prof.deploy_params


@pytest.mark.parametrize("conv", ["doconv", "dsep", "bdsc"])
def test_fold_and_deploy_keep_the_models_memory_format(conv: str) -> None:
    for channels_last in (False, True):
        model = fc.create_model("resnet20", conv=conv, width=0.5).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        for surgery in (fc.fold, fc.deploy):
            out = surgery(copy.deepcopy(model))
            kernels = [p for p in out.parameters() if p.dim() == 4 and p.shape[1] * p.shape[2] * p.shape[3] > 1]
            assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) == channels_last
                                   or p.is_contiguous() for p in kernels)
            if channels_last:
                assert all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
