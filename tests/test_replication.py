"""Verdicts that replicate (issue 35): the smallest detectable difference and the pooled spread on hand-made
numbers (checked against the textbook formula), the Welch comparison of two records (agreement, a changed
verdict, a difference between the runs, Holm's adjustment), and the two commands on smoke studies:
`reproduce NAME --replicate RECORD` and `report DIR --against OTHER`, with a missing or malformed record
refused in one line before anything trains."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from factorconv.cli import main
from factorconv.reproduce import Reproduction, Row, get_reproduction, list_reproductions, register_reproduction
from factorconv.reproduce.runner import study_spec
from factorconv.study import StudyError
from factorconv.study.power import BELOW_RESOLUTION, detectable_difference, resolution, study_spread
from factorconv.study.replication import _holm, compare_records, read_comparisons, render_replication
from factorconv.study.stats import paired_difference, t_quantile
from factorconv.train.rundir import kernel_settings

SMOKE = {"progress": "off", "steps": 6, "train_subset": 128, "test_subset": 64}


def test_the_detectable_difference_is_the_textbook_formula() -> None:
    # (t_{.975,4} + t_{.80,4}) * s / sqrt(5) = (2.776 + 0.941) * 0.5 / 2.236
    assert detectable_difference(0.5, 5) == pytest.approx((2.7764 + 0.9410) * 0.5 / math.sqrt(5), rel=1e-3)
    assert detectable_difference(0.5, 3) > detectable_difference(0.5, 5) > detectable_difference(0.5, 10)
    assert detectable_difference(0.0, 5) == 0.0
    with pytest.raises(ValueError, match="at least 2 paired seeds"):
        detectable_difference(1.0, 1)


def test_spreads_are_pooled_only_when_compatible() -> None:
    alike = study_spread([(5, 0.50), (5, 0.60), (5, 0.40)])
    assert alike.pooled and alike.df == 12
    assert alike.std == pytest.approx(math.sqrt((0.25 + 0.36 + 0.16) / 3))
    assert "pooled spread" in alike.describe() and "12 degrees of freedom" in alike.describe()
    # the pooled spread replaces each comparison's own in its detectable difference
    assert resolution({"n": 5, "std": 0.4}, alike) == pytest.approx(detectable_difference(alike.std, 5))
    unlike = study_spread([(5, 0.1), (5, 3.0), (5, 0.5)])
    assert not unlike.pooled and unlike.p_value < 0.05 and "own spread" in unlike.describe()
    assert resolution({"n": 5, "std": 3.0}, unlike) == pytest.approx(detectable_difference(3.0, 5))
    assert resolution({"n": 1, "std": None}, alike) is None and resolution(None, alike) is None
    assert study_spread([(1, None)]).comparisons == 0


def _claims_record(path: Path, study: str, diffs: dict[str, list[float]], verdicts: dict[str, str]) -> Path:
    claims = [{"label": "ref", "name": "reference"}]
    for label, values in diffs.items():
        s = paired_difference(values, [0.0] * len(values))
        claims.append({"label": label, "name": label.upper(), "verdict": verdicts[label],
                       "difference": {"n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci_low,
                                      "ci_high": s.ci_high}})
    path.write_text(json.dumps({"study": study, "scale": "cpu", "seeds": 5, "claims": claims}))
    return path


def test_two_records_compared_claim_by_claim(tmp_path: Path) -> None:
    held = {"a": [1.0, 1.2, 0.9, 1.1, 1.0], "b": [0.3, -0.2, 0.5, 0.0, 0.1], "c": [2.0, 2.2, 1.9, 2.1, 2.0]}
    verdicts = {"a": "same direction, distinguishable", "b": "not distinguishable",
                "c": "same direction, distinguishable"}
    old = read_comparisons(_claims_record(tmp_path / "old.json", "s", held, verdicts))
    # the same numbers again: every verdict replicates, nothing differs
    same = compare_records(old, read_comparisons(_claims_record(tmp_path / "same.json", "s", held, verdicts)))
    assert (same["replicated"], same["distinguishable"], same["verdicts_changed"], same["differ"]) == (2, 2, 0, 0)
    assert "2 of 2 distinguishable verdict(s) replicated" in render_replication(same)
    # a lost and a moved verdict: a's difference shrinks to nothing, c's grows by a point
    moved = {"a": [0.2, -0.3, 0.1, 0.4, -0.1], "b": held["b"], "c": [3.0, 3.2, 2.9, 3.1, 3.0]}
    new = read_comparisons(_claims_record(tmp_path / "new.json", "s", moved,
                                          {**verdicts, "a": "not distinguishable"}))
    result = compare_records(old, new)
    rows = {r["key"]: r for r in result["rows"]}
    assert not rows["a"]["same_verdict"] and rows["c"]["same_verdict"] and rows["b"]["same_verdict"]
    assert rows["c"]["welch"]["mean"] == pytest.approx(1.0) and rows["c"]["differ"]
    assert rows["a"]["differ"] and not rows["b"]["differ"]
    assert result["replicated"] == 1 and result["verdicts_changed"] == 1 and result["differ"] == 2
    text = render_replication(result)
    assert "| A |" in text and "| NO |" in text and "(differ)" in text
    # Holm: the smallest p times m, then non-decreasing
    assert _holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # Welch on the summaries equals Welch on the values (the interval matches stats.welch_difference)
    from factorconv.study.stats import welch_difference

    _, low, high = welch_difference(moved["c"], held["c"])
    assert (rows["c"]["welch"]["ci_low"], rows["c"]["welch"]["ci_high"]) == pytest.approx((low, high))
    other = read_comparisons(_claims_record(tmp_path / "other.json", "t", held, verdicts))
    with pytest.raises(StudyError, match=r"same study"):
        compare_records(old, other)


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such record"),
    ("{not json", "is not a readable study record"),
    ("[1, 2]", "holds a JSON object"),
    ('{"hello": 1}', "neither a reproduce record"),
    ('{"study": "s", "claims": [{"label": "b", "verdict": "better", "difference": {"n": "five"}}]}',
     "claims\\[0\\].difference is not a paired-difference summary"),
])
def test_a_bad_record_is_one_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "record.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StudyError, match=message):
        read_comparisons(path)


def test_cpu_scale_studies_default_to_five_seeds(capsys) -> None:
    for study in list_reproductions():
        assert study_spec(study, "cpu").seeds == 5, study.name
    assert main(["reproduce", "doconv-t1", "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["seeds"] == 5 and planned["runs"] == 5 * len(planned["rows"])


@pytest.fixture
def smoke_study():
    study = Reproduction(
        "smoke-replication", "a test table", "acdc keeps the accuracy",
        (Row("conv", "conv", 50.0), Row("acdc:net", "ACDC-net", 49.0, options={"share": "net", "atoms": 4})),
        paper={}, cpu={"model": "resnet20", "budget": None, "width": 0.25, "data": "synthetic", "preset": "smoke",
                       "seeds": 2, "overrides": SMOKE})
    from factorconv.reproduce import catalog

    register_reproduction(study)
    yield study
    catalog._REPRODUCTIONS.pop(study.name, None)


def test_reproduce_replicate_and_report_against_on_smoke_studies(tmp_path: Path, capsys, smoke_study) -> None:
    torch.set_num_threads(1)
    first = tmp_path / "first"
    assert main(["reproduce", smoke_study.name, "--out", str(first)]) == 0
    record = first / "reproduce.json"
    saved = json.loads(record.read_text())
    assert saved["seeds"] == 2 and saved["spread"]["comparisons"] == 1
    assert saved["setting"]["kernels"] == (kernel_settings() or "default")
    assert "detectable Δ (80% power)" in (first / "reproduce.md").read_text()
    capsys.readouterr()
    # the same study again, elsewhere: deterministic runs give the same differences, so the verdict replicates
    second = tmp_path / "second"
    assert main(["reproduce", smoke_study.name, "--replicate", str(record), "--out", str(second)]) == 0
    out = capsys.readouterr().out
    assert "Replication of smoke-replication" in out and "verdict(s) changed of 1" in out
    replication = json.loads((second / "replication.json").read_text())
    assert replication["verdicts_changed"] == 0 and replication["differ"] == 0
    # a record whose verdict says otherwise: the changed verdict is named, and the exit status says so
    changed = copy.deepcopy(saved)
    claim = changed["claims"][1]
    claim["verdict"] = "opposite" if claim["verdict"] != "opposite" else "not distinguishable"
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    assert main(["reproduce", smoke_study.name, "--replicate", str(tmp_path / "changed.json"), "--out",
                 str(second)]) == 1
    assert "| NO |" in capsys.readouterr().out
    # refused before training, in one line: a missing record, a malformed one, another study's, its own directory
    for bad, message in ((tmp_path / "missing.json", "no such record"),
                         (tmp_path / "first" / "study.json", "neither a reproduce record"),
                         (Path("benchmarks/results/reproduce_osep_t6_cpu.json"), "records reproduce study 'osep-t6'"),
                         (record, "is the directory")):
        out_dir = first if bad == record else tmp_path / "never"
        assert main(["reproduce", smoke_study.name, "--replicate", str(bad), "--out", str(out_dir)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "never").exists()
    # compare studies: report DIR --against OTHER
    assert main(["report", str(first), "--against", str(second / "results.json")]) == 0
    assert "0 verdict(s) changed of 1" in capsys.readouterr().out
    edited = json.loads((second / "results.json").read_text())
    row = next(r for r in edited["rows"] if r["verdict"] is not None and r["conv"] != r["reference"])
    row["verdict"] = "worse" if row["verdict"] != "worse" else "better"
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    assert main(["report", str(first), "--against", str(tmp_path / "edited.json")]) == 1
    assert "| NO |" in capsys.readouterr().out
    assert main(["report", str(first), "--against", str(record)]) == 1
    assert "not compare study" in capsys.readouterr().err
    assert main(["report", str(first), "--against", str(tmp_path / "missing.json")]) == 2
    assert "--against" in capsys.readouterr().err


def test_a_paper_difference_below_the_resolution_is_flagged_not_judged() -> None:
    from factorconv.reproduce import claims

    study = get_reproduction("osep-t6")
    ref = [80.0, 81.0, 80.5, 80.2, 80.9]
    noisy = [v + d for v, d in zip(ref, [3.0, -2.5, 1.0, -1.0, 2.0], strict=True)]
    rows = [{"conv": r.label, "accuracy": {"mean": 80.0, "ci_low": 79.0, "ci_high": 81.0},
             "difference": None} for r in study.rows]
    for row, values in zip(rows[1:], (noisy, noisy), strict=True):
        s = paired_difference(values, ref)
        row["difference"] = {"n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci_low, "ci_high": s.ci_high}
    out = claims(study, {"rows": rows})
    o_resnet = out[1]  # the paper's +2.12 against a spread of about 2.3 points over 5 seeds
    assert o_resnet["detectable"] > abs(o_resnet["paper_delta"]) and o_resnet["below_resolution"]
    assert o_resnet["verdict"] == "not distinguishable"  # the flag is not a verdict
    from factorconv.reproduce import render_claims

    assert BELOW_RESOLUTION in render_claims(study, "cpu", out)
    assert t_quantile(0.8, 4) == pytest.approx(0.9410, abs=1e-4)
