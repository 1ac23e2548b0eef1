"""`factorconv compare` at smoke size on the synthetic set: budget matching, resume (a rerun trains nothing),
seeds > 1 (mean ± std), the Pareto front on hand-made points, the report, plot and `factorconv report`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

import factorconv as fc
from factorconv.cli import main
from factorconv.study import (
    StudyError,
    StudySpec,
    build_report,
    pareto_front,
    parse_budget,
    parse_count,
    run_study,
)

SMOKE = {"progress": "off", "threads": 1, "steps": 6, "train_subset": 256, "test_subset": 128, "batch_size": 32}


def spec(**kw) -> StudySpec:
    values = {"model": "resnet20", "convs": ["conv", "dsep", "bdsc"], "budget": "params=12k", "data": "synthetic",
              "preset": "smoke", "seeds": 1, "overrides": dict(SMOKE), "latency_repeats": 3}
    return StudySpec(**{**values, **kw})


def test_pareto_front_on_hand_made_points() -> None:
    costs = [10, 20, 30, 20, 5, 40]
    accs = [80, 85, 84, 85, 70, 90]
    # 30/84 is dominated by 20/85; the two equal points 20/85 both stay; 5/70 is the cheapest
    assert pareto_front(costs, accs) == [True, True, False, True, True, True]
    assert pareto_front([1, 1], [50, 60]) == [False, True]  # same cost, less accurate: dominated
    assert pareto_front([1, 2], [60, 60]) == [True, False]  # same accuracy, costlier: dominated
    assert pareto_front([], []) == []
    with pytest.raises(ValueError, match="length"):
        pareto_front([1], [])


def test_budget_and_count_parsing() -> None:
    assert parse_count("0.27M") == 270_000 and parse_count("41m") == 41e6 and parse_count("50k") == 50_000
    assert parse_count("269722") == 269_722 and parse_count("1e3") == 1000
    assert parse_budget("params=0.27M").by == "params" and parse_budget("macs=41M").value == 41e6
    assert parse_budget("none") is None and parse_budget(None) is None
    for bad in ("flops=1M", "params", "params=-3", "params=abc", "params=0"):
        with pytest.raises(ValueError):
            parse_budget(bad)


def test_spec_validation_names_the_bad_option() -> None:
    with pytest.raises(ValueError, match="nope"):
        spec(convs=["conv", "nope"]).validate()
    with pytest.raises(ValueError, match="twice"):
        spec(convs=["conv", "conv"]).validate()
    with pytest.raises(ValueError, match="seeds"):
        spec(seeds=0).validate()
    with pytest.raises(ValueError, match="not in --convs"):
        spec(conv_kwargs={"acdc": {"atoms": 4}}).validate()
    with pytest.raises(ValueError, match="preset"):
        spec(preset="nope").validate()


def test_study_matches_budget_trains_resumes_and_reports(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "study"
    results = run_study(spec(seeds=2), out)
    rows = {r["conv"]: r for r in results["rows"]}
    assert list(rows) == ["conv", "dsep", "bdsc"]
    for conv, row in rows.items():
        # budget matching: each model is the closest on the 1/16 width grid to 12k params
        match = fc.match_width("resnet20", conv, 12_000, "params", grid=1 / 16, input_size=(1, 16, 16),
                               conv_kwargs={"norm": True} if conv in ("dsep", "bdsc") else None)
        assert row["width"] == match.width and row["params"] == match.value
        assert abs(row["params"] - 12_000) / 12_000 < 0.3
        # seeds > 1: mean and sample std of the two runs' accuracies
        accs = [100 * json.loads((out / "runs" / conv / f"seed{s}" / "result.json").read_text())["test_acc"]
                for s in range(2)]
        assert row["accs"] == accs and row["acc_mean"] == pytest.approx(statistics.fmean(accs))
        assert row["acc_std"] == pytest.approx(statistics.stdev(accs))
        assert row["deploy_max_logit_diff"] < 1e-3  # the timed deploy form is the trained model
        assert row["latency_cpu_ratio"] > 0
    assert rows["dsep"]["width"] > rows["conv"]["width"]  # a cheaper operator gets the wider network
    on_front = pareto_front([r["params"] for r in results["rows"]], [r["acc_mean"] for r in results["rows"]])
    assert [r["front_params"] for r in results["rows"]] == on_front
    report = (out / "report.md").read_text()
    assert "| conv | width | params" in report and "Pareto front" in report and "study.png" in report
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: the same study again trains nothing (every run's files are left as they were)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/checkpoint.pt")}
    assert len(stamps) == 6
    again = run_study(spec(seeds=2), out, measure_latency=False)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/checkpoint.pt")} == stamps
    assert [r["accs"] for r in again["rows"]] == [r["accs"] for r in results["rows"]]

    # a different study in the same directory is refused, not mixed in
    with pytest.raises(StudyError, match="budget"):
        run_study(spec(seeds=2, budget="params=20k"), out)

    # `factorconv report DIR` rebuilds table, report and plot from the files alone
    (out / "report.md").unlink()
    (out / "study.png").unlink()
    assert main(["report", str(out), "--json"]) == 0
    assert (out / "report.md").exists() and (out / "study.png").exists()


def test_compare_command_without_budget_and_with_a_finished_run_changed(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    argv = ["--threads", "1", "compare", "--convs", "conv,doconv", "--budget", "none", "--data", "synthetic",
            "--preset", "smoke", "--out", str(out), "--no-latency", "--opt", "doconv:D_mul=12"]
    for key, value in SMOKE.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| conv | 1 |" in table and "| doconv | 1 |" in table and "Pareto front" in table
    # a run whose saved config no longer matches is reported, not silently reused
    result = out / "runs" / "conv" / "seed0" / "result.json"
    data = json.loads(result.read_text())
    data["config"]["lr"] = 0.5
    result.write_text(json.dumps(data))
    assert main(argv) == 1
    assert "different settings (lr)" in capsys.readouterr().err


def test_report_of_an_empty_directory_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 1
    assert "no study" in capsys.readouterr().err
    with pytest.raises(StudyError, match="no study"):
        build_report(tmp_path / "missing")


def test_adding_an_operator_to_a_study_trains_only_it(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "grow"
    run_study(spec(convs=["conv"]), out, measure_latency=False)
    stamp = (out / "runs" / "conv" / "seed0" / "checkpoint.pt").stat().st_mtime_ns
    grown = run_study(spec(convs=["osep"], model_kwargs={"osep": {"shortcut": "conv"}}), out, measure_latency=False)
    assert [r["conv"] for r in grown["rows"]] == ["conv", "osep"]  # the earlier operator stays in the study
    assert (out / "runs" / "conv" / "seed0" / "checkpoint.pt").stat().st_mtime_ns == stamp
    config = json.loads((out / "runs" / "osep" / "seed0" / "config.json").read_text())
    assert config["model_kwargs"] == {"shortcut": "conv"}
    with pytest.raises(StudyError, match="model_kwargs"):  # the same operator with other backbone options
        run_study(spec(convs=["osep"], model_kwargs={"osep": {"shortcut": "B"}}), out, measure_latency=False)
