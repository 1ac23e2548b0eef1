"""Confirmation on fresh seeds: each operator's best configuration (`OP:tuned`) and its default (`OP`, what
`compare` trains) retrained on the study's paired seeds, none of which trained a trial, and scored on the test
set, through `compare`'s machinery (executors, resume, health, its own report in `confirm/`).

The best trial's own validation score is the maximum of many noisy scores, so it overstates what its
configuration does (the winner's curse); the confirmed accuracy is what the configuration does on new seeds.
"""

from __future__ import annotations

from typing import Any

from ..study.spec import StudySpec
from ..study.stats import paired_difference, verdict
from .spec import OperatorSpace, TuneSpec

__all__ = ["TUNED", "best_trial", "compare_pairs", "confirmation_spec"]

TUNED = "tuned"  # the variant label of an operator's best configuration in the confirmation study


def best_trial(study: Any) -> Any | None:
    """The completed trial with the highest validation accuracy (the earliest of equals); None if none
    completed."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def confirmation_spec(spec: TuneSpec, spaces: dict[str, OperatorSpace], bests: dict[str, Any]) -> StudySpec:
    """The compare study of the confirmation: every operator's default (at the width compare matches), and
    `OP:tuned` where a trial completed (at the width its trial trained at), on `spec.seeds` seeds."""
    convs: list[str] = []
    conv_kwargs: dict[str, dict[str, Any]] = {}
    run_overrides: dict[str, dict[str, Any]] = {}
    widths: dict[str, float] = {}
    for op in spec.convs:
        convs.append(op)
        if bests.get(op) is not None:
            label = f"{op}:{TUNED}"
            convs.append(label)
            conv_kwargs[label], run_overrides[label] = spaces[op].split(bests[op].params)
            widths[label] = bests[op].user_attrs["width"]  # the width its trial met the budget at
    return StudySpec(model=spec.model, convs=convs, budget=spec.budget, data=spec.data, data_dir=spec.data_dir,
                     preset=spec.preset, seeds=spec.seeds, reference=spec.reference_conv, threads=spec.threads,
                     overrides=dict(spec.overrides), width_grid=spec.width_grid, conv_kwargs=conv_kwargs,
                     run_overrides=run_overrides, fixed_widths=widths)


def _accuracies(row: dict[str, Any] | None) -> dict[int, float]:
    return {} if row is None else {r["seed"]: r["acc"] for r in row["runs"] if r["acc"] is not None}


def compare_pairs(rows: list[dict[str, Any]], mine: str, theirs: str) -> dict[str, Any] | None:
    """The paired difference mine - theirs over the seeds both finished, its 95% CI and verdict (None when
    either side is missing)."""
    by_label = {r["conv"]: r for r in rows}
    a, b = _accuracies(by_label.get(mine)), _accuracies(by_label.get(theirs))
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diff = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return {"of": mine, "against": theirs, "seeds": seeds, **diff.to_dict(), "verdict": verdict(diff)}
