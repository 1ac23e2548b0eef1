"""Shared test helpers: hypothesis strategies for every registered operator's configurations, parameter
randomisation, relative-error comparisons, and loading a script that is not a package module."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

import factorconv as fc


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


# Operators whose options conv_config knows how to draw; a newly registered operator must be added here
# (tests/test_operators.py fails until it is).
CONFIGURED_CONVS = {
    "conv", "dw", "dsep", "ssep", "doconv", "osep", "sosep", "acdc", "igcv1", "igcv2", "decoupled", "bdsc",
    "lowrank",  # examples/lowrank_conv.py, the example operator of docs/operators.md
}


@st.composite
def conv_config(draw: Any, conv: str, max_channels: int = 12) -> dict[str, Any]:
    """A valid nn.Conv2d configuration for `conv`, with an input shape, and the operator's own options."""
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
    if conv == "dw":
        cout = cin * draw(st.integers(1, 3))
        groups = draw(st.sampled_from([1, cin]))
    elif conv == "dsep":
        options = {"multiplier": draw(st.integers(1, 3)), "norm": draw(st.booleans())}
    elif conv == "ssep":
        options = {"mid_channels": groups * draw(st.integers(1, max(1, max_channels // groups)))}
    elif conv == "doconv":
        if draw(st.booleans()):  # DO-DConv: depthwise, with a channel multiplier
            groups, cout = cin, cin * draw(st.integers(1, 3))
        mn = kh * kw
        options = {"D_mul": draw(st.sampled_from([None, max(1, mn - 2), mn, mn + 1, 2 * mn + 3]))}
    elif conv == "acdc":
        options = {"atoms": draw(st.integers(1, 12)), "atom_drop": draw(st.sampled_from([0.0, 0.2]))}
        if groups == 1 and draw(st.booleans()):  # ACDC-g: groups of s channels, channels kept or grown
            s = draw(st.integers(1, 6))
            cin = s * draw(st.integers(1, 3))
            cout = cin * draw(st.integers(1, 2))
            options["group_size"] = s
    elif conv == "igcv1":
        per_group = draw(st.integers(1, 3))  # primary partitions dividing both widths
        parts = draw(st.integers(1, 3))
        cin, cout = groups * parts * draw(st.integers(1, 2)), groups * parts * per_group
        options = {"partitions": parts}
    elif conv == "igcv2":
        k = draw(st.integers(1, 4))
        width = draw(st.integers(1, 3))
        cout = groups * k * width
        cin = groups * (cout // groups // k) * draw(st.integers(1, 2))  # divisible by the 1x1 group count
        options = {"K": k, "L": draw(st.integers(2, 4)), "channelwise": True}
        if draw(st.booleans()):
            branch = draw(st.integers(1, 2))
            cin = cout = groups * k * width * branch
            options = {"branch_sizes": [branch, k, k], "channelwise": False}
    elif conv == "bdsc":
        options = {"p": draw(st.sampled_from([0.5, 1, 2])), "norm": draw(st.booleans()),
                   "binary": draw(st.booleans())}
    elif conv == "lowrank":
        options = {"rank": draw(st.integers(1, 6))}
    elif conv in ("osep", "sosep"):
        options = {
            "n_parts": draw(st.sampled_from([2, 2, 3])),
            "gamma": draw(st.sampled_from([1.0, 1.0, 0.5, 2.0])),
            "policy": draw(st.sampled_from(["min", "linear", "bottleneck", "inverted"])),
        }
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
    spec.loader.exec_module(module)
    return module
