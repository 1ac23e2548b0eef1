"""Plain transfer at CPU scale (ACDC's adaptation argument): ResNet-20 (width 0.5, standard convs or ACDC-net)
trained on Fashion-MNIST classes 0-4, then fine-tuned on the held-out classes 5-9 updating only a part
(`train_only`: the classifier, + the BatchNorms, + ACDC's shared coefficients or its atoms, or everything),
against training from scratch; accuracy against the number of trained parameters, 3 paired seeds (seed k
pre-trains and fine-tunes with seed k, so every part is compared with full fine-tuning seed by seed).

    .venv/bin/python benchmarks/transfer_parts.py [--seeds 3] [--steps 360] [--tune-steps 180] [--out DIR]
    .venv/bin/python benchmarks/transfer_parts.py --render

Writes benchmarks/results/transfer_parts.{json,md,png}; runs live under --out (default runs/transfer-parts) and
a finished run is not trained again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from factorconv.bench import machine_info
from factorconv.study.stats import paired_difference, summarize
from factorconv.study.stats import verdict as difference_verdict
from factorconv.train import fit, resolve_config

RESULTS = Path(__file__).resolve().parent / "results"
OPERATORS = {"conv": {}, "acdc": {"share": "net"}}
PARTS = {"conv": ("head", "bn+head", "all"), "acdc": ("head", "bn+head", "coefficients+head", "atoms+head", "all")}
SOURCE, TARGET = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]


def _train(job: dict[str, Any]) -> dict[str, Any]:
    result_file = Path(job["run_dir"]) / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    return fit(resolve_config("study", overrides=job))


def _jobs(op: str, seed: int, out: Path, steps: int, tune_steps: int) -> tuple[dict, list[dict]]:
    common = {"model": "resnet20", "width": 0.5, "conv": None if op == "conv" else op,
              "conv_kwargs": OPERATORS[op], "seed": seed, "threads": 1, "progress": "off"}
    source = {**common, "classes": SOURCE, "steps": steps, "run_dir": str(out / op / "source" / f"seed{seed}")}
    tunes = [{**common, "classes": TARGET, "steps": tune_steps, "init_from": source["run_dir"], "train_only": part,
              "run_dir": str(out / op / part / f"seed{seed}")} for part in PARTS[op]]
    tunes.append({**common, "classes": TARGET, "steps": tune_steps,
                  "run_dir": str(out / op / "scratch" / f"seed{seed}")})
    return source, tunes


def _label(op: str, part: str) -> str:
    return f"{'ACDC-net' if op == 'acdc' else 'standard'}: {part}"


def render(data: dict[str, Any]) -> str:
    lines = ["# Fine-tuning a part on held-out classes (ACDC's adaptation argument), CPU scale", "",
             f"Command: `{data['command']}`  ", f"Machine: {data['machine'].get('cpu', '?')}, 1 thread per run, two "
             f"runs at a time; torch {data['machine'].get('torch', '?')}; wall time {data['wall_minutes']:.1f} min",
             "", f"ResNet-20 at width 0.5 on Fashion-MNIST, the `study` preset (batch 32, one-cycle SGD 0.05, 3,000 "
             f"test images): {data['steps']} steps on classes 0-4, then {data['tune_steps']} steps on classes 5-9 "
             "from those weights, training only the part named (`--set train_only=...`; the BatchNorm statistics "
             "follow the new data in every case), or from scratch. Accuracy on classes 5-9: mean ± std over "
             f"{data['seeds']} paired seeds with the 95% interval; Δ: the paired difference to full fine-tuning "
             "(`all`) of the same backbone.", "",
             "| backbone: part | trained params | of the model | accuracy % (mean ± std) | 95% CI | Δ vs all (95% CI) "
             "| verdict |", "|---|---|---|---|---|---|---|"]
    for op in OPERATORS:
        full = data["runs"].get(f"{op}/all")
        for part in (*PARTS[op], "scratch"):
            runs = data["runs"].get(f"{op}/{part}")
            if not runs:
                continue
            accs = [100 * r["test_acc"] for r in runs]
            s = summarize(accs)
            delta, verdict = "", ""
            if full and part != "all":
                d = paired_difference(accs, [100 * r["test_acc"] for r in full])
                delta = f"{d.mean:+.2f}" if d.ci_low is None else f"{d.mean:+.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}]"
                verdict = difference_verdict(d)
            total = runs[0]["profile"]["params"]
            trained = runs[0]["trained_params"]
            cell = "reference" if part == "all" else delta
            interval = "-" if s.ci_low is None else f"[{s.ci_low:.2f}, {s.ci_high:.2f}]"
            spread = "" if s.std is None else f" ± {s.std:.2f}"
            lines.append(f"| {_label(op, part)} | {trained:,} | {100 * trained / total:.1f}% | {s.mean:.2f}{spread} "
                         f"| {interval} | {cell} | {verdict} |")
    lines += ["", "![accuracy vs trained parameters](transfer_parts.png)"]
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for op, marker in (("conv", "o"), ("acdc", "s")):
        xs, ys, errs, names = [], [], [], []
        for part in PARTS[op]:
            runs = data["runs"].get(f"{op}/{part}")
            if not runs:
                continue
            s = summarize([100 * r["test_acc"] for r in runs])
            xs.append(runs[0]["trained_params"])
            ys.append(s.mean)
            errs.append(s.half_width or 0)
            names.append(part)
        order = sorted(range(len(xs)), key=lambda i: xs[i])  # a line from the fewest trained parameters up
        xs, ys, errs, names = ([v[i] for i in order] for v in (xs, ys, errs, names))
        ax.errorbar(xs, ys, yerr=errs, marker=marker, capsize=3, label="ACDC-net" if op == "acdc" else "standard")
        for k, (x, y, n) in enumerate(zip(xs, ys, names, strict=True)):
            below = op == "conv" or k % 2  # alternate ACDC's labels above and below: its points crowd
            ax.annotate(n, (x, y), textcoords="offset points", xytext=(5, -11 if below else 6), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("trained parameters (log)")
    ax.set_ylabel("accuracy on classes 5-9 (%), 95% CI")
    ax.set_title("fine-tuning a part of a network trained on classes 0-4")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=360)
    p.add_argument("--tune-steps", type=int, default=180)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/transfer-parts"))
    p.add_argument("--render", action="store_true", help="only rewrite the report and plot from the JSON")
    args = p.parse_args(argv)
    record = RESULTS / "transfer_parts.json"
    if args.render:
        data = json.loads(record.read_text())
    else:
        start = time.perf_counter()
        sources, tunes = [], []
        for op in OPERATORS:
            for seed in range(args.seeds):
                source, more = _jobs(op, seed, args.out, args.steps, args.tune_steps)
                sources.append(source)
                tunes += more
        with ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(_train, sources))
            results = list(pool.map(_train, tunes))
        runs: dict[str, list[dict[str, Any]]] = {}
        for job, result in zip(tunes, results, strict=True):
            part = job.get("train_only", "scratch") if job.get("init_from") else "scratch"
            key = f"{'conv' if job['conv'] is None else job['conv']}/{part}"
            runs.setdefault(key, []).append({**{k: result.get(k) for k in ("test_acc", "trained_params", "profile",
                                                                           "train_seconds", "run_dir")},
                                             "seed": job["seed"]})
        data = {"command": " ".join(["python benchmarks/transfer_parts.py", *(sys.argv[1:] if argv is None else argv)]),
                "machine": machine_info(), "seeds": args.seeds, "steps": args.steps, "tune_steps": args.tune_steps,
                "wall_minutes": (time.perf_counter() - start) / 60, "runs": runs}
        record.write_text(json.dumps(data, indent=1, default=str) + "\n")
    (RESULTS / "transfer_parts.md").write_text(render(data))
    plot(data, RESULTS / "transfer_parts.png")
    print(f"wrote {RESULTS / 'transfer_parts.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
