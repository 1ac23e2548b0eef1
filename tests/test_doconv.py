"""DO-Conv specifics: the grouped pairing (against a per-channel loop, and the public code's mistake),
the initialisation for D_mul below/at/above M·N, from_conv, a converted trained ResNet, and that the
operator survives torch.jit.script, torch.compile and state_dict round trips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_, rel_err
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import factorconv as fc
from factorconv.ops.doconv import DOConv2d, over_parameterization_basis


def per_channel_reference(op: DOConv2d) -> torch.Tensor:
    """W'[o, c] = sum_d W[o, c, d] · D[input channel read by (o, c), :, d], written as loops."""
    kh, kw = op.kernel_size
    d = op.D + op.D_diag
    cin_g, cout_g = op.in_channels // op.groups, op.out_channels // op.groups
    out = torch.zeros(op.out_channels, cin_g, kh * kw, dtype=op.W.dtype)
    for o in range(op.out_channels):
        group = o // cout_g
        for c in range(cin_g):
            channel = group * cin_g + c
            out[o, c] = d[channel] @ op.W[o, c]
    return out.view(op.out_channels, cin_g, kh, kw)


def public_code_kernel(op: DOConv2d) -> torch.Tensor:
    """The composition as the public reference code writes it (reshape W, einsum 'ims,ois->oim')."""
    kh, kw = op.kernel_size
    d = op.D + op.D_diag
    w = torch.reshape(op.W, (op.out_channels // op.groups, op.in_channels, op.D_mul))
    return torch.reshape(torch.einsum("ims,ois->oim", d, w), (op.out_channels, op.in_channels // op.groups, kh, kw))


@given(
    groups=st.integers(1, 4), cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), k=st.integers(2, 3),
    d_extra=st.integers(-3, 4),
)
def test_grouped_pairing_matches_a_per_channel_loop(groups, cin_g, cout_g, k, d_extra) -> None:
    op = DOConv2d(groups * cin_g, groups * cout_g, k, groups=groups, D_mul=max(1, k * k + d_extra)).double()
    randomize_(op)
    with torch.no_grad():
        assert rel_err(op.dense_weight(), per_channel_reference(op)) < 1e-12


@given(
    groups=st.integers(1, 3), cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), k=st.integers(2, 3),
    d_extra=st.integers(-3, 4), channels_last=st.booleans(),
)
def test_composition_gradients_match_autograd_through_the_loop(groups, cin_g, cout_g, k, d_extra, channels_last):
    """W and D' gradients equal those through the per-channel loop, also for a kernel gradient in
    channels_last strides (what the conv returns for a channels_last input)."""
    op = DOConv2d(groups * cin_g, groups * cout_g, k, groups=groups, D_mul=max(1, k * k + d_extra)).double()
    randomize_(op)
    upstream = torch.randn(op.out_channels, cin_g, k, k, dtype=torch.float64)
    if channels_last:
        upstream = upstream.contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad((op.dense_weight() * upstream).sum(), [op.W, op.D])
    expected = torch.autograd.grad((per_channel_reference(op) * upstream).sum(), [op.W, op.D])
    for got, want in zip(grads, expected, strict=True):
        assert rel_err(got, want) < 1e-12


def test_public_code_pairs_groups_wrongly() -> None:
    torch.manual_seed(1)
    for groups, cin, cout, wrong in ((1, 4, 6, False), (2, 4, 6, True), (4, 4, 8, True), (4, 4, 4, False)):
        op = DOConv2d(cin, cout, 3, groups=groups).double()
        randomize_(op)
        with torch.no_grad():
            differs = rel_err(public_code_kernel(op), per_channel_reference(op)) > 1e-6
        assert differs == wrong, (groups, cin, cout)


def test_basis_for_every_d_mul() -> None:
    assert torch.equal(over_parameterization_basis((3, 3), 9), torch.eye(9))
    wide = over_parameterization_basis((3, 3), 22)  # two identity blocks, then 4 zero columns
    assert torch.equal(wide[:, :9], torch.eye(9)) and torch.equal(wide[:, 9:18], torch.eye(9))
    assert wide[:, 18:].abs().sum() == 0
    narrow = over_parameterization_basis((3, 3), 5)  # centre, then its 4 neighbours
    assert narrow.sum(0).tolist() == [1.0] * 5
    assert narrow.argmax(0).tolist() == [4, 1, 3, 5, 7]


@pytest.mark.parametrize("d_mul", [1, 4, 9, 13, 27])
def test_initial_kernel(d_mul: int) -> None:
    op = DOConv2d(8, 16, 3, padding=1, D_mul=d_mul)
    assert op.D.abs().sum() == 0  # D' starts at zero
    w = op.dense_weight().detach()
    assert w.abs().sum() > 0  # never an all-zero layer (the public code's D_mul < M·N bug)
    if d_mul >= 9:
        assert torch.equal(w.flatten(2), op.W[..., :9].detach())
    else:  # W's columns sit at the d_mul taps nearest the centre, zero elsewhere
        taps = over_parameterization_basis((3, 3), d_mul).argmax(0)
        assert torch.equal(w.flatten(2)[..., taps], op.W.detach())
        assert (w.flatten(2).abs().sum((0, 1)) > 0).sum() == d_mul
    if d_mul == 1:
        assert w[..., 1, 1].abs().sum() > 0 and w.flatten(2)[..., [0, 1, 2, 3, 5, 6, 7, 8]].abs().sum() == 0


@pytest.mark.parametrize("d_mul", [4, 9, 18])
def test_random_init_of_d(d_mul: int) -> None:
    """Table 7's alternative: D itself He-initialised (std sqrt(2/(M·N))), not the identity; the layer is still
    exactly its composed kernel, does not claim to start as the conv, and from_conv still fits exactly."""
    torch.manual_seed(0)
    op = DOConv2d(32, 32, 3, padding=1, D_mul=d_mul, D_init="random")
    d = (op.D + op.D_diag).detach()
    assert abs(d.std().item() / (2 / 9) ** 0.5 - 1) < 0.1 and abs(d.mean().item()) < 0.02
    assert not op.reset_like_conv(nn.init.kaiming_normal_)
    x = torch.randn(2, 32, 9, 9, dtype=torch.float64)
    op64 = op.double()
    assert rel_err(op64(x), F.conv2d(x, op64.dense_weight(), None, 1, 1)) < 1e-12
    conv = nn.Conv2d(32, 32, 3, padding=1, bias=False)
    fitted = DOConv2d.from_conv(conv, D_mul=9, D_init="random")
    assert fitted.fit_error < 1e-6
    with pytest.raises(ValueError, match="D_init must be 'identity' or 'random'"):
        DOConv2d(4, 4, 3, D_init="he")


def test_initialisation_matches_nn_conv2d_statistics() -> None:
    torch.manual_seed(0)
    op, conv = DOConv2d(64, 64, 3), nn.Conv2d(64, 64, 3)
    assert abs(op.dense_weight().std().item() / conv.weight.std().item() - 1) < 0.05


def test_backbones_initialise_doconv_like_their_convs() -> None:
    torch.manual_seed(0)
    plain = fc.create_model("resnet56")
    torch.manual_seed(0)
    over = fc.create_model("resnet56", conv="doconv")
    ratio = over.layer2[3].conv1.dense_weight().std() / plain.layer2[3].conv1.weight.std()
    assert abs(ratio.item() - 1) < 0.05


@given(d_mul=st.integers(9, 20), groups=st.sampled_from([1, 2, 4]))
def test_from_conv_is_exact_for_d_mul_at_least_mn(d_mul: int, groups: int) -> None:
    conv = nn.Conv2d(8, 12, 3, padding=1, groups=groups, bias=True).double()
    randomize_(conv)
    op = DOConv2d.from_conv(conv, D_mul=d_mul)
    assert op.fit_error < 1e-12
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(op(x), conv(x)) < 1e-12


def test_from_conv_below_mn_is_the_best_rank_fit() -> None:
    conv = nn.Conv2d(6, 10, 3).double()
    randomize_(conv)
    op = DOConv2d.from_conv(conv, D_mul=4)
    # per input channel, the optimum is the truncated SVD of its (outputs x taps) slice
    slices = conv.weight.detach().flatten(2).transpose(0, 1)
    s = torch.linalg.svdvals(slices)
    best = (s[:, 4:].square().sum() / s.square().sum()).sqrt().item()
    assert abs(op.fit_error - best) < 1e-9


def test_converted_trained_resnet_keeps_its_logits() -> None:
    torch.manual_seed(0)
    model = fc.create_model("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):  # a few real steps, so weights and BN statistics are "trained"
        x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        converted = fc.convert(model, "doconv", init="from_conv").eval()
        assert sum(isinstance(m, DOConv2d) for m in converted.modules()) == 18
        assert rel_err(converted(x), ref) < 1e-6
        assert rel_err(fc.fold(converted)(x), ref) < 1e-6


def test_one_by_one_is_left_plain_and_convert_skips_it() -> None:
    op = DOConv2d(4, 6, 1)
    assert op.D is None and op.W.shape == (6, 4, 1)
    model = fc.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 8, 1)), "doconv")
    assert [type(m).__name__ for m in model] == ["Conv2d", "DOConv2d", "Conv2d"]


def test_d_diag_is_a_constant_not_saved_and_d_prime_trains() -> None:
    op = DOConv2d(4, 4, 3, padding=1)
    assert "D_diag" not in op.state_dict() and {"W", "D"} <= set(op.state_dict())
    assert not any(p is op.D_diag for p in op.parameters())
    op(torch.randn(2, 4, 5, 5)).sum().backward()
    assert op.D.grad is not None and op.D.grad.abs().sum() > 0


def test_eval_caches_the_composed_kernel() -> None:
    op = DOConv2d(4, 4, 3, padding=1).eval()
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        op(x)
        cached = op.composed_kernel()
        op(x)
        assert op.composed_kernel() is cached
        op.D.add_(0.1)  # an optimizer step / load_state_dict changes _version
        y = op(x)
        assert op.composed_kernel() is not cached
        assert rel_err(y, torch.nn.functional.conv2d(x, op.dense_weight(), padding=1)) < 1e-6
        # a load that replaces the tensors, and a dtype change, also invalidate it
        state = {k: v + 1 for k, v in op.state_dict().items()}
        op.load_state_dict(state, assign=True)
        assert rel_err(op(x), torch.nn.functional.conv2d(x, op.dense_weight(), padding=1)) < 1e-6
        op.double()
        assert op(x.double()).dtype == torch.float64


def test_cached_kernel_follows_the_input_memory_format() -> None:
    """A channels_last input gets a channels_last cached kernel (the conv would reorder an NCHW one per
    call); the outputs are those of the NCHW path."""
    op = DOConv2d(8, 6, 3, padding=1).eval()
    x = torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        y = op(x)
        assert op.composed_kernel().is_contiguous()
        y_cl = op(x.contiguous(memory_format=torch.channels_last))
        assert op._cache[2].is_contiguous(memory_format=torch.channels_last)
        assert rel_err(y_cl, y) < 1e-6 and rel_err(op(x), y) < 1e-6


def test_cached_kernel_serves_input_gradients_of_a_frozen_model() -> None:
    op = DOConv2d(4, 4, 3, padding=1).eval()
    op.requires_grad_(False)
    x = torch.randn(1, 4, 6, 6)
    with torch.inference_mode():
        op(x)  # fills the cache (and the fast path) under inference mode
    x.requires_grad_(True)
    op(x).sum().backward()  # grad enabled, frozen params: the cached kernel is used and saved for backward
    expected = torch.autograd.grad(torch.nn.functional.conv2d(x, op.dense_weight(), padding=1).sum(), x)[0]
    assert rel_err(x.grad, expected) < 1e-6


def test_torch_jit_script() -> None:
    op = DOConv2d(4, 6, 3, padding=1, groups=2, bias=True)
    randomize_(op)
    scripted = torch.jit.script(op)
    x = torch.randn(2, 4, 7, 7)
    assert rel_err(scripted(x), op(x)) < 1e-6
    scripted(x).sum().backward()  # trains when scripted too
    assert op.D.grad is not None


def test_torch_compile_traces_without_graph_breaks() -> None:
    """fullgraph=True fails on any graph break; aot_eager runs Dynamo and AOT autograd, not C++ codegen."""
    torch._dynamo.reset()
    op = DOConv2d(4, 6, 3, padding=1, groups=2, bias=True)
    compiled = torch.compile(op, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 4, 7, 7)
    compiled(x).sum().backward()
    assert op.D.grad is not None
    op.eval()
    with torch.no_grad():
        assert rel_err(compiled(x), op(x)) < 1e-6


@pytest.mark.slow
def test_torch_compile_train_and_eval() -> None:
    """The default inductor backend (compiles C++ on CPU: minutes with a cold cache)."""
    torch._dynamo.reset()
    model = fc.create_model("resnet20", conv="doconv", width=0.25)
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 16, 16)
    out = compiled(x)
    out.sum().backward()
    assert model.layer1[0].conv1.D.grad is not None
    model.eval()
    with torch.no_grad():
        assert rel_err(compiled(x), model(x)) < 1e-5
