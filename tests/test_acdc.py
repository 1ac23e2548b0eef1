"""ACDC: Table 1's parameter counts, sharing by reference (counted and saved once), the stages, the
batched composition, atom-drop, the joint least-squares fit, and expansion (paper appendix E)."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import randomize_, rel_err
from torch import nn

import factorconv as fc
from factorconv.ops.acdc import ACDCConv2d, CoefficientBank

# 003 Table 1 (CIFAR-10, M parameters): (model, share, atoms) -> printed size
TABLE1 = {
    ("vgg16", "net", 8): 2.11, ("vgg16", "net", 16): 4.21, ("vgg16", "stage", 8): 4.89, ("vgg16", "stage", 16): 9.78,
    ("resnet18_cifar", "net", 8): 2.28, ("resnet18_cifar", "net", 16): 4.38,
    ("resnet18_cifar", "stage", 8): 2.96, ("resnet18_cifar", "stage", 16): 5.76,
    ("wrn_40_4", "net", 8): 0.58, ("wrn_40_4", "net", 16): 1.11,
    ("wrn_40_4", "stage", 8): 0.74, ("wrn_40_4", "stage", 16): 1.43,
}
# ACDC-g rows (atoms, group size) in {(8, 32), (16, 64)}. Not reproducible by any reading, left out:
# ResNet18 g-layer (0.89 M for m8 s32 but 0.60 M for the strictly larger m16 s64), WRN-40-4 g-layer
# m16 s64 (1.98 M printed, 2.38 M counted) and VGG16 g-net m16 s64 (0.08 M printed, 0.089 M counted).
TABLE1_G = {
    ("vgg16", "net", 8, 32): 0.03, ("vgg16", "stage", 8, 32): 0.06, ("vgg16", "stage", 16, 64): 0.35,
    ("vgg16", "layer", 8, 32): 0.13, ("vgg16", "layer", 16, 64): 0.80,
    ("resnet18_cifar", "net", 8, 32): 0.20, ("resnet18_cifar", "net", 16, 64): 0.26,
    ("resnet18_cifar", "stage", 8, 32): 0.22, ("resnet18_cifar", "stage", 16, 64): 0.45,
    ("wrn_40_4", "net", 8, 32): 0.07, ("wrn_40_4", "net", 16, 64): 0.13,
    ("wrn_40_4", "stage", 8, 32): 0.09, ("wrn_40_4", "stage", 16, 64): 0.26, ("wrn_40_4", "layer", 8, 32): 0.36,
}


def _meta_model(name: str, **conv_kwargs) -> nn.Module:
    with torch.device("meta"):
        return fc.create_model(name, conv="acdc", conv_kwargs=conv_kwargs)


@pytest.mark.parametrize(("name", "share", "atoms"), sorted(TABLE1))
def test_table1_acdc_net_and_block(name: str, share: str, atoms: int) -> None:
    params = fc.count_params(_meta_model(name, atoms=atoms, share=share)) / 1e6
    assert abs(params / TABLE1[name, share, atoms] - 1) < 0.015


@pytest.mark.parametrize(("name", "share", "atoms", "s"), sorted(TABLE1_G))
def test_table1_acdc_g_rows(name: str, share: str, atoms: int, s: int) -> None:
    params = fc.count_params(_meta_model(name, atoms=atoms, share=share, group_size=s)) / 1e6
    assert abs(params / TABLE1_G[name, share, atoms, s] - 1) < 0.10


def test_vgg16_net_closed_form_and_profile_counts_the_bank_once() -> None:
    model = fc.create_model("vgg16", conv="acdc", conv_kwargs={"atoms": 8, "share": "net"})
    bn, fc_layer = 2 * 4224, 512 * 10 + 10
    expected = 512 * 512 * 8 + 13 * 8 * 9 + bn + fc_layer  # PAPER_NOTES' VGG16 ACDC-net m8
    prof = fc.profile(model)
    assert prof.params == expected == sum(p.numel() for p in model.parameters())
    banks = {id(m.bank) for m in model.modules() if isinstance(m, ACDCConv2d)}
    assert len(banks) == 1
    assert sum(r.params for r in prof.layers) == prof.params


@pytest.mark.parametrize(("name", "stages"), [("vgg16", 5), ("resnet18_cifar", 4), ("wrn_40_4", 4)])
def test_stages_are_runs_of_equal_output_width_and_size(name: str, stages: int) -> None:
    model = fc.create_model(name, conv="acdc", width=0.25, conv_kwargs={"share": "stage"})
    layers = [m for m in model.modules() if isinstance(m, ACDCConv2d)]
    assert len({id(m.bank) for m in layers}) == stages
    assert sum(m.owns_bank for m in layers) == stages
    assert isinstance(model.conv1 if hasattr(model, "conv1") else model.features[0].conv, ACDCConv2d)  # stem too


def test_state_dict_saves_each_bank_once_and_loads_back() -> None:
    torch.manual_seed(0)
    model = fc.create_model("resnet18_cifar", conv="acdc", width=0.25, conv_kwargs={"share": "stage"}).eval()
    randomize_(model)
    state = model.state_dict()
    assert sum(k.endswith("coefficients") for k in state) == 4
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    fresh = fc.create_model("resnet18_cifar", conv="acdc", width=0.25, conv_kwargs={"share": "stage"}).eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_batched_composition_equals_per_layer_and_trains_every_member() -> None:
    model = fc.create_model("vgg16", conv="acdc", width=0.125, conv_kwargs={"share": "net"}).train()
    layers = [m for m in model.modules() if isinstance(m, ACDCConv2d)]
    bank = layers[0].bank
    for layer in layers:
        # Two matmuls of different shapes (all members at once vs one layer) reduce over the m atoms in an
        # order MKL picks per shape and per CPU (AMD and Intel differ in the last bit), so equal to float32
        # round-off of an m-term sum, not bitwise.
        assert rel_err(bank.kernel_for(layer), layer.group_weight()) < 1e-6
    x = torch.randn(4, 3, 32, 32)
    model(x).sum().backward()
    assert bank.coefficients.grad is not None and bank.coefficients.grad.abs().sum() > 0
    assert all(layer.atoms.grad is not None for layer in layers)


def test_a_bank_can_compose_layer_by_layer() -> None:
    """`batched = False` (what benchmarks/bench_acdc.py compares against): each member composes its own kernel,
    the bank's batched composition is not asked for, and the outputs are the batched ones to round-off."""
    torch.manual_seed(0)
    model = fc.create_model("vgg16", conv="acdc", width=0.125, conv_kwargs={"share": "net"}).train()
    bank = next(m for m in model.modules() if isinstance(m, ACDCConv2d)).bank
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)
    batched = model(x)
    bank.batched = False
    asked = []
    bank.kernel_for = lambda member: asked.append(member)  # would break the forward if it were called
    torch.manual_seed(1)
    assert rel_err(model(x), batched) < 1e-5 and not asked


def test_two_forwards_then_two_backwards() -> None:
    """Every forward pass composes its own kernels, so separate graphs stay separate: two forwards then two
    backwards accumulate exactly the gradients of the two passes run one after the other."""
    model = fc.create_model("resnet18_cifar", conv="acdc", width=0.125, conv_kwargs={"share": "net"}).double()
    model.train()  # the batched composition of the bank; BatchNorm normalises each pass by its own batch
    x1, x2 = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.randn(2, 3, 16, 16, dtype=torch.float64)
    loss1, loss2 = model(x1).sum(), model(x2).sum()
    loss1.backward()
    loss2.backward()
    together = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for x in (x1, x2):
        model(x).sum().backward()
    for name, p in model.named_parameters():
        assert rel_err(together[name], p.grad) < 1e-12, name
    assert together["conv1.coefficient_bank.coefficients"].abs().sum() > 0


def test_atom_drop_is_unbiased_and_off_in_eval() -> None:
    torch.manual_seed(0)
    op = ACDCConv2d(4, 6, 3, atoms=8, atom_drop=0.3).double()
    full = op.group_weight(op.atoms).detach()
    op.train()
    draws = torch.stack([op.group_weight().detach() for _ in range(4000)])
    assert rel_err(draws.mean(0), full) < 0.02
    assert rel_err(draws[0], full) > 0.05  # a single draw really drops atoms
    op.eval()
    x = torch.randn(1, 4, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(op(x), op(x))
        assert rel_err(op(x), torch.nn.functional.conv2d(x, op.dense_weight())) < 1e-10


def test_group_variant_reduces_channels_and_rejects_bad_group_sizes() -> None:
    op = ACDCConv2d(8, 4, 3, padding=1, group_size=2).double().eval()  # 4 input groups, 1 output each
    randomize_(op)
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(op(x), op.fold()(x)) < 1e-10
    with pytest.raises(ValueError, match="group_size"):
        ACDCConv2d(6, 6, 3, group_size=4)
    with pytest.raises(ValueError, match="groups=1"):
        ACDCConv2d(8, 8, 3, groups=2, group_size=4)
    with pytest.raises(ValueError, match="share"):
        ACDCConv2d(8, 8, 3, share="everything")


def test_from_conv_is_exact_per_layer_and_joint_fit_reports_errors() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, padding=1).double()
    assert ACDCConv2d.from_conv(conv, atoms=9).fit_error < 1e-10  # m >= kh·kw: exact
    assert 0 < ACDCConv2d.from_conv(conv, atoms=4).fit_error < 1
    model = fc.create_model("resnet20", width=0.5).eval()
    with torch.no_grad():
        for _ in range(2):
            model.train()(torch.randn(8, 3, 16, 16))
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    layer_fit = fc.convert(model, "acdc", conv_kwargs={"atoms": 9}, init="from_conv").eval()
    with torch.no_grad():
        assert rel_err(layer_fit(x), ref) < 1e-4  # per-layer banks, m = 9: exact
    shared = fc.convert(fc.create_model("resnet20", width=0.5).eval(), "acdc",
                        conv_kwargs={"atoms": 8, "share": "net"}, init="from_conv")
    errors = [m.fit_error for m in shared.modules() if isinstance(m, ACDCConv2d)]
    assert len(errors) == 19 and all(0 < e < 1 for e in errors)


def test_expand_keeps_outputs_then_trains() -> None:
    torch.manual_seed(0)
    model = fc.create_model("resnet18_cifar", conv="acdc", width=0.125, conv_kwargs={"share": "net", "atoms": 8})
    randomize_(model)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
    fc.expand(model, share="stage")
    assert len({id(m.bank) for m in model.modules() if isinstance(m, ACDCConv2d)}) == 4
    fc.expand(model, atoms=12)
    assert all(m.atoms.shape[1] == 12 for m in model.modules() if isinstance(m, ACDCConv2d))
    with torch.no_grad():
        assert rel_err(model(x), before) < 1e-5
    model.train()
    model(torch.randn(4, 3, 16, 16)).square().mean().backward()
    layer = next(m for m in model.modules() if isinstance(m, ACDCConv2d))
    assert layer.bank.coefficients.grad[..., 8:].abs().sum() > 0  # the new atoms' coefficients learn
    with pytest.raises(ValueError, match="more sharing"):
        fc.expand(model, share="net")


def test_coefficient_bank_alone() -> None:
    bank = CoefficientBank(4, 3, 5)
    assert bank.coefficients.shape == (4, 3, 5) and bank.atoms == 5
