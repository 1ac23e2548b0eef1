"""Shared test helpers: hypothesis strategies for every registered operator's configurations, parameter
randomisation, relative-error comparisons, and loading a script that is not a package module."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

import factorconv as fc
from factorconv.ops.examples import ExampleShape


def rel_err(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| (0 when both are zero)."""
    denom = b.double().norm().item()
    diff = (a.double() - b.double()).norm().item()
    return diff / denom if denom > 0 else diff


def randomize_(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every float parameter and persistent buffer random values (BN variances positive) so that
    equivalence tests cannot pass on an identity-like initialisation. Constant (non-persistent) buffers,
    which operators derive from their configuration, are left alone."""
    state = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, t in state.items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=generator, dtype=t.dtype) * 1.5 + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype))
    return module


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class HypothesisDraw:
    """The `factorconv.ops.examples.Draw` an operator's `example_config` draws its options with, backed by
    hypothesis's `draw`."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options: Any) -> Any:
        return self.draw(st.sampled_from(list(options)))

    def boolean(self) -> bool:
        return self.draw(st.booleans())


def example_config(conv: str) -> Any:
    """The registered operator's own `example_config` (factorconv.ops.examples), or none (no options)."""
    return getattr(fc.registry.conv_entry(conv).builder, "example_config", None)


@st.composite
def conv_config(draw: Any, conv: str, max_channels: int = 12) -> dict[str, Any]:
    """A valid nn.Conv2d configuration for `conv`, with an input shape, and the operator's own options: the
    shape drawn here, then adjusted and completed by the operator's `example_config`."""
    groups_pool = draw(st.sampled_from([1, 1, 2, 3, 4]))
    cin = groups_pool * draw(st.integers(1, max(1, max_channels // groups_pool)))
    cout = groups_pool * draw(st.integers(1, max(1, max_channels // groups_pool)))
    groups = draw(st.sampled_from(_divisors(math.gcd(cin, cout))))
    square = draw(st.booleans())
    kh = draw(st.integers(1, 4))
    kw = kh if square else draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    options: dict[str, Any] = {}
    own = example_config(conv)
    if own is not None:
        shape, options = own(HypothesisDraw(draw), ExampleShape(cin, cout, groups, (kh, kw), max_channels))
        cin, cout, groups = shape.in_channels, shape.out_channels, shape.groups
    min_h = dilation[0] * (kh - 1) + 1 - 2 * padding[0]
    min_w = dilation[1] * (kw - 1) + 1 - 2 * padding[1]
    h = draw(st.integers(max(1, min_h), max(1, min_h) + 7))
    w = draw(st.integers(max(1, min_w), max(1, min_w) + 7))
    return {
        "in_ch": cin, "out_ch": cout, "kernel_size": (kh, kw), "stride": stride, "padding": padding,
        "dilation": dilation, "groups": groups, "bias": draw(st.booleans()), "options": options,
        "batch": draw(st.integers(1, 3)), "hw": (h, w),
    }


def build(conv: str, cfg: dict[str, Any], dtype: torch.dtype = torch.float64) -> nn.Module:
    op = fc.create_conv2d(
        cfg["in_ch"], cfg["out_ch"], cfg["kernel_size"], conv=conv, stride=cfg["stride"], padding=cfg["padding"],
        dilation=cfg["dilation"], groups=cfg["groups"], bias=cfg["bias"], **cfg["options"],
    )
    return op.to(dtype)


def dense_forward(op: nn.Module, x: Tensor) -> Tensor:
    return torch.nn.functional.conv2d(
        x, op.dense_weight(), op.dense_bias(), op.stride, op.padding, op.dilation, op.groups
    )


ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """Import a repository script (benchmarks/, examples/) by its path from the repository root."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # importable by name, as torch.compile's tracing looks modules up
    spec.loader.exec_module(module)
    return module
