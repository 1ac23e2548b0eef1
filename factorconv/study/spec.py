"""What a study is: `StudySpec` (backbone, operators with their options, budgets, data, recipe, seeds, the
reference operator, threads per run) and its budgets (`parse_budgets`), validated before anything trains,
and the width each operator gets at each budget.

A budget is on what ships (see `factorconv.budget`): `params=50k` matches the deploy form's parameters,
`size=200k` its bytes, `macs=6M` the MACs at batch 1, `train-params=50k` the parameters trained. Several
values (`params=25k,50k,100k`) make a size sweep: every operator at every budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..budget import BY, count_model, match_latency, match_width, measure_latency
from ..checks import is_int, is_number
from ..registry import conv_entry, create_model, model_entry

__all__ = [
    "AXES",
    "BOOKKEEPING",
    "DEFAULT_BUDGET",
    "DEFAULT_CONVS",
    "DEFAULT_CONV_KWARGS",
    "DEFAULT_PRESET",
    "DEFAULT_SEEDS",
    "MAX_BUDGET_FACTOR",
    "METRICS",
    "Budget",
    "Entry",
    "StudySpec",
    "operator_of",
    "parse_budgets",
    "parse_count",
]

DEFAULT_CONVS = ("conv", "dsep", "doconv", "acdc", "igcv2", "osep", "bdsc")
DEFAULT_BUDGET = "params=50k"
DEFAULT_PRESET = "study"
DEFAULT_SEEDS = 3
# The papers' forms: d-ResNet puts a BatchNorm between depthwise and pointwise; BDSC's tables count its BN.
DEFAULT_CONV_KWARGS: dict[str, dict[str, Any]] = {"dsep": {"norm": True}, "bdsc": {"norm": True}}


# Config fields that say where or how visibly a run ran, not what it computed: a rerun may change them.
BOOKKEEPING = frozenset({"run_dir", "progress", "log_every", "data_dir", "device", "download", "checkpoint_every",
                         "eval_every", "log"})

# a study's accuracy metric -> the result.json field it reads
METRICS = {"final": "test_acc", "last5": "last5_test_acc"}


def operator_of(label: str) -> str:
    """The registered operator a study entry trains: an entry is an operator name, or `name:variant` for one
    of several configurations of an operator in one study (`acdc:net`, `acdc:stage`; options per entry)."""
    return label.split(":", 1)[0]


@dataclass(frozen=True)
class Entry:
    """One entry of a study, parsed once (`StudySpec.entry`): what its runs train."""

    label: str
    operator: str
    model: str
    conv_kwargs: dict[str, Any]
    model_kwargs: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)  # its runs' own training config fields

    def create_model(self, width: float, num_classes: int, in_chans: int) -> nn.Module:
        return create_model(self.model, conv=self.operator, width=width, num_classes=num_classes, in_chans=in_chans,
                            conv_kwargs=self.conv_kwargs, **self.model_kwargs)
# A width whose count is further than this factor from the budget is refused: the comparison would not be
# at the budget the user asked for (the grid's smallest width is already too big, or the largest too small).
MAX_BUDGET_FACTOR = 1.5
_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9}
# size axis (a budget kind) -> (the key of a study row that measures it, its letter in the front column, words)
AXES = {"params": ("deploy_params", "P", "deploy params"), "train-params": ("train_params", "T", "training params"),
        "size": ("size_bytes", "S", "deploy bytes"), "macs": ("macs", "M", "MACs"),
        "latency": ("latency_ms", "L", "latency (ms)")}


def parse_count(text: str) -> float:
    """'0.27M' -> 270000.0, '41m' -> 41e6, '50k' -> 50000.0, '269722' -> 269722.0."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmg]?)\s*", text.lower())
    if not match:
        raise ValueError(f"a count must be a number with an optional k/M/G suffix (e.g. 0.27M), got {text!r}")
    value = float(match.group(1)) * _SUFFIXES.get(match.group(2), 1.0)
    if not 0 < value < float("inf"):
        raise ValueError(f"a count must be positive and finite, got {text!r}")
    return value


_LATENCY_UNITS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}


def parse_latency(text: str) -> float:
    """'0.3ms' -> 0.3, '300us' -> 0.3, '0.002s' -> 2.0 (milliseconds)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zµ]*)\s*", text.lower())
    if not match or match.group(2) not in _LATENCY_UNITS:
        raise ValueError(f"a latency budget is a number with a unit ms, us or s (e.g. latency=0.3ms), got {text!r}")
    value = float(match.group(1)) * _LATENCY_UNITS[match.group(2)]
    if not 0 < value < float("inf"):
        raise ValueError(f"a latency budget must be positive, got {text!r}")
    return value


def human(value: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


@dataclass(frozen=True, order=True)
class Budget:
    """Match every operator's width to `value` of `by` (a key of `factorconv.budget.PROFILE_FIELD`)."""

    by: str
    value: float

    def __str__(self) -> str:
        if self.by == "latency":
            return f"latency={self.value:.4g}ms"
        return f"{self.by}={human(self.value)}"

    @property
    def tag(self) -> str:
        """A file-name-safe label: params=50k -> params50k."""
        return str(self).replace("=", "").replace(".", "p").replace("-", "")


def parse_budgets(text: str | None) -> list[Budget]:
    """'params=50k' -> [Budget]; 'params=25k,50k,100k' -> three (a sweep, sorted); 'none' (or None) -> []:
    every operator at width 1."""
    if text is None or text.strip().lower() in ("none", ""):
        return []
    by, sep, values = text.partition("=")
    by = by.strip().lower()
    if not sep or by not in (*BY, "latency"):
        raise ValueError(f"--budget expects KIND=COUNT[,COUNT...] with KIND one of {', '.join(BY)}, latency, or "
                         f"none (e.g. params=50k, params=25k,50k,100k or latency=0.3ms), got {text!r}")
    parse = parse_latency if by == "latency" else parse_count
    counts = [parse(v) for v in values.split(",") if v.strip()] if values.strip() else []
    if not counts:
        raise ValueError(f"--budget {text!r} names no count (e.g. {by}=50k)")
    return sorted({Budget(by, c) for c in counts})


@dataclass
class StudySpec:
    """What to compare. `overrides` are training config fields (as `factorconv train --set`); `conv_kwargs`
    options per operator (DEFAULT_CONV_KWARGS fill in what they leave unset); `model_kwargs` backbone options
    per operator (o-ResNet's strided 1x1 conv shortcut: {"osep": {"shortcut": "conv"}}). `reference` is the
    operator every other is compared with (default: conv when studied, else the first); `threads` the torch
    threads of every run (part of what a run computes: float sums are split differently with more threads);
    `models` another backbone for some entries (a paper comparing whole networks: Xception(C35) against
    IGCV2(C64)); `metric` which accuracy of a run counts: "final" (the test accuracy at its end) or "last5" (the mean of
    its last five evaluations, DO-Conv's metric; a run with fewer is left out and marked); `width` the backbone
    width of every operator when there is no budget (a paper's ResNet32-2x); `fixed_widths`
    the widths of some entries whatever the budget (a paper's hand-picked multipliers: o-ResNet20 x3.625)."""

    model: str = "resnet20"
    convs: list[str] = field(default_factory=lambda: list(DEFAULT_CONVS))
    budget: str | None = DEFAULT_BUDGET
    data: str = "fashion-mnist"
    data_dir: str | None = None
    preset: str = DEFAULT_PRESET
    seeds: int = DEFAULT_SEEDS
    reference: str | None = None
    threads: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    conv_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    width_grid: float = 1 / 16
    width: float = 1.0
    fixed_widths: dict[str, float] = field(default_factory=dict)
    metric: str = "final"
    models: dict[str, str] = field(default_factory=dict)
    # per entry: training config fields of that entry's runs only (a tuned entry's learning rate)
    run_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_batch: list[int] = field(default_factory=lambda: [1, 32])
    latency_repeats: int = 30
    latency_runtime: str | None = None
    command: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudySpec:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    @property
    def budgets(self) -> list[Budget]:
        return parse_budgets(self.budget)

    @property
    def reference_conv(self) -> str:
        if self.reference:
            return self.reference
        return "conv" if "conv" in self.convs else self.convs[0]

    def validate(self) -> StudySpec:
        model_entry(self.model)  # raises naming the registered models
        if not self.convs:
            raise ValueError("compare: --convs is empty; name at least one operator")
        if len(set(self.convs)) != len(self.convs):
            raise ValueError(f"compare: --convs names an operator twice: {','.join(self.convs)}")
        for conv in self.convs:
            conv_entry(operator_of(conv))
            if conv.count(":") > 1 or conv.endswith(":") or "/" in conv:
                raise ValueError(f"compare: {conv!r} is not an operator name or name:variant")
        unknown = sorted((set(self.conv_kwargs) | set(self.model_kwargs) | set(self.run_overrides)) - set(self.convs))
        if unknown:
            raise ValueError(f"compare: options given for {', '.join(unknown)}, which is not in --convs")
        if self.reference is not None and self.reference not in self.convs:
            raise ValueError(f"compare: --reference {self.reference!r} is not in --convs ({','.join(self.convs)})")
        self.budgets  # noqa: B018  (parses: raises on a bad budget)
        if is_int(self.latency_batch):
            self.latency_batch = [self.latency_batch]  # studies recorded with one batch
        batches = self.latency_batch if isinstance(self.latency_batch, list | tuple) else [self.latency_batch]
        for name, values in (("seeds", [self.seeds]), ("threads", [self.threads]), ("latency_batch", batches),
                             ("latency_repeats", [self.latency_repeats])):
            if not values or any(not is_int(v) or v < 1 for v in values):
                raise ValueError(f"compare: --{name.replace('_', '-')} must be positive integers, got "
                                 f"{getattr(self, name)!r}")
        self.latency_batch = list(batches)
        if self.latency_runtime not in (None, "torch", "onnxruntime", "openvino", "best"):
            raise ValueError(f"compare: --latency-runtime must be torch, onnxruntime, openvino or best, got "
                             f"{self.latency_runtime!r}")
        if not is_number(self.width) or not self.width > 0:
            raise ValueError(f"compare: width must be a positive number, got {self.width!r}")
        for label, model in self.models.items():
            if label not in self.convs:
                raise ValueError(f"compare: a backbone is given for {label!r}, which is not in --convs")
            model_entry(model)
        if self.metric not in METRICS:
            raise ValueError(f"compare: metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        for label, width in self.fixed_widths.items():
            if label not in self.convs:
                raise ValueError(f"compare: a width is fixed for {label!r}, which is not in --convs")
            if not is_number(width) or not width > 0:
                raise ValueError(f"compare: the fixed width of {label!r} must be a positive number, got {width!r}")
        if self.width != 1.0 and self.budgets:
            raise ValueError("compare: a fixed width is for studies without a budget (a budget chooses the widths)")
        if "threads" in self.overrides or any("threads" in o for o in self.run_overrides.values()):
            raise ValueError("compare: set the threads of every run with --threads-per-run, not --set threads")
        from ..train import resolve_config

        resolve_config(self.preset, None, self.overrides)  # unknown preset or field: raises now, not mid-study
        for overrides in self.run_overrides.values():
            resolve_config(self.preset, None, {**self.overrides, **overrides})
        return self

    def entry(self, label: str) -> Entry:
        """Study entry `label` (one of `convs`) parsed: its operator, its backbone (`models`, else `model`), and
        the options of both (the operator's paper defaults under the study's)."""
        operator = operator_of(label)
        return Entry(label, operator, self.models.get(label, self.model),
                     {**DEFAULT_CONV_KWARGS.get(operator, {}), **self.conv_kwargs.get(label, {})},
                     {**self.overrides.get("model_kwargs", {}), **self.model_kwargs.get(label, {})},
                     dict(self.run_overrides.get(label, {})))

    @property
    def entries(self) -> list[Entry]:
        return [self.entry(label) for label in self.convs]

    def identity(self) -> dict[str, Any]:
        """The fields that decide what every run computes (seeds, convs and budget values may grow between
        reruns; the budget's kind may not: one study has one size axis)."""
        keys = ("model", "data", "preset", "overrides", "width_grid", "threads")
        kinds = sorted({b.by for b in self.budgets})
        # absent from the identity of studies made before they existed, and of every study not using them
        fixed = {"width": self.width} if self.width != 1.0 else {}
        fixed |= {"fixed_widths": self.fixed_widths} if self.fixed_widths else {}
        fixed |= {"metric": self.metric} if self.metric != "final" else {}
        fixed |= {"models": self.models} if self.models else {}
        fixed |= {"run_overrides": self.run_overrides} if self.run_overrides else {}
        identity = {k: getattr(self, k) for k in keys}
        identity["overrides"] = {k: v for k, v in self.overrides.items() if k.split(".")[0] not in BOOKKEEPING}
        return identity | fixed | {
            "budget kind": kinds, "conv_kwargs": {e.label: e.conv_kwargs for e in self.entries},
            "model_kwargs": {e.label: e.model_kwargs for e in self.entries}}


def match_widths(spec: StudySpec, input_size: tuple[int, int, int], num_classes: int
                 ) -> dict[tuple[str, Budget | None], tuple[float, int | None]]:
    """(conv, budget) -> (width, the model's count at that width) for every budget (width 1 without one).
    Refuses a budget no width on the grid comes within MAX_BUDGET_FACTOR of."""
    out: dict[tuple[str, Budget | None], tuple[float, int | None]] = {}
    for entry in spec.entries:
        conv = entry.label
        if not spec.budgets:
            out[(conv, None)] = (spec.fixed_widths.get(conv, spec.width), None)
        for budget in spec.budgets:
            if conv in spec.fixed_widths:  # fixed by hand: counted (or timed), not matched
                width = spec.fixed_widths[conv]
                if budget.by == "latency":
                    count = round(1e3 * measure_latency(
                        entry.model, entry.operator, width, spec.latency_runtime, spec.latency_batch[0],
                        input_size=input_size, conv_kwargs=entry.conv_kwargs, num_classes=num_classes,
                        threads=spec.threads, **entry.model_kwargs))
                else:
                    count = count_model(entry.model, entry.operator, width, budget.by,
                                        input_size=input_size, conv_kwargs=entry.conv_kwargs,
                                        num_classes=num_classes, **entry.model_kwargs)
                out[(conv, budget)] = (width, count)
                continue
            try:
                if budget.by == "latency":
                    m = match_latency(entry.model, entry.operator, budget.value, spec.latency_runtime,
                                      spec.latency_batch[0], grid=spec.width_grid, input_size=input_size,
                                      conv_kwargs=entry.conv_kwargs, num_classes=num_classes, threads=spec.threads,
                                      **entry.model_kwargs)
                else:
                    m = match_width(entry.model, entry.operator, budget.value, budget.by,
                                    grid=spec.width_grid, input_size=input_size, conv_kwargs=entry.conv_kwargs,
                                    num_classes=num_classes, **entry.model_kwargs)
            except ValueError as err:
                raise ValueError(f"compare: cannot match {conv!r} on {spec.model} to {budget}: {err}") from None
            target = budget.value * (1e3 if budget.by == "latency" else 1)  # latency: µs measured, ms asked
            ratio = m.value / target
            if not 1 / MAX_BUDGET_FACTOR <= ratio <= MAX_BUDGET_FACTOR:
                shown = f"runs in {m.value / 1e3:.3f} ms" if budget.by == "latency" else f"has {m.value:,}"
                why = ("the smallest width searched" if m.width <= spec.width_grid else
                       "the largest width searched" if ratio < 1 else f"the width grid's step is {spec.width_grid:g}")
                raise ValueError(
                    f"compare: {conv!r} on {spec.model} cannot meet {budget}: the closest width, {m.width:g} "
                    f"({why}), {shown} ({ratio:.2f}x the budget; at most {MAX_BUDGET_FACTOR:g}x either "
                    "way is accepted); choose a budget nearer to it")
            out[(conv, budget)] = (m.width, m.value)
    return out
