"""Test configuration: one thread (CI has 2 cores and runs tests in one process), deterministic seeds,
and a hypothesis profile without deadlines (the first conv call of a shape is slow to warm up)."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)
settings.register_profile(
    "factorconv",
    deadline=None,
    max_examples=int(os.environ.get("FACTORCONV_HYPOTHESIS_EXAMPLES", "30")),
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("factorconv")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
