"""Model surgery: `convert` swaps a model's spatial convs for an operator, `fold` turns every operator
back into the plain `nn.Conv2d` it equals, `deploy` into the form it ships as.

All three work in place on the model and return it (or the replacement, when the model is itself a conv).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .ops.base import is_operator
from .ops.spec import ConvSpec
from .registry import ConvBuilder, conv_entry, create_conv2d, replaces, stem_default

__all__ = ["convert", "deploy", "fold", "iter_operators", "pack"]


def _patterns(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _matches(name: str, patterns: list[str] | None) -> bool:
    return patterns is not None and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Named modules, not descending into operators (their inner convs are not separate layers)."""
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        yield full, child
        if not is_operator(child):
            yield from _walk(child, full)


def iter_operators(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every top-level operator in `model` (the model itself first, as '')."""
    if is_operator(model):
        yield "", model
        return
    for name, module in _walk(model):
        if is_operator(module):
            yield name, module


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def convert(
    model: nn.Module,
    conv: str | ConvBuilder,
    *,
    conv_kwargs: dict[str, Any] | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    replace_stem: bool | None = None,
    init: str = "default",
    input_size: tuple[int, ...] | None = None,
    example: Any = None,
) -> nn.Module:
    """Replace the spatial (kernel > 1) `nn.Conv2d` layers of `model` with operator `conv`, in place.

    Each replacement keeps the layer's stride, padding, dilation, groups and bias, device and dtype.
    The first conv (the stem) is kept unless `replace_stem` (default: the operator's registry default).
    `include`/`exclude` are shell patterns on layer names ("layer1.*"). `init="from_conv"` initialises
    each operator from the conv it replaces (exact where the operator can represent it); "default" uses
    the operator's own initialisation. An operator that cannot take a layer raises ValueError naming it.
    `input_size` (C, H, W) or `example` (an input, or a tuple of the forward's arguments) is needed only by
    operators that look at the whole model running once (ACDC with share="stage" finds its stages that way);
    they say so when it is missing.
    """
    if init not in ("default", "from_conv"):
        raise ValueError(f"convert: init must be 'default' or 'from_conv', got {init!r}")
    entry = conv_entry(conv) if isinstance(conv, str) else None
    if replace_stem is None:
        replace_stem = stem_default(conv)
    include_p, exclude_p = _patterns(include), _patterns(exclude)
    conv_kwargs = dict(conv_kwargs or {})

    candidates = [(n, m) for n, m in ([("", model)] if isinstance(model, nn.Conv2d) else _walk(model))
                  if isinstance(m, nn.Conv2d)]
    stem = candidates[0][0] if candidates and candidates[0][0] != "" else None  # the first conv of a network
    targets = [
        (n, m) for n, m in candidates
        if replaces(m.kernel_size, stem=n == stem, replace_stem=replace_stem)
        and (include_p is None or _matches(n, include_p))
        and not _matches(n, exclude_p)
    ]
    for name, old in targets:
        new = _build_like(old, conv, conv_kwargs, init, name)
        if name == "":
            model = new
        else:
            _replace(model, name, new)
    if entry is not None and entry.finalize is not None and targets:
        entry.finalize(model, input_size=input_size, example=example)
    return model


def _build_like(
    old: nn.Conv2d, conv: str | ConvBuilder, conv_kwargs: dict[str, Any], init: str, name: str
) -> nn.Module:
    label = name or "<model>"
    try:
        spec = ConvSpec.of(old)
        if init == "from_conv":
            builder: Callable[..., Any] = conv_entry(conv).builder if isinstance(conv, str) else conv
            from_conv = getattr(builder, "from_conv", None)
            if from_conv is None:
                raise ValueError(f"{builder!r} has no from_conv")
            new = from_conv(old, **conv_kwargs)
        else:
            new = create_conv2d(
                spec.in_channels, spec.out_channels, spec.kernel_size, conv=conv, **spec.kwargs(), **conv_kwargs
            )
            new.to(device=old.weight.device, dtype=old.weight.dtype)
    except ValueError as err:
        raise ValueError(f"convert: cannot replace layer '{label}' ({_describe(old)}): {err}") from err
    new.train(old.training)
    return new


def _describe(conv: nn.Conv2d) -> str:
    return (
        f"{conv.in_channels}->{conv.out_channels}, kernel {tuple(conv.kernel_size)}, stride {tuple(conv.stride)}, "
        f"groups {conv.groups}"
    )


def _channels_last(module: nn.Module) -> bool:
    return any(p.dim() == 4 and p.shape[1] * p.shape[2] * p.shape[3] > 1 and not p.is_contiguous()
               and p.is_contiguous(memory_format=torch.channels_last) for p in module.parameters())


def _swap_operators(model: nn.Module, make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    channels_last = _channels_last(model)
    for name, op in list(iter_operators(model)):
        if type(op) is nn.Conv2d:
            continue
        new = make(op)
        if channels_last:  # keep the model's memory format: a contiguous kernel is reordered every call
            new = new.to(memory_format=torch.channels_last)
        if name == "":
            return new
        _replace(model, name, new)
    return model


def fold(model: nn.Module) -> nn.Module:
    """Replace every operator in `model` with its exact `nn.Conv2d` (`op.fold()`), in place."""
    return _swap_operators(model, lambda op: op.fold())


def pack(model: nn.Module) -> nn.Module:
    """Replace every operator that has a packed form (BDSC: bit-packed configuration) with it, in place;
    other operators are left as they are (fold or deploy them separately)."""
    return _swap_operators(model, lambda op: op.pack() if callable(getattr(op, "pack", None)) else op)


def deploy(model: nn.Module) -> nn.Module:
    """Replace every operator with its deploy form (`op.deploy()`: folded, or factorized when smaller), and
    drop the modules the model uses only in training (`model.training_only`: DARTS's auxiliary head)."""
    from .accounting import training_only

    for name in training_only(model):
        setattr(model, name, None)
    return _swap_operators(model, lambda op: op.deploy())
