"""The predicates every option check shares: what counts as an int and as a number.

A bool is an int to Python (`isinstance(True, int)`), but `groups=True` is a mistake, not 1; every check of an
integer or numeric option goes through these two predicates so that none forgets it. They only answer; each
caller raises its own error naming its option and what it expects.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_int", "is_number"]


def is_int(value: Any) -> bool:
    """True for a Python int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for a Python int or float that is not a bool (NaN and infinities included: callers bound them)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
