"""`factorconv report`: rebuilding a study's table, report and plot from its directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .args import flagged_status


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="rebuild a study's (or a tuning study's) report from its directory")
    p.add_argument("dir", help="the study directory (compare --out, or tune --out)")
    p.add_argument("--json", action="store_true", help="print results.json instead of the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..study import build_report, summarize_text

    if (Path(args.dir) / "tune.json").exists():
        from ..tune import build_tune_report
        from .tune_cmd import summary_lines

        results = build_tune_report(args.dir)
        print(json.dumps(results, indent=2, default=str) if args.json else "\n".join(summary_lines(results)))
        return 0
    results = build_report(args.dir)
    print(json.dumps(results, indent=2, default=str) if args.json else summarize_text(results))
    return flagged_status(results)
