"""ACDC's Figure 5 at CPU scale: MAML with a standard CNN against ACDC-net (coefficients shared across the
network) at two depths (Conv-4, Conv-8: the same width, twice the layers), 5-way 1-shot and 5-shot, on
Fashion-MNIST (meta-train on classes 0-4 and their rotated copies, 20 classes; meta-test on classes 5-9).
The paper's claim: plain MAML gets worse as the network deepens, MAML-ACDC does not.

    .venv/bin/python benchmarks/fewshot_maml.py [--iterations 300] [--test-episodes 500] [--workers 2]
        [--seeds 0,1,2] [--shots 1,5] [--models conv4,conv8]
    .venv/bin/python benchmarks/fewshot_maml.py --render        # rewrite the report from the JSON

Every configuration is tested on the same 500 episodes, so differences are paired episode by episode. Writes
benchmarks/results/fewshot_maml.{json,md}; a configuration already in the JSON (same settings) is not rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from factorconv.adapt import MAMLConfig, compare_episodes, run_fewshot
from factorconv.bench import machine_info
from factorconv.study.stats import summarize, verdict

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("conv4", "conv8")
OPERATORS = {"conv": None, "acdc": {"share": "net"}}
SHOTS = (1, 5)


def _key(model: str, op: str, shots: int, seed: int = 0) -> str:
    """A run's key; runs of meta-training seeds after the first (settings["seed"]) carry it."""
    return f"{model}/{op}/{shots}-shot" + (f"/seed{seed}" if seed else "")


def _run(args: tuple[str, str, int, int, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    model, op, shots, seed, settings = args
    cfg = MAMLConfig(shots=shots, **{**settings, "seed": seed})
    result = run_fewshot(model, None if op == "conv" else op, cfg, conv_kwargs=OPERATORS[op], threads=1)
    return _key(model, op, shots, seed), result


def _seed_rows(runs: dict[str, Any]) -> list[str]:
    """Per comparison, the episode-mean paired difference of every meta-training seed both sides have, and
    their mean with a Student-t interval over seeds: the variation the episode intervals leave out."""
    seeds = sorted({0} | {int(k.rsplit("seed", 1)[1]) for k in runs if "/seed" in k})
    if len(seeds) < 2:
        return []
    lines = ["", f"## Over meta-training seeds ({', '.join(map(str, seeds))})", "",
             "Each seed meta-trains every network afresh (initialisation and training episodes); the test "
             "episodes stay the same. Per seed: the mean over episodes of the paired difference; then the mean "
             "over seeds with a Student-t 95% interval over seeds.", "",
             "| shots | comparison | per seed | mean over seeds (95% CI) | verdict |", "|---|---|---|---|---|"]
    for shots in SHOTS:
        for name, (ma, oa), (mb, ob) in _COMPARISONS:
            per_seed = []
            for seed in seeds:
                a, b = runs.get(_key(ma, oa, shots, seed)), runs.get(_key(mb, ob, shots, seed))
                if a and b:
                    per_seed.append(compare_episodes(a, b).mean)
            if len(per_seed) < 2:
                continue
            d = summarize(per_seed)
            lines.append(f"| {shots} | {name} | {' / '.join(f'{v:+.2f}' for v in per_seed)} | {d.mean:+.2f} "
                         f"[{d.ci_low:+.2f}, {d.ci_high:+.2f}] | {verdict(d)} |")
    return lines


_COMPARISONS = (("Conv-8 − Conv-4, standard (the paper: worse)", ("conv8", "conv"), ("conv4", "conv")),
                ("Conv-8 − Conv-4, ACDC-net (the paper: not worse)", ("conv8", "acdc"), ("conv4", "acdc")),
                ("ACDC-net − standard, Conv-4", ("conv4", "acdc"), ("conv4", "conv")),
                ("ACDC-net − standard, Conv-8", ("conv8", "acdc"), ("conv8", "conv")))


def render(data: dict[str, Any]) -> str:
    runs = data["runs"]
    s = data["settings"]
    lines = ["# MAML with ACDC-net at two depths (ACDC's Figure 5), CPU scale", "",
             f"Command: `{data['command']}`  ", f"Machine: {data['machine'].get('cpu', '?')}, 1 thread per run, "
             f"two runs at a time; torch {data['machine'].get('torch', '?')}; wall time {data['wall_minutes']:.1f} "
             "min", "",
             f"Fashion-MNIST: meta-training on classes 0-4 and their 90/180/270-degree rotations (20 classes), "
             f"meta-test on classes 5-9; 5-way episodes with {s['queries']} queries per class; "
             f"{'first-order' if s.get('first_order') else 'second-order'} MAML, inner lr {s['inner_lr']}, "
             f"{s['inner_steps']} inner steps in meta-training and {s['test_inner_steps']} at test, meta-batch "
             f"{s['meta_batch']}, Adam {s['meta_lr']}, {s['iterations']} iterations; "
             f"BatchNorm with episode statistics. Accuracy: mean over {s['test_episodes']} test episodes (the same "
             "episodes for every row) with its 95% interval; one meta-training run per row (seed 0), so the "
             "interval covers the choice of test episodes, not the meta-training seed.", "",
             "| shots | model | operator | params | accuracy % (95% CI) | meta-train min |",
             "|---|---|---|---|---|---|"]
    for shots in SHOTS:
        for model in MODELS:
            for op in OPERATORS:
                r = runs.get(_key(model, op, shots))
                if r is None:
                    continue
                a = r["accuracy"]
                lines.append(f"| {shots} | {model} | {'ACDC-net' if op == 'acdc' else 'standard'} | "
                             f"{r['params']:,} | {a['mean']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}] | "
                             f"{r['train_seconds'] / 60:.1f} |")
    lines += ["", "## Paired differences (episode by episode)", "",
              "| shots | comparison | Δ points (95% CI) | verdict |", "|---|---|---|---|"]
    for shots in SHOTS:
        pairs = [(name, _key(*a, shots), _key(*b, shots)) for name, a, b in _COMPARISONS]
        for name, a, b in pairs:
            if a in runs and b in runs:
                d = compare_episodes(runs[a], runs[b])
                lines.append(f"| {shots} | {name} | {d.mean:+.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}] | "
                             f"{verdict(d)} |")
    lines += _seed_rows(runs)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--test-episodes", type=int, default=500)
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", default="0", help="meta-training seeds, e.g. 0,1,2 (the first table shows seed 0)")
    p.add_argument("--shots", default="1,5", help="which of 1 and 5 shots to run")
    p.add_argument("--models", default=",".join(MODELS), help="which of the backbones to run")
    p.add_argument("--render", action="store_true", help="only rewrite the report from the recorded JSON")
    args = p.parse_args(argv)
    out = RESULTS / "fewshot_maml.json"
    if args.render:
        (RESULTS / "fewshot_maml.md").write_text(render(json.loads(out.read_text())))
        return 0
    settings = {k: v for k, v in MAMLConfig(iterations=args.iterations, test_episodes=args.test_episodes,
                                            first_order=args.first_order).to_dict().items() if k != "shots"}
    data = json.loads(out.read_text()) if out.is_file() else {}
    if data.get("settings") != settings:
        data = {"settings": settings, "runs": {}}
    command = " ".join(["python benchmarks/fewshot_maml.py", *(sys.argv[1:] if argv is None else argv)])
    data["commands"] = [*data.get("commands", [data["command"]] if "command" in data else []), command]
    data["command"] = " ; ".join(dict.fromkeys(data["commands"]))
    data["machine"] = machine_info()
    seeds = [int(v) for v in args.seeds.split(",")]
    shots_wanted = [int(v) for v in args.shots.split(",")]
    models = args.models.split(",")
    todo = [(m, op, shots, seed, settings) for shots in SHOTS if shots in shots_wanted for m in MODELS if m in models
            for op in OPERATORS for seed in seeds if _key(m, op, shots, seed) not in data["runs"]]
    todo.sort(key=lambda t: (-t[2], t[0] != "conv8"))  # the longest (5-shot, Conv-8) first: better packing
    start, before = time.perf_counter(), data.get("wall_minutes", 0.0)
    with ProcessPoolExecutor(args.workers) as pool:
        for key, result in pool.map(_run, todo):
            data["runs"][key] = result
            a = result["accuracy"]
            print(f"{key}: {a['mean']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}], "
                  f"{result['train_seconds'] / 60:.1f} min meta-training", flush=True)
            data["wall_minutes"] = before + (time.perf_counter() - start) / 60
            out.write_text(json.dumps(data, indent=1) + "\n")  # a partial record survives an interruption
    data.setdefault("wall_minutes", before)
    (RESULTS / "fewshot_maml.md").write_text(render(data))
    print(f"wrote {RESULTS / 'fewshot_maml.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
