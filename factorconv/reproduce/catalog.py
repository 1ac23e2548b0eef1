"""The papers' comparisons as data: a `Reproduction` names a table, the claim it makes, its rows (an operator
or operator variant each, with the paper's accuracy and counts) and two scales to run it at: `paper` (the
paper's backbone, data and recipe: a GPU machine or a cluster) and `cpu` (Fashion-MNIST, sized for 2 CPU cores,
at least 3 paired seeds). `register_reproduction` adds one; `get_reproduction` / `list_reproductions` read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCALES", "Reproduction", "Row", "get_reproduction", "list_reproductions", "register_reproduction"]

SCALES = ("cpu", "paper")

# The CPU scale of every named study: the default study's recipe on Fashion-MNIST (docs/compare.md), whose
# seed spread it measured; a study may lengthen or shorten it.
CPU_RECIPE: dict[str, Any] = {"data": "fashion-mnist", "preset": "study", "seeds": 5}


@dataclass(frozen=True)
class Row:
    """One row of a paper's table. `label` is the study entry (an operator, or `operator:variant` with
    `options`); `paper_acc` the paper's top-1 accuracy in % (error tables converted); `paper_counts` what the
    paper prints for the row at its scale, by `profile` field: "params_m" (M parameters), "macs_m" (M MACs,
    the papers' FLOPs), "size_mib" (deploy size, MiB); `paper_width` the paper's hand-picked width multiplier
    for the row at paper scale (else the budget, or the scale's width, decides); `model` a whole network of its
    own for the row at both scales, with its base channels in `model_options` (IGCV2's Xception(C35) against
    IGCV2(C64): `channels` 35 and 64); "conv_params_m" / "conv_macs_m" count as IGCV2's tables do (conv weights
    and MACs only); `cpu_options` replace some `options` at CPU scale, where a narrower network needs a
    proportionally smaller setting (ACDC-g's group size); `paper_sign` the direction of the row's difference to
    the reference (+1 better, -1 worse) where the paper shows it in a figure without printing a number (IGCV2's
    Figure 2 bars): the verdict then judges that direction."""

    label: str
    name: str
    paper_acc: float | None
    options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    paper_counts: dict[str, float] = field(default_factory=dict)
    paper_width: float | None = None
    model: str | None = None
    cpu_options: dict[str, Any] = field(default_factory=dict)
    paper_sign: int | None = None

    def __post_init__(self) -> None:
        if self.paper_sign not in (None, -1, 1):
            raise ValueError(f"Row {self.label!r}: paper_sign must be -1, +1 or None, got {self.paper_sign!r}")
        if self.paper_sign is not None and self.paper_acc is not None:
            raise ValueError(f"Row {self.label!r}: give paper_acc (a printed number) or paper_sign (a figure's "
                             "direction), not both")


@dataclass(frozen=True)
class Reproduction:
    """A named study. The first row is the reference every other row is compared with (paired seeds);
    `paper` / `cpu` are StudySpec fields (model, budget, data, preset, seeds, overrides, model_kwargs) at each
    scale; `count_tolerance` the relative difference to the paper's counts the dry run accepts (the count
    tests' tolerance for that table)."""

    name: str
    source: str
    claim: str
    rows: tuple[Row, ...]
    paper: dict[str, Any]
    cpu: dict[str, Any]
    count_tolerance: float = 0.03
    metric: str = "final test accuracy"
    notes: str = ""

    @property
    def reference(self) -> Row:
        return self.rows[0]

    def scale(self, name: str) -> dict[str, Any]:
        if name not in SCALES:
            raise ValueError(f"reproduce: --scale must be one of {', '.join(SCALES)}, got {name!r}")
        return dict(self.paper if name == "paper" else {**CPU_RECIPE, **self.cpu})


_REPRODUCTIONS: dict[str, Reproduction] = {}


def register_reproduction(study: Reproduction) -> Reproduction:
    if study.name in _REPRODUCTIONS:
        raise ValueError(f"reproduction {study.name!r} is already registered")
    labels = [r.label for r in study.rows]
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise ValueError(f"reproduction {study.name!r}: needs two or more rows with distinct labels")
    _REPRODUCTIONS[study.name] = study
    return study


def get_reproduction(name: str) -> Reproduction:
    if name not in _REPRODUCTIONS:
        raise ValueError(f"no study named {name!r}; known: {', '.join(sorted(_REPRODUCTIONS))}")
    return _REPRODUCTIONS[name]


def list_reproductions() -> list[Reproduction]:
    return [_REPRODUCTIONS[n] for n in sorted(_REPRODUCTIONS)]
