"""What an operator says about random configurations of itself: the property tests draw an nn.Conv2d shape
and hand it to the operator's `example_config(draw, shape)`, which adjusts the shape where the operator
constrains it (IGCV's branches divide its channels, DO-DConv is depthwise) and draws its own options. So a new
operator carries its test knowledge beside its options, and the test matrix needs no list of operators.

`draw` is any object with `integer(lo, hi)`, `choice(options)` and `boolean()`; the tests back it by hypothesis
(tests/helpers.py), so the library itself does not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

__all__ = ["Draw", "ExampleShape"]

T = TypeVar("T")


class Draw(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def boolean(self) -> bool: ...


@dataclass(frozen=True)
class ExampleShape:
    """The nn.Conv2d arguments an example configuration fixes: channels, groups, kernel, and the largest channel
    count the tests want (so that they stay fast)."""

    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, int]
    max_channels: int = 12

    def with_(self, **changes: Any) -> ExampleShape:
        return replace(self, **changes)
