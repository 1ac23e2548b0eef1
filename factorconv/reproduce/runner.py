"""Running a named study: its StudySpec at a scale (`study_spec`), the plan a dry run prints (widths and
counts beside the paper's, `plan`), and the table of claims from a finished study (`claims`, `render_claims`).
Training goes through the ordinary study machinery (`factorconv.study.run_study`): resume, executors and
reports are compare's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..accounting import profile
from ..ops.base import is_operator
from ..study import Executor, StudySpec, build_report, match_widths, run_study
from ..study.power import BELOW_RESOLUTION, resolution, spread_of_rows
from ..study.stats import Summary, estimate_text
from .catalog import Reproduction
from .verdict import claim_verdict

__all__ = ["SHAPES", "claims", "plan", "render_claims", "render_plan", "reproduce", "study_spec"]

# (C, H, W) and classes of the data sets a named study names, so that a dry run needs no data
SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "fashion-mnist": ((1, 28, 28), 10),
    "folder": ((3, 224, 224), 1000),  # ImageNet as an image folder
}
COUNT_FIELDS = {"params_m": ("params", 1e6), "macs_m": ("macs", 1e6), "size_mib": ("size_bytes", 2**20)}
COUNT_NAMES = {"params_m": "params", "macs_m": "MACs", "size_mib": "size", "conv_params_m": "conv params",
               "conv_macs_m": "conv MACs"}


def _conv_counts(model: torch.nn.Module, prof: Any) -> tuple[int, int]:
    """IGCV2's counting: the weights of the convs and operators (no BN, no bias, no classifier) and their MACs."""
    modules = dict(model.named_modules())
    params = macs = 0
    for row in prof.layers:
        module = modules.get(row.name)
        if module is not None and (is_operator(module) or isinstance(module, torch.nn.Conv2d)):
            params += sum(p.numel() for n, p in module.named_parameters() if not n.endswith("bias"))
            macs += row.macs
    return params, macs


def study_spec(study: Reproduction, scale: str, *, seeds: int | None = None, data_dir: str | None = None,
               overrides: dict[str, Any] | None = None, threads: int = 1, command: str | None = None) -> StudySpec:
    """The StudySpec of `study` at `scale` ("cpu" or "paper"); `seeds` / `overrides` adjust it."""
    fields = study.scale(scale)
    spec = StudySpec(
        model=fields["model"], convs=[r.label for r in study.rows], budget=fields.get("budget"),
        data=fields["data"], data_dir=data_dir, preset=fields["preset"], seeds=seeds or fields["seeds"],
        reference=study.reference.label, threads=threads,
        overrides={**fields.get("overrides", {}), **(overrides or {})},
        conv_kwargs={r.label: {**r.options, **(r.cpu_options if scale == "cpu" else {})}
                     for r in study.rows if r.options or (r.cpu_options and scale == "cpu")},
        model_kwargs={r.label: dict(r.model_options) for r in study.rows if r.model_options},
        models={r.label: r.model for r in study.rows if r.model},
        width=fields.get("width", 1.0), metric=fields.get("metric", "final"), command=command,
        fixed_widths={r.label: r.paper_width for r in study.rows if scale == "paper" and r.paper_width})
    return spec.validate()


def plan(study: Reproduction, scale: str, labels: list[str] | None = None) -> list[dict[str, Any]]:
    """Per row: the width the study trains it at and its counts (params and MACs in M, deploy size in MiB),
    beside the paper's counts (at paper scale) with their relative difference; built on the meta device, no data
    needed. `labels` limits it to those rows (matching a width to a budget takes a few seconds per row)."""
    spec = study_spec(study, scale)
    if labels is not None:
        spec.convs = [c for c in spec.convs if c in labels]
    if spec.data not in SHAPES:
        raise ValueError(f"reproduce: no input shape known for data set {spec.data!r}")
    input_size, classes = SHAPES[spec.data]
    widths = match_widths(spec, input_size, classes)
    rows = []
    for row in (r for r in study.rows if r.label in spec.convs):
        width = next(w for (label, _), (w, _) in widths.items() if label == row.label)
        with torch.device("meta"):
            model = spec.entry(row.label).create_model(width, classes, input_size[0])
        prof = profile(model, input_size)
        counts = {key: getattr(prof, attr) / unit for key, (attr, unit) in COUNT_FIELDS.items()}
        counts["conv_params_m"], counts["conv_macs_m"] = (v / 1e6 for v in _conv_counts(model, prof))
        printed = dict(row.paper_counts) if scale == "paper" else {}
        diffs = {key: counts[key] / value - 1 for key, value in printed.items()}
        rows.append({"label": row.label, "name": row.name, "width": width, "counts": counts,
                     "paper_counts": printed, "rel_diff": diffs,
                     "ok": all(abs(d) <= study.count_tolerance for d in diffs.values()) if diffs else None})
    return rows


def render_plan(study: Reproduction, scale: str, rows: list[dict[str, Any]], seeds: int | None = None) -> str:
    """The dry run's plan as text: the study's size (`seeds` as --seeds gives them, else the study's own) and
    each row's width and counts beside the paper's."""
    spec = study_spec(study, scale, seeds=seeds)
    lines = [f"{study.name} at --scale {scale}: {spec.model} on {spec.data}, budget {spec.budget or 'none'}"
             f"{f', width {spec.width:g}' if spec.width != 1.0 else ''}, preset {spec.preset}, {spec.seeds} seeds; "
             f"{len(rows)} rows x {spec.seeds} seeds = {len(rows) * spec.seeds} runs",
             f"source: {study.source}", f"claim: {study.claim}", "",
             "| row | study entry | width | params M | MACs M | size MiB | the paper's counts | within "
             f"{100 * study.count_tolerance:g}% |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["counts"]
        printed = ", ".join(f"{COUNT_NAMES[k]} {v:g} ({100 * r['rel_diff'][k]:+.1f}%)"
                            for k, v in r["paper_counts"].items()) or "-"
        lines.append(f"| {r['name']} | {r['label']} | {r['width']:g} | {c['params_m']:.3f} | {c['macs_m']:.2f} | "
                     f"{c['size_mib']:.3f} | {printed} | {'-' if r['ok'] is None else 'yes' if r['ok'] else 'NO'} |")
    if study.notes:
        lines += ["", study.notes]
    return "\n".join(lines) + "\n"


def claims(study: Reproduction, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per row of a finished study: our mean and CI, the paper's accuracy, and for rows other than the
    reference the paper's difference, our paired difference with its CI, and the verdict on the claim."""
    by_label = {r["conv"]: r for r in results["rows"]}
    ref = study.reference
    out = []
    for row in study.rows:
        ours = by_label.get(row.label)
        entry: dict[str, Any] = {"label": row.label, "name": row.name, "paper_acc": row.paper_acc,
                                 "accuracy": ours["accuracy"] if ours else None}
        if row is not ref:
            paper_delta = (row.paper_acc - ref.paper_acc if row.paper_acc is not None and ref.paper_acc is not None
                           else None)
            claimed = round(paper_delta, 6) if paper_delta is not None else row.paper_sign
            diff = ours.get("difference") if ours else None
            entry["paper_delta"] = paper_delta
            entry["paper_sign"] = row.paper_sign
            entry["difference"] = diff
            if diff is not None and claimed is not None:
                summary = Summary(diff["n"], diff["mean"], diff["std"], diff["ci_low"], diff["ci_high"])
                entry["verdict"] = claim_verdict(claimed, summary)
            else:
                entry["verdict"] = _no_difference(ours, by_label.get(ref.label), claimed)
        out.append(entry)
    spread = spread_of_rows(out)
    for entry in out:
        if "verdict" in entry:
            entry["detectable"] = resolution(entry["difference"], spread)
            entry["below_resolution"] = (entry["detectable"] is not None and entry["paper_delta"] is not None
                                         and abs(entry["paper_delta"]) < entry["detectable"])
    return out




def setting() -> dict[str, Any]:
    """Where a study ran: the machine, and the environment variables that choose other kernels (another
    summation order) when they are set."""
    from ..bench import machine_info
    from ..train.rundir import kernel_settings

    return {**machine_info(), "kernels": kernel_settings() or "default"}


def _no_difference(ours: dict[str, Any] | None, reference: dict[str, Any] | None, claimed: float | None) -> str:
    """Why a row has no paired difference to judge: its runs (or the reference's) diverged, or never ran."""
    for row, whose in ((ours, ""), (reference, "the reference's ")):
        if row is not None and row.get("runs") and row.get("diverged") == len(row["runs"]):
            return f"diverged ({whose}{row['diverged']} of {len(row['runs'])} runs)"
    if claimed is None:
        return "no paper number"
    if ours is None or reference is None:
        return "not run"
    return "no paired seeds (the row's and the reference's finished seeds do not overlap)"


def render_claims(study: Reproduction, scale: str, rows: list[dict[str, Any]]) -> str:
    ci = estimate_text
    lines = [f"## {study.name} (--scale {scale})", "", f"{study.source}. Claim: {study.claim}. Metric: {study.metric}.",
             "", "| row | paper % | ours % (95% CI) | paper Δ | our paired Δ (95% CI) | verdict on the claim | "
             "detectable Δ (80% power) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = "-" if r["paper_acc"] is None else f"{r['paper_acc']:.2f}"
        if "verdict" not in r:
            lines.append(f"| {r['name']} (reference) | {paper} | {ci(r['accuracy'])} |  |  |  |  |")
            continue
        detectable = "-" if r.get("detectable") is None else f"{r['detectable']:.2f}"
        if r.get("below_resolution"):
            detectable += f"; the paper's Δ is {BELOW_RESOLUTION}"
        delta = (f"{r['paper_delta']:+.2f}" if r["paper_delta"] is not None else
                 {1: "> 0 (figure)", -1: "< 0 (figure)"}.get(r.get("paper_sign"), "-"))
        ours = estimate_text(r["difference"], signed=True)
        lines.append(f"| {r['name']} | {paper} | {ci(r['accuracy'])} | {delta} | {ours} | {r['verdict']} | "
                     f"{detectable} |")
    lines += ["", f"Detectable Δ: the smallest true difference the paired seeds would detect with 80% power (two-sided "
              f"5% test), from {spread_of_rows(rows).describe()}. A paper's Δ below it is {BELOW_RESOLUTION}: "
              "neither a verdict nor a refutation, only the study's size."]
    if scale == "cpu":
        lines += ["", "At CPU scale the data set, backbone width and schedule are not the paper's: a verdict here "
                  "says whether the claim's direction shows on Fashion-MNIST in minutes, not whether the paper's "
                  "number reproduces; `--scale paper` runs the paper's setting."]
    return "\n".join(lines) + "\n"


def reproduce(study: Reproduction, scale: str, out: str | Path, *, executor: Executor | None = None,
              seeds: int | None = None, data_dir: str | None = None, overrides: dict[str, Any] | None = None,
              command: str | None = None) -> dict[str, Any]:
    """Run (or finish) the named study in `out`; writes the study's own report and reproduce.md /
    reproduce.json with the claims; returns {"study", "scale", "claims", "results"}."""
    spec = study_spec(study, scale, seeds=seeds, data_dir=data_dir, overrides=overrides, command=command)
    results = run_study(spec, out, executor=executor, measure_latency=False)
    return record(study, scale, out, results)


def record(study: Reproduction, scale: str, out: str | Path, results: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write reproduce.md / reproduce.json for a finished study directory (rebuilding its report)."""
    out = Path(out)
    results = results if results is not None else build_report(out)
    rows = claims(study, results)
    (out / "reproduce.md").write_text(render_claims(study, scale, rows))
    seconds = sum(run.get("train_seconds") or 0 for row in results["rows"] for run in row["runs"])
    data = {"study": study.name, "scale": scale, "claims": rows, "train_seconds": seconds,
            "seeds": results["spec"]["seeds"], "spread": spread_of_rows(rows).to_dict(), "setting": setting()}
    (out / "reproduce.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return {**data, "results": results}
