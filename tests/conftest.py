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


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("factorconv")
    group.addoption("--operator-file", action="append", default=[], metavar="PATH",
                    help="import this file before collection (an operator kept outside the package registers itself)")
    group.addoption("--conv", default=None, metavar="NAME",
                    help="run only the per-operator tests (those parametrised by operator) for operator NAME")


def pytest_configure(config: pytest.Config) -> None:
    from helpers import load_script

    for path in config.getoption("--operator-file"):
        load_script(path)  # registers before the test modules read the registry to parametrise


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With --conv NAME: every test parametrised by an operator (`conv`) for NAME, nothing else."""
    name = config.getoption("--conv")
    if name is None:
        return
    import factorconv as fc

    if name not in fc.list_convs():
        raise pytest.UsageError(f"--conv {name}: no such registered operator (registered: "
                                f"{', '.join(fc.list_convs())}); an operator outside the package needs "
                                "--operator-file PATH")
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        (keep if params.get("conv") == name else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
