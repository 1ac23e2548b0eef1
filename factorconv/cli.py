"""The `factorconv` command: argparse subcommands over the library.

Each subcommand is a `_cmd_*` function taking the parsed arguments and returning an exit status; errors
the user can fix (ValueError from the library, bad option syntax) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
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


def _train_config(args: argparse.Namespace) -> tuple[Any, bool]:
    from .train import RESUME_SAFE_FIELDS, TrainConfig, resolve_config
    from .train.checkpoint import load_checkpoint

    overrides = parse_options(args.set, "--set")
    flags = {"model": args.model, "conv": args.conv, "width": args.width, "data": args.data,
             "data_dir": args.data_dir, "run_dir": args.run_dir, "epochs": args.epochs, "seed": args.seed}
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.opt:
        overrides = {**{f"conv_kwargs.{k}": v for k, v in parse_options(args.opt).items()}, **overrides}
    if args.model_opt:
        overrides = {**{f"model_kwargs.{k}": v for k, v in parse_options(args.model_opt, "--model-opt").items()},
                     **overrides}
    if args.resume is None:
        return resolve_config(args.preset, args.config, {**flags, **overrides}), False
    changes = {**flags, **overrides}
    changes.pop("run_dir", None)
    bad = sorted(k for k in changes if k.split(".")[0] not in RESUME_SAFE_FIELDS)
    if bad or args.preset or args.config:
        what = ", ".join(bad) if bad else ("--preset" if args.preset else "--config")
        raise UsageError(f"--resume continues the run with its saved config; it cannot change {what} "
                         f"(resumable: {', '.join(sorted(RESUME_SAFE_FIELDS))})")
    saved = TrainConfig.from_dict(load_checkpoint(args.resume)["config"]).to_dict()
    saved["run_dir"] = str(args.resume if not str(args.resume).endswith(".pt") else Path(args.resume).parent)
    return resolve_config(None, None, changes, base=saved), True


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import fit

    if args.list_presets:
        from .train import PRESETS

        for name, preset in sorted(PRESETS.items()):
            print(f"{name:<8} {preset.description}")
        return 0
    cfg, resume = _train_config(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    result = fit(cfg, resume=resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        acc = result.get("test_acc")
        print(f"test accuracy {100 * acc:.2f}% (loss {result['test_loss']:.4f}) after {result['steps']} steps, "
              f"{result['train_seconds']:.0f} s training / {result['seconds']:.0f} s total; "
              f"{result['profile']['params']:,} params; results in {result['run_dir']}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_checkpoint

    result = evaluate_checkpoint(args.path, data_dir=args.data_dir, device=args.device, fold=args.fold)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    line = f"{result['model']} on {result['data']} ({result['images']} test images, step {result['step']}): " \
           f"accuracy {100 * result['test_acc']:.2f}%, loss {result['test_loss']:.4f}"
    if args.fold:
        line += (f"; folded: {100 * result['folded_test_acc']:.2f}%, largest logit difference "
                 f"{result['folded_max_logit_diff']:.2e}")
    print(line)
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

    p = sub.add_parser("train", help="train a model on a data set (single process, or under torchrun: DDP)",
                       description="Train one model. Config precedence: defaults < --preset < --config < flags "
                                   "< --set. Every config field can be set with --set KEY=VALUE.")
    p.add_argument("--model", default=None, help="registered model (default resnet20)")
    p.add_argument("--conv", default=None, help="operator replacing the spatial convs (default: the model's)")
    p.add_argument("--width", type=float, default=None, help="width multiplier")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="operator option, repeatable")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="model option, repeatable")
    p.add_argument("--data", default=None, help="data set: fashion-mnist (default), mnist, kmnist, cifar10, "
                                                "cifar100, folder, synthetic")
    p.add_argument("--data-dir", default=None, help="where the data set is (default: its usual places)")
    p.add_argument("--preset", default=None, help="training recipe (--list-presets shows them)")
    p.add_argument("--config", default=None, help="JSON or YAML file of config fields")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config field, repeatable "
                                                                        "(conv_kwargs.p=3 reaches into mappings)")
    p.add_argument("--epochs", type=float, default=None, help="training epochs")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--run-dir", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run saved in RUN_DIR exactly")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-presets", action="store_true", help="list the training presets and exit")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="test accuracy of a trained run (run directory or checkpoint)")
    p.add_argument("path", help="run directory or its checkpoint.pt")
    p.add_argument("--data-dir", default=None, help="where the data set is (default: as trained)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--fold", action="store_true", help="also evaluate the folded (deploy) model and compare logits")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .data import DatasetError
    from .train import CheckpointError, RunDirError, TrainError

    try:
        return int(args.func(args))
    except (ValueError, UsageError) as err:
        print(f"factorconv {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (DatasetError, TrainError, CheckpointError, RunDirError) as err:
        print(f"factorconv {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
