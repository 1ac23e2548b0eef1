"""`factorconv train`: training one model (single process, or DDP under torchrun)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .args import UsageError, count, number, parse_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on a data set (single process, or under torchrun: DDP)",
                       description="Train one model. Config precedence: defaults < --preset < --config < flags "
                                   "< --set. Every config field can be set with --set KEY=VALUE.")
    p.add_argument("--model", default=None, help="registered model (default resnet20)")
    p.add_argument("--conv", default=None, help="operator replacing the spatial convs (default: the model's)")
    p.add_argument("--width", type=number(), default=None, help="width multiplier")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="operator option, repeatable")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="model option, repeatable")
    p.add_argument("--data", default=None, help="data set: fashion-mnist (default), mnist, kmnist, cifar10, "
                                                "cifar100, folder, synthetic")
    p.add_argument("--data-dir", default=None, help="where the data set is (default: its usual places)")
    p.add_argument("--preset", default=None, help="training recipe (--list-presets shows them)")
    p.add_argument("--config", default=None, help="JSON or YAML file of config fields")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config field, repeatable "
                                                                        "(conv_kwargs.p=3 reaches into mappings)")
    p.add_argument("--epochs", type=number(), default=None, help="training epochs")
    p.add_argument("--seed", type=count(0), default=None, help="random seed")
    p.add_argument("--run-dir", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run saved in RUN_DIR exactly")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-presets", action="store_true", help="list the training presets and exit")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _train_config(args: argparse.Namespace) -> tuple[Any, bool]:
    from ..train import resolve_config, resume_config

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
    if args.preset or args.config:
        raise UsageError(f"--resume continues the run with its saved config; it cannot change "
                         f"{'--preset' if args.preset else '--config'}")
    changes = {k: v for k, v in {**flags, **overrides}.items() if k != "run_dir"}
    return resume_config(args.resume, changes), True


def run(args: argparse.Namespace) -> int:
    from ..train import fit
    from ..train.task import score_label

    if args.list_presets:
        from ..train import PRESETS

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
        acc, score = result.get("test_acc"), score_label([result.get("score")])
        print(f"test {score} {100 * acc:.2f}% (loss {result['test_loss']:.4f}) after {result['steps']} steps, "
              f"{result['train_seconds']:.0f} s training / {result['seconds']:.0f} s total; "
              f"{result['profile']['params']:,} params; results in {result['run_dir']}")
    return 0
