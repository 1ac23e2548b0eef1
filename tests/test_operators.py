"""The operator protocol, checked for every registered operator on hypothesis-drawn configurations:
op(x) == conv2d(x, dense_weight), fold() == op, kernel path == feature path, cost() == the parameters,
invalid configurations raise ValueError and nothing else, the eval-mode kernel cache, from_conv."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from helpers import build, conv_config, dense_forward, randomize_, rel_err
from hypothesis import find, given, settings
from hypothesis import strategies as st
from torch import nn

import factorconv as fc
from factorconv.ops.spec import ConvSpec
from factorconv.ops.speed import FEATURE_PATH_MARGIN
from factorconv.registry import conv_entry

CONVS = fc.list_convs()


@pytest.mark.parametrize("conv", CONVS)
def test_every_registered_conv_draws_its_own_configurations(conv: str) -> None:
    """The matrix knows operators from the registry alone: each builds from the configurations it describes
    itself (`example_config`; without one, any nn.Conv2d shape and no options)."""
    builder = fc.registry.conv_entry(conv).builder
    drawn = find(conv_config(conv), lambda cfg: True)
    try:
        build(conv, drawn)
    except (TypeError, ValueError) as err:
        pytest.fail(f"{conv}: a configuration it drew does not build ({err}); {getattr(builder, '__name__', conv)} "
                    "needs an example_config classmethod drawing its options (docs/operators.md, step 3)")


def _prepared(conv: str, cfg: dict, dtype: torch.dtype = torch.float64) -> nn.Module:
    op = build(conv, cfg, dtype)
    randomize_(op)
    return op.eval()


def _input(cfg: dict, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(cfg["batch"], cfg["in_ch"], *cfg["hw"], dtype=dtype)


@pytest.mark.parametrize("conv", CONVS)
@given(data=st.data())
def test_forward_equals_dense_weight_and_fold(conv: str, data: st.DataObject) -> None:
    cfg = data.draw(conv_config(conv))
    op = _prepared(conv, cfg)
    x = _input(cfg)
    with torch.no_grad():
        y = op(x)
        assert y.shape == dense_forward(op, x).shape
        assert rel_err(y, dense_forward(op, x)) < 1e-10
        assert rel_err(op.fold()(x), y) < 1e-10
        assert rel_err(op.deploy()(x), y) < 1e-10
    # the same in float32, to the tolerance the protocol promises
    op32, x32 = copy.deepcopy(op).float(), x.float()
    with torch.no_grad():
        assert rel_err(op32(x32), y) < 1e-5
        assert rel_err(op32.fold()(x32), y) < 1e-5


# Operators that can run as a chain of their factors as well as one composed kernel (conv and dw are one
# conv either way: they have no feature path to compare).
FEATURE_PATH_CONVS = [c for c in CONVS if getattr(fc.registry.conv_entry(c).builder, "has_feature_path", False)]


def test_the_feature_path_list_is_what_the_operators_say() -> None:
    assert set(CONVS) - set(FEATURE_PATH_CONVS) == {"conv", "dw"}


@pytest.mark.parametrize("conv", FEATURE_PATH_CONVS)
@given(data=st.data())
def test_kernel_and_feature_paths_agree(conv: str, data: st.DataObject) -> None:
    cfg = data.draw(conv_config(conv))
    op = _prepared(conv, cfg)
    assert op.has_feature_path
    x = _input(cfg)
    with torch.no_grad():
        op.path = "kernel"
        by_kernel = op(x)
        op.path = "feature"
        by_feature = op(x)
    assert rel_err(by_feature, by_kernel) < 1e-10


@pytest.mark.parametrize("conv", CONVS)
@given(data=st.data())
def test_cost_matches_parameters_and_profile(conv: str, data: st.DataObject) -> None:
    cfg = data.draw(conv_config(conv))
    op = build(conv, cfg, torch.float32)
    cost = op.cost(cfg["hw"])
    assert cost.params == sum(p.numel() for p in op.parameters())
    bits = op.storage_bits()  # binary configurations are stored at 1 bit
    assert cost.param_bits == sum(p.numel() * bits.get(name, 32) for name, p in op.named_parameters())
    deployed = op.deploy()
    if callable(getattr(deployed, "cost", None)):  # a packed form reports its bits itself
        assert deployed.cost(cfg["hw"]).deploy_bits == cost.deploy_bits
        assert deployed.cost(cfg["hw"]).deploy_params == cost.deploy_params
    else:
        assert cost.deploy_params == sum(p.numel() for p in deployed.parameters())
    prof = fc.profile(op, (cfg["in_ch"], *cfg["hw"]))
    assert (prof.params, prof.macs, prof.deploy_params, prof.deploy_macs) == (
        cost.params, cost.macs, cost.deploy_params, cost.deploy_macs
    )
    # deploy MACs are those of the deployed modules, counted independently by torch's FLOP counter
    from torch.utils.flop_counter import FlopCounterMode

    if cost.deploy_adds:
        return  # additions of a binary configuration: torch runs them as float convs, unlike our count
    x = torch.zeros(1, cfg["in_ch"], *cfg["hw"])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        deployed(x)
    assert counter.get_total_flops() == 2 * cost.deploy_macs


@pytest.mark.parametrize("conv", CONVS)
@given(data=st.data())
def test_every_parameter_gets_a_gradient(conv: str, data: st.DataObject) -> None:
    cfg = data.draw(conv_config(conv))
    op = build(conv, cfg, torch.float64).train()
    randomize_(op)
    cfg["batch"] = max(cfg["batch"], 2)  # BatchNorm inside an operator needs more than one value per channel
    op(_input(cfg)).square().sum().backward()
    for name, p in op.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def _exact(conv: str) -> bool:
    return getattr(conv_entry(conv).builder, "from_conv_exact", True)


@pytest.mark.parametrize("conv", [c for c in CONVS if _exact(c)])
@given(data=st.data())
def test_from_conv(conv: str, data: st.DataObject) -> None:
    """from_conv reports its fit error honestly; where the operator can represent the conv it is exact."""
    _check_from_conv(conv, data)


@pytest.mark.parametrize("conv", [c for c in CONVS if not _exact(c)])
@settings(max_examples=6)  # each example runs a few hundred optimizer steps
@given(data=st.data())
def test_from_conv_fitted(conv: str, data: st.DataObject) -> None:
    """Operators fitted by gradient descent: an honest error, no worse than the zero kernel."""
    _check_from_conv(conv, data)


def _check_from_conv(conv: str, data: st.DataObject) -> None:
    cfg = data.draw(conv_config(conv))
    template = build(conv, cfg)
    spec = ConvSpec.of(template)
    source = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
                       spec.dilation, spec.groups, bias=spec.bias).double()
    randomize_(source)
    op = type(template).from_conv(source, **cfg["options"]).eval()
    assert op.fit_error is not None and op.fit_error >= 0
    assert abs(op.fit_error - rel_err(op.dense_weight(), source.weight)) < 1e-9
    assert op.fit_error <= 1.0 + 1e-9  # never worse than the zero kernel (a least-squares fit)
    if not op.from_conv_exact:
        return  # fitted by gradient descent: an approximation, not guaranteed to recover a representable conv
    # a conv that is itself the operator's dense weight must come back exactly (op -> conv -> op)
    again = type(template).from_conv(op.fold(), **cfg["options"]).eval()
    x = _input(cfg)
    with torch.no_grad():
        assert rel_err(again(x), op(x)) < 1e-8


@pytest.mark.parametrize("conv", CONVS)
@given(data=st.data())
def test_state_dict_round_trip(conv: str, data: st.DataObject) -> None:
    cfg = data.draw(conv_config(conv))
    op = _prepared(conv, cfg)
    buf = io.BytesIO()
    torch.save(op.state_dict(), buf)
    buf.seek(0)
    fresh = build(conv, cfg).eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = _input(cfg)
    with torch.no_grad():
        assert torch.equal(fresh(x), op(x))


_ANY = st.one_of(
    st.integers(-3, 9), st.floats(-2, 9), st.just(float("nan")), st.none(), st.booleans(), st.text(max_size=3),
    st.tuples(st.integers(-2, 5), st.integers(-2, 5)), st.tuples(st.integers(1, 3)),
    st.sampled_from(["same", "valid"]),
)


@pytest.mark.parametrize("conv", CONVS)
@settings(max_examples=150)
@given(
    in_ch=_ANY, out_ch=_ANY, kernel_size=_ANY, stride=_ANY, padding=_ANY, dilation=_ANY, groups=_ANY,
    bias=st.one_of(st.booleans(), _ANY),
)
def test_invalid_configs_raise_value_error_only(conv, in_ch, out_ch, kernel_size, stride, padding, dilation,
                                                groups, bias) -> None:
    try:
        op = fc.create_conv2d(in_ch, out_ch, kernel_size, conv=conv, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias)
    except ValueError as err:
        assert str(err)  # a message naming the option
        return
    # whatever was accepted must be a working layer
    h = w = 12
    spec = ConvSpec.of(op)
    if min(spec.out_hw((h, w))) >= 1:
        out = op(torch.randn(1, spec.in_channels, h, w))
        assert out.shape[1] == spec.out_channels


@pytest.mark.parametrize(
    ("conv", "options", "needle"),
    [
        ("dsep", {"multiplier": 0}, "multiplier"),
        ("dsep", {"norm": "yes"}, "norm"),
        ("ssep", {"mid_channels": 3}, "mid_channels"),
        ("dsep", {"path": "sideways"}, "path"),
        ("conv", {"atoms": 8}, "atoms"),
    ],
)
def test_bad_options_name_the_option(conv: str, options: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        fc.create_conv2d(8, 8, 3, conv=conv, groups=2, **options)


def test_dw_rules() -> None:
    with pytest.raises(ValueError, match="multiple of in_channels"):
        fc.create_conv2d(8, 12, 3, conv="dw")
    with pytest.raises(ValueError, match="groups"):
        fc.create_conv2d(8, 16, 3, conv="dw", groups=2)
    assert fc.create_conv2d(8, 16, 3, conv="dw").groups == 8


def test_eval_cache_reuses_and_invalidates() -> None:
    op = fc.create_conv2d(6, 8, 3, conv="ssep", padding=1, path="kernel").eval()
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        y1 = op(x)
        k1 = op.composed_kernel()
        assert op.composed_kernel() is k1  # cached while nothing changed
        op.first.weight.mul_(2.0)  # an in-place update (what an optimizer step does)
        k2 = op.composed_kernel()
        assert k2 is not k1
        assert torch.allclose(op(x), 2 * y1, atol=1e-5)
    # in training mode (or with grad enabled) the kernel is composed fresh and differentiable
    op.train()
    assert op.composed_kernel().requires_grad
    assert op._cache is None


def test_dsep_norm_trains_with_batch_statistics_and_folds_with_running_ones() -> None:
    op = fc.create_conv2d(4, 6, 3, conv="dsep", padding=1, norm=True)
    randomize_(op)
    x = torch.randn(8, 4, 7, 7)
    op.train()
    assert op.choose_path(x) == "feature"
    op(x)  # updates the running statistics
    op.eval()
    with torch.no_grad():
        assert rel_err(op(x), op.fold()(x)) < 1e-5
    assert not op.linear_in_train


@pytest.mark.parametrize("conv", ["dsep", "ssep"])
def test_auto_path_follows_the_cost_model(conv: str) -> None:
    op = fc.create_conv2d(32, 32, 3, conv=conv, padding=1)
    x = torch.randn(4, 32, 16, 16)
    kernel = op.compose_macs() + 4 * op.spec.macs((16, 16))
    feature = 4 * op.feature_macs((16, 16))
    assert op.choose_path(x) == ("feature" if feature * op.feature_path_margin < kernel else "kernel")
    # ssep's factors are dense convs (margin 1); dsep's are a depthwise and a 1x1 (the default margin)
    assert op.feature_path_margin == (1.0 if conv == "ssep" else FEATURE_PATH_MARGIN)
    op.path = "kernel"
    assert op.choose_path(x) == "kernel"


def test_dense_weight_is_contiguous_and_same_dtype() -> None:
    for conv in CONVS:
        op = fc.create_conv2d(4, 8, 3, conv=conv, groups=2 if conv != "dw" else 1)
        w = op.dense_weight()
        assert w.is_contiguous() and w.dtype == torch.float32
        assert w.shape == (op.out_channels, op.in_channels // op.groups, 3, 3)


def test_folded_operator_is_scriptable() -> None:
    op = fc.create_conv2d(4, 8, 3, conv="dsep", padding=1)
    scripted = torch.jit.script(op.fold())
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(scripted(x), op(x), atol=1e-5)
        assert torch.allclose(F.conv2d(x, op.dense_weight(), None, 1, 1), op(x), atol=1e-5)


@pytest.mark.parametrize("conv", CONVS)
def test_eval_under_autocast_then_without(conv: str) -> None:
    """A kernel cached during evaluation under bf16 autocast serves later float32 calls (the engine
    evaluates under autocast, then profiles and times in float32): caches hold the parameters' dtype."""
    op = fc.create_conv2d(16, 16, 3, conv=conv, padding=1).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = op(x)
        full = op(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            again = op(x)
    assert low.dtype == again.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert (low.float() - full).abs().max() < 0.1 * full.abs().max()


@pytest.mark.parametrize("conv", CONVS)
def test_eval_forward_on_the_meta_device(conv: str) -> None:
    """Width matching and counting run models on the meta device, in eval mode (the cached-kernel path)."""
    with torch.device("meta"):
        op = fc.create_conv2d(16, 16, 3, conv=conv, padding=1).eval()
        with torch.no_grad():
            y = op(torch.empty(2, 16, 8, 8))
    assert y.is_meta and y.shape == (2, 16, 8, 8)


def test_kernel_strides_are_canonical_for_the_input_layout() -> None:
    """The config hypothesis found: bdsc's 1x1 kernel came out with channels_last strides, and conv2d on an
    NCHW input of width 1 (contiguous in both formats) segfaulted in float32. The kernels handed to the conv
    now have exactly the strides of the input's layout, in eval (cached) and training."""
    from factorconv.ops.runtime import dense_strides, in_layout

    odd = torch.randn(36).as_strided((9, 4, 1, 1), (4, 1, 4, 4))
    assert odd.is_contiguous() and in_layout(odd, torch.contiguous_format).stride() == (4, 1, 1, 1)
    assert dense_strides(torch.Size((2, 3, 4, 5)), torch.channels_last) == (60, 1, 15, 3)
    op = fc.create_conv2d(12, 9, 1, conv="bdsc", stride=3, padding=(1, 2), dilation=2, groups=3, bias=True, p=2)
    randomize_(op)
    x = torch.randn(1, 12, 5, 1)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(x.double(), op.dense_weight().double(), op.dense_bias().double(),
                                              3, (1, 2), 2, 3)
        assert rel_err(op.eval()(x).double(), expected) < 1e-5
        assert op.composed_kernel().stride() == dense_strides(op.composed_kernel().shape, torch.contiguous_format)
    assert rel_err(op.train()(x).double(), expected) < 1e-5
