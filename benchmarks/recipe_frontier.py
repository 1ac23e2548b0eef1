"""The measurements behind the default study recipe: candidate recipes (steps, batch, peak learning rate,
warm-up) run as ordinary `factorconv compare` studies over several operators and paired seeds, at the
default 50k deploy-parameter budget on Fashion-MNIST (an included study may have another: the table says
which); per recipe the worst operator's seed std, the lowest operator mean and the compute it took. Reruns skip
every finished run (the studies resume), so candidates can be added and the table rebuilt.

    .venv/bin/python benchmarks/recipe_frontier.py --convs conv,igcv2,dsep --seeds 3 --recipes b64-s230-lr0.1,...
    .venv/bin/python benchmarks/recipe_frontier.py --report        # rebuild the table from the studies
    .venv/bin/python benchmarks/recipe_frontier.py --report --keep-recorded --include study-long=DIR
                                                                   # add a study to the recorded rows

Writes benchmarks/results/recipe_frontier.{json,md}; the studies live under runs/recipe-frontier/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from factorconv.bench import machine_info
from factorconv.study import LocalExecutor, StudySpec, build_report, run_study

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
STUDIES = Path("runs") / "recipe-frontier"

# A candidate is the default study preset with its length, batch and learning rate (and a few more options)
# changed, so that one of them is the default itself.
PRESET = "study"
DEFAULT_BUDGET = "params=50k"
FIELDS = {"b": "batch_size", "s": "steps", "lr": "lr", "ls": "label_smoothing", "pct": "onecycle_pct",
          "wd": "weight_decay", "pad": "augment_pad"}


def candidate(name: str) -> dict[str, Any]:
    """'b64-s230-lr0.1[-ls0.1][-pct0.3]' -> config overrides of the study preset: batch, steps, peak lr, ..."""
    values: dict[str, Any] = {}
    for part in name.split("-"):
        key, value = part.rstrip("0123456789."), part.lstrip("abcdefghijklmnopqrstuvwxyz")
        field = FIELDS.get(key)
        if field is None or not value:
            raise SystemExit(f"recipe {name!r}: cannot read {part!r} (b64, s230, lr0.1, ls0.1, pct0.3, wd0, pad2)")
        values[field] = int(value) if field in ("batch_size", "steps", "augment_pad") else float(value)
    return values


def study_dir(name: str) -> Path:
    return STUDIES / name


def summarize_study(name: str, out: Path) -> dict[str, Any]:
    results = build_report(out)
    spec = results["spec"]
    rows = [r for r in results["rows"] if r["accuracy"] is not None]
    per_op = {r["conv"]: {"mean": r["accuracy"]["mean"], "std": r["accuracy"]["std"],
                          "accs": [x["acc"] for x in r["runs"]], "diverged": r["diverged"],
                          "not_converged": r["not_converged"]} for r in results["rows"]}
    seconds = 0.0
    for run in out.glob("runs/*/*/seed*/result.json"):
        seconds += json.loads(run.read_text()).get("seconds", 0.0)
    stds = [r["accuracy"]["std"] for r in rows if r["accuracy"]["std"] is not None]
    budgets = sorted({r["budget"] for r in results["rows"] if r["budget"]})
    return {"recipe": name, "study": str(out), "preset": spec["preset"], "overrides": spec["overrides"],
            "budget": ",".join(budgets) or None, "operators": per_op,
            "worst_std": max(stds) if stds else None, "lowest_mean": min(r["accuracy"]["mean"] for r in rows),
            "runs": sum(len(r["runs"]) for r in results["rows"]), "run_seconds": seconds,
            "test_images": _test_subset(out),
            "diverged": results["flags"]["diverged"], "not_converged": results["flags"]["not_converged"]}


def _test_subset(out: Path) -> int | None:
    """The test subset the study's runs evaluated on (None: the whole test set), from a run's config."""
    for config in out.glob("runs/*/*/seed*/config.json"):
        return json.loads(config.read_text()).get("test_subset")
    return None


def render(records: list[dict[str, Any]], command: str, kept: bool = False, note: str = "") -> str:
    convs = list(dict.fromkeys(c for r in records for c in r["operators"]))
    lines = ["# Recipe frontier: the measurements behind the default study recipe", "",
             f"Command: `{command}`  ", f"Machine: {machine_info()['cpu']}, 1 thread per run, torch "
             f"{machine_info()['torch']}", "",
             "Each recipe is a `factorconv compare` study (ResNet-20 on Fashion-MNIST, at the deploy-parameter "
             "budget of its `budget` column, paired seeds, float32, a fixed test subset: `test images`): the "
             "`study` preset with the batch (b), steps (s) and peak learning rate (lr) of its name; the first "
             "screen (amp off, no label smoothing, flips only: the same recipe) ran on the `quick` preset with "
             "those fields set. Cells are "
             "mean ± sample std of test accuracy % over the seeds; flagged: diverged / not converged runs (health "
             "judged from each run's loss trace); `run s` is the mean wall seconds of a run (training + "
             "evaluation; runs of the slow operators weigh more when fewer operators were run), two runs at a time"
             " on the 2 cores; the screens shared the machine with other work at times, so seconds compare only "
             "roughly across rows." + (" Rows not measured by this command were kept from the recorded table "
             "(`--keep-recorded`): their studies are no longer on disk." if kept else "")
             + (" " + note if note else ""), "",
             "| recipe | budget | test images | seeds | " + " | ".join(convs)
             + " | worst std | lowest mean | flagged | run s per op·seed |",
             "|---|---|---|---|" + "---|" * (len(convs) + 4)]
    for r in sorted(records, key=lambda r: r["run_seconds"] / max(r["runs"], 1)):
        cells = []
        for c in convs:
            op = r["operators"].get(c)
            cells.append("" if op is None else f"{op['mean']:.2f} ± {op['std']:.2f}" if op["std"] is not None
                         else "diverged" if op["mean"] is None else f"{op['mean']:.2f}")
        flagged = f"{r['diverged']} div, {r['not_converged']} nc" if r["diverged"] or r["not_converged"] else "0"
        seeds = max(len(op["accs"]) for op in r["operators"].values())
        # records made before the column existed were all at the default budget
        budget = r.get("budget") or DEFAULT_BUDGET
        lines.append(f"| {r['recipe']} | {budget} | {r['test_images'] or 'all'} | {seeds} | " + " | ".join(cells)
                     + f" | {r['worst_std']:.2f} | {r['lowest_mean']:.2f} | "
                     f"{flagged} | {r['run_seconds'] / max(r['runs'], 1):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default="", help="comma-separated candidate names (see candidate())")
    p.add_argument("--convs", default="conv,dsep,doconv,acdc,igcv2,osep,bdsc")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--report", action="store_true", help="only rebuild the table from the recorded studies")
    p.add_argument("--include", action="append", default=[], metavar="NAME=DIR",
                   help="also tabulate a study run elsewhere (the default compare, study-long), as NAME")
    p.add_argument("--keep-recorded", action="store_true",
                   help="keep the rows of the recorded recipe_frontier.json whose studies are not here (their run "
                        "directories are gone); a study measured now replaces the recorded row of its name")
    p.add_argument("--note", default="", help="a sentence to add to the table's explanation (how a row was run)")
    args = p.parse_args(argv)
    command = "python benchmarks/recipe_frontier.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for name in [r for r in args.recipes.split(",") if r] if not args.report else []:
        spec = StudySpec(convs=args.convs.split(","), seeds=args.seeds, preset=PRESET, overrides=candidate(name),
                         command=command)
        t0 = time.perf_counter()
        run_study(spec, study_dir(name), executor=LocalExecutor(args.workers), measure_latency=False)
        print(f"{name}: {time.perf_counter() - t0:.0f} s wall", file=sys.stderr)
    records = [summarize_study(d.name, d) for d in sorted(STUDIES.glob("*")) if (d / "study.json").exists()]
    for item in args.include:
        label, _, where = item.partition("=")
        records.append(summarize_study(label, Path(where)))
    if args.keep_recorded and (RESULTS / "recipe_frontier.json").exists():
        measured = {r["recipe"] for r in records}
        recorded = json.loads((RESULTS / "recipe_frontier.json").read_text())["records"]
        records = [r for r in recorded if r["recipe"] not in measured] + records
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recipe_frontier.json").write_text(json.dumps({"command": command, "machine": machine_info(),
                                                              "records": records}, indent=2) + "\n")
    text = render(records, command, kept=args.keep_recorded, note=args.note)
    (RESULTS / "recipe_frontier.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
