"""Do two runs of one `factorconv compare` study agree? (The same study on two CPUs, or under
`MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default`, which differ only by rounding.)

    .venv/bin/python benchmarks/study_agreement.py STUDY_A STUDY_B --labels normal,compat-kernels \\
        --name compare_default_agreement

STUDY_A and STUDY_B are study directories or recorded results (benchmarks/results/*.json).

Per operator it puts the two runs' means, intervals and verdicts side by side and applies three checks:
  - reversal: better in one run, worse in the other (a contradiction);
  - strict: each run's mean inside the other run's 95% CI (issue 17's wording);
  - Welch: the unpaired difference of the two runs' means has an interval that includes 0, at a family-wise
    95% over the operators (Bonferroni), the test whose false-alarm rate is what it says.
The strict check is not calibrated: two runs from one distribution fail it far more often than 5%, the more
so the more operators a study has. Its pass rate under identical distributions is estimated here by
simulation (normal accuracies, the studies' seed count and operator count), so a failure can be read
against it. Writes benchmarks/results/NAME.md and NAME.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from factorconv.study import build_report, t_quantile, welch_difference
from factorconv.study.stats import BETTER, WORSE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _rows(study: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """A study directory's rows (its results.json, or built from its runs), or a recorded results file's."""
    if study.is_file():
        data = json.loads(study.read_text())
    elif (study / "results.json").exists():
        data = json.loads((study / "results.json").read_text())
    else:
        data = build_report(study)
    return {(row["conv"], row["budget"]): row for row in data["rows"]}


def _accuracies(row: dict[str, Any]) -> list[float]:
    """The accuracies the row's summary is over (a diverged run's `acc` is None, as collect_rows writes it)."""
    return [run["acc"] for run in row["runs"] if run["acc"] is not None]


def strict_pass_rate(seeds: int, operators: int, trials: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """(per-operator, whole-study) probability that two runs drawn from one normal distribution pass the
    strict check (each mean inside the other's Student-t 95% CI), by simulation. It does not depend on the
    spread: the check is scale-free."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((trials, operators, seeds))
    b = rng.standard_normal((trials, operators, seeds))
    half = t_quantile(0.975, seeds - 1) / np.sqrt(seeds)
    gap = np.abs(a.mean(-1) - b.mean(-1))
    ok = (gap <= half * a.std(-1, ddof=1)) & (gap <= half * b.std(-1, ddof=1))
    return float(ok.mean()), float(ok.all(-1).mean())


def compare(study_a: Path, study_b: Path) -> dict[str, Any]:
    rows_a, rows_b = _rows(study_a), _rows(study_b)
    shared = [key for key in rows_a if key in rows_b]
    if not shared:
        raise SystemExit(f"{study_a} and {study_b} share no operator at one budget: nothing to compare")
    family = 1 - 0.05 / len(shared)
    out = []
    for key in shared:
        ra, rb = rows_a[key], rows_b[key]
        acc_a, acc_b = _accuracies(ra), _accuracies(rb)
        sa, sb = ra["accuracy"], rb["accuracy"]
        diff, low, high = welch_difference(acc_b, acc_a, confidence=family)
        out.append({
            "conv": key[0], "budget": key[1], "a": acc_a, "b": acc_b, "summary_a": sa, "summary_b": sb,
            "verdict_a": ra.get("verdict", ""), "verdict_b": rb.get("verdict", ""),
            "reversal": {ra.get("verdict"), rb.get("verdict")} == {BETTER, WORSE},
            "a_in_b": sb["ci_low"] <= sa["mean"] <= sb["ci_high"],
            "b_in_a": sa["ci_low"] <= sb["mean"] <= sa["ci_high"],
            "welch": {"difference": diff, "low": low, "high": high, "confidence": family},
            "welch_consistent": low <= 0 <= high,
        })
    seeds = min(len(r["a"]) for r in out)
    per_op, whole = strict_pass_rate(seeds, len(out))
    return {"study_a": str(study_a), "study_b": str(study_b), "rows": out,
            "reversals": sum(r["reversal"] for r in out),
            "strict_failures": sum(not (r["a_in_b"] and r["b_in_a"]) for r in out),
            "welch_inconsistent": sum(not r["welch_consistent"] for r in out),
            "strict_pass_rate": {"seeds": seeds, "operators": len(out), "per_operator": per_op, "study": whole}}


def render(result: dict[str, Any], labels: tuple[str, str], command: str) -> str:
    la, lb = labels
    conf = result["rows"][0]["welch"]["confidence"]
    lines = [f"# Agreement of two runs of one study: {la} vs {lb}", "", f"Command: `{command}`  ",
             f"{la}: `{result['study_a']}`; {lb}: `{result['study_b']}`", "",
             f"| conv | budget | {la} mean ± std | {la} 95% CI | {lb} mean ± std | {lb} 95% CI | verdict {la} | "
             f"verdict {lb} | reversal | {la} mean in {lb} CI | {lb} mean in {la} CI | "
             f"{lb} − {la} (Welch, {100 * conf:.1f}% CI) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        sa, sb, w = r["summary_a"], r["summary_b"], r["welch"]
        lines.append(
            f"| {r['conv']} | {r['budget']} | {sa['mean']:.2f} ± {sa['std']:.2f} | [{sa['ci_low']:.2f}, "
            f"{sa['ci_high']:.2f}] | {sb['mean']:.2f} ± {sb['std']:.2f} | [{sb['ci_low']:.2f}, {sb['ci_high']:.2f}] "
            f"| {r['verdict_a'] or 'reference'} | {r['verdict_b'] or 'reference'} | "
            f"{'yes' if r['reversal'] else 'no'} | {'yes' if r['a_in_b'] else 'no'} | "
            f"{'yes' if r['b_in_a'] else 'no'} | {w['difference']:+.2f} [{w['low']:+.2f}, {w['high']:+.2f}] |")
    rate = result["strict_pass_rate"]
    lines += [
        "",
        f"- Reversed verdicts (better in one run, worse in the other): {result['reversals']}.",
        f"- Strict check (each mean inside the other's 95% CI): {result['strict_failures']} of "
        f"{len(result['rows'])} operators fail it. Two runs drawn from one distribution pass it with probability "
        f"{rate['per_operator']:.2f} per operator and {rate['study']:.2f} for all {rate['operators']} at "
        f"{rate['seeds']} seeds (simulated, 200,000 trials; the check is scale-free, so no recipe changes this).",
        f"- Welch check (the unpaired difference of the means, family-wise 95% over {len(result['rows'])} "
        f"operators): {result['welch_inconsistent']} operator(s) differ between the runs.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study_a")
    p.add_argument("study_b")
    p.add_argument("--labels", default="a,b", help="two names for the runs, comma-separated")
    p.add_argument("--name", help="write benchmarks/results/NAME.md and NAME.json (default: print only)")
    args = p.parse_args(argv)
    labels = tuple(args.labels.split(","))
    if len(labels) != 2:
        raise SystemExit(f"--labels: expected two names separated by a comma, got {args.labels!r}")
    result = compare(Path(args.study_a), Path(args.study_b))
    command = "python benchmarks/study_agreement.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(result, labels, command)
    print(text)
    if args.name:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.name}.md").write_text(text)
        (RESULTS / f"{args.name}.json").write_text(json.dumps({**result, "labels": labels, "command": command},
                                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
