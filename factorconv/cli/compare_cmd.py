"""`factorconv compare`: the main job, operators side by side on one backbone, budget-matched, with fronts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .args import (
    add_executor_args,
    count,
    executor_from_args,
    flagged_status,
    parse_batches,
    parse_conv_options,
    parse_options,
)


def add_parser(sub: Any) -> None:
    from ..study import DEFAULT_BUDGET, DEFAULT_CONVS, DEFAULT_PRESET, DEFAULT_SEEDS

    p = sub.add_parser(
        "compare", help="the main job: operators side by side on one backbone, budget-matched, with the Pareto front",
        description="Train each operator on one backbone and recipe at the width that meets each budget (on the "
                    "model that ships), over paired seeds; report mean, std and 95% CI per operator, the paired "
                    "difference to --reference with its CI and a verdict, run health, the deploy forms' latency and "
                    "the Pareto front, in report.md, study.png and results.json in --out. Rerunning skips finished "
                    "runs (more --seeds, --convs or budget values add runs). Exit status 3: the study finished but "
                    "some runs diverged or had not converged. With no arguments: the default study on "
                    "Fashion-MNIST (see the README for its time on 2 CPU cores).")
    p.add_argument("--model", default="resnet20", help="backbone (default resnet20)")
    p.add_argument("--convs", default=",".join(DEFAULT_CONVS), help=f"operators (default {','.join(DEFAULT_CONVS)})")
    p.add_argument("--budget", default=DEFAULT_BUDGET,
                   help="KIND=COUNT[,COUNT...] with KIND params (the deploy form's parameters), size (its bytes), "
                        "macs, or train-params (parameters trained); k/M/G suffixes; several counts sweep the size; "
                        f"none: --width for all (default {DEFAULT_BUDGET})")
    p.add_argument("--width", type=float, default=1.0,
                   help="with --budget none: the width multiplier of every operator's backbone (default 1)")
    p.add_argument("--reference", default=None,
                   help="operator the others are compared with, seed by seed (default conv, or the first listed)")
    p.add_argument("--data", default="fashion-mnist", help="data set (as for train; default fashion-mnist)")
    p.add_argument("--data-dir", default=None, help="where the data set is")
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"training recipe (default {DEFAULT_PRESET}; `factorconv train --list-presets`)")
    p.add_argument("--seeds", type=count(), default=DEFAULT_SEEDS, help=f"paired seeds per operator (default "
                                                                    f"{DEFAULT_SEEDS})")
    add_executor_args(p)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config field for every run")
    p.add_argument("--opt", action="append", metavar="CONV:KEY=VALUE", help="operator option, e.g. acdc:atoms=8")
    p.add_argument("--model-opt", action="append", metavar="CONV:KEY=VALUE",
                   help="backbone option for one operator's model, e.g. osep:shortcut=conv (o-ResNet)")
    p.add_argument("--out", default=None,
                   help="study directory (default: runs/compare-<model>-<data>-<budget>-<preset>)")
    p.add_argument("--latency-batch", default="1,32",
                   help="comma-separated batches of the latency measurement (default 1,32): a column each")
    p.add_argument("--latency-runtime", default=None, choices=("torch", "onnxruntime", "openvino", "best"),
                   help="where latency is measured, each point deployed for latency there (default onnxruntime "
                        "where installed, else torch; best: the fastest installed)")
    p.add_argument("--latency-repeats", type=count(), default=30, help="interleaved timing repetitions (default 30)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--json", action="store_true", help="print results.json instead of the table")
    p.set_defaults(func=run)


def _default_study_dir(spec: Any) -> str:
    budgets = spec.budgets
    budget = (budgets[0].tag + (f"-sweep{len(budgets)}" if len(budgets) > 1 else "")) if budgets else "none"
    return str(Path("runs") / f"compare-{spec.model}-{spec.data}-{budget}-{spec.preset}")


def run(args: argparse.Namespace) -> int:
    from ..study import StudySpec, run_study, summarize_text

    spec = StudySpec(
        model=args.model, convs=[c.strip() for c in args.convs.split(",") if c.strip()], budget=args.budget,
        data=args.data, data_dir=args.data_dir, preset=args.preset, seeds=args.seeds, reference=args.reference,
        threads=args.threads_per_run, overrides=parse_options(args.set, "--set"), width=args.width,
        conv_kwargs=parse_conv_options(args.opt), model_kwargs=parse_conv_options(args.model_opt, "--model-opt"),
        latency_batch=parse_batches(args.latency_batch, "1,32", False, "--latency-batch"),
        latency_repeats=args.latency_repeats, latency_runtime=args.latency_runtime,
        command="factorconv " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else None,
    ).validate()
    out = args.out or _default_study_dir(spec)
    results = run_study(spec, out, executor=executor_from_args(args, out), measure_latency=not args.no_latency)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(summarize_text(results))
        print(f"\nreport: {Path(out) / 'report.md'}   plot: {Path(out) / 'study.png'}   data: "
              f"{Path(out) / 'results.json'}")
    return flagged_status(results)
