"""`factorconv list`: the registered operators and models, with each model's parameter count."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from ..accounting import count_params
from ..registry import conv_entry, create_model, list_convs, list_models, model_entry


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="registered operators and models")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern on model names")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
