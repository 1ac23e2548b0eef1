"""`factorconv tune`: each operator's own options and the recipe searched under the budget with equal effort,
the winners confirmed on fresh seeds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .args import count, parse_options


def add_parser(sub: Any) -> None:
    from ..study import DEFAULT_BUDGET, DEFAULT_PRESET
    from ..tune import DEFAULT_HOLDOUT, DEFAULT_TRIALS, PRUNERS

    p = sub.add_parser(
        "tune", help="tune every operator's options and recipe under the budget with equal effort, then confirm",
        description="For each operator: --trials configurations of its own options (its declared search space) and "
                    "of the recipe's learning rate and weight decay, each at the width that meets the budget, "
                    "trained and scored on a validation split held out of the training set (Optuna: TPE, a pruner "
                    "on the validation accuracy at 25/50/75%% of the steps, trials in a database); then its best "
                    "configuration and its default retrained on --seeds fresh seeds and compared on the test set. "
                    "Writes report.md, results.json and plots in --out; rerunning goes on. Needs "
                    "pip install 'factorconv[tune]'. See docs/tune.md.")
    p.add_argument("--model", default="resnet20", help="backbone (default resnet20)")
    p.add_argument("--convs", default="conv,igcv2,acdc", help="operators (default conv,igcv2,acdc)")
    p.add_argument("--budget", default=DEFAULT_BUDGET,
                   help=f"one budget, KIND=COUNT as for compare (default {DEFAULT_BUDGET}; none: width 1)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"the recipe being tuned (default {DEFAULT_PRESET})")
    p.add_argument("--trials", type=count(), default=DEFAULT_TRIALS,
                   help=f"trials per operator: the same effort for each (default {DEFAULT_TRIALS})")
    p.add_argument("--space", action="append", default=[], metavar="[OP:]NAME=VALUE",
                   help="restrict or fix a dimension: lr=0.05 (a recipe field, every operator), igcv2:L=3 (fix), "
                        "acdc:atoms=4..12 (narrow a range), acdc:share=net|stage (narrow a choice); repeatable")
    p.add_argument("--seeds", type=count(), default=3, help="fresh paired seeds of the confirmation (default 3)")
    p.add_argument("--pruner", default="median", choices=PRUNERS, help="trial pruner (default median)")
    p.add_argument("--holdout", type=count(), default=DEFAULT_HOLDOUT,
                   help=f"training images held out as the validation split (default {DEFAULT_HOLDOUT})")
    p.add_argument("--storage", default=None,
                   help="the study's database: a SQLAlchemy URL (postgresql://user@host/db for many machines; "
                        "default SQLite tune.db in --out)")
    p.add_argument("--reference", default=None, help="operator the tuned ones are compared with (default conv)")
    p.add_argument("--data", default="fashion-mnist", help="data set (default fashion-mnist)")
    p.add_argument("--data-dir", default=None, help="where the data set is")
    p.add_argument("--workers", type=count(), default=None,
                   help="trials at a time (default: CPU cores / --threads-per-run)")
    p.add_argument("--threads-per-run", type=count(), default=1, help="torch threads of every run (default 1)")
    p.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="local worker processes (default) or Ray (pip install 'factorconv[cluster]')")
    p.add_argument("--ray-address", default=None, help="ray: an existing cluster (default: a local Ray)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config field of every run")
    p.add_argument("--out", default=None, help="study directory (default runs/tune-<model>-<data>-<budget>-<preset>)")
    p.add_argument("--json", action="store_true", help="print results.json instead of the summary")
    p.set_defaults(func=run)


def summary_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for op, r in results["operators"].items():
        best = r["best"]
        diff = r["tuned_vs_default"]
        said = "" if not diff else (f"tuned - default {diff['mean']:+.2f}" + (
            f" [{diff['ci_low']:+.2f}, {diff['ci_high']:+.2f}] {diff['verdict']}" if diff.get("ci_low") is not None
            else ""))
        lines.append(f"{op}: {r['counted']} trials ({r['complete']} complete, {sum(r['pruned'].values())} pruned, "
                     f"{r['failed']} failed); best " + (f"{best['params']} val {100 * best['val_acc']:.2f}%"
                                                         if best else "none") + (f"; {said}" if said else ""))
    return lines


def run(args: argparse.Namespace) -> int:
    from ..study.spec import parse_budgets
    from ..tune import TuneSpec, run_tune

    spec = TuneSpec(
        model=args.model, convs=[c.strip() for c in args.convs.split(",") if c.strip()], budget=args.budget,
        data=args.data, data_dir=args.data_dir, preset=args.preset, trials=args.trials, seeds=args.seeds,
        space=list(args.space), pruner=args.pruner, storage=args.storage, holdout=args.holdout,
        reference=args.reference, threads=args.threads_per_run, overrides=parse_options(args.set, "--set"),
        command="factorconv " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["tune"] else None,
    ).validate()
    budgets = parse_budgets(spec.budget)
    out = args.out or str(Path("runs") / f"tune-{spec.model}-{spec.data}-{budgets[0].tag if budgets else 'none'}-"
                                         f"{spec.preset}")
    results = run_tune(spec, out, executor=args.executor, workers=args.workers, ray_address=args.ray_address)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print("\n".join(summary_lines(results)))
        print(f"\nreport: {Path(out) / 'report.md'}   data: {Path(out) / 'results.json'}")
    return 0
