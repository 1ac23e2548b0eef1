"""Named studies (`factorconv reproduce`): the verdict on a paper's claim from hand-made paired differences
(a clear win, a tie, a reversal), the claims table from hand-made results, every study's paper-scale plan
against the paper's counts (no training), the CLI, and one small study run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from factorconv.cli import main
from factorconv.registry import create_model
from factorconv.reproduce import (
    HOLDS,
    NOT_DISTINGUISHABLE,
    OPPOSITE,
    TOO_FEW,
    Reproduction,
    Row,
    claim_verdict,
    claims,
    get_reproduction,
    list_reproductions,
    plan,
    render_claims,
    reproduce,
)
from factorconv.reproduce.verdict import AGREES_NO_DIFFERENCE, DIFFERS
from factorconv.study import LocalExecutor
from factorconv.study.stats import Summary, paired_difference


def test_the_verdict_on_a_claim() -> None:
    win = paired_difference([80.0, 81.0, 82.0], [78.0, 79.2, 79.9])  # +1.97, interval above 0
    tie = paired_difference([80.0, 79.0, 81.0], [79.5, 79.6, 80.6])  # +0.1, interval across 0
    loss = paired_difference([77.0, 78.0, 77.5], [79.0, 80.1, 79.4])  # -2.0, interval below 0
    assert win.ci_low > 0 and tie.ci_low < 0 < tie.ci_high and loss.ci_high < 0
    assert claim_verdict(+2.12, win) == HOLDS
    assert claim_verdict(+2.12, tie) == NOT_DISTINGUISHABLE
    assert claim_verdict(+2.12, loss) == OPPOSITE
    assert claim_verdict(-0.84, loss) == HOLDS and claim_verdict(-0.84, win) == OPPOSITE
    assert claim_verdict(0.0, tie) == AGREES_NO_DIFFERENCE and claim_verdict(0.0, win) == DIFFERS
    assert claim_verdict(1.0, Summary(1, 1.0, None, None, None)) == TOO_FEW


def _row(conv: str, accs: list[float], ref: list[float] | None) -> dict:
    s = paired_difference(accs, ref) if ref else None
    mean = sum(accs) / len(accs)
    return {"conv": conv, "accuracy": {"mean": mean, "ci_low": mean - 1, "ci_high": mean + 1},
            "difference": None if s is None else {"n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci_low,
                                                 "ci_high": s.ci_high}}


def test_claims_from_hand_made_results() -> None:
    study = Reproduction("hand", "a table", "b and c beat a", (Row("a", "A", 90.0), Row("b", "B", 92.0),
                         Row("c", "C", 91.0), Row("d", "D", None), Row("e", "E", None, paper_sign=-1),
                         Row("f", "F", None, paper_sign=+1)), paper={}, cpu={})
    ref = [80.0, 81.0, 80.5]
    results = {"rows": [_row("a", ref, None), _row("b", [82.0, 83.1, 82.4], ref),
                        _row("c", [78.0, 79.5, 78.6], ref), _row("d", [80.1, 80.9, 80.6], ref),
                        _row("e", [78.0, 79.5, 78.6], ref), _row("f", [78.0, 79.5, 78.6], ref)]}
    rows = {r["label"]: r for r in claims(study, results)}
    assert "verdict" not in rows["a"]
    assert rows["b"]["paper_delta"] == pytest.approx(2.0) and rows["b"]["verdict"] == HOLDS
    assert rows["c"]["verdict"] == OPPOSITE
    assert rows["d"]["verdict"] == "no paper number"
    # a figure's direction without a number: judged on the direction alone
    assert rows["e"]["paper_delta"] is None and rows["e"]["verdict"] == HOLDS
    assert rows["f"]["verdict"] == OPPOSITE
    assert "< 0 (figure)" in render_claims(study, "cpu", list(rows.values()))
    with pytest.raises(ValueError, match="not both"):
        Row("g", "G", 90.0, paper_sign=1)
    with pytest.raises(ValueError, match="paper_sign must be"):
        Row("g", "G", None, paper_sign=2)


def test_igcv2_kl_rows_have_about_equal_parameters_per_block() -> None:
    """Figures 2-3 compare blocks at "almost the same number of parameters" (about 4,700, Table 2's Xception
    C64 block): with the figures' L as the number of group 1x1 convs, every row's block is within 5% of it."""
    study = get_reproduction("igcv2-kl")
    for row in study.rows:
        with torch.device("meta"):
            model = create_model("igcv2_8", conv="igcv2", num_classes=100, conv_kwargs=row.options,
                                 **row.model_options)
        block = model.blocks[0][0]
        assert abs(block.cost((32, 32)).params / 4700 - 1) < 0.05, (row.label, block.cost((32, 32)).params)
    assert [r.paper_sign for r in study.rows[1:]] == [-1] * (len(study.rows) - 1)


@pytest.mark.parametrize("name", [s.name for s in list_reproductions()])
def test_every_study_resolves_to_the_papers_counts(name: str) -> None:
    study = get_reproduction(name)
    printed = [r.label for r in study.rows if r.paper_counts]  # matching every row's width takes long
    rows = plan(study, "paper", labels=printed or [study.reference.label])
    assert [r["label"] for r in rows] == (printed or [study.reference.label])
    for r in (r for r in rows if r["paper_counts"]):
        assert r["ok"], (r["label"], r["rel_diff"])
    if name in ("bdsc-t1", "igcv2-t4"):  # the CPU scale builds too (fixed widths and whole networks)
        assert all(r["ok"] is None for r in plan(study, "cpu"))


def test_osep_t6_uses_the_papers_widths() -> None:
    rows = {r["label"]: r for r in plan(get_reproduction("osep-t6"), "paper")}
    assert (rows["conv"]["width"], rows["osep"]["width"], rows["dsep"]["width"]) == (1.0, 3.625, 2.72)
    assert round(rows["osep"]["counts"]["params_m"], 3) == 0.221


def test_the_command_lists_plans_and_refuses(capsys) -> None:
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(s.name in listed for s in list_reproductions())
    assert main(["reproduce", "osep-t6", "--scale", "paper", "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert "o-ResNet20 x3.625" in shown and "params 0.221 (+0.0%)" in shown
    assert main(["reproduce", "osep-t6", "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert len(planned["rows"]) == 3 and planned["seeds"] == 5 and planned["runs"] == 15
    assert main(["reproduce", "no-such-study"]) == 2
    err = capsys.readouterr().err
    assert "no study named 'no-such-study'; known: acdc-t1" in err and len(err.strip().splitlines()) == 1


def test_a_small_study_runs_end_to_end(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    study = Reproduction(
        "tiny", "a test table", "acdc sharing keeps the accuracy",
        (Row("conv", "conv", 50.0), Row("acdc:net", "ACDC-net", 49.0, options={"share": "net", "atoms": 4})),
        paper={}, cpu={"model": "resnet20", "budget": None, "width": 0.25, "data": "synthetic", "preset": "smoke",
                       "seeds": 2, "overrides": {"progress": "off", "steps": 6, "train_subset": 128,
                                                 "test_subset": 64}})
    result = reproduce(study, "cpu", tmp_path / "study", executor=LocalExecutor(1))
    assert [r["label"] for r in result["claims"]] == ["conv", "acdc:net"]
    assert result["claims"][1]["verdict"] in (HOLDS, NOT_DISTINGUISHABLE, OPPOSITE)
    text = (tmp_path / "study" / "reproduce.md").read_text()
    assert "| ACDC-net | 49.00 |" in text and "verdict on the claim" in text
    assert (tmp_path / "study" / "runs" / "acdc-net" / "w0.25" / "seed1" / "result.json").exists()
    config = json.loads((tmp_path / "study" / "runs" / "acdc-net" / "w0.25" / "seed0" / "config.json").read_text())
    assert config["conv"] == "acdc" and config["conv_kwargs"]["share"] == "net"


def test_a_study_can_score_runs_by_their_last_five_evaluations(tmp_path: Path) -> None:
    from factorconv.study import StudySpec, run_study

    torch.set_num_threads(1)
    tiny = {"progress": "off", "train_subset": 64, "test_subset": 64, "batch_size": 32, "schedule": "constant"}
    spec = StudySpec(model="resnet20", convs=["conv"], budget=None, width=0.25, data="synthetic", preset="smoke",
                     seeds=1, metric="last5", overrides={**tiny, "epochs": 6.0})
    row = run_study(spec, tmp_path / "six", measure_latency=False)["rows"][0]
    result = json.loads((tmp_path / "six" / "runs" / "conv" / "w0.25" / "seed0" / "result.json").read_text())
    assert row["runs"][0]["acc"] == pytest.approx(100 * result["last5_test_acc"])
    short = StudySpec(**{**spec.__dict__, "overrides": {**tiny, "epochs": 2.0}})
    row = run_study(short, tmp_path / "two", measure_latency=False)["rows"][0]
    assert row["accuracy"] is None and "fewer than five test evaluations" in row["runs"][0]["reason"]
    with pytest.raises(ValueError, match="metric must be one of final, last5"):
        StudySpec(metric="best").validate()
