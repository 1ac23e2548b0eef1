"""The backbones reproduce the parameter counts their papers print (counted on the meta device)."""

import pytest
import torch

import factorconv as fc
from factorconv.registry import model_entry


def _profile(name: str, **kwargs) -> fc.Profile:
    entry = model_entry(name)
    with torch.device("meta"):
        model = fc.create_model(name, num_classes=entry.num_classes, **kwargs)
    return fc.profile(model, entry.input_size)


@pytest.mark.parametrize(
    ("name", "params_m", "tol", "source"),
    [
        ("vgg16", 14.72, 0.005, "003 Table 1"),
        ("resnet18_cifar", 11.17, 0.005, "003 Table 1"),
        ("wrn_40_4", 8.95, 0.005, "003 Table 1"),
        ("resnet18", 11.69, 0.005, "torchvision"),
        ("resnet34", 21.80, 0.005, "torchvision"),
        ("resnet50", 25.56, 0.005, "torchvision"),
        ("mobilenet_v1", 4.2, 0.02, "002 Table 9"),
        ("mobilenet_v2", 3.50, 0.005, "torchvision"),
        ("densenet40", 1.0, 0.03, "Huang et al."),
        ("preact_resnet164", 1.7, 0.01, "He et al. (identity mappings)"),
        ("wrn_28_10", 36.5, 0.005, "Zagoruyko & Komodakis"),
        ("wrn_40_1", 0.56, 0.01, "Zagoruyko & Komodakis"),
    ],
)
def test_baseline_counts(name: str, params_m: float, tol: float, source: str) -> None:
    prof = _profile(name)
    assert abs(prof.params / 1e6 - params_m) / params_m <= tol, (source, prof.params)


def test_exact_torchvision_counts() -> None:
    assert _profile("resnet18").params == 11_689_512
    assert _profile("resnet34").params == 21_797_672
    assert _profile("resnet50").params == 25_557_032
    assert _profile("mobilenet_v2").params == 3_504_872


def test_mobilenet_v1_macs_at_224() -> None:
    prof = _profile("mobilenet_v1")
    assert abs(prof.macs / 1e6 - 569) / 569 < 0.002  # 002 Table 9: 569 M


def test_plain20_has_no_skips_and_resnet20_counts() -> None:
    model = fc.create_model("plain20")
    assert all(block.shortcut is None for stage in (model.layer1, model.layer2, model.layer3) for block in stage)
    assert fc.count_params(model) == 269_722
    with pytest.raises(ValueError, match="shortcut"):
        fc.create_model("plain20", shortcut="B")


def test_width_scales_every_stage() -> None:
    half = _profile("wrn_40_4", width=0.5)
    full = _profile("wrn_40_4")
    assert 0.2 < half.params / full.params < 0.3  # parameters go roughly with width squared


def test_models_reject_bad_options() -> None:
    with pytest.raises(ValueError, match="dropout"):
        fc.create_model("wrn_40_4", dropout=1.5)
    with pytest.raises(ValueError, match="does not take option"):
        fc.create_model("wrn_40_4", widen_factor=2)  # fixed by the registered name
    with pytest.raises(ValueError, match="width"):
        fc.create_model("vgg16", width=-1)


def test_imagenet_models_default_input_and_classes_in_registry() -> None:
    entry = model_entry("resnet50")
    assert entry.input_size == (3, 224, 224) and entry.num_classes == 1000
    assert model_entry("vgg16").input_size == (3, 32, 32)


def test_blocks_take_layer_factories() -> None:
    """Blocks are built from conv_layer/norm_layer/act_layer: a different norm/act shows up everywhere."""
    model = fc.create_model("preact_resnet20", norm_layer=lambda c: torch.nn.GroupNorm(1, c),
                            act_layer=torch.nn.GELU)
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.ReLU) for m in model.modules())
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
