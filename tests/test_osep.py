"""Optimized separable convolution: Algorithm 1's numbers, the volumetric RF checker, the paper's Tables 6
and 7 to the printed digits, width matching, and the operator's geometry."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import randomize_, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import factorconv as fc
from factorconv.functional import shuffle_permutation
from factorconv.ops.channel import ChannelGather
from factorconv.ops.osep import OptimizedSeparableConv2d, plan_osep, plan_routing, volumetric_rf


def test_equation_7_and_algorithm_1_integers() -> None:
    plan = plan_osep(64, 64, 5)
    assert [round(g, 6) for g in plan.continuous_groups] == [40.0, 1.6]  # eq. 7
    assert plan.groups == (32, 2)  # Algorithm 1's integers
    assert [p.kernel_size for p in plan.parts] == [(5, 5), (1, 1)]
    # PAPER_NOTES: C = 62 -> n1 = 3 -> g1 = 21, n2 = 24 -> g2 = 3; padded group convs
    plan = plan_osep(62, 62, 3)
    assert plan.groups == (21, 3)
    assert [(p.in_padded, p.out_padded) for p in plan.parts] == [(63, 63), (63, 63)]
    assert plan.params == 63 * 3 * 9 + 63 * 21


def test_policies_and_spatial_placement() -> None:
    def internal(policy):
        return plan_osep(32, 64, 3, policy=policy).parts[0].out_channels

    assert (internal("min"), internal("linear"), internal("bottleneck"), internal("inverted"), internal(40)) == (
        32, 48, 16, 128, 40
    )
    assert [p.kernel_size for p in plan_osep(16, 16, 3, spatial=True).parts] == [(3, 1), (1, 3)]
    assert [p.kernel_size for p in plan_osep(16, 16, 3, n_parts=4).parts] == [(1, 1), (3, 3), (1, 1), (1, 1)]
    assert [p.kernel_size for p in plan_osep(16, 16, 3, n_parts=4, spatial=True).parts] == [
        (1, 1), (3, 1), (1, 3), (1, 1)
    ]
    assert plan_osep(64, 64, 3, n_parts="auto").n_parts == round(math.log(64 * 9))  # eq. 21


def test_masked_reoptimisation() -> None:
    # 4 -> 4 -> 256: eq. 17 gives g1 = 0.75 < 1, so g1 is masked to 1 and part 2 re-optimised alone
    plan = plan_osep(4, 256, 3)
    assert plan.continuous_groups[0] == 1.0 and plan.groups == (1, 4)
    # a caller's preset group count is kept and the rest re-optimised around it
    plan = plan_osep(64, 64, 3, groups=[16, None])
    assert plan.groups[0] == 16
    assert math.prod(p.channels_per_group for p in plan.parts) >= 64


def test_integer_rounding_keeps_the_channel_condition() -> None:
    # the paper's rounding alone gives channels per group (1, 77): 77 < 85 = C_in
    plan = plan_osep(85, 77, 7, policy="inverted")
    assert math.prod(p.channels_per_group for p in plan.parts) >= 85
    assert volumetric_rf(plan).ok


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_parts": 1}, "n_parts"), ({"gamma": 0}, "gamma"), ({"policy": "wide"}, "policy"),
        ({"policy": [8, 8]}, "explicit channels"), ({"kernel_sizes": [(3, 3), (3, 3)]}, "receptive field"),
        ({"groups": [100, None]}, r"groups\[0\]"), ({"groups": [1]}, "groups needs"), ({"spatial": 1}, "spatial"),
    ],
)
def test_plan_rejects_bad_options(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        plan_osep(16, 16, 3, **kwargs)


@settings(max_examples=60)
@given(
    c_in=st.integers(1, 120), c_out=st.integers(1, 120), k=st.sampled_from([1, 3, 5, 7]),
    n=st.sampled_from([2, 3, 4]), gamma=st.sampled_from([1 / 16, 1 / 4, 0.5, 1.0, 1.5, 4.0]),
    policy=st.sampled_from(["min", "linear", "bottleneck", "inverted"]), spatial=st.booleans(),
)
def test_volumetric_rf_holds_exactly_when_the_channel_condition_does(c_in, c_out, k, n, gamma, policy, spatial):
    plan = plan_osep(c_in, c_out, k, n, gamma, policy, spatial)
    report = volumetric_rf(plan)
    assert report.spatial_ok and report.receptive_field == (k, k)
    condition = math.prod(p.channels_per_group for p in plan.parts) >= c_in  # eq. 15 on the integers
    assert report.channel_ok == condition
    if gamma >= 1:
        assert report.ok  # every plan with gamma >= 1 keeps the volumetric RF


def test_small_gamma_and_depthwise_chains_are_rejected() -> None:
    for gamma in (1 / 16, 1 / 4):  # Table 2's ablation: the RF is not kept
        assert not volumetric_rf(plan_osep(58, 58, 3, gamma=gamma)).ok
    depthwise = [nn.Conv2d(16, 16, 3, groups=16)]
    assert not volumetric_rf(depthwise, 3).channel_ok
    assert not volumetric_rf([nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1)], 3).spatial_ok
    dsep = [nn.Conv2d(16, 16, 3, groups=16), nn.Conv2d(16, 16, 1)]
    assert volumetric_rf(dsep, 3).ok
    op = OptimizedSeparableConv2d(24, 24, 3, padding=1)
    assert volumetric_rf(op).ok


def test_routing_is_the_channel_shuffle_when_sizes_match() -> None:
    plan = plan_osep(96, 96, 3)
    assert plan.groups == (24, 4)
    assert torch.equal(plan_routing(plan)[1], shuffle_permutation(96, 24))


# Optimized-separable paper, Table 6: (depth, multiplier) -> (params M, GFLOPs) with the o-ResNet shortcut
TABLE6_ORESNET = {(20, 3.625): (0.221, 0.04070), (32, 3.75): (0.367, 0.06726), (56, 3.875): (0.682, 0.12574),
                  (110, 3.875): (1.337, 0.24763)}
# Table 7 (ImageNet40: 4x channels, 1000 classes, stem stride 2); the multiplier applies to the 4x model
TABLE7 = {20: ((4.58, 0.162), 5.375, (5.13, 0.160)), 32: ((7.68, 0.275), 5.75, (7.78, 0.278)),
          56: ((13.88, 0.502), 6.0, (12.55, 0.497)), 110: ((27.83, 1.012), 6.25, (23.79, 1.027))}


def _counts(name: str, **kwargs) -> tuple[float, float]:
    with torch.device("meta"):
        model = fc.create_model(name, **kwargs)
    prof = fc.profile(model)
    return prof.params / 1e6, prof.macs / 1e9


def _within_printed_digits(value: float, printed: float, digits: int) -> bool:
    return abs(value - printed) <= 10 ** -digits * 1.0001  # one unit of the last printed digit


@pytest.mark.parametrize(("depth", "mult"), sorted(TABLE6_ORESNET))
def test_table6_o_resnets(depth: int, mult: float) -> None:
    params, gmacs = _counts(f"resnet{depth}", conv="osep", width=mult, shortcut="conv")
    p, f = TABLE6_ORESNET[depth, mult]
    assert round(params, 3) == p
    assert _within_printed_digits(gmacs, f, 5)
    assert abs(params / p - 1) < 0.003 and abs(gmacs / f - 1) < 0.003


def test_o_resnet110_at_width_1() -> None:
    params, _ = _counts("resnet110", conv="osep", shortcut="conv")
    assert round(params, 3) == 0.180  # section 3.1: fewer parameters than ResNet20's 0.270 M


@pytest.mark.parametrize("depth", sorted(TABLE7))
def test_table7_imagenet40(depth: int) -> None:
    (bp, bf), mult, (op, of) = TABLE7[depth]
    common = {"stem_stride": 2, "num_classes": 1000, "shortcut": "conv"}
    params, gmacs = _counts(f"resnet{depth}", width=4, **common)
    assert _within_printed_digits(params, bp, 2) and _within_printed_digits(gmacs, bf, 3)
    params, gmacs = _counts(f"resnet{depth}", conv="osep", width=4 * mult, **common)
    assert abs(params / op - 1) < 0.003 and abs(gmacs / of - 1) < 0.003


def test_match_width_finds_the_papers_multiplier() -> None:
    target = fc.profile(fc.create_model("resnet20")).macs
    match = fc.match_width("resnet20", "osep", target=target, by="macs", shortcut="conv")
    assert abs(match.rel_error) < 0.02
    assert match.width == 3.625  # what the paper picked by hand
    cont = fc.match_width("resnet20", "dsep", target=300_000, by="params", continuous=True,
                          conv_kwargs={"norm": True})
    assert abs(cont.rel_error) < 0.02
    with pytest.raises(ValueError, match="by"):
        fc.match_width("resnet20", "osep", 1e6, by="flops")


def test_o_mobilenet_builds_from_one_conv_per_block() -> None:
    with torch.device("meta"):
        model = fc.create_model("mobilenet_v1", conv="osep", block="conv", num_classes=1000)
    assert sum(isinstance(m, OptimizedSeparableConv2d) for m in model.modules()) == 13
    prof = fc.profile(model, (3, 224, 224))
    assert prof.params < fc.count_model("mobilenet_v1", num_classes=1000)


def test_stride_dilation_padding_land_on_the_spatial_parts() -> None:
    op = OptimizedSeparableConv2d(8, 8, 3, stride=2, padding=2, dilation=2, n_parts=3)
    spatial = [c for c in op.parts if c.kernel_size != (1, 1)]
    assert len(spatial) == 1 and spatial[0].stride == (2, 2) and spatial[0].dilation == (2, 2)
    op = fc.create_conv2d(8, 8, 3, conv="sosep", stride=(2, 1), padding=1)
    assert [(c.kernel_size, c.stride, c.padding) for c in op.parts] == [
        ((3, 1), (2, 1), (1, 0)), ((1, 3), (1, 1), (0, 1))
    ]
    with pytest.raises(ValueError, match="share a spatial axis"):
        OptimizedSeparableConv2d(8, 8, 5, stride=2, kernel_sizes=[(3, 3), (3, 3)])


def test_two_spatial_parts_on_one_axis_compose_exactly_without_padding() -> None:
    op = OptimizedSeparableConv2d(6, 6, 5, kernel_sizes=[(3, 3), (3, 3)]).double()
    randomize_(op)
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(op.feature_forward(x), torch.nn.functional.conv2d(x, op.dense_weight())) < 1e-10


def test_padded_groups_are_exact_and_deploy_as_plain_modules() -> None:
    op = OptimizedSeparableConv2d(62, 62, 3, padding=1, bias=True).double().eval()
    randomize_(op)
    x = torch.randn(1, 62, 8, 8, dtype=torch.float64)
    deployed = op.deploy()
    assert any(isinstance(m, ChannelGather) and m.pads for m in deployed.modules())
    with torch.no_grad():
        assert rel_err(deployed(x), op.fold()(x)) < 1e-10
    cost = op.cost((8, 8))
    assert cost.params == 63 * 3 * 9 + 63 * 21 + 62 and cost.macs == (63 * 3 * 9 + 63 * 21) * 64
