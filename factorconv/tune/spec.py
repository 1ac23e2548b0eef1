"""What a tuning study is: the operators, the budget, the recipe being tuned, the trials each operator gets (equal
effort), each operator's search space (its own, declared beside its options, plus the recipe's learning rate and
weight decay; restricted or fixed by `--space`), the validation split trials are scored on, and where trials are
stored. `TuneSpec.validate()` checks all of it before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..checks import is_int
from ..ops.space import RECIPE_SPACE, Choice, Dimension, FloatRange, IntRange, parse_dimension, restrict
from ..registry import conv_entry, model_entry
from ..study.spec import DEFAULT_BUDGET, DEFAULT_CONV_KWARGS, DEFAULT_PRESET, parse_budgets

__all__ = ["DEFAULT_HOLDOUT", "DEFAULT_TRIALS", "PRUNERS", "REPORT_AT", "TUNE_SEED", "OperatorSpace", "TuneSpec"]

DEFAULT_TRIALS = 12
# training images held out as the validation split every trial is scored on (never the test images)
DEFAULT_HOLDOUT = 2000
# every trial trains with this seed; the confirmation's seeds are 0..seeds-1, so none of them tuned anything
TUNE_SEED = 1000
PRUNERS = ("median", "halving", "none")
# fractions of a trial's steps at which it reports its validation accuracy to the pruner
REPORT_AT = (0.25, 0.5, 0.75)
# training config fields a tuning study sets itself
_OWN_FIELDS = ("seed", "holdout", "threads", "lr", "weight_decay")


@dataclass(frozen=True)
class OperatorSpace:
    """One operator's search space: the dimensions sampled (its options and the recipe's) and the values
    fixed by `--space`."""

    operator: str
    searched: dict[str, Dimension]
    fixed: dict[str, Any]

    @property
    def option_names(self) -> set[str]:
        return set(self.searched) | set(self.fixed) - set(RECIPE_SPACE)

    def split(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(operator options, recipe fields) of a trial's sampled `params` with the fixed values, on top of
        the operator's paper defaults (DEFAULT_CONV_KWARGS). An option sampled as None keeps its default."""
        values = {**self.fixed, **params}
        options = {**DEFAULT_CONV_KWARGS.get(self.operator, {}),
                   **{k: v for k, v in values.items() if k not in RECIPE_SPACE and v is not None}}
        return options, {k: v for k, v in values.items() if k in RECIPE_SPACE}

    def describe(self) -> dict[str, str]:
        return {**{k: d.describe() for k, d in self.searched.items()}, **{k: f"={v}" for k, v in self.fixed.items()}}


def declared_space(operator: str) -> dict[str, Dimension]:
    """The search space operator `operator`'s class declares (its own, not inherited)."""
    builder = conv_entry(operator).builder
    space = vars(builder).get("search_space") if isinstance(builder, type) else None
    if space is None:
        raise ValueError(f"tune: operator {operator!r} declares no search space: give its class `search_space = "
                         "{...}` beside its options ({} when none is worth searching; docs/operators.md)")
    return dict(space)


@dataclass
class TuneSpec:
    model: str = "resnet20"
    convs: list[str] = field(default_factory=lambda: ["conv", "igcv2", "acdc"])
    budget: str | None = DEFAULT_BUDGET
    data: str = "fashion-mnist"
    data_dir: str | None = None
    preset: str = DEFAULT_PRESET
    trials: int = DEFAULT_TRIALS
    seeds: int = 3
    space: list[str] = field(default_factory=list)
    pruner: str = "median"
    storage: str | None = None
    holdout: int = DEFAULT_HOLDOUT
    reference: str | None = None
    threads: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    width_grid: float = 1 / 16
    sampler_seed: int = 0
    command: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TuneSpec:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    @property
    def reference_conv(self) -> str:
        return self.reference or ("conv" if "conv" in self.convs else self.convs[0])

    def validate(self) -> TuneSpec:
        model_entry(self.model)
        if not self.convs:
            raise ValueError("tune: --convs is empty; name at least one operator")
        if len(set(self.convs)) != len(self.convs):
            raise ValueError(f"tune: --convs names an operator twice: {','.join(self.convs)}")
        for conv in self.convs:
            if ":" in conv:
                raise ValueError(f"tune: {conv!r}: tune takes operator names (fix an option with --space "
                                 f"{conv.split(':')[0]}:NAME=VALUE)")
            conv_entry(conv)
            declared_space(conv)
        if len(parse_budgets(self.budget)) > 1:
            raise ValueError(f"tune: one budget at a time, got {self.budget!r}")
        for name in ("trials", "seeds", "threads", "holdout"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"tune: --{name} must be a positive integer, got {value!r}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"tune: --pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.reference is not None and self.reference not in self.convs:
            raise ValueError(f"tune: --reference {self.reference!r} is not in --convs ({','.join(self.convs)})")
        owned = sorted(set(self.overrides) & set(_OWN_FIELDS))
        if owned:
            raise ValueError(f"tune: --set {owned[0]} is the study's own (lr and weight_decay are searched: fix one "
                             f"with --space {owned[0]}=VALUE; the rest have options of their own)")
        self.spaces()  # parses --space: raises naming the bad item
        from ..train import resolve_config

        resolve_config(self.preset, None, {**self.overrides, "holdout": self.holdout})
        return self

    def spaces(self) -> dict[str, OperatorSpace]:
        """Each operator's space after `--space`: items `NAME=VALUE` (a recipe field, every operator) or
        `OP:NAME=VALUE`; a value fixes, `lo..hi` narrows a range, `a|b` narrows a choice."""
        spaces = {op: {**declared_space(op), **RECIPE_SPACE} for op in self.convs}
        fixed: dict[str, dict[str, Any]] = {op: {} for op in self.convs}
        for item in self.space:
            target, _, assignment = item.rpartition(":") if ":" in item.split("=", 1)[0] else ("", "", item)
            name, eq, text = assignment.partition("=")
            name = name.strip()
            if not eq or not name or not text.strip():
                raise ValueError(f"tune: --space {item!r}: expected NAME=VALUE or OP:NAME=VALUE (e.g. lr=0.05, "
                                 "igcv2:L=3, acdc:atoms=4..12, acdc:share=net|stage)")
            if target and target not in self.convs:
                raise ValueError(f"tune: --space {item!r}: {target!r} is not in --convs ({','.join(self.convs)})")
            if not target and name not in RECIPE_SPACE:
                owners = [op for op in self.convs if name in spaces[op]]
                hint = f"; write {owners[0]}:{name}=..." if owners else ""
                raise ValueError(f"tune: --space {item!r}: {name!r} is not a recipe field ({', '.join(RECIPE_SPACE)})"
                                 f"{hint}")
            given = parse_dimension(text)
            for op in [target] if target else self.convs:
                if name not in spaces[op] and name not in fixed[op]:
                    raise ValueError(f"tune: --space {item!r}: {op} has no searchable option {name!r}; its space: "
                                     f"{', '.join(spaces[op]) or '(empty)'}")
                value = restrict(f"{op}:{name}", spaces[op].pop(name), given)
                if isinstance(value, IntRange | FloatRange | Choice):
                    spaces[op][name] = value
                else:
                    fixed[op][name] = value
        for op in self.convs:
            if not spaces[op]:
                raise ValueError(f"tune: nothing to search for {op}: --space fixes every dimension of its space "
                                 f"({', '.join(fixed[op])})")
        return {op: OperatorSpace(op, spaces[op], fixed[op]) for op in self.convs}

    def identity(self) -> dict[str, Any]:
        """What decides what every trial computes (the trial count may grow between reruns, seeds too)."""
        return {"model": self.model, "data": self.data, "preset": self.preset, "budget": self.budget,
                "overrides": self.overrides, "holdout": self.holdout, "threads": self.threads,
                "width_grid": self.width_grid, "pruner": self.pruner, "sampler_seed": self.sampler_seed,
                "spaces": {op: s.describe() for op, s in self.spaces().items()}}

    def study_name(self, operator: str) -> str:
        """The Optuna study of `operator`'s trials: named by the tuning problem, so that drivers sharing one
        storage (PostgreSQL) share its trials, and other problems in that storage stay apart."""
        digest = hashlib.blake2b(json.dumps(self.identity(), sort_keys=True, default=str).encode(),
                                 digest_size=6).hexdigest()
        return f"factorconv-tune-{digest}-{operator}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
