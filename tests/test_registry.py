"""Registries and factories: names, duplicates, option checks, None-dropping, build_config."""

import pytest
from torch import nn

import factorconv as fc
from factorconv.registry import conv_entry


def test_lists() -> None:
    assert {"conv", "dw", "dsep", "ssep"} <= set(fc.list_convs())
    models = fc.list_models("resnet*")
    assert models.index("resnet20") < models.index("resnet32") < models.index("resnet110")  # natural order
    assert fc.list_models("resnet1*") == ["resnet18", "resnet18_cifar", "resnet110", "resnet164"]


def test_duplicate_names_raise() -> None:
    with pytest.raises(ValueError, match="already registered"):
        fc.register_conv("conv")(lambda *a, **k: nn.Identity())
    with pytest.raises(ValueError, match="already registered"):
        fc.register_model("resnet20")(lambda **k: nn.Identity())


def test_unknown_names_suggest() -> None:
    with pytest.raises(ValueError, match="did you mean dsep"):
        fc.create_conv2d(4, 4, 3, conv="dsepp")
    with pytest.raises(ValueError, match=r"did you mean .*resnet20"):
        fc.create_model("resnet2")


def test_create_conv2d_accepts_a_callable() -> None:
    made = []

    def builder(in_ch, out_ch, kernel_size, **kwargs):
        made.append(kwargs)
        return nn.Conv2d(in_ch, out_ch, kernel_size, **kwargs)

    layer = fc.create_conv2d(3, 5, 3, conv=builder, padding=1)
    assert isinstance(layer, nn.Conv2d) and made[0]["padding"] == 1


def test_create_model_drops_none_and_checks_options() -> None:
    model = fc.create_model("resnet20", shortcut=None, stem_stride=None)
    assert model.build_config["model"] == "resnet20"
    with pytest.raises(ValueError, match=r"does not take option.*'depth'"):
        fc.create_model("resnet20", depth=3)
    with pytest.raises(ValueError, match="shortcut"):
        fc.create_model("resnet20", shortcut="C")
    with pytest.raises(ValueError, match="width"):
        fc.create_model("resnet20", width=0)


def test_conv_entries_have_descriptions() -> None:
    for name in fc.list_convs():
        assert conv_entry(name).description
