"""Registries of convolution operators and model builders, and the two factories built on them.

`register_conv` / `register_model` add entries (a duplicate name raises), `list_convs` / `list_models`
list them, `create_conv2d` / `create_model` build from them. Operator families and backbones register
themselves when their module is imported; `factorconv/__init__.py` imports them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .checks import is_number

__all__ = [
    "ACT_LAYERS",
    "NORM_LAYERS",
    "RESERVED_MODEL_OPTIONS",
    "ConvEntry",
    "ModelEntry",
    "check_model_options",
    "conv_entry",
    "create_conv2d",
    "create_model",
    "list_convs",
    "list_models",
    "model_entry",
    "register_conv",
    "register_model",
    "replaces",
    "set_finalize",
    "stem_default",
    "unregister_conv",
    "unregister_model",
]

ConvBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ConvEntry:
    """A registered operator: how to build it and how models should use it."""

    name: str
    builder: ConvBuilder
    # Whether backbones replace their stem conv with this operator by default (ACDC does, as its paper).
    replace_stem: bool = False
    # Called once with the whole model after a backbone is built or converted with this operator, as
    # finalize(model, input_size=(C, H, W) or None, example=an input or None); operators whose parameters span
    # layers (ACDC's shared coefficient banks) bind them here.
    finalize: Callable[..., None] | None = None
    description: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """A registered backbone builder with the input size its papers use."""

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int] = (3, 32, 32)
    # The class count the model's papers count it with (the CLI's default; create_model's is 10).
    num_classes: int = 10
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


_CONVS: dict[str, ConvEntry] = {}
_MODELS: dict[str, ModelEntry] = {}


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def register_conv(
    name: str,
    *,
    replace_stem: bool = False,
    finalize: Callable[..., None] | None = None,
) -> Callable[[ConvBuilder], ConvBuilder]:
    """Decorator registering an operator class (or builder function) under `name`.

    The builder is called as `builder(in_ch, out_ch, kernel_size, stride=, padding=, dilation=, groups=,
    bias=, **op_kwargs)`. A class may define a `finalize_model(model, input_size=None, example=None)`
    classmethod instead of `finalize`.
    """

    def decorator(builder: ConvBuilder) -> ConvBuilder:
        if name in _CONVS:
            raise ValueError(f"conv '{name}' is already registered (by {_CONVS[name].builder!r})")
        fin = finalize if finalize is not None else getattr(builder, "finalize_model", None)
        _CONVS[name] = ConvEntry(name, builder, replace_stem, fin, _first_doc_line(builder))
        return builder

    return decorator


def set_finalize(name: str, finalize: Callable[..., None]) -> None:
    """Install the whole-model step of operator `name` (see ConvEntry.finalize) from the module that owns it,
    so that a layer's module need not import the model-level code (ACDC's sharing lives in
    `factorconv.sharing`)."""
    entry = conv_entry(name)
    _CONVS[name] = dataclasses.replace(entry, finalize=finalize)


def unregister_conv(name: str) -> None:
    """Remove operator `name` from the registry (a notebook re-running the cell that registers it, a test that
    registers an example operator for its own run); unknown names raise."""
    conv_entry(name)
    del _CONVS[name]


def unregister_model(name: str) -> None:
    """Remove model `name` from the registry (as unregister_conv); unknown names raise."""
    model_entry(name)
    del _MODELS[name]


def register_model(
    name: str | None = None,
    *,
    input_size: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    tags: Iterable[str] = (),
    description: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under `name` (default: the function's name).

    `input_size` and `num_classes` are what the model's papers count it with (ImageNet models: 3x224x224,
    1000 classes); `factorconv list/profile` use them unless told otherwise. A builder may be a
    `functools.partial` of a model class (then give `name` and `description`).
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model '{key}' is already registered (by {_MODELS[key].builder!r})")
        doc = description if description is not None else _first_doc_line(fn)
        _MODELS[key] = ModelEntry(key, fn, tuple(input_size), num_classes, doc, tuple(tags))
        return fn

    return decorator


def _unknown(kind: str, name: object, known: Iterable[str]) -> ValueError:
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (registered: {', '.join(known)})")


def _natural_key(name: str) -> list[Any]:
    """'resnet20' < 'resnet110': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_convs(pattern: str = "*") -> list[str]:
    """Registered operator names matching a shell-style `pattern`, sorted."""
    return sorted((n for n in _CONVS if fnmatch.fnmatch(n, pattern)), key=_natural_key)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style `pattern`, in natural order."""
    return sorted((n for n in _MODELS if fnmatch.fnmatch(n, pattern)), key=_natural_key)


def conv_entry(name: str) -> ConvEntry:
    """The registry entry of operator `name`; ValueError naming the known ones otherwise."""
    if not isinstance(name, str) or name not in _CONVS:
        raise _unknown("conv", name, _CONVS)
    return _CONVS[name]


def stem_default(conv: str | ConvBuilder) -> bool:
    """Whether operator `conv` replaces a network's stem by default (its registry entry; False for a builder)."""
    return conv_entry(conv).replace_stem if isinstance(conv, str) else False


def replaces(kernel_size: tuple[int, int], *, stem: bool, replace_stem: bool) -> bool:
    """The one rule for which convs an operator takes, in backbones (`ConvFactory`) and in `convert`: the
    spatial ones (kernel larger than 1x1: the operators factorize the spatial part, a 1x1 projection has none),
    and the stem only when `replace_stem` (a 3-channel stem is too thin to factorize, as the papers keep it)."""
    return tuple(kernel_size) != (1, 1) and (replace_stem or not stem)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of model `name`; ValueError naming the known ones otherwise."""
    if not isinstance(name, str) or name not in _MODELS:
        raise _unknown("model", name, _MODELS)
    return _MODELS[name]


def create_conv2d(
    in_ch: int,
    out_ch: int,
    kernel_size: int | tuple[int, int],
    *,
    conv: str | ConvBuilder = "conv",
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    bias: bool = False,
    **op_kwargs: Any,
) -> nn.Module:
    """Build one convolution layer with the semantics of `nn.Conv2d`, as operator `conv`.

    `conv` is a registered name (see `list_convs()`) or a callable with this signature.
    Operator-specific options go in `op_kwargs`; an option the operator does not take raises ValueError.
    """
    builder = conv if callable(conv) else conv_entry(conv).builder
    label = conv if isinstance(conv, str) else getattr(conv, "__name__", repr(conv))
    _check_kwargs(builder, op_kwargs, f"conv {label!r}", skip=_CONV_ARGS)
    return builder(
        in_ch, out_ch, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
        bias=bias, **op_kwargs,
    )


_CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias")


def _builder_default(fn: Callable[..., Any], name: str) -> Any:
    """The default a builder (function, class or partial) gives option `name`."""
    if isinstance(fn, functools.partial) and name in fn.keywords:
        return fn.keywords[name]
    param = inspect.signature(fn).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], what: str, skip: Iterable[str] = ()) -> None:
    """Raise ValueError for keyword options `fn` does not accept (instead of a TypeError deep inside)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call itself complain
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    # a registered partial's keywords are fixed by its name, except create_model's own arguments, to which it
    # gives defaults of its own (igcv2_8's conv is igcv2)
    fixed = set(fn.keywords) - set(RESERVED_MODEL_OPTIONS) if isinstance(fn, functools.partial) else set()
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL and n not in fixed]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        options = [n for n in accepted if n not in set(skip) and n != "self"]
        raise ValueError(
            f"{what} does not take option(s) {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(options) or '(none)'}"
        )


# create_model's own arguments: a model option of the same name would be passed twice
RESERVED_MODEL_OPTIONS = ("conv", "width", "num_classes", "in_chans", "conv_kwargs")
# Layers a model option may name as text (a command line cannot pass a class): norm_layer=groupnorm
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "batchnorm": nn.BatchNorm2d, "bn": nn.BatchNorm2d, "identity": lambda _: nn.Identity(),
    "groupnorm": lambda c: nn.GroupNorm(math.gcd(c, 32), c),
    "instancenorm": lambda c: nn.InstanceNorm2d(c, affine=True),
}
ACT_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": functools.partial(nn.ReLU, inplace=True), "relu6": functools.partial(nn.ReLU6, inplace=True),
    "silu": functools.partial(nn.SiLU, inplace=True), "hardswish": functools.partial(nn.Hardswish, inplace=True),
    "gelu": nn.GELU, "identity": nn.Identity,
}


def check_model_options(options: dict[str, Any], what: str = "model option") -> None:
    """Raise ValueError for a model option that create_model takes as its own argument."""
    clash = [k for k in options if k in RESERVED_MODEL_OPTIONS]
    if clash:
        raise ValueError(f"{what} {clash[0]!r} is not a model option: it has a setting of its own (conv, width, "
                         "num_classes, in_chans and conv_kwargs are set directly, e.g. --width, --conv, --opt)")


def _resolve_layers(model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """norm_layer / act_layer given by name -> the layer; anything else must be callable."""
    out = dict(model_kwargs)
    for key, table in (("norm_layer", NORM_LAYERS), ("act_layer", ACT_LAYERS)):
        value = out.get(key)
        if isinstance(value, str):
            if value.lower() not in table:
                raise ValueError(f"model option {key}={value!r}: expected one of {', '.join(table)} (or a callable)")
            out[key] = table[value.lower()]
        elif key in out and value is not None and not callable(value):
            raise ValueError(f"model option {key}={value!r}: expected a layer name ({', '.join(table)}) or a callable")
    return out


def create_model(
    name: str,
    *,
    conv: str | ConvBuilder | None = None,
    width: float | None = None,
    num_classes: int = 10,
    in_chans: int = 3,
    conv_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Build registered backbone `name` with operator `conv` in place of its spatial convs.

    `conv` and `width` default to the model's own: "conv" and 1.0 for every backbone except the
    interleaved-group-conv networks, whose layers default to their IGC operator and whose width is the
    absolute first-stage width. Other keyword options that are None are dropped (so a CLI can pass unset
    options through). The model gets a `build_config` attribute (a JSON-able dict of what it was built with).
    """
    entry = model_entry(name)
    if width is not None and (not is_number(width)
                              or not math.isfinite(width) or width <= 0):
        raise ValueError(f"width must be a finite positive number, got {width!r}")
    model_kwargs = _resolve_layers(model_kwargs)
    model_kwargs = {k: v for k, v in {**model_kwargs, "conv": conv, "width": width}.items() if v is not None}
    _check_kwargs(entry.builder, model_kwargs, f"model {name!r}")
    if isinstance(conv, str):
        conv_entry(conv)  # fail early with the list of known names
    model = entry.builder(num_classes=num_classes, in_chans=in_chans, conv_kwargs=dict(conv_kwargs or {}),
                          **model_kwargs)
    conv = _builder_default(entry.builder, "conv") if conv is None else conv
    width = _builder_default(entry.builder, "width") if width is None else width
    if isinstance(conv, str):
        finalize = conv_entry(conv).finalize
        if finalize is not None:
            finalize(model, input_size=(in_chans, *entry.input_size[1:]))
        model.build_config = {
            "model": name, "conv": conv, "width": width, "num_classes": num_classes, "in_chans": in_chans,
            "conv_kwargs": dict(conv_kwargs or {}), **model_kwargs,
        }
    return model
