"""Search spaces: the options of an operator worth tuning, with their ranges, declared beside its options.

Every registered operator class declares `search_space`, a dict from option name to a dimension: `IntRange`,
`FloatRange` (either on a log scale) or `Choice`. An operator with nothing worth searching declares `{}` (the
plain conv: only the recipe is tuned). `factorconv tune` reads the spaces through the registry, restricts or
fixes dimensions from `--space`, and samples them with Optuna; this module depends on neither.

`RECIPE_SPACE` holds the recipe knobs every operator's trials share (the peak learning rate and the weight
decay), sampled per operator so that each gets the recipe that suits it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..checks import is_int, is_number

__all__ = ["RECIPE_SPACE", "Choice", "Dimension", "FloatRange", "IntRange", "parse_dimension", "restrict"]


@dataclass(frozen=True)
class IntRange:
    """Integers low..high (inclusive), uniform or on a log scale."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not (is_int(self.low) and is_int(self.high)) or self.low > self.high or (self.log and self.low < 1):
            raise ValueError(f"IntRange({self.low!r}, {self.high!r}): need integers low <= high (low >= 1 on a log "
                             "scale)")

    def contains(self, value: Any) -> bool:
        return is_int(value) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.low}..{self.high}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class FloatRange:
    """Numbers low..high, uniform or on a log scale."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (is_number(self.low) and is_number(self.high)) or not self.low <= self.high or (
                self.log and not self.low > 0) or not math.isfinite(self.high):
            raise ValueError(f"FloatRange({self.low!r}, {self.high!r}): need finite numbers low <= high (low > 0 "
                             "on a log scale)")

    def contains(self, value: Any) -> bool:
        return is_number(value) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.low:g}..{self.high:g}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Choice:
    """One of `options` (None among them stands for the operator's own default)."""

    options: tuple[Any, ...]

    def __init__(self, *options: Any) -> None:
        if not options or len(set(map(repr, options))) != len(options):
            raise ValueError(f"Choice{options!r}: need one or more distinct options")
        object.__setattr__(self, "options", tuple(options))

    def contains(self, value: Any) -> bool:
        return any(value == o and type(value) is type(o) for o in self.options)

    def describe(self) -> str:
        return "|".join(map(_text, self.options))


Dimension = IntRange | FloatRange | Choice

# the recipe every operator's trials tune (the preset's values are the defaults a trial is compared with)
RECIPE_SPACE: dict[str, Dimension] = {
    "lr": FloatRange(0.01, 0.3, log=True),
    "weight_decay": FloatRange(1e-5, 1e-3, log=True),
}


def _text(value: Any) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _parse_value(text: str) -> Any:
    """'3' -> 3, '0.05' -> 0.05, 'true' -> True, 'none' -> None, anything else the text itself."""
    lowered = text.strip().lower()
    if lowered in ("none", "null", "default"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_dimension(text: str) -> Any:
    """The value part of a `--space` item: `v` fixes the dimension, `lo..hi` restricts a range, `a|b|c` restricts
    a choice (or makes one); returns a value, a (lo, hi) tuple marked by `..`, or a Choice."""
    if ".." in text:
        low, high = text.split("..", 1)
        return (_parse_value(low), _parse_value(high))
    if "|" in text:
        return Choice(*(_parse_value(part) for part in text.split("|")))
    return _parse_value(text)


def restrict(name: str, dim: Dimension, given: Any) -> Dimension | Any:
    """Dimension `dim` of option `name` restricted by a parsed `--space` value: a fixed value it contains, a
    narrower range, or a subset of its choices. Raises ValueError saying what the dimension allows."""
    where = f"--space {name}: "
    if isinstance(given, tuple):
        low, high = given
        if isinstance(dim, Choice) or not (dim.contains(low) and dim.contains(high)) or low > high:
            raise ValueError(where + f"{_text(low)}..{_text(high)} is not a range within {dim.describe()}")
        return type(dim)(low, high, dim.log)
    if isinstance(given, Choice):
        outside = [o for o in given.options if not dim.contains(o)]
        if outside:
            raise ValueError(where + f"{', '.join(map(_text, outside))} not in {dim.describe()}")
        return given
    if isinstance(dim, FloatRange) and is_int(given):
        given = float(given)
    if not dim.contains(given):
        raise ValueError(where + f"{_text(given)} is not in {dim.describe()}")
    return given
