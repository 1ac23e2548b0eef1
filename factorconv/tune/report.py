"""The tuning study's report, rebuilt from its files and its storage (`factorconv report DIR` runs it again):
per operator the trials (counted, pruned and why, failed), the best configuration, the optimisation history,
the parameter importances, and the confirmation: tuned and default on fresh seeds with paired differences and
verdicts, tuned against the tuned reference. Writes results.json, report.md and the plots in the study
directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..study.records import read_json_record
from ..study.stats import estimate_text
from ..train.rundir import write_json
from .confirm import TUNED, best_trial, compare_pairs
from .plot import plot_history, plot_importances
from .search import open_studies
from .spec import REPORT_AT, TUNE_SEED, TuneSpec
from .storage import TuneError, require_optuna, storage_url

__all__ = ["build_tune_report", "read_tune", "trial_summary"]

PRUNE_KINDS = ("pruner", "budget", "invalid", "diverged")


def read_tune(out: Path) -> tuple[TuneSpec, dict[str, Any]]:
    saved = read_json_record(out / "tune.json", "tuning study file")
    if saved is None:
        raise TuneError(f"{out} holds no tuning study (no tune.json); run `factorconv tune --out {out}` first")
    return TuneSpec.from_dict(saved["spec"]), saved


def trial_summary(study: Any) -> dict[str, Any]:
    """Counts by outcome, the best trial, the history (counted trials in order) and the importances."""
    optuna = require_optuna()
    ts = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in (ts.COMPLETE, ts.PRUNED)]
    pruned = [t for t in trials if t.state == ts.PRUNED]
    failed = [t for t in trials if t.state == ts.FAIL and not t.user_attrs.get("surplus")
              and not t.user_attrs.get("duplicate")]
    best = best_trial(study)
    history, so_far = [], None
    for t in sorted(counted, key=lambda t: t.number):
        if t.state == ts.COMPLETE:
            so_far = t.value if so_far is None else max(so_far, t.value)
        history.append({"number": t.number, "value": t.value, "state": t.state.name.lower(), "best": so_far,
                        "pruned": t.user_attrs.get("pruned"), "reason": t.user_attrs.get("reason")})
    try:
        importances = dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # too few completed trials, or no parameter varied
        importances = {}
    return {
        "counted": len(counted), "complete": len(counted) - len(pruned),
        "pruned": {kind: sum(t.user_attrs.get("pruned") == kind for t in pruned) for kind in PRUNE_KINDS},
        "failed": len(failed), "interrupted": sum(bool(t.user_attrs.get("interrupted")) for t in failed),
        "redrawn": sum(bool(t.user_attrs.get("duplicate")) for t in trials),
        "best": None if best is None else {
            "number": best.number, "val_acc": best.value, "params": best.params,
            "options": best.user_attrs.get("options"), "recipe": best.user_attrs.get("recipe"),
            "width": best.user_attrs.get("width"), "count": best.user_attrs.get("count")},
        "history": history, "importances": importances,
        "seconds": sum(t.user_attrs.get("seconds", 0) or 0 for t in counted),
    }


def build_tune_report(out: str | Path) -> dict[str, Any]:
    out = Path(out)
    spec, saved = read_tune(out)
    studies = open_studies(spec, storage_url(spec.storage, out))
    confirm = read_json_record(out / "confirm" / "results.json", "confirmation results") or {}
    rows = confirm.get("rows", [])
    by_label = {r["conv"]: r for r in rows}
    reference = spec.reference_conv
    operators = {}
    for op in spec.convs:
        summary = trial_summary(studies[op])
        tuned = f"{op}:{TUNED}"
        ref_tuned = f"{reference}:{TUNED}" if f"{reference}:{TUNED}" in by_label else reference
        default_row, tuned_row = by_label.get(op) or {}, by_label.get(tuned) or {}
        operators[op] = {
            **summary,
            "default": default_row.get("accuracy"), "default_width": default_row.get("width"),
            "tuned": tuned_row.get("accuracy"), "tuned_width": tuned_row.get("width"),
            "tuned_vs_default": compare_pairs(rows, tuned, op),
            "tuned_vs_reference": None if op == reference else compare_pairs(rows, tuned, ref_tuned),
            "default_vs_reference": None if op == reference else compare_pairs(rows, op, reference),
        }
    results = {"spec": spec.to_dict(), "reference": reference, "operators": operators,
               "timing": saved.get("timing", {}), "confirmation": {"rows": rows}}
    write_json(out / "results.json", results)
    made = {"tune_history.png": plot_history(operators, out / "tune_history.png"),
            "tune_importances.png": plot_importances(operators, out / "tune_importances.png")}
    plots = [name for name, drawn in made.items() if drawn]
    (out / "report.md").write_text(render_tune_report(spec, results, plots))
    return results


def _pct(summary: dict[str, Any] | None) -> str:
    return estimate_text(summary, missing="—")


def _diff(d: dict[str, Any] | None) -> tuple[str, str]:
    if not d:
        return "—", ""
    if d.get("ci_low") is None:
        return f"{d['mean']:+.2f}", d["verdict"]
    return f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]", d["verdict"]


def _config(best: dict[str, Any] | None) -> str:
    if not best:
        return "no trial completed"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(best["params"].items()))


def render_tune_report(spec: TuneSpec, results: dict[str, Any], plots: list[str]) -> str:
    ops, timing = results["operators"], results.get("timing", {})
    minutes = {k: f"{v / 60:.1f} min" for k, v in timing.items() if isinstance(v, int | float)}
    lines = [
        f"# Tuning {', '.join(spec.convs)} on {spec.model} ({spec.data}), {spec.budget or 'no budget'}, "
        f"`{spec.preset}` recipe", "",
        *([f"Command: `{spec.command}`", ""] if spec.command else []),
        f"**Equal effort.** Every operator got {spec.trials} trials (a trial counts once complete or pruned), each "
        f"at the width that meets {spec.budget or 'no budget (width 1)'} with its configuration, trained with the "
        f"`{spec.preset}` recipe (seed {TUNE_SEED}) and scored on {spec.holdout:,} training images held out of "
        f"training, never on the test set. TPE sampler (seed {spec.sampler_seed}), {spec.pruner} pruner on the "
        f"validation accuracy at {', '.join(f'{100 * f:.0f}%' for f in REPORT_AT)} of the steps. "
        + (f"Search {minutes.get('search_seconds', '?')}, confirmation {minutes.get('confirm_seconds', '?')}."
           if minutes else ""), "",
        f"**Confirmation on fresh seeds.** Each operator's best configuration (`OP:tuned`) and its default (`OP`, "
        f"what `compare` trains) retrained on seeds 0-{spec.seeds - 1} (no trial used them) and scored on the test "
        "set: the best trial's own validation score is the best of many noisy scores and overstates it (the "
        "winner's curse). Differences are paired by seed, with 95% CIs.", "",
        f"| operator | best configuration | best trial (val %) | default (test %, 95% CI) | tuned (test %, 95% CI) "
        f"| tuned − default | verdict | tuned − tuned {results['reference']} | verdict | trials: complete / pruned "
        "(pruner, budget, invalid, diverged) / failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for op, r in ops.items():
        best = r["best"]
        vs_default, v1 = _diff(r["tuned_vs_default"])
        vs_ref, v2 = _diff(r["tuned_vs_reference"])
        p = r["pruned"]
        best_val = "—" if not best else f"{100 * best['val_acc']:.2f}"
        lines.append(
            f"| {op} | {_config(best)} | {best_val} | "
            f"{_pct(r['default'])} | {_pct(r['tuned'])} | {vs_default} | {v1} | {vs_ref} | {v2} | "
            f"{r['complete']} / {sum(p.values())} ({p['pruner']}, {p['budget']}, {p['invalid']}, {p['diverged']}) / "
            f"{r['failed']} |")
    lines += ["", "## Search spaces", ""]
    for op, space in spec.spaces().items():
        lines.append(f"- {op}: " + ", ".join(f"`{k}` {v}" for k, v in space.describe().items()))
    lines += ["", "## Parameter importances (fANOVA over each operator's completed trials)", ""]
    for op, r in ops.items():
        imp = r["importances"]
        lines.append(f"- {op}: " + (", ".join(f"{k} {v:.2f}" for k, v in imp.items()) if imp else
                                    "too few completed trials with a varying parameter"))
    pruned_reasons = [(op, h) for op, r in ops.items() for h in r["history"] if h["state"] == "pruned"]
    if pruned_reasons:
        lines += ["", "## Pruned trials", ""]
        lines += [f"- {op} trial {h['number']} ({h['pruned']}): {h['reason'] or ''}" for op, h in pruned_reasons]
    lines += ["", "## What this can and cannot say", "",
              f"- A verdict rests on {spec.seeds} seeds of a short recipe: `better` means the 95% interval of the "
              "paired difference excludes zero, not that the gap generalises to other recipes or data.",
              "- Tuning chose each configuration on the validation split with one seed; a configuration that won "
              "by noise shows a confirmed accuracy near its default's.",
              "- The confirmation study's own table, health and runs: [confirm/report.md](confirm/report.md)."]
    for name in plots:
        lines += ["", f"![{name.removesuffix('.png').replace('_', ' ')}]({name})"]
    return "\n".join(lines) + "\n"
