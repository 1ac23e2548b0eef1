"""`factorconv reproduce`: a paper's comparison as a named study, with a verdict per claim."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .args import UsageError, add_executor_args, count, executor_from_args, flagged_status, parse_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce", help="a paper's comparison as a named study, with the paper's numbers and a verdict per claim",
        description="Run one of the papers' comparison tables as a study (paired seeds) and print the paper's "
                    "numbers beside ours with a verdict on each claim. --scale cpu: Fashion-MNIST, minutes on 2 "
                    "cores; --scale paper: the paper's backbone, data and recipe (a GPU machine or a cluster). "
                    "--dry-run prints the plan (widths and counts beside the paper's) without training; its exit "
                    "status is 1 when a count is off by more than the table's tolerance.")
    p.add_argument("name", nargs="?", help="the study (--list shows them)")
    p.add_argument("--list", action="store_true", help="list the named studies")
    p.add_argument("--scale", default="cpu", choices=("cpu", "paper"), help="cpu (default) or paper")
    p.add_argument("--dry-run", action="store_true", help="print the plan and counts, do not train")
    p.add_argument("--seeds", type=count(), default=None, help="paired seeds (default: the study's, 3 or 5)")
    p.add_argument("--data-dir", default=None, help="where the data set is")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config field for every run")
    p.add_argument("--out", default=None, help="study directory (default: runs/reproduce-<name>-<scale>)")
    p.add_argument("--json", action="store_true", help="print the plan or the claims as JSON")
    p.add_argument("--replicate", metavar="RECORD", default=None,
                   help="a recorded reproduce.json (ours: benchmarks/results/reproduce_<name>_cpu.json): run the "
                        "study here, in a fresh directory (default runs/replicate-<name>-<scale>), at the record's "
                        "seeds, and print per claim the recorded and the new difference, whether the verdict is "
                        "the same, and their Welch difference (exit status 1 when a verdict changed or the two "
                        "differ)")
    add_executor_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..reproduce import get_reproduction, list_reproductions, plan, render_claims, render_plan, reproduce

    if args.list or not args.name:
        if not args.list:
            raise UsageError("name a study (factorconv reproduce --list shows them)")
        for study in list_reproductions():
            print(f"{study.name:<16} {study.source}")
        return 0
    study = get_reproduction(args.name)
    if args.dry_run:
        rows = plan(study, args.scale)
        if args.json:
            seeds = args.seeds or study.scale(args.scale)["seeds"]
            print(json.dumps({"study": study.name, "scale": args.scale, "seeds": seeds, "runs": seeds * len(rows),
                              "rows": rows}, indent=2))
        else:
            print(render_plan(study, args.scale, rows, seeds=args.seeds), end="")
        return 1 if any(r["ok"] is False for r in rows) else 0
    recorded = _recorded(args, study.name) if args.replicate else None
    kind = "replicate" if recorded else "reproduce"
    out = args.out or str(Path("runs") / f"{kind}-{study.name}-{args.scale}")
    if recorded and Path(out).resolve() == Path(recorded["path"]).parent.resolve():
        raise UsageError(f"--out {out} is the directory {args.replicate} was recorded from: its finished runs would "
                         "be reused, not replicated; give another --out")
    seeds = args.seeds or (recorded["seeds"] if recorded and isinstance(recorded["seeds"], int) else None)
    command = "factorconv " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else None
    result = reproduce(study, args.scale, out, executor=executor_from_args(args, out), seeds=seeds,
                       data_dir=args.data_dir, overrides=parse_options(args.set, "--set"), command=command)
    if args.json and not recorded:
        print(json.dumps({k: v for k, v in result.items() if k != "results"}, indent=2, default=str))
    elif not args.json:
        print(render_claims(study, args.scale, result["claims"]), end="")
        print(f"\nclaims: {Path(out) / 'reproduce.md'}   study report: {Path(out) / 'report.md'}")
    status = flagged_status(result["results"])
    if recorded:
        from ..study.replication import compare_records, read_comparisons, render_replication

        replication = compare_records(recorded, read_comparisons(Path(out) / "reproduce.json"))
        (Path(out) / "replication.json").write_text(json.dumps(replication, indent=2, default=str) + "\n")
        print(json.dumps(replication, indent=2, default=str) if args.json else "\n" + render_replication(replication),
              end="" if not args.json else "\n")
        status = max(status, 1 if replication["verdicts_changed"] or replication["differ"] else 0)
    return status


def _recorded(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The record --replicate names, read before any training so that a bad one costs nothing."""
    from ..study import StudyError
    from ..study.replication import read_comparisons

    try:
        recorded = read_comparisons(args.replicate)
    except StudyError as err:
        raise UsageError(f"--replicate: {err}") from None
    if recorded["kind"] != "reproduce" or recorded["study"] != name:
        what = f"reproduce study {recorded['study']!r}" if recorded["kind"] == "reproduce" else "a compare study"
        raise UsageError(f"--replicate: {args.replicate} records {what}, not reproduce study {name!r}")
    return recorded
