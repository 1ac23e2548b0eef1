"""benchmarks/bdsc_spread.py: the measure of what training did to a run's binary configuration, and its table."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_script

from factorconv.train import fit, resolve_config


def _train(run_dir: Path, lr: float) -> Path:
    cfg = resolve_config("smoke", None, {
        "model": "resnet20", "conv": "bdsc", "conv_kwargs": {"norm": True, "latent_scale": 0.1}, "width": 0.25,
        "data": "synthetic", "steps": 8, "train_subset": 128, "test_subset": 64, "batch_size": 32, "lr": lr,
        "threads": 1, "progress": "off", "run_dir": str(run_dir)})
    fit(cfg)
    return run_dir


def test_the_start_is_rebuilt_from_the_seed_and_training_moves_signs(tmp_path: Path) -> None:
    spread = load_script("benchmarks/bdsc_spread.py")
    # lr 1e-30 (a config needs lr > 0): steps far below Q's rounding leave the checkpoint's Q the start itself,
    # so a start rebuilt wrongly (another draw) would show about half the signs moved
    still = spread.configuration_change(_train(tmp_path / "still", 1e-30))
    assert still == {"signs_moved": 0.0, "abs_q_growth": 1.0}
    moved = spread.configuration_change(_train(tmp_path / "moved", 0.05))
    assert moved["signs_moved"] > 0.01 and moved["abs_q_growth"] != 1.0


def test_report_rows_have_the_header_columns() -> None:
    spread = load_script("benchmarks/bdsc_spread.py")
    runs = [{"acc": a, "train_loss": 0.3, "signs_moved": 0.2, "abs_q_growth": 1.0} for a in (87.0, 88.0, 87.5)]
    variants = {"paper": {"options": [], "runs": runs},
                "float": {"options": ["binary=false"], "runs": [{**r, "acc": r["acc"] + 1} for r in runs]}}
    args = type("Args", (), {"preset": "study-long", "width": 0.375})()
    table = [line for line in spread.report(variants, "cmd", args).splitlines() if line.startswith("|")]
    assert len(table) == 4 and len({line.count("|") for line in table}) == 1  # no stray '|' in a cell
    assert "+1.00 [+1.00, +1.00]" in table[3] and "(float)" in table[3]


@pytest.mark.parametrize("bad", ["paper", "=binary=false"])
def test_a_variant_needs_a_name_and_an_equals_sign(bad: str) -> None:
    with pytest.raises(SystemExit, match="a variant is NAME="):
        load_script("benchmarks/bdsc_spread.py").parse_variant(bad)
