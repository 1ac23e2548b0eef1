"""What every backbone shares (factorconv/models/backbone.py): the shared arguments in each backbone's signature,
their checks, a subclass's own defaults, the rule for registered partials, and a backbone kept outside the
package (examples/tiny_backbone.py, docs/backbones.md) built with every operator."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Iterator

import pytest
import torch
from helpers import load_script

import factorconv as fc
from factorconv.models.backbone import Backbone, BackboneArgs
from factorconv.models.mobilenet import relu6
from factorconv.registry import model_entry, unregister_model

SHARED = [f.name for f in dataclasses.fields(BackboneArgs)]


def _class_of(name: str) -> type | None:
    builder = model_entry(name).builder
    target = builder.func if isinstance(builder, functools.partial) else builder
    return target if isinstance(target, type) else None


@pytest.fixture(scope="module")
def tiny_net() -> Iterator[str]:
    load_script("examples/tiny_backbone.py")  # registers "tiny_net"
    yield "tiny_net"
    unregister_model("tiny_net")


@pytest.mark.parametrize("name", [n for n in fc.list_models() if issubclass(_class_of(n) or object, Backbone)])
def test_every_backbone_takes_every_shared_argument(name: str) -> None:
    params = inspect.signature(model_entry(name).builder).parameters
    assert [p for p in SHARED if p not in params] == []
    with pytest.raises(ValueError, match=f"{name}: in_chans must be a positive int"):
        fc.create_model(name, in_chans=0)


def test_a_subclass_shows_its_own_defaults_and_partials_fix_all_but_create_models_arguments() -> None:
    igcv3 = inspect.signature(fc.models.IGCV3).parameters
    assert igcv3["act_layer"].default is relu6 and igcv3["g1"].default == 2 and "block_options" not in igcv3
    assert inspect.signature(fc.models.ResNet).parameters["act_layer"].default is not relu6
    # igcv2_8's partial gives conv a default of its own, still an option; resnet50's bottleneck is fixed
    assert fc.create_model("igcv2_8", width=0.125).build_config["conv"] == "igcv2"
    assert fc.create_model("igcv2_8", conv="dsep", width=0.125).build_config["conv"] == "dsep"
    with pytest.raises(ValueError, match=r"does not take option.*'bottleneck'"):
        fc.create_model("resnet50", bottleneck=False)


def test_a_backbone_outside_the_package_declares_only_its_own_arguments(tiny_net: str) -> None:
    params = list(inspect.signature(model_entry(tiny_net).builder).parameters)
    assert params == ["name", "depth", *SHARED]
    with pytest.raises(ValueError, match=r"does not take option\(s\) 'dept'; its options are: name, depth, conv, "):
        fc.create_model(tiny_net, dept=3)
    with pytest.raises(ValueError, match="tiny_net: depth must be a positive int"):
        fc.create_model(tiny_net, depth=0)
    model = fc.create_model(tiny_net, depth=3, width=0.5, norm_layer="groupnorm", act_layer="silu")
    assert len(model.body) == 3 and model.stem.conv.out_channels == 16
    assert isinstance(model.body[0].bn, torch.nn.GroupNorm) and isinstance(model.body[0].act, torch.nn.SiLU)
    assert model.build_config["depth"] == 3


@pytest.mark.parametrize("conv", fc.list_convs())
def test_the_example_backbone_builds_with_every_operator(tiny_net: str, conv: str) -> None:
    torch.manual_seed(0)
    model = fc.create_model(tiny_net, conv=conv, in_chans=1).eval()
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    if conv != "conv":
        assert fc.is_operator(model.body[0].conv)


def test_a_shared_argument_outside_create_model_is_still_checked() -> None:
    with pytest.raises(TypeError, match="resnet: unexpected option"):
        fc.models.ResNet((1, 1, 1, 1), widht=2)
