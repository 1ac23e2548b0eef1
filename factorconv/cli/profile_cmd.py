"""`factorconv profile`: a model's parameters, bits, MACs, deploy size and per-layer table."""

from __future__ import annotations

import argparse
from typing import Any

from ..accounting import profile
from .args import add_model_args, build_from_args


def add_parser(sub: Any) -> None:
    p = sub.add_parser("profile", help="params, bits, MACs, deploy size and per-layer table of a model")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (Profile.to_dict())")
    p.add_argument("--summary", action="store_true", help="totals only, no per-layer table")
    p.add_argument("--meta", action="store_true", help="count on the meta device (large models, no memory)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model, input_size = build_from_args(args, "meta" if args.meta else None)
    prof = profile(model, input_size)
    if args.json:
        print(prof.to_json(indent=2))
        return 0
    if not args.summary:
        print(prof.table())
        print()
    conv = args.conv or getattr(model, "build_config", {}).get("conv", "the model's own")
    print(f"model          {args.model} (conv={conv}{'' if args.width is None else f', width={args.width}'})")
    print(prof.summary())
    return 0
