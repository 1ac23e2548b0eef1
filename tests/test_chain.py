"""The chain as data: `ChainPlan` / `Gather` checks and kinds, and every chain operator (osep, sosep, igcv1,
igcv2, ACDC-g) built from the plan its planner returns: the plan composes to the operator's dense kernel,
deploys to the same outputs, and answers connectivity and receptive-field questions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import factorconv as fc
from factorconv.ops.chain import ChainPart, ChainPlan, Gather, compose_plan
from factorconv.ops.igcv import igcv2_chain

torch.set_num_threads(1)


def test_gathers_say_what_they_are_and_replicate_block_by_block() -> None:
    shuffle = Gather.shuffle(6, 2)
    assert shuffle.kind == "shuffle" and shuffle.index.tolist() == [0, 3, 1, 4, 2, 5]
    assert shuffle.module().shuffle_groups == 2  # the planner's word, not recognised again
    pad = Gather.pad(3, 5)
    assert pad.kind == "pad" and pad.index.tolist() == [0, 1, 2, 3, 3]  # 3 = a zero channel
    twice = pad.replicate(2)
    assert twice.source == 6 and twice.index.tolist() == [0, 1, 2, 6, 6, 3, 4, 5, 6, 6]
    assert Gather.prefix(5, 2).index.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"values in \[0, 3\]"):
        Gather(torch.tensor([0, 4]), 3)
    with pytest.raises(ValueError, match="kind must be one of"):
        Gather(torch.tensor([0]), 3, "rotation")
    with pytest.raises(ValueError, match="not the channel shuffle"):
        fc.ops.channel.ChannelGather(torch.tensor([0, 1, 2, 3]), 4, shuffle_groups=2)


def test_a_plan_checks_its_widths() -> None:
    parts = (ChainPart(4, 8, 3, 4), ChainPart(8, 8, 1, 2))
    plan = ChainPlan(4, parts, (None, Gather.shuffle(8, 4), None))
    assert plan.out_channels == 8 and plan.params == 8 * 1 * 9 + 8 * 4
    with pytest.raises(ValueError, match="part 1 reads 6 channels, the chain has 8"):
        ChainPlan(4, (parts[0], ChainPart(6, 6, 1, 2)))
    with pytest.raises(ValueError, match="gather 1 reads 6 channels, the chain has 8"):
        ChainPlan(4, parts, (None, Gather.shuffle(6, 2), None))
    assert igcv2_chain(16, 16, (3, 3), padding=1, K=4, L=3).plan.reach().one_path  # 4 x 4 = 16: complementary


CASES = [("osep", {}), ("osep", {"n_parts": 3}), ("sosep", {}), ("igcv1", {}), ("igcv2", {"K": 4}),
         ("igcv2", {"K": 8}), ("acdc", {"group_size": 4, "atoms": 3})]


@settings(max_examples=12, deadline=None)
@given(case=st.sampled_from(CASES), c_in=st.sampled_from([8, 16, 24]), c_out=st.sampled_from([8, 16, 32]),
       stride=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_chain_operators_are_their_plans(case, c_in: int, c_out: int, stride: int, groups: int, seed: int) -> None:
    name, options = case
    if name == "acdc" and groups > 1:
        groups = 1  # ACDC-g needs groups = 1
    torch.manual_seed(seed)
    try:
        op = fc.create_conv2d(c_in, c_out, 3, conv=name, stride=stride, padding=1, groups=groups, bias=True,
                              **options).eval()
    except ValueError:
        return  # a combination the operator refuses with a message (tested elsewhere)
    plan = op.chain_plan
    assert (plan.in_channels, plan.out_channels) == (c_in, c_out)
    if name != "acdc":
        weights = [conv.weight for conv in op.parts]
        dense = fc.functional.take_grouped_kernel(compose_plan(plan, weights), groups)
        torch.testing.assert_close(dense, op.dense_weight(), rtol=0, atol=0)
        assert plan.reach((3, 3)).spatial_ok
    x = torch.randn(2, c_in, 9, 9)
    deployed = op.factorized_deploy().eval()
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), op(x), rtol=1e-4, atol=1e-5)
