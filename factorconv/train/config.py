"""The training configuration: one flat dataclass whose every field can be set from a preset, a JSON/YAML
file or `--set key=value`, validated with an error naming the field and what it accepts.

Durations are `epochs` or, when set, `steps` (iterations); `milestones`, `step_size` and `warmup` are in
the same unit as the duration (epochs unless `steps` is set), as the papers state their recipes.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..checks import is_int, is_number
from ..inputs import read_user_text
from .tensorboard import LOG_CHOICES

__all__ = ["SCHEDULES", "TrainConfig", "apply_overrides", "load_config_file"]

SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle")
_AMP = ("auto", "native", "off", "bf16", "fp16")
_PROGRESS = ("auto", "bar", "plain", "off")
_DEVICES = ("auto", "cpu", "cuda")
# which parameters a run trains (the rest stay as initialised, or as `init_from` left them): ACDC's
# adaptation experiments fine-tune only its atoms, its coefficients, the BatchNorms or the classifier;
# parts combine with "+" ("atoms+head": a new task's classifier with the atoms)
TRAIN_ONLY = ("all", "atoms", "coefficients", "bn", "head")


@dataclass
class TrainConfig:
    # model
    model: str = "resnet20"
    conv: str | None = None
    conv_kwargs: dict[str, Any] = field(default_factory=dict)
    # where `conv` goes: comma-separated shell patterns on layer names ("backbone.*", "head.*"); the other
    # layers stay plain convs (DO-Conv's Table 4 stages). None: everywhere the model puts its operator.
    conv_scope: str | None = None
    width: float | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # data
    data: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    data_verify: bool = True
    image_size: int | None = None
    classes: list[int] | None = None
    # the data set's fingerprint (`ImageSet.fingerprint` of train and test) that the run must see: a study sets
    # it so that a changed data set is refused, never mixed into its means; None: whatever the data is
    data_fingerprint: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    # a tuning run's validation split: this many training images (one fixed draw, the same for every run) are
    # held out of training and scored instead of the test set, whose images the run then never scores; its
    # result reports val_acc (not test_acc)
    holdout: int = 0
    augment_pad: int = 4
    augment_flip: bool = True
    cutout: int = 0
    # optimisation
    epochs: float = 200
    steps: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "multistep"
    milestones: list[float] = field(default_factory=lambda: [100.0, 150.0])
    step_size: float | None = None
    gamma: float = 0.1
    warmup: float = 0.0
    onecycle_pct: float = 0.25
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    aux_weight: float = 0.4
    init_from: str | None = None
    train_only: str = "all"
    # execution
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | None = None
    threads: int | None = None
    sync_bn: bool = False
    # bookkeeping
    run_dir: str | None = None
    eval_every: int = 1
    checkpoint_every: int = 0
    log_every: int = 50
    progress: str = "auto"
    # "jsonl": metrics.jsonl only; "tensorboard": TensorBoard event files beside it (extra [tensorboard])
    log: str = "jsonl"
    preset: str | None = None

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first bad field; return self. Every field is first checked against its
        declared type (so a field added later is checked too), then the fields' ranges and combinations."""
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"config field {name!r} = {getattr(self, name)!r}: expected {expected}")

        for f in fields(self):
            expected = _type_error(getattr(self, f.name), str(f.type))
            if expected:
                raise bad(f.name, expected)

        for name, choices in (("schedule", SCHEDULES), ("amp", _AMP), ("progress", _PROGRESS),
                              ("device", _DEVICES), ("log", LOG_CHOICES)):
            if getattr(self, name) not in choices:
                raise bad(name, f"one of {', '.join(choices)}")
        parts = self.train_only.split("+")
        if len(set(parts)) != len(parts) or not all(p in TRAIN_ONLY for p in parts) or (
                "all" in parts and len(parts) > 1):
            raise bad("train_only", f"'all' or one or more of {', '.join(TRAIN_ONLY[1:])} joined by '+' "
                                    "(e.g. atoms+head)")
        for name in ("batch_size", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "a positive integer")
        if not isinstance(self.holdout, int) or self.holdout < 0:
            raise bad("holdout", "an integer >= 0 (training images held out as the validation split; 0: none)")
        for name in ("train_subset", "test_subset", "steps", "threads", "image_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise bad(name, "a positive integer or null")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise bad("checkpoint_every", "an integer >= 0 (steps; 0 = at the end of each epoch only)")
        if self.steps is None and not self.epochs > 0:
            raise bad("epochs", "a positive number (or set steps)")
        for name in ("lr", "gamma"):
            if not getattr(self, name) > 0:
                raise bad(name, "a positive number")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise bad("eval_every", "an integer >= 0 (epochs between test evaluations; 0 = at the end only)")
        for name in ("momentum", "weight_decay", "warmup", "label_smoothing"):
            if not getattr(self, name) >= 0:
                raise bad(name, "a number >= 0")
        if self.label_smoothing >= 1:
            raise bad("label_smoothing", "a number in [0, 1)")
        if self.nesterov and self.momentum <= 0:
            raise bad("nesterov", "false when momentum is 0 (Nesterov needs momentum)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad("grad_clip", "a positive number or null")
        if self.schedule == "step" and not (self.step_size and self.step_size > 0):
            raise bad("step_size", "a positive number for schedule 'step'")
        if not isinstance(self.milestones, list) or sorted(self.milestones) != list(self.milestones):
            raise bad("milestones", "an increasing list of numbers")
        if not 0 < self.onecycle_pct < 1:
            raise bad("onecycle_pct", "a number in (0, 1)")
        if not isinstance(self.cutout, int) or self.cutout < 0:
            raise bad("cutout", "an integer >= 0 (the side of the square cut out; 0: none)")
        if not self.aux_weight >= 0:
            raise bad("aux_weight", "a number >= 0")
        if self.augment_pad < 0:
            raise bad("augment_pad", "an integer >= 0")
        if self.seed < 0:
            raise bad("seed", "an integer >= 0")
        if self.conv_scope is not None:
            if not self.conv:
                raise bad("conv_scope", "null unless conv names the operator to place")
            if not [p for p in self.conv_scope.split(",") if p.strip()]:
                raise bad("conv_scope", "comma-separated layer-name patterns such as 'backbone.*'")
        from ..registry import check_model_options

        check_model_options(self.model_kwargs, "config field 'model_kwargs': key")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(_unknown_message(sorted(unknown)[0]))
        return cls(**values)


_TYPE_WORDS = {"bool": "true or false", "int": "an integer", "float": "a finite number", "str": "a string",
               "list[float]": "a list of finite numbers", "dict[str, Any]": "a mapping"}


def _type_error(value: Any, annotation: str) -> str | None:
    """None when `value` fits the declared type (e.g. 'float | None'), else what the field expects. bool is
    not an int here, an int is a float, and floats must be finite (nan and inf are never a setting)."""
    kinds = [k.strip() for k in annotation.split("|")]
    for kind in kinds:
        if kind == "None" and value is None:
            return None
        if kind == "bool" and isinstance(value, bool):
            return None
        if kind == "int" and is_int(value):
            return None
        if kind == "float" and _finite_number(value):
            return None
        if kind == "str" and isinstance(value, str):
            return None
        if kind.startswith("list[") and isinstance(value, list) and all(_finite_number(v) for v in value):
            return None
        if kind.startswith("dict[") and isinstance(value, dict):
            return None
    words = [_TYPE_WORDS.get(k, k) for k in kinds if k != "None"]
    return " or ".join(words) + (" or null" if "None" in kinds else "")


def _finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def _unknown_message(key: str) -> str:
    names = [f.name for f in fields(TrainConfig)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; fields: {', '.join(names)}"
    return f"unknown config field {key!r}{hint}"


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in fields(TrainConfig)}


def _coerce(key: str, value: Any) -> Any:
    """Make a parsed --set value fit its field: ints for float fields, floats for milestones, str fields."""
    kind = str(_field_types()[key])
    if kind.startswith("float") and is_int(value):
        return float(value)
    if kind.startswith("list[float]") and isinstance(value, list | tuple):
        return [float(v) if _finite_number(v) else v for v in value]  # anything else: validate() names it
    if kind.startswith("str") and is_number(value):
        return str(value)
    return value


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`values` updated with `overrides`; dotted keys reach into the mapping fields
    (`conv_kwargs.p=3`)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    known = _field_types()
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if head not in known:
            raise ValueError(_unknown_message(head))
        if dot:
            if not str(known[head]).startswith("dict"):
                raise ValueError(f"config field {head!r} is not a mapping, so {key!r} cannot be set")
            out.setdefault(head, {})[rest] = value
        else:
            out[head] = _coerce(head, value)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML (needs PyYAML) file holding a mapping of config fields."""
    path = Path(path)
    text = read_user_text(path, "config file")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or write the config as "
                             "JSON") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(values).__name__}")
    return values
