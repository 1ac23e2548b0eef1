"""The example operator of docs/operators.md (examples/lowrank_conv.py) through the whole per-operator test
matrix, as a newcomer's operator goes: one file that registers itself and says how to draw its options
(`example_config`), and docs/operators.md's one test command, with no edit under tests/."""

from __future__ import annotations

import collections
import copy
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import ROOT, load_script, rel_err

import factorconv as fc
from factorconv.registry import unregister_conv

# The per-operator test files (every test parametrised by operator lives in one of them): the command must
# reach each.
PER_OPERATOR_FILES = {"test_operators", "test_models", "test_accounting", "test_deploy_export", "test_hostile",
                      "test_compile", "test_deployment", "test_cuda", "test_backbones", "test_tune"}


@pytest.fixture(scope="module")
def lowrank() -> Iterator[str]:
    registered = "lowrank" in fc.list_convs()  # already, when the suite runs with --operator-file
    if not registered:
        load_script("examples/lowrank_conv.py")  # registers "lowrank"
    yield "lowrank"
    if not registered:
        unregister_conv("lowrank")


def test_the_documented_command_runs_every_per_operator_test_for_the_example(tmp_path: Path) -> None:
    """`pytest --operator-file examples/lowrank_conv.py --conv lowrank` (docs/operators.md, step 4): selects
    the example's tests in every per-operator file, and they pass."""
    report = tmp_path / "junit.xml"
    env = {**os.environ, "FACTORCONV_HYPOTHESIS_EXAMPLES": "5"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--operator-file",
                           "examples/lowrank_conv.py", "--conv", "lowrank", f"--junitxml={report}", "tests"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    cases = ET.parse(report).getroot().iter("testcase")
    by_file = collections.Counter(case.get("classname", "").split(".")[-1] for case in cases)
    assert set(by_file) == PER_OPERATOR_FILES, by_file
    assert sum(by_file.values()) >= 60, by_file
    assert "failed" not in done.stdout.splitlines()[-1], done.stdout[-500:]


def test_the_example_operator_in_a_backbone(lowrank: str) -> None:
    model = fc.create_model("resnet20", conv=lowrank, width=0.5, conv_kwargs={"rank": 3}).eval()
    assert sum(type(m).__name__ == "LowRankConv2d" for m in model.modules()) == 18  # the body's 3x3 convs
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
        assert rel_err(fc.fold(copy.deepcopy(model))(x), y) < 1e-5
    assert fc.profile(model).params < fc.profile(fc.create_model("resnet20", width=0.5)).params
