"""The `factorconv` command: argparse subcommands over the library.

Each subcommand is a `_cmd_*` function taking the parsed arguments and returning an exit status; errors
the user can fix (ValueError from the library, bad option syntax) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import torch

from . import __version__
from .accounting import count_params, profile
from .registry import conv_entry, create_model, list_convs, list_models, model_entry

__all__ = ["main", "parse_input_size", "parse_options"]


class UsageError(ValueError):
    """A command-line value that cannot be parsed."""


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'none' -> None, '(8,16)' -> (8, 16), else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_options(items: Sequence[str] | None, flag: str = "--opt") -> dict[str, Any]:
    """['atoms=8', 'share=net'] -> {'atoms': 8, 'share': 'net'}."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def parse_input_size(text: str) -> tuple[int, int, int]:
    """'3x32x32' -> (3, 32, 32)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise UsageError(f"--input expects CxHxW with positive integers (e.g. 3x32x32), got {text!r}")
    return dims


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model name (see `factorconv list`)")
    p.add_argument("--conv", default="conv", help="operator replacing the spatial convs (default: conv)")
    p.add_argument("--width", type=float, default=None, help="width multiplier (default: the model's, 1.0)")
    p.add_argument("--input", default=None, help="input size CxHxW (default: the model's, e.g. 3x32x32)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the model's, 10 for CIFAR models, 1000 for ImageNet ones)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="operator option, repeatable")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="model option, repeatable")


def _build(args: argparse.Namespace, device: str | None = None) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    entry = model_entry(args.model)
    input_size = parse_input_size(args.input) if args.input else entry.input_size
    kwargs = {"width": args.width, "num_classes": args.num_classes or entry.num_classes}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with torch.device(device) if device else contextlib.nullcontext():
        model = create_model(
            args.model, conv=args.conv, in_chans=input_size[0], conv_kwargs=parse_options(args.opt),
            **parse_options(args.model_opt, "--model-opt"), **kwargs,
        )
    return model, input_size


def _cmd_list(args: argparse.Namespace) -> int:
    convs = [{"name": n, "description": conv_entry(n).description} for n in list_convs()]
    models = []
    for name in list_models(args.pattern):
        entry = model_entry(name)
        with torch.device("meta"):  # counting only: nothing is allocated
            params = count_params(create_model(name, num_classes=entry.num_classes))
        models.append({"name": name, "params": params, "input_size": list(entry.input_size),
                       "num_classes": entry.num_classes, "description": entry.description})
    if args.json:
        print(json.dumps({"convs": convs, "models": models}, indent=2))
        return 0
    print("convs:")
    width = max(len(c["name"]) for c in convs)
    for c in convs:
        print(f"  {c['name']:<{width}}  {c['description']}")
    print("\nmodels (params at width 1.0, with the classes and input size their papers use):")
    width = max((len(m["name"]) for m in models), default=0)
    for m in models:
        size = "x".join(map(str, m["input_size"]))
        print(f"  {m['name']:<{width}}  {m['params'] / 1e6:8.3f} M  {size:>9}  {m['num_classes']:>4}  "
              f"{m['description']}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    model, input_size = _build(args, "meta" if args.meta else None)
    prof = profile(model, input_size)
    if args.json:
        print(prof.to_json(indent=2))
        return 0
    if not args.summary:
        print(prof.table())
        print()
    print(f"model          {args.model} (conv={args.conv}{'' if args.width is None else f', width={args.width}'})")
    print(prof.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factorconv",
        description="Efficient convolution operators: list, profile, and compare them on one backbone.",
    )
    parser.add_argument("--version", action="version", version=f"factorconv {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="registered operators and models")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern on model names")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("profile", help="params, bits, MACs, deploy size and per-layer table of a model")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (Profile.to_dict())")
    p.add_argument("--summary", action="store_true", help="totals only, no per-layer table")
    p.add_argument("--meta", action="store_true", help="count on the meta device (large models, no memory)")
    p.set_defaults(func=_cmd_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args))
    except (ValueError, UsageError) as err:
        print(f"factorconv {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
