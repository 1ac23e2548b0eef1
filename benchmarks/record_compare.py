"""Record a finished `factorconv compare` study under benchmarks/results/ and, for the default study, rewrite
the README's table between its `<!-- compare:default -->` and `<!-- /compare:default -->` markers.

    .venv/bin/python benchmarks/record_compare.py STUDY_DIR NAME --command "..." --wall "13 min 40 s" \\
        [--note "..."] [--readme]

Writes benchmarks/results/NAME.md (a header with the command, wall time and machine, then the study's
report.md with its plot renamed NAME.png), NAME.png and NAME.json (the study's results.json). The README
block holds the summary line, the table and a link to NAME.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from factorconv.study import build_report, render_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {name} --> ... <!-- /{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="the study directory")
    p.add_argument("name", help="file stem under benchmarks/results/")
    p.add_argument("--command", required=True, help="the command that ran the study, as a user types it")
    p.add_argument("--wall", required=True, help="its wall time as measured (e.g. '13 min 40 s, setup included')")
    p.add_argument("--note", default="", help="a paragraph to put before the report")
    p.add_argument("--readme", action="store_true", help="also rewrite the README's compare:default block")
    args = p.parse_args(argv)
    study = Path(args.study)
    results = build_report(study)
    RESULTS.mkdir(exist_ok=True)
    report = (study / "report.md").read_text().replace("](study.png)", f"]({args.name}.png)")
    report = report.replace(str(study.resolve()) + "/", "").replace(str(study) + "/", "")
    machine = results["latency"].get("machine", {})
    header = [f"# `{args.command}`", "", f"Wall time: {args.wall}. Machine: {machine.get('cpu', '?')}, torch "
              f"{machine.get('torch', '?')}.", ""]
    if args.note:
        header += [args.note, ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(header) + "Report as written to the study directory (run "
                                             "paths relative to it):\n\n" + report.replace("\n# ", "\n## ", 1))
    if (study / "study.png").exists():
        shutil.copyfile(study / "study.png", RESULTS / f"{args.name}.png")
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.readme:
        readme = ROOT / "README.md"
        seeds = results["spec"]["seeds"]
        body = (f"`{args.command}`: {args.wall}; {seeds} paired seeds per operator; full report, conclusions and plot "
                f"in [benchmarks/results/{args.name}.md](benchmarks/results/{args.name}.md).\n\n"
                + render_table(results["rows"], results["axes"]) + "\n")
        readme.write_text(replace_block(readme.read_text(), "compare:default", body))
    print(f"recorded {RESULTS / args.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
