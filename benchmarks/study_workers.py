"""How to spend a machine's cores on a study of small models: N worker processes of T threads each, N·T =
the cores. Runs the same small study (ResNet-20 on Fashion-MNIST at the default 50k budget, one seed, a short
recipe) once per layout, alternating layouts over repeats, and reports the wall time of each and its ratio to
one worker with every core. `factorconv compare` takes its default `--workers` from this.

    .venv/bin/python benchmarks/study_workers.py [--repeats 2] [--steps 40]

Writes benchmarks/results/study_workers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from factorconv.bench import machine_info
from factorconv.study import LocalExecutor, StudySpec, run_study

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--convs", default="conv,dsep,doconv,acdc,igcv2,osep,bdsc")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    layouts = [(w, cores // w) for w in range(1, cores + 1) if cores % w == 0]
    times: dict[str, list[float]] = {f"{w}x{t}": [] for w, t in layouts}
    overrides = {"steps": args.steps, "batch_size": 64, "test_subset": 1000, "amp": "off", "progress": "off"}
    for _ in range(args.repeats):
        for workers, threads in layouts:
            out = Path(tempfile.mkdtemp(prefix="study-workers-"))
            spec = StudySpec(convs=args.convs.split(","), seeds=1, threads=threads, overrides=overrides)
            t0 = time.perf_counter()
            run_study(spec, out, executor=LocalExecutor(workers), measure_latency=False)
            times[f"{workers}x{threads}"].append(time.perf_counter() - t0)
            shutil.rmtree(out, ignore_errors=True)
    base = statistics.median(times[f"1x{cores}"])
    rows = [{"layout": k, "workers": int(k.split("x")[0]), "threads": int(k.split("x")[1]),
             "seconds": v, "median_s": statistics.median(v), "ratio_to_one_worker": statistics.median(v) / base}
            for k, v in times.items()]
    command = "python benchmarks/study_workers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    record = {"command": command, "machine": machine_info(), "study": {"convs": args.convs, "steps": args.steps,
                                                                       "batch": 64, "seeds": 1}, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "study_workers.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# Workers × threads for a study of small models", "", f"Command: `{command}`  ",
             f"Machine: {record['machine']['cpu']}, {cores} cores, torch {record['machine']['torch']}", "",
             f"One study ({args.convs}, 1 seed, {args.steps} steps of batch 64, ResNet-20 on Fashion-MNIST at 50k "
             f"deploy params), run once per layout per repeat, layouts alternating; wall seconds (median of "
             f"{args.repeats}).", "", "| workers × threads | wall s (median) | runs | ratio to 1 worker |",
             "|---|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['layout']} | {r['median_s']:.1f} | {', '.join(f'{s:.1f}' for s in r['seconds'])} | "
                     f"{r['ratio_to_one_worker']:.2f} |")
    (RESULTS / "study_workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
