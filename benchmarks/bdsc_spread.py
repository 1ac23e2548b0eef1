"""Why do BDSC's seeds spread more than the float operators' in `study-long`? Variants of BDSC trained as
`factorconv compare` studies at one width, seed for seed, and what training did to each run's binary
configuration.

    .venv/bin/python benchmarks/bdsc_spread.py --out /tmp/bdsc_spread --seeds 5 --workers 5

Each variant is `factorconv compare --convs bdsc --preset PRESET --seeds N --budget none --width W
--opt bdsc:norm=true --opt bdsc:OPTION=VALUE ...` in OUT/NAME (so it resumes, and a finished run is reused only
when its config matches). The default variants: `paper` (Algorithm 1 as written, MSRA start), `float`
(BDSC-float: the same layer with a float spatial kernel, so the difference to `paper` is the binarization),
`latent0.1` and `latent0.01` (Q's MSRA start times 0.1 and 0.01: the BatchNorm after the layer makes the loss
blind to Q's scale, so a smaller start lets the straight-through steps move more signs). Width 0.375 is what
the study's 50k deploy-parameter budget gives BDSC (and the float variant is held there, not re-budgeted).

Per run it reads the test accuracy and the last training loss, and compares the checkpoint's latent Q with the
start (rebuilt from the seed, as the trainer builds it): the share of the configuration's signs that training
changed, and mean |Q| at the end over the start. Writes benchmarks/results/NAME.md and NAME.json: per variant
mean ± sample std with its 95% CI, the paired difference to the first variant, and the sign shares.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from factorconv.bench import machine_info
from factorconv.ops.bdsc import BalancedDecoupledConv2d
from factorconv.study import paired_difference, summarize
from factorconv.study.stats import verdict
from factorconv.train import TrainConfig
from factorconv.train.checkpoint import load_checkpoint
from factorconv.train.engine import build_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_VARIANTS = ("paper=", "float=binary=false", "latent0.1=latent_scale=0.1", "latent0.01=latent_scale=0.01")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`NAME=OPT=VALUE,OPT=VALUE` (or `NAME=` for the operator as it is) -> (NAME, ['OPT=VALUE', ...])."""
    name, sep, options = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"bdsc_spread: a variant is NAME=OPTION=VALUE[,OPTION=VALUE] or NAME=, got {text!r}")
    return name, [o for o in options.split(",") if o]


def run_variant(out: Path, options: list[str], args: argparse.Namespace) -> None:
    """Train (or resume) one variant's study (each run's own seconds are in its result)."""
    cmd = [sys.executable, "-m", "factorconv", "compare", "--convs", "bdsc", "--preset", args.preset, "--seeds",
           str(args.seeds), "--budget", "none", "--width", str(args.width), "--workers", str(args.workers),
           "--no-latency", "--out", str(out), "--opt", "bdsc:norm=true"]
    for option in options:
        cmd += ["--opt", f"bdsc:{option}"]
    code = subprocess.run(cmd, cwd=ROOT).returncode
    if code not in (0, 3):  # 3: the study finished with flagged runs, which collect() then refuses
        raise SystemExit(f"bdsc_spread: {' '.join(cmd)} failed (exit status {code})")


def _latents(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.latent.detach().clone() for m in model.modules() if isinstance(m, BalancedDecoupledConv2d)]


def configuration_change(run_dir: Path) -> dict[str, float]:
    """Share of the latent's signs that differ between the start and the end, and mean |Q| end / start."""
    cfg = TrainConfig.from_dict(json.loads((run_dir / "result.json").read_text())["config"])
    data = json.loads((run_dir / "config.json").read_text())  # the run's data: its class names, input size
    classes, shape = len(data["classes"]), tuple(data["input_size"])
    torch.manual_seed(cfg.seed)  # as the trainer does right before building the model
    model = build_model(cfg, classes, shape[0], shape)
    start = _latents(model)  # copies: the checkpoint is loaded into the same model next
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    end = _latents(model)
    moved = sum(int(((a >= 0) != (b >= 0)).sum()) for a, b in zip(start, end, strict=True))
    entries = sum(a.numel() for a in start)
    growth = sum(float(b.abs().sum()) for b in end) / sum(float(a.abs().sum()) for a in start)
    return {"signs_moved": moved / entries, "abs_q_growth": growth}


def collect(out: Path, seeds: int, width: float) -> list[dict[str, Any]]:
    runs = []
    for seed in range(seeds):
        run_dir = out / "runs" / "bdsc" / f"w{width:g}" / f"seed{seed}"
        result = json.loads((run_dir / "result.json").read_text())
        if result["status"] != "done":
            raise SystemExit(f"bdsc_spread: {run_dir} ended {result['status']}; this table needs finished runs")
        runs.append({"seed": seed, "acc": 100 * result["test_acc"], "train_loss": result["train_loss"],
                     "train_seconds": result["train_seconds"], **configuration_change(run_dir)})
    return runs


def _fmt(summary: Any) -> str:
    return f"{summary.mean:.2f} ± {summary.std:.2f} [{summary.ci_low:.2f}, {summary.ci_high:.2f}]"


def report(variants: dict[str, dict[str, Any]], command: str, args: argparse.Namespace) -> str:
    names = list(variants)
    first = names[0]
    lines = [f"# BDSC's seed spread at `{args.preset}`, width {args.width:g}", "",
             f"Command: `{command}`  ", f"Machine: {machine_info()['cpu']}, 1 thread per run, torch "
             f"{machine_info()['torch']}", "",
             "Test accuracy % over paired seeds (mean ± sample std [95% CI]); Δ is paired against "
             f"`{first}`; `signs moved` is the share of the binary configuration's entries whose sign at the end "
             "differs from the start (mean over seeds), `Q size end/start` the growth of the latent's mean magnitude.",
             "", "| variant | options | accuracy | Δ vs " + first + " | train loss | signs moved | Q size end/start "
             "| per seed |", "|---|---|---|---|---|---|---|---|"]
    base = [r["acc"] for r in variants[first]["runs"]]
    for name in names:
        runs = variants[name]["runs"]
        acc = [r["acc"] for r in runs]
        summary = summarize(acc)
        if name == first:
            delta = "reference"
        else:
            diff = paired_difference(acc, base)
            delta = f"{diff.mean:+.2f} [{diff.ci_low:+.2f}, {diff.ci_high:+.2f}] {verdict(diff)}"
        loss = summarize([r["train_loss"] for r in runs])
        binary = "binary=false" not in variants[name]["options"]
        moved = f"{summarize([r['signs_moved'] for r in runs]).mean:.2f}" if binary else "(float)"
        growth = f"{summarize([r['abs_q_growth'] for r in runs]).mean:.2f}"
        lines.append(f"| {name} | {', '.join(variants[name]['options']) or '(as the paper)'} | {_fmt(summary)} | "
                     f"{delta} | {loss.mean:.3f} ± {loss.std:.3f} | {moved} | {growth} | "
                     f"{' / '.join(f'{a:.2f}' for a in acc)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the variants' studies go (resumable)")
    parser.add_argument("--variant", action="append", help=f"NAME=OPTION=VALUE[,...] (default {DEFAULT_VARIANTS})")
    parser.add_argument("--preset", default="study-long")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--width", type=float, default=0.375)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="bdsc_spread", help="results file stem under benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = "python benchmarks/bdsc_spread.py " + " ".join(sys.argv[1:] if argv is None else argv)
    variants: dict[str, dict[str, Any]] = {}
    for text in args.variant or DEFAULT_VARIANTS:
        name, options = parse_variant(text)
        run_variant(args.out / name, options, args)
        variants[name] = {"options": options, "runs": collect(args.out / name, args.seeds, args.width)}
    text = report(variants, command, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text(text)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "machine": machine_info(),
                                                           "variants": variants}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
