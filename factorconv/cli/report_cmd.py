"""`factorconv report`: rebuilding a study's table, report and plot from its directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .args import UsageError, flagged_status


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="rebuild a study's (or a tuning study's) report from its directory")
    p.add_argument("dir", help="the study directory (compare --out, or tune --out)")
    p.add_argument("--json", action="store_true", help="print results.json instead of the table")
    p.add_argument("--against", metavar="RESULTS", default=None,
                   help="another run of the same study (its results.json or directory): per comparison, both "
                        "differences, whether the verdict is the same, and their Welch difference (exit status 1 "
                        "when a verdict changed or the two differ)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..study import build_report, summarize_text

    if (Path(args.dir) / "tune.json").exists():
        from ..tune import build_tune_report
        from .tune_cmd import summary_lines

        results = build_tune_report(args.dir)
        print(json.dumps(results, indent=2, default=str) if args.json else "\n".join(summary_lines(results)))
        return 0
    if args.against:
        return _against(args)
    results = build_report(args.dir)
    print(json.dumps(results, indent=2, default=str) if args.json else summarize_text(results))
    return flagged_status(results)


def _against(args: argparse.Namespace) -> int:
    from ..study import StudyError, build_report
    from ..study.replication import compare_records, read_comparisons, render_replication

    try:
        recorded = read_comparisons(args.against)
    except StudyError as err:
        raise UsageError(f"--against: {err}") from None
    build_report(args.dir)  # refreshes results.json from the run files
    replication = compare_records(recorded, read_comparisons(Path(args.dir) / "results.json"))
    print(json.dumps(replication, indent=2, default=str) if args.json else render_replication(replication), end="")
    return 1 if replication["verdicts_changed"] or replication["differ"] else 0
