"""benchmarks/recipe_frontier.py: reading candidate names and tabulating studies at their budgets."""

from __future__ import annotations

import pytest
from helpers import load_script


def _record(recipe: str, budget: str | None, std: float) -> dict:
    record = {"recipe": recipe, "test_images": None, "worst_std": std, "lowest_mean": 89.0, "runs": 2,
              "run_seconds": 400.0, "diverged": 0, "not_converged": 0,
              "operators": {"bdsc": {"mean": 89.0, "std": std, "accs": [88.8, 89.2]}}}
    if budget is not None:
        record["budget"] = budget
    return record


def test_candidate_names_read_as_preset_overrides() -> None:
    frontier = load_script("benchmarks/recipe_frontier.py")
    assert frontier.candidate("b64-s230-lr0.1-wd0") == {"batch_size": 64, "steps": 230, "lr": 0.1,
                                                         "weight_decay": 0.0}
    with pytest.raises(SystemExit, match="cannot read 'x3'"):
        frontier.candidate("b64-x3")


def test_the_table_says_each_rows_budget_and_older_records_read_as_the_default() -> None:
    frontier = load_script("benchmarks/recipe_frontier.py")
    text = frontier.render([_record("study-long", None, 0.94), _record("study-long-100k", "params=100k", 0.30)],
                           "python benchmarks/recipe_frontier.py --report", note="Four runs at a time.")
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| study-long")}
    assert rows["study-long"][1] == "params=50k"
    assert rows["study-long-100k"][1] == "params=100k"
    assert "| recipe | budget |" in text
    assert "Four runs at a time." in text
