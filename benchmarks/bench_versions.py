"""Did a change move the operators' speed? `factorconv bench ops` for two git revisions, alternately in fresh
processes (A, B, A, B, ...), and every ratio's change against how much the same code moves between processes.

    .venv/bin/python benchmarks/bench_versions.py REV_A REV_B [--runs 2] [--changed osep,igcv2,...]

A ratio (operator time / nn.Conv2d time, one process) moves between processes even for the same code (oneDNN's
kernel choice and memory placement differ per process), so the check compares the relative change of the
operators the change touched (`--changed`) with that of the operators it did not: a change within the spread
of untouched operators is noise. Writes benchmarks/results/bench_versions.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from factorconv.bench import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
_RUN = ("import json, sys, torch; sys.path.insert(0, sys.argv[1]); from factorconv.bench import bench_ops; "
        "torch.set_num_threads(2); print(json.dumps(bench_ops(device='cpu', repeats=20)))")


def _ratios(tree: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _RUN, str(tree)], capture_output=True, text=True, check=True,
                         cwd=tree).stdout
    rows = json.loads(out.strip().splitlines()[-1])["rows"]
    return {f"{r['conv']} {r['mode']} {'CL' if r['channels_last'] else 'NCHW'}": r["ratio"] for r in rows}


def _stats(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"n": len(values), "median": statistics.median(values), "p90": values[max(0, int(0.9 * len(values)) - 1)],
            "max": values[-1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rev_a")
    p.add_argument("rev_b")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--changed", default="osep,sosep,igcv1,igcv2,acdc", help="operators the change touched")
    args = p.parse_args(argv)
    changed = set(args.changed.split(","))
    runs: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for side, rev in (("a", args.rev_a), ("b", args.rev_b)):
            trees[side] = Path(tmp) / side
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(trees[side]), rev], cwd=ROOT, check=True)
        try:
            for _ in range(args.runs):
                for side in ("a", "b"):
                    runs[side].append(_ratios(trees[side]))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    rows, groups = [], {"changed": [], "unchanged": []}
    for key in runs["a"][0]:
        op = key.split()[0].split("[")[0]
        if op == "conv":
            continue
        a = statistics.mean(r[key] for r in runs["a"])
        b = statistics.mean(r[key] for r in runs["b"])
        rel = abs(b - a) / a
        groups["changed" if op in changed else "unchanged"].append(rel)
        rows.append({"setting": key, "a": [r[key] for r in runs["a"]], "b": [r[key] for r in runs["b"]],
                     "rel_change": rel, "changed": op in changed})
    data = {"command": "python benchmarks/bench_versions.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine_info(), "rev_a": args.rev_a, "rev_b": args.rev_b, "runs": args.runs,
            "changed": sorted(changed), "rows": rows, "summary": {g: _stats(v) for g, v in groups.items() if v}}
    (RESULTS / "bench_versions.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"# `factorconv bench ops` at {args.rev_a} (A) and {args.rev_b} (B), {args.runs} fresh processes each",
             "", f"Command: `{data['command']}`  ", f"Machine: {data['machine']['cpu']}, 2 threads, torch "
             f"{data['machine']['torch']}", "", "Relative change of the mean ratio to nn.Conv2d from A to B:", "",
             "| operators | settings | median | 90th percentile | max |", "|---|---|---|---|---|"]
    for group, s in data["summary"].items():
        names = ", ".join(sorted(changed)) if group == "changed" else "the others"
        lines.append(f"| {group} ({names}) | {s['n']} | {100 * s['median']:.1f}% | {100 * s['p90']:.1f}% | "
                     f"{100 * s['max']:.1f}% |")
    lines += ["", "| setting | A | B | change |", "|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["rel_change"]):
        lines.append(f"| {r['setting']}{' (changed)' if r['changed'] else ''} | "
                     f"{' / '.join(f'{v:.2f}' for v in r['a'])} | {' / '.join(f'{v:.2f}' for v in r['b'])} | "
                     f"{100 * r['rel_change']:.0f}% |")
    (RESULTS / "bench_versions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
