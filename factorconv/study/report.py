"""A study's results from its directory alone: one row per (operator, budget) with its costs, its accuracy
summary over seeds, the paired difference to the reference operator and its verdict, run health and
latency; the Pareto fronts and their steps; `results.json`, `report.md` (with what the study can and cannot
conclude, in words) and the plot. `build_report(out)` rebuilds all of it from the run directories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..train.health import DIVERGED, NOT_CONVERGED, assess
from ..train.rundir import write_json
from ..train.task import score_label as task_score_label
from .errors import StudyError
from .front import front_steps, pareto_front
from .plot import plot_study
from .power import resolution, spread_of_rows
from .records import read_latency, read_run_result, read_study
from .spec import AXES, METRICS, Budget, StudySpec, human
from .stats import BETTER, TOO_FEW, WORSE, paired_difference, summarize, verdict

__all__ = ["build_report", "collect_rows", "render_report", "render_table", "run_dir_of", "summarize_text"]

def run_dir_of(out: Path, conv: str, width: float, seed: int) -> Path:
    """Where the run of `conv` at `width` and `seed` lives in a study directory (shared by every budget that
    gives the operator that width)."""
    return out / "runs" / conv.replace(":", "-") / f"w{width:g}" / f"seed{seed}"


def size_axes(spec: StudySpec) -> list[str]:
    """The axes the fronts are drawn on: the budget's own, then MACs (or deploy params for a MAC budget)."""
    kinds = {b.by for b in spec.budgets}
    first = next(iter(kinds)) if kinds else "params"
    return [first, "macs" if first != "macs" else "params"]


def collect_rows(out: Path, spec: StudySpec, widths: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows from the finished runs. `widths` is study.json's "widths": {budget text or "none": {conv: width}}."""
    budgets: list[Budget | None] = list(spec.budgets) or [None]
    reference = spec.reference_conv
    rows = []
    for budget in budgets:
        chosen = widths.get(str(budget) if budget else "none", {})
        for conv in spec.convs:
            if conv not in chosen:
                continue
            width = chosen[conv]
            runs = []
            for seed in range(spec.seeds):
                r = read_run_result(run_dir_of(out, conv, width, seed) / "result.json", METRICS[spec.metric])
                if r is None:
                    continue
                health = r.get("health") or {"status": "ok"}
                if r["status"] != DIVERGED and "loss_trace" in r:  # judged by today's rule, from the trace
                    health = assess(r["loss_trace"])
                status = DIVERGED if r["status"] == DIVERGED else health.get("status", "ok")
                value = r.get(METRICS[spec.metric])
                acc = None if status == DIVERGED or value is None else 100 * value
                reason = health.get("reason", "")
                if value is None and status != DIVERGED and spec.metric == "last5":
                    reason = "fewer than five test evaluations: no last-five accuracy (left out)"
                runs.append({"seed": seed, "acc": acc, "status": status, "reason": reason,
                             "train_seconds": r.get("train_seconds"), "run_dir": r.get("run_dir"),
                             "profile": r.get("profile"), "score": r.get("score", "top-1 accuracy")})
            if not runs:
                continue
            prof = runs[0]["profile"] or {}
            accs = [r["acc"] for r in runs if r["acc"] is not None]
            rows.append({
                "conv": conv, "budget": str(budget) if budget else None, "width": width,
                "train_params": prof.get("params"), "deploy_params": prof.get("deploy_params"),
                "size_bytes": prof.get("size_bytes"), "macs": prof.get("macs"), "deploy_macs": prof.get("deploy_macs"),
                "runs": [{k: v for k, v in r.items() if k not in ("profile", "score")} for r in runs],
                "score": runs[0]["score"],
                "accuracy": summarize(accs).to_dict() if accs else None,
                "diverged": sum(r["status"] == DIVERGED for r in runs),
                "not_converged": sum(r["status"] == NOT_CONVERGED for r in runs),
                "reference": reference,
            })
    by_key = {(r["conv"], r["budget"]): r for r in rows}
    for row in rows:
        ref = by_key.get((reference, row["budget"]))
        row["difference"], row["verdict"] = None, None
        if ref is None or row["conv"] == reference:
            continue
        mine = {r["seed"]: r["acc"] for r in row["runs"] if r["acc"] is not None}
        theirs = {r["seed"]: r["acc"] for r in ref["runs"] if r["acc"] is not None}
        seeds = sorted(set(mine) & set(theirs))
        if seeds:
            diff = paired_difference([mine[s] for s in seeds], [theirs[s] for s in seeds])
            row["difference"], row["verdict"] = diff.to_dict(), verdict(diff)
    return rows


def _fronts(rows: list[dict[str, Any]], axes: Sequence[str]) -> dict[str, Any]:
    """Mark every row's place on the front of each axis; return the fronts' steps per axis."""
    scored = [r for r in rows if r["accuracy"] is not None]
    steps: dict[str, Any] = {}
    for axis in axes:
        key = AXES[axis][0]
        flags = pareto_front([r[key] for r in scored], [r["accuracy"]["mean"] for r in scored])
        for row in rows:
            row[f"front_{axis}"] = False
        for row, on in zip(scored, flags, strict=True):
            row[f"front_{axis}"] = on
        points = [{key: r[key], "label": _label(r),
                   "accs_by_seed": {x["seed"]: x["acc"] for x in r["runs"] if x["acc"] is not None}}
                  for r in scored if r[f"front_{axis}"]]
        steps[axis] = front_steps(points, key)
    return steps


def _label(row: dict[str, Any]) -> str:
    return row["conv"] + (f" @ {row['budget']}" if row["budget"] else "")


def build_report(out: str | Path) -> dict[str, Any]:
    """Table (with the Pareto fronts), results.json, report.md and study.png from the files in `out`."""
    out = Path(out)
    spec, widths, _saved = read_study(out)
    rows = collect_rows(out, spec, widths)
    if not rows:
        raise StudyError(f"{out} holds no finished runs yet; run `factorconv compare` with the same --out")
    latency = read_latency(out)
    for row in rows:
        for device, timings in latency.get("devices", {}).items():  # studies recorded before runtimes were named
            name = _label(row)
            if name in timings:
                row[f"latency_{device}_ratio"] = timings[name]["ratio"]
                row[f"latency_{device}_ms"] = timings[name]["median_ms"]
        measured = latency.get("points", {}).get(_label(row))
        if measured:
            row["latency"] = {b: {"ms": t["median_ms"], "ratio": t["ratio"]} for b, t in measured.items()}
            row["latency_ms"] = measured[str(latency["batches"][0])]["median_ms"]
        row["deploy_max_logit_diff"] = latency.get("deploy_max_logit_diff", {}).get(_label(row))
    axes = size_axes(spec)
    if all("latency_ms" in r for r in rows) and "latency" not in axes:
        axes.append("latency")  # accuracy against what it costs to run, where it ships
    steps = _fronts(rows, axes)
    spread = spread_of_rows(rows)
    for row in rows:
        row["detectable"] = resolution(row["difference"], spread)
    results = {"spec": asdict(spec), "axes": axes, "rows": rows, "front_steps": steps, "latency": latency,
               "spread": spread.to_dict(),
               "flags": {"diverged": sum(r["diverged"] for r in rows),
                         "not_converged": sum(r["not_converged"] for r in rows)}}
    write_json(out / "results.json", results)
    plotted = plot_study(rows, axes, out / "study.png", title=title(spec))
    (out / "report.md").write_text(render_report(spec, results, plotted))
    return results


def title(spec: StudySpec) -> str:
    budgets = spec.budgets
    what = (f"budget {budgets[0]}" if len(budgets) == 1 else
            f"budgets {budgets[0].by}={','.join(human(b.value) for b in budgets)}" if budgets else
            f"width {spec.width:g}")
    return f"{spec.model} on {spec.data}, {what}, preset {spec.preset}"


def _pm(summary: dict[str, Any] | None, signed: bool = False) -> str:
    if summary is None:
        return "—"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    text = fmt.format(summary["mean"])
    if summary["std"] is None:
        return text + " (1 seed)"
    return f"{text} ± {summary['std']:.2f}"


def _ci(summary: dict[str, Any] | None, signed: bool = False) -> str:
    if summary is None or summary["ci_low"] is None:
        return "—"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return f"[{fmt.format(summary['ci_low'])}, {fmt.format(summary['ci_high'])}]"


def _health(row: dict[str, Any]) -> str:
    parts = []
    n = len(row["runs"])
    if row["diverged"]:
        parts.append(f"{row['diverged']}/{n} diverged")
    if row["not_converged"]:
        parts.append(f"{row['not_converged']}/{n} not converged")
    return ", ".join(parts) or "ok"


def score_label(rows: Sequence[dict[str, Any]]) -> str:
    """What the study's "accuracy" numbers are: "mIoU" when every row is a segmentation run, else "accuracy"."""
    return task_score_label(r.get("score") for r in rows)


def render_table(rows: Sequence[dict[str, Any]], axes: Sequence[str] = ("params", "macs")) -> str:
    """The comparison as a markdown table; the front column marks the Pareto fronts (P deploy params,
    T training params, S deploy bytes, M MACs)."""
    devices = [d for d in ("cpu", "cuda") if any(f"latency_{d}_ratio" in r for r in rows)]
    batches = list(dict.fromkeys(b for r in rows for b in r.get("latency", {})))
    targets = sorted({r["budget"] for r in rows if (r["budget"] or "").startswith("latency=")})
    targets = targets if len(targets) == 1 else []  # one latency budget: its target beside the measured one
    sweep = len({r["budget"] for r in rows}) > 1
    reference = rows[0]["reference"] if rows else "conv"
    head = (["conv"] + (["budget"] if sweep else []) + ["width", "train params", "deploy params", "size KiB",
            "MACs (M)", f"{score_label(rows)} % (mean ± std)", "95% CI", f"Δ vs {reference} (95% CI)", "verdict",
            "detectable Δ (80% power)", "health"]
            + [f"{d.upper()} latency ×standard" for d in devices]
            + [f"latency b{b} ms (×standard)" + (f"; target {targets[0].split('=', 1)[1]}" if targets and i == 0
                                                   else "") for i, b in enumerate(batches)] + ["front"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        front = "".join(AXES[a][1] for a in axes if r.get(f"front_{a}"))
        diff = r["difference"]
        delta = ("reference" if r["conv"] == reference else "—" if diff is None else
                 f"{diff['mean']:+.2f} {_ci(diff, True)}".rstrip(" —"))
        cells = [r["conv"]] + ([r["budget"] or "none"] if sweep else []) + [
            f"{r['width']:g}", f"{r['train_params']:,}", f"{r['deploy_params']:,}", f"{r['size_bytes'] / 1024:.1f}",
            f"{r['macs'] / 1e6:.2f}", _pm(r["accuracy"]), _ci(r["accuracy"]), delta, r["verdict"] or "",
            "" if r.get("detectable") is None else f"{r['detectable']:.2f}", _health(r)]
        cells += [f"{r[f'latency_{d}_ratio']:.2f}" if f"latency_{d}_ratio" in r else "" for d in devices]
        cells += [f"{r['latency'][b]['ms']:.3f} ({r['latency'][b]['ratio']:.2f})" if b in r.get("latency", {})
                  else "" for b in batches]
        lines.append("| " + " | ".join([*cells, front or "·"]) + " |")
    return "\n".join(lines)


def _conclusions(spec: StudySpec, results: dict[str, Any]) -> list[str]:
    """What the study can and cannot conclude, in plain words."""
    rows = results["rows"]
    reference = spec.reference_conv
    lines = []
    seeds = min((len([x for x in r["runs"] if x["acc"] is not None]) for r in rows), default=0)
    if seeds < 2:
        lines.append(f"- With {seeds} seed per operator there is no estimate of the seed-to-seed spread: the table "
                     "ranks one draw of the training noise and no verdict can be drawn. Run with `--seeds 3` or "
                     "more.")
    for budget in dict.fromkeys(r["budget"] for r in rows):
        group = [r for r in rows if r["budget"] == budget and r["conv"] != reference]
        where = f" at {budget}" if budget else ""
        better = [r for r in group if r["verdict"] == BETTER]
        worse = [r for r in group if r["verdict"] == WORSE]
        same = [r for r in group if r["verdict"] not in (BETTER, WORSE, TOO_FEW, None)]

        def say(rs: list[dict[str, Any]]) -> str:
            return ", ".join(f"{r['conv']} ({r['difference']['mean']:+.2f} points, 95% CI "
                             f"{_ci(r['difference'], True)})" for r in rs)

        if better:
            lines.append(f"- Better than {reference}{where}: {say(better)}.")
        if worse:
            lines.append(f"- Worse than {reference}{where}: {say(worse)}.")
        if same:
            lines.append(f"- Not distinguishable from {reference}{where} (the interval of the paired difference "
                         f"includes 0): {say(same)}. Their order in the table is noise, not a ranking.")
    detectable = [r["detectable"] for r in rows if r.get("detectable") is not None]
    if detectable:
        spread = results.get("spread") or {}
        span = (f"{min(detectable):.2f}" if max(detectable) - min(detectable) < 0.005 else
                f"{min(detectable):.2f} to {max(detectable):.2f}")
        lines.append(f"- Resolution: with {seeds} seeds, a true difference smaller than {span} points (column "
                     "\"detectable Δ\") is missed more than 20% of the time by the paired 5% test, from "
                     f"{spread.get('description', 'each comparison’s own spread')}. A not-distinguishable verdict "
                     "says no more than that.")
    comparisons = sum(1 for r in rows if r["verdict"] in (BETTER, WORSE, "not distinguishable"))
    if comparisons > 1:
        lines.append(f"- Each verdict is a 95% interval on its own; across {comparisons} comparisons about "
                     f"{0.05 * comparisons:.1f} may be wrong by chance alone. Treat a verdict whose interval nearly "
                     "touches 0 as tentative.")
    flagged = results["flags"]
    if flagged["diverged"]:
        lines.append(f"- {flagged['diverged']} run(s) diverged: they are left out of their operator's mean and "
                     "marked in the table; the recipe is unstable for them.")
    if flagged["not_converged"]:
        lines.append(f"- {flagged['not_converged']} run(s) were still improving fast at their end (not converged): "
                     "their accuracy measures speed of learning under this schedule more than the operator.")
    lines.append(f"- Scope: these are results for {spec.model} on {spec.data} with preset `{spec.preset}`; another "
                 "backbone, data set or schedule can order the operators differently.")
    return lines


def render_report(spec: StudySpec, results: dict[str, Any], plotted: bool) -> str:
    from ..train import resolve_config

    rows, latency, axes = results["rows"], results["latency"], results["axes"]
    cfg = resolve_config(spec.preset, None, spec.overrides)
    length = f"{cfg.steps} steps" if cfg.steps is not None else f"{cfg.epochs:g} epochs"
    parts = [
        f"# factorconv compare: {title(spec)}", "",
        f"Command: `{spec.command or 'factorconv compare'}`", "",
        f"Recipe: preset `{spec.preset}` ({length}, batch {cfg.batch_size}, {cfg.schedule} lr {cfg.lr:g}"
        + (f" with {cfg.warmup:g} warm-up" if cfg.warmup else "") + f", weight decay {cfg.weight_decay:g}, "
        f"amp {cfg.amp}" + (f", {cfg.train_subset} training images" if cfg.train_subset else "")
        + (f", {cfg.test_subset} test images" if cfg.test_subset else ", full test set")
        + f"), {spec.threads} thread(s) per run; {spec.seeds} paired seeds per operator (seed k: the same data "
        f"order and augmentation for every operator). "
        + ("Score: the mean IoU of the test masks (segmentation), in %, called accuracy below. "
           if score_label(rows) == "mIoU" else "") + "Accuracy"
        + (" (each run's mean test accuracy over its last five evaluations)" if spec.metric == "last5" else "")
        + ": mean ± sample std over the seeds that did not "
        f"diverge and the Student-t 95% confidence interval of the mean; Δ: the paired difference to "
        f"{spec.reference_conv} (per seed, then mean and 95% CI); verdict: better / worse when that interval "
        "excludes 0, else not distinguishable.",
        "", render_table(rows, axes), "",
        "Sizes are of the model that ships (`factorconv.deploy`): deploy params and bytes (float parameters 4 B, "
        "binary entries 1 bit, BN statistics included); train params are what is trained. front: "
        + ", ".join(f"{AXES[a][1]} = on the Pareto front of mean accuracy vs {AXES[a][2]}" for a in axes)
        + " (no other point is at most as large and at least as accurate).", "",
        "## What this study can and cannot conclude", "", *_conclusions(spec, results), "",
        "## Pareto fronts", "",
    ]
    for axis in axes:
        steps = results["front_steps"][axis]
        names = [s["from"] for s in steps] + ([steps[-1]["to"]] if steps else [])
        if not steps:
            names = [_label(r) for r in rows if r.get(f"front_{axis}")]
        parts.append(f"- Accuracy vs {AXES[axis][2]}: {' → '.join(names)}")
        for s in steps:
            d = s["difference"]
            gain = "" if d is None else f" {d['mean']:+.2f} points {_ci(d, True)}"
            parts.append(f"  - {s['from']} → {s['to']}:{gain}, {_step_words(s['verdict'])}")
    if plotted:
        parts += ["", "![accuracy vs size](study.png)"]
    if latency.get("points"):
        m = latency.get("machine", {})
        worst = max((v for v in latency.get("deploy_max_logit_diff", {}).values() if v is not None), default=None)
        parts += ["", f"Latency: in **{latency['runtime']}**, each point's first healthy seed deployed for latency "
                      "(`factorconv.deploy(objective=\"latency\")`: every layer in the exact form that runs fastest "
                      "there, timed on this machine) at batch "
                      f"{', '.join(map(str, latency['batches']))}, median of {latency['repeats']} rounds timed "
                      f"interleaved with the standard {spec.model} (nn.Conv2d, width 1) deployed the same way; "
                      f"ratios to it in brackets. {m.get('cpu', '?')}, {latency.get('threads', '?')} thread(s)"
                      + (f"; every deployed model within {worst:.1e} (relative) of its trained logits" if worst
                         is not None else "") + "."]
    elif latency:
        m = latency.get("machine", {})
        parts += ["", f"Latency: the deploy form (`factorconv.deploy`: folded, or factorized/packed where smaller) "
                      f"of seed 0's trained model, batch {latency['batch']}, median of {latency['repeats']} "
                      f"interleaved runs, ratio to the standard {spec.model} (nn.Conv2d, width 1) timed in the same "
                      f"process; {m.get('cpu', '?')}, {m.get('torch_threads', '?')} threads, torch "
                      f"{m.get('torch', '?')}" + (f", GPU {m['gpu']}" if m.get("gpu") else "") + "."]
    parts += ["", "## Runs", "",
              f"| conv | budget | width | seed | {score_label(rows)} % | health | training s | run |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for run in r["runs"]:
            acc = "diverged" if run["acc"] is None else f"{run['acc']:.2f}"
            secs = "" if run["train_seconds"] is None else f"{run['train_seconds']:.0f}"
            health = run["status"] + (f": {run['reason']}" if run["status"] != "ok" and run["reason"] else "")
            parts.append(f"| {r['conv']} | {r['budget'] or 'none'} | {r['width']:g} | {run['seed']} | {acc} | "
                         f"{health} | {secs} | {run['run_dir']} |")
    return "\n".join(parts) + "\n"


def _step_words(v: str) -> str:
    return {BETTER: "distinguishable (the larger model is more accurate)",
            WORSE: "distinguishable (the larger model is less accurate: not a front step on the paired seeds)",
            TOO_FEW: "too few seeds to tell"}.get(v, "not distinguishable: the seeds cannot tell these two apart")


def summarize_text(results: dict[str, Any]) -> str:
    """The table and fronts as plain text for the terminal."""
    rows, axes = results["rows"], results["axes"]
    lines = [render_table(rows, axes), ""]
    for axis in axes:
        names = [_label(r) for r in sorted(rows, key=lambda r: r[AXES[axis][0]]) if r.get(f"front_{axis}")]
        lines.append(f"Pareto front (mean accuracy vs {AXES[axis][2]}): {' → '.join(names)}")
    flags = results["flags"]
    if flags["diverged"] or flags["not_converged"]:
        lines.append(f"flagged runs: {flags['diverged']} diverged, {flags['not_converged']} not converged "
                     "(see the health column)")
    return "\n".join(lines)
