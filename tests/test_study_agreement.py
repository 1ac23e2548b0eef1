"""benchmarks/study_agreement.py: the checks that judge whether two runs of one study agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script

from factorconv.study import paired_difference, summarize, verdict


def _results(path: Path, accuracies: dict[str, list[float]]) -> Path:
    rows, ref = [], accuracies["conv"]
    for conv, accs in accuracies.items():
        row = {"conv": conv, "budget": "params=50k", "accuracy": summarize(accs).to_dict(),
               "runs": [{"seed": k, "acc": a, "status": "ok"} for k, a in enumerate(accs)]}
        if conv != "conv":
            row["verdict"] = verdict(paired_difference(accs, ref))
        rows.append(row)
    path.write_text(json.dumps({"rows": rows}))
    return path


def test_a_study_agrees_with_itself_and_a_moved_operator_is_found(tmp_path: Path) -> None:
    agreement = load_script("benchmarks/study_agreement.py")
    base = {"conv": [81.0, 81.5, 80.8], "dsep": [83.0, 83.4, 82.9], "bdsc": [80.0, 80.2, 79.9]}
    a = _results(tmp_path / "a.json", base)
    same = agreement.compare(a, a)
    assert (same["reversals"], same["strict_failures"], same["welch_inconsistent"]) == (0, 0, 0)
    # dsep drops by 4 points and turns from better to worse: a reversal, and both checks see it
    moved = _results(tmp_path / "b.json", {**base, "dsep": [77.0, 77.4, 76.9]})
    result = agreement.compare(a, moved)
    dsep = next(r for r in result["rows"] if r["conv"] == "dsep")
    assert (dsep["verdict_a"], dsep["verdict_b"], dsep["reversal"]) == ("better", "worse", True)
    assert not dsep["welch_consistent"] and not dsep["a_in_b"]
    assert (result["reversals"], result["welch_inconsistent"]) == (1, 1)
    assert "Reversed verdicts" in agreement.render(result, ("a", "b"), "cmd")


def test_the_strict_check_fails_often_between_identical_distributions() -> None:
    # each mean inside the other's 95% CI: about 0.84 per operator at 3 seeds, whatever the spread, so
    # about 0.84 ** 7 for seven operators (the runs are independent): the check is not calibrated
    per_op, whole = load_script("benchmarks/study_agreement.py").strict_pass_rate(seeds=3, operators=7, trials=40_000)
    assert per_op == pytest.approx(0.835, abs=0.01)
    assert whole == pytest.approx(per_op ** 7, abs=0.02) and whole < 0.35
