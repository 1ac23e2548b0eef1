"""Backbones: shapes, options, every model x every conv (small width), gradients, fold."""

import pytest
import torch
from helpers import rel_err

import factorconv as fc
from factorconv.models.igc import CIFAR_NETS
from factorconv.models.layers import ZeroPadShortcut, scale_width

# Networks named by their base channels (the IGC nets' Cx, DARTS's C) are built small by `channels` at width 1.
SMALL_WIDTH = dict.fromkeys([*CIFAR_NETS, "xception8", "igcv2_8", "darts_cifar", "darts_imagenet"], 1.0)
MATRIX_OPTIONS = (
    {name: {"channels": 16} for name in CIFAR_NETS} | {"xception8": {"channels": 8}, "igcv2_8": {"channels": 16}}
    | {"darts_cifar": {"cells": 5, "channels": 8}, "darts_imagenet": {"cells": 5, "channels": 8}}  # a reduction
)  # cell and an aux head

# Pairs that cannot be built, and why: the test asserts they fail with a ValueError that says so.
INCOMPATIBLE = {
    ("densenet40", "dw"): "multiple of in_channels",  # dense layers output growth (12) < input channels
    ("resnext50_32x4d", "dw"): "groups must be 1 or in_channels",  # a 32-group conv is not depthwise
    ("deeplabv3_resnet50", "dw"): "multiple of in_channels",  # ASPP's atrous convs narrow 2048 -> 256
    ("deeplabv3_resnet101", "dw"): "multiple of in_channels",
}


@pytest.mark.parametrize("name", fc.list_models())
@pytest.mark.parametrize("conv", fc.list_convs())
def test_every_model_with_every_conv(name: str, conv: str) -> None:
    if (name, conv) in INCOMPATIBLE:
        with pytest.raises(ValueError, match=INCOMPATIBLE[name, conv]):
            fc.create_model(name, conv=conv, width=0.25)
        return
    model = fc.create_model(name, conv=conv, width=SMALL_WIDTH.get(name, 0.25), num_classes=7, in_chans=2,
                            **MATRIX_OPTIONS.get(name, {}))
    x = torch.randn(2, 2, 16, 16)
    out = model(x)
    outs = out if isinstance(out, tuple) else (out,)  # (logits, auxiliary logits) in training
    shape = (2, 7, 16, 16) if getattr(model, "task", "") == "segmentation" else (2, 7)  # per-pixel logits
    assert all(o.shape == shape and torch.isfinite(o).all() for o in outs)
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    with torch.no_grad():  # non-trivial BatchNorm statistics, inside operators too
        for _ in range(2):
            model(torch.randn(4, 2, 16, 16))
    model.eval()
    with torch.no_grad():
        ref = model(x)
        assert rel_err(fc.fold(model)(x), ref) < 1e-4


@pytest.mark.parametrize("shortcut", ["A", "B", "conv"])
def test_cifar_resnet_shortcuts(shortcut: str) -> None:
    model = fc.create_model("resnet32", shortcut=shortcut)
    n_params = fc.count_params(model)
    base = fc.count_params(fc.create_model("resnet32"))
    extra = {"A": 0, "B": 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64, "conv": 16 * 32 + 32 * 64}[shortcut]
    assert n_params == base + extra
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_stem_stride_and_width() -> None:
    model = fc.create_model("resnet20", width=3.625, stem_stride=2, num_classes=1000)
    assert model.widths == (58, 116, 232)
    assert fc.profile(model).layers[0].out_shape == (1, 58, 16, 16)


def test_zero_pad_shortcut_and_width_rounding() -> None:
    x = torch.randn(1, 3, 5, 5)
    y = ZeroPadShortcut(3, 8, 2)(x)
    assert y.shape == (1, 8, 3, 3)
    assert torch.equal(y[:, 2:5], x[:, :, ::2, ::2]) and y[:, :2].abs().sum() == 0
    assert scale_width(16, 2.72) == 44 and scale_width(16, 2.53125) == 41 and scale_width(16, 0.01) == 1


def test_resnext50_counts_and_its_group_conv_takes_any_operator() -> None:
    with torch.device("meta"):
        assert fc.count_params(fc.create_model("resnext50_32x4d", num_classes=1000)) == 25_028_904  # torchvision
        assert fc.count_params(fc.create_model("resnet50", num_classes=1000)) == 25_557_032
        doconv = fc.create_model("resnext50_32x4d", conv="doconv", num_classes=1000)
    grouped = doconv.layer1[0].conv2
    assert type(grouped).__name__ == "DOConv2d" and grouped.groups == 32  # DO-GConv
    assert (grouped.in_channels, grouped.out_channels) == (128, 128)


def test_mobilenet_v3_large_counts() -> None:
    with torch.device("meta"):
        model = fc.create_model("mobilenet_v3_large", num_classes=1000)
    assert fc.count_params(model) == 5_483_032  # torchvision's
    assert abs(fc.profile(model, (3, 224, 224)).macs / 217e6 - 1) < 0.01  # the usual 217 M MACs (MAdds)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 15 and sum(m.kernel_size == (5, 5) for m in depthwise) == 6


def test_resnet164_v1_bottleneck_counts() -> None:
    with torch.device("meta"):
        model = fc.create_model("resnet164")
    assert round(fc.count_params(model) / 1e6, 2) == 1.70  # He et al.: 1.7 M
    assert sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules()) == 1 + 54
    assert model.fc.in_features == 256
    with pytest.raises(ValueError, match=r"depth must be 9n\+2"):
        fc.models.CifarResNet(32, bottleneck=True)


# The optimized-separable paper's Tables 3 (CIFAR-10) and 5 (ImageNet): (model, conv, C) -> (params M, GFLOPs)
DARTS_ROWS = {("darts_cifar", "dsep", 36, 10): (3.35, 0.528), ("darts_cifar", "osep", 42, 10): (3.25, 0.572),
              ("darts_imagenet", "dsep", 48, 1000): (4.72, 0.530), ("darts_imagenet", "osep", 56, 1000): (4.50, 0.554)}


@pytest.mark.parametrize("key", sorted(DARTS_ROWS))
def test_darts_and_o_darts_counts(key: tuple) -> None:
    """Counted as DARTS counts: without the auxiliary head (training only); MACs at 32 / 224."""
    name, conv, c, classes = key
    with torch.device("meta"):
        model = fc.create_model(name, conv=conv, channels=c, num_classes=classes).eval()
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary"))
    prof = fc.profile(model, (3, 32, 32) if name == "darts_cifar" else (3, 224, 224))
    macs = prof.macs
    assert prof.deploy_params == params  # the auxiliary head trains, but does not ship
    p, f = DARTS_ROWS[key]
    assert abs(params / 1e6 / p - 1) < 0.003 and abs(macs / 1e9 / f - 1) < 0.003
    if key == ("darts_cifar", "dsep", 36, 10):
        assert params == 3_349_342  # DARTS's own log: "param size = 3.349342MB"


def test_deeplabv3_counts_strides_and_scoped_conversion() -> None:
    with torch.device("meta"):
        r50 = fc.create_model("deeplabv3_resnet50", num_classes=21)
        r101 = fc.create_model("deeplabv3_resnet101", num_classes=21)
    # torchvision's 42,004,074 and 60,996,202 less the auxiliary FCN head (2,365,205)
    assert fc.count_params(r50) == 39_638_869 and fc.count_params(r101) == 58_630_997
    x = torch.randn(1, 3, 64, 64)
    for stride in (8, 16):
        model = fc.create_model("deeplabv3_resnet50", width=0.125, num_classes=3, output_stride=stride).eval()
        features = model.backbone.forward_features(x)
        assert features.shape[-1] == 64 // stride and model(x).shape == (1, 3, 64, 64)
    model = fc.create_model("deeplabv3_resnet50", width=0.125, num_classes=3)
    fc.convert(model, "doconv", include="head.*")  # DO-Conv in the head only (Table 4's stages)
    kinds = {n.split(".")[0]: type(m).__name__ for n, m in model.named_modules() if type(m).__name__ == "DOConv2d"}
    assert set(kinds) == {"head"}


def test_a_narrow_resnet_with_conv_shortcuts_trains_channels_last() -> None:
    """torch 2.13's oneDNN backward of a strided 1x1 conv on channels_last input with an odd channel count
    corrupts the heap (7 -> 14 channels at 28x28: the shortcut projections of ResNet-20 at width 0.4375);
    the standard conv runs it as a stride-1 conv on the subsampled input. In a subprocess: the bug aborts."""
    import subprocess
    import sys

    script = (
        "import torch, factorconv as fc\n"
        "torch.set_num_threads(1)\n"
        "m = fc.create_model('resnet20', width=0.4375, shortcut='conv', in_chans=1)"
        ".to(memory_format=torch.channels_last)\n"
        "for _ in range(3):\n"
        "    x = torch.randn(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)\n"
        "    m(x).square().mean().backward()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-500:]
    conv = fc.create_conv2d(7, 14, 1, stride=2).double()
    x = torch.randn(2, 7, 9, 9, dtype=torch.float64)
    assert conv.subsample and torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, None, 2), atol=1e-12)
