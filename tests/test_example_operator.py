"""The example operator of docs/operators.md (examples/lowrank_conv.py) through the whole operator test matrix,
as a newcomer's operator goes: registered by importing its file, given an option strategy in tests/helpers.py,
then every protocol test of tests/test_operators.py run for it."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import test_operators as matrix
import torch
from helpers import load_script, rel_err

import factorconv as fc
from factorconv.registry import unregister_conv

CHECKS = [matrix.test_forward_equals_dense_weight_and_fold, matrix.test_kernel_and_feature_paths_agree,
          matrix.test_cost_matches_parameters_and_profile, matrix.test_every_parameter_gets_a_gradient,
          matrix.test_from_conv, matrix.test_state_dict_round_trip, matrix.test_invalid_configs_raise_value_error_only,
          matrix.test_eval_under_autocast_then_without, matrix.test_eval_forward_on_the_meta_device]


@pytest.fixture(scope="module")
def lowrank() -> Iterator[str]:
    load_script("examples/lowrank_conv.py")  # registers "lowrank"
    yield "lowrank"
    unregister_conv("lowrank")


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_the_example_operator_passes_the_matrix(lowrank: str, check) -> None:
    check(conv=lowrank)


def test_the_example_operator_in_a_backbone(lowrank: str) -> None:
    model = fc.create_model("resnet20", conv=lowrank, width=0.5, conv_kwargs={"rank": 3}).eval()
    assert sum(type(m).__name__ == "LowRankConv2d" for m in model.modules()) == 18  # the body's 3x3 convs
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
        assert rel_err(fc.fold(copy.deepcopy(model))(x), y) < 1e-5
    assert fc.profile(model).params < fc.profile(fc.create_model("resnet20", width=0.5)).params
