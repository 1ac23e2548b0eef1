"""`factorconv bench`: speed as ratios measured side by side: operators, models, deploy forms."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..outputs import check_outputs, write_atomic
from ..registry import conv_entry, model_entry
from .args import UsageError, count, parse_batches, parse_input_size


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="operator and model speed as ratios to nn.Conv2d, measured side by side",
                       description="ops: every operator as a 64->64 3x3 layer on 32x32 maps, train step and eval "
                                   "forward as ratios to nn.Conv2d, contiguous and channels_last. models: a backbone "
                                   "with each operator, train/eval/deployed as ratios to the standard model. Both "
                                   "report achieved GFLOP/s next to the machine's measured matmul rate. deploy: each "
                                   "operator at its --budget width deployed for size and for latency in every "
                                   "runtime of --runtimes, at every --batch, timed side by side (ms, ratio to the "
                                   "plain conv, GMAC/s, the forms chosen, the largest logit difference).")
    p.add_argument("suite", choices=("ops", "models", "deploy"))
    p.add_argument("--model", default="resnet20", help="backbone for `models` (default resnet20)")
    p.add_argument("--convs", default=None, help="operators (default: every registered one)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", default=None, help="batch (default 32); deploy: comma-separated batches (default 1,32)")
    p.add_argument("--budget", default="params=50k", help="deploy: the budget every operator's width meets, as for "
                                                          "compare (default params=50k; none: width 1)")
    p.add_argument("--runtimes", default="all", help="deploy: comma-separated runtimes (torch, onnxruntime, "
                                                     "openvino), or all installed ones (default)")
    p.add_argument("--input", default="1x28x28", help="deploy: input size CxHxW (default 1x28x28, the default "
                                                      "study's Fashion-MNIST)")
    p.add_argument("--repeats", type=count(), default=None, help="interleaved repetitions (default 20 ops, 15 models)")
    p.add_argument("--out", default=None, help="also write bench_<suite>_<device>.json/.md in this directory")
    p.add_argument("--force", action="store_true", help="replace existing files of an earlier bench in --out")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import bench_models, bench_ops, render_bench

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    convs = [c.strip() for c in args.convs.split(",") if c.strip()] if args.convs else None
    for conv in convs or ():
        conv_entry(conv)
    command = "factorconv " + " ".join(sys.argv[1:]) if sys.argv[1:2] in (["bench"], ["--threads"]) else ""
    if args.suite == "deploy":
        from ..deployment.benchmark import bench_deploy, parse_runtimes, render_deploy
        from ..study import DEFAULT_CONVS

        model_entry(args.model)
        result = bench_deploy(args.model, convs or list(DEFAULT_CONVS), None if args.budget == "none" else args.budget,
                              parse_runtimes(args.runtimes), parse_batches(args.batch, "1,32", False),
                              parse_input_size(args.input), repeats=args.repeats or 20)
        result["command"] = command
        text = render_deploy(result)
    else:
        batch = parse_batches(args.batch, "32", True)[0]
        if args.suite == "ops":
            result = bench_ops(convs, batch=batch, device=args.device, repeats=args.repeats or 20)
        else:
            model_entry(args.model)
            result = bench_models(args.model, convs, batch=batch, device=args.device, repeats=args.repeats or 15)
        result["command"] = command
        text = render_bench(result, command)
    if args.out:
        name = "deploy_latency_cpu" if args.suite == "deploy" else f"bench_{args.suite}_{args.device}"
        stem = Path(args.out) / name
        record, rendered = stem.with_suffix(".json"), stem.with_suffix(".md")
        check_outputs((record, rendered), force=args.force)
        write_atomic(record, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
        write_atomic(rendered, lambda tmp: tmp.write_text(f"# factorconv bench {args.suite} ({args.device})\n\n"
                                                          + text))
    print(json.dumps(result, indent=2) if args.json else text)
    return 0
