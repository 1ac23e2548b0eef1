"""`factorconv compare` at smoke size on the synthetic set: budgets on what ships and size sweeps, paired-seed
statistics (CIs, paired differences, verdicts), run health, resume (a rerun trains nothing), workers that do
not change results, the report, plot and `factorconv report`; and the statistics on hand-made numbers."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import factorconv as fc
from factorconv.cli import FLAGGED_EXIT, main
from factorconv.study import (
    Budget,
    LocalExecutor,
    StudyError,
    StudySpec,
    build_report,
    front_steps,
    paired_difference,
    pareto_front,
    parse_budgets,
    parse_count,
    run_study,
    summarize,
    t_quantile,
    verdict,
    welch_difference,
)
from factorconv.study.report import run_dir_of
from factorconv.train.health import DIVERGED, NOT_CONVERGED, OK, assess

SMOKE = {"progress": "off", "steps": 6, "train_subset": 256, "test_subset": 128, "batch_size": 32}


def spec(**kw) -> StudySpec:
    values = {"model": "resnet20", "convs": ["conv", "dsep", "bdsc"], "budget": "params=12k", "data": "synthetic",
              "preset": "smoke", "seeds": 1, "overrides": dict(SMOKE), "latency_repeats": 3, "latency_batch": [1, 2]}
    return StudySpec(**{**values, **kw})


# ---------------------------------------------------------------------------------------------- statistics


def test_t_quantiles_match_the_printed_table() -> None:
    # Student t, two-sided 95% (upper 0.975 quantile), from any statistics table
    for df, printed in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045), (1000, 1.962)):
        assert t_quantile(0.975, df) == pytest.approx(printed, abs=5e-4)
    assert t_quantile(0.995, 5) == pytest.approx(4.032, abs=5e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-2.776, abs=5e-4)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_summary_paired_difference_and_verdicts() -> None:
    s = summarize([80.0, 82.0, 84.0])
    half = 4.303 * 2.0 / math.sqrt(3)
    assert (s.n, s.mean, s.std) == (3, 82.0, 2.0)
    assert s.ci_low == pytest.approx(82 - half, abs=1e-3) and s.ci_high == pytest.approx(82 + half, abs=1e-3)
    one = summarize([70.0])
    assert one.std is None and one.ci_low is None and verdict(one) == "too few seeds"
    # Each accuracy alone varies by ±2 points, but the paired gain is always +1: the pairing finds it.
    ref = [80.0, 82.0, 84.0]
    better = paired_difference([81.0, 83.0, 85.0], ref)
    assert better.mean == pytest.approx(1.0) and better.std == pytest.approx(0.0) and verdict(better) == "better"
    assert verdict(paired_difference([79.0, 81.1, 82.9], ref)) == "worse"
    assert verdict(paired_difference([83.0, 80.0, 85.0], ref)) == "not distinguishable"
    with pytest.raises(ValueError, match="pair"):
        paired_difference([1.0], [1.0, 2.0])


def test_welch_difference_matches_scipy_and_the_pooled_interval() -> None:
    # scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95), printed once (df 3.710)
    diff, low, high = welch_difference([81.47, 81.23, 81.67, 80.9], [79.97, 80.10, 79.90])
    assert (diff, low, high) == pytest.approx((1.3275, 0.82412, 1.83088), abs=1e-4)
    # equal sizes and spreads: Welch's df is 2(n - 1) and the interval is the pooled one
    diff, low, high = welch_difference([80.0, 82.0, 84.0], [77.0, 79.0, 81.0])
    assert diff == pytest.approx(3.0) and high - diff == pytest.approx(2.776 * math.sqrt(8 / 3), abs=1e-3)
    with pytest.raises(ValueError, match="at least 2"):
        welch_difference([80.0], [79.0, 81.0])
    with pytest.raises(ValueError, match="constant"):
        welch_difference([80.0, 80.0], [79.0, 79.0])


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


def test_front_steps_say_which_steps_the_seeds_can_tell_apart() -> None:
    points = [{"cost": 1, "label": "small", "accs_by_seed": {0: 80.0, 1: 82.0, 2: 84.0}},
              {"cost": 2, "label": "mid", "accs_by_seed": {0: 80.5, 1: 81.5, 2: 84.6}},  # noise: +0.2 ± 0.8
              {"cost": 3, "label": "big", "accs_by_seed": {0: 85.5, 1: 86.5, 2: 89.6}}]  # +5 every seed
    steps = front_steps(points, "cost")
    assert [(s["from"], s["to"]) for s in steps] == [("small", "mid"), ("mid", "big")]
    assert steps[0]["verdict"] == "not distinguishable" and steps[1]["verdict"] == "better"
    assert steps[1]["difference"]["mean"] == pytest.approx(5.0)


def test_budget_and_count_parsing() -> None:
    assert parse_count("0.27M") == 270_000 and parse_count("41m") == 41e6 and parse_count("50k") == 50_000
    assert parse_count("269722") == 269_722 and parse_count("1e3") == 1000
    assert parse_budgets("params=0.27M") == [Budget("params", 270_000)]
    assert [b.value for b in parse_budgets("params=100k,25k,50k")] == [25_000, 50_000, 100_000]  # sorted sweep
    assert parse_budgets("size=200k")[0].by == "size" and parse_budgets("train-params=5k")[0].by == "train-params"
    assert parse_budgets("macs=41M")[0].value == 41e6
    assert parse_budgets("none") == [] and parse_budgets(None) == []
    for bad in ("flops=1M", "params", "params=-3", "params=abc", "params=0", "params=", "params=inf"):
        with pytest.raises(ValueError):
            parse_budgets(bad)


def test_health_of_hand_made_loss_traces() -> None:
    falling = [2.3 * 0.9**i + 0.5 for i in range(50)]  # flat by the end: converged
    assert assess(falling)["status"] == OK
    steep = [2.3 - 0.03 * i for i in range(50)]  # still falling as fast at the end as anywhere
    result = assess(steep)
    assert result["status"] == NOT_CONVERGED and result["end_rate"] == pytest.approx(1.0)
    up = [2.3 - 0.02 * i for i in range(25)] + [1.8 + 0.05 * i for i in range(25)]  # ends above the start
    assert assess(up)["status"] == DIVERGED
    assert assess([1.0, float("nan")])["status"] == DIVERGED
    assert assess([], nonfinite=True)["status"] == DIVERGED


def test_spec_validation_names_the_bad_option() -> None:
    with pytest.raises(ValueError, match="nope"):
        spec(convs=["conv", "nope"]).validate()
    with pytest.raises(ValueError, match="twice"):
        spec(convs=["conv", "conv"]).validate()
    with pytest.raises(ValueError, match="seeds"):
        spec(seeds=0).validate()
    with pytest.raises(ValueError, match="threads"):
        spec(threads=0).validate()
    with pytest.raises(ValueError, match="not in --convs"):
        spec(conv_kwargs={"acdc": {"atoms": 4}}).validate()
    with pytest.raises(ValueError, match="reference"):
        spec(reference="osep").validate()
    with pytest.raises(ValueError, match="preset"):
        spec(preset="nope").validate()
    with pytest.raises(ValueError, match="threads-per-run"):
        spec(overrides={**SMOKE, "threads": 2}).validate()
    for bad in ({"seeds": True}, {"width": True}, {"latency_batch": [1, False]}):  # a bool is not a number here
        with pytest.raises(ValueError, match=next(iter(bad)).replace("_", "-")):
            spec(**bad).validate()


def test_an_entry_is_parsed_once_into_what_its_runs_train() -> None:
    s = spec(convs=["conv", "acdc:net", "dsep"], models={"acdc:net": "resnet56"},
             conv_kwargs={"acdc:net": {"atoms": 4}}, model_kwargs={"dsep": {"norm_layer": "groupnorm"}},
             overrides={**SMOKE, "model_kwargs": {"act_layer": "silu"}}).validate()
    acdc, dsep = s.entry("acdc:net"), s.entry("dsep")
    assert (acdc.label, acdc.operator, acdc.model, acdc.conv_kwargs) == ("acdc:net", "acdc", "resnet56", {"atoms": 4})
    assert acdc.model_kwargs == {"act_layer": "silu"}
    assert dsep.conv_kwargs == {"norm": True}  # the paper's form, under the study's options
    assert dsep.model_kwargs == {"act_layer": "silu", "norm_layer": "groupnorm"}
    assert [e.label for e in s.entries] == s.convs
    model = acdc.create_model(0.25, num_classes=10, in_chans=1)
    assert model.build_config["model"] == "resnet56" and model.build_config["conv"] == "acdc"


# ---------------------------------------------------------------------------------------------- budgets


def test_a_params_budget_is_on_the_deploy_form() -> None:
    """DO-Conv ships exactly the plain conv, so at a budget on deploy params both get the same width; on the
    parameters trained DO-Conv's extra D makes it narrower."""
    size = (1, 28, 28)
    conv = fc.match_width("resnet20", "conv", 50_000, "params", grid=1 / 16, input_size=size)
    doconv = fc.match_width("resnet20", "doconv", 50_000, "params", grid=1 / 16, input_size=size)
    assert doconv.width == conv.width and doconv.value == conv.value
    trained = fc.match_width("resnet20", "doconv", 50_000, "train-params", grid=1 / 16, input_size=size)
    assert trained.width < conv.width
    # size counts BDSC's configuration at 1 bit: it gets a wider network at the same bytes than at the same params
    bdsc_params = fc.match_width("resnet20", "bdsc", 50_000, "params", grid=1 / 16, input_size=size,
                                 conv_kwargs={"norm": True})
    conv_bytes = fc.count_model("resnet20", "conv", conv.width, "size", input_size=size)
    bdsc_size = fc.match_width("resnet20", "bdsc", conv_bytes, "size", grid=1 / 16, input_size=size,
                               conv_kwargs={"norm": True})
    assert bdsc_size.width > bdsc_params.width


def test_a_budget_no_width_comes_near_is_refused(tmp_path: Path, capsys) -> None:
    argv = ["compare", "--convs", "conv", "--budget", "params=10", "--data", "synthetic", "--preset", "smoke",
            "--out", str(tmp_path / "s"), "--no-latency"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot meet params=10" in err and "smallest width" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- whole studies


def _accs(out: Path, conv: str, width: float, seeds: int) -> list[float]:
    return [100 * json.loads((run_dir_of(out, conv, width, s) / "result.json").read_text())["test_acc"]
            for s in range(seeds)]


def test_study_matches_budget_trains_resumes_and_reports(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "study"
    results = run_study(spec(seeds=2), out)
    rows = {r["conv"]: r for r in results["rows"]}
    assert list(rows) == ["conv", "dsep", "bdsc"]
    for conv, row in rows.items():
        # budget matching: each model is the closest on the 1/16 width grid to 12k deploy params
        match = fc.match_width("resnet20", conv, 12_000, "params", grid=1 / 16, input_size=(1, 16, 16),
                               conv_kwargs={"norm": True} if conv in ("dsep", "bdsc") else None)
        assert row["width"] == match.width and row["deploy_params"] == match.value
        assert abs(row["deploy_params"] - 12_000) / 12_000 < 0.3
        # seeds > 1: mean, sample std and the t interval of the two runs' accuracies
        accs = _accs(out, conv, row["width"], 2)
        assert [r["acc"] for r in row["runs"]] == accs
        acc = row["accuracy"]
        assert acc["mean"] == pytest.approx(statistics.fmean(accs)) and acc["std"] == pytest.approx(
            statistics.stdev(accs))
        assert acc["ci_high"] - acc["mean"] == pytest.approx(12.706 * acc["std"] / math.sqrt(2), rel=1e-3)
        assert row["deploy_max_logit_diff"] < 1e-3  # the timed deploy form is the trained model
        assert row["latency"]["1"]["ratio"] > 0 and row["latency_ms"] == row["latency"]["1"]["ms"]
        if conv == "conv":
            assert row["difference"] is None and row["verdict"] is None
        else:  # the paired difference to the reference, seed by seed
            ref = _accs(out, "conv", rows["conv"]["width"], 2)
            gains = [a - b for a, b in zip(accs, ref, strict=True)]
            assert row["difference"]["mean"] == pytest.approx(statistics.fmean(gains))
            assert row["verdict"] == verdict(paired_difference(accs, ref))
    assert rows["bdsc"]["train_params"] > rows["bdsc"]["deploy_params"] / 2  # both sizes are reported
    assert rows["dsep"]["width"] > rows["conv"]["width"]  # a cheaper operator gets the wider network
    on_front = pareto_front([r["deploy_params"] for r in results["rows"]],
                            [r["accuracy"]["mean"] for r in results["rows"]])
    assert [r["front_params"] for r in results["rows"]] == on_front
    report = (out / "report.md").read_text()
    for text in ("| conv | width | train params | deploy params", "95% CI", "Δ vs conv", "can and cannot conclude",
                 "Pareto front", "study.png"):
        assert text in report
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: the same study again trains nothing (every run's files are left as they were)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/seed*/checkpoint.pt")}
    assert len(stamps) == 6
    again = run_study(spec(seeds=2), out, measure_latency=False)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/seed*/checkpoint.pt")} == stamps
    assert [r["runs"] for r in again["rows"]] == [r["runs"] for r in results["rows"]]

    # a different study in the same directory is refused, not mixed in
    with pytest.raises(StudyError, match="budget kind"):
        run_study(spec(seeds=2, budget="macs=1M"), out)
    with pytest.raises(StudyError, match="preset"):
        run_study(spec(seeds=2, preset="quick"), out)

    # `factorconv report DIR` rebuilds table, report and plot from the files alone
    (out / "report.md").unlink()
    (out / "study.png").unlink()
    assert main(["report", str(out), "--json"]) in (0, FLAGGED_EXIT)
    assert (out / "report.md").exists() and (out / "study.png").exists()


def test_a_size_sweep_adds_budgets_and_reuses_runs(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "sweep"
    run_study(spec(convs=["conv", "dsep"]), out, measure_latency=False)
    first = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/seed0/checkpoint.pt")}
    results = run_study(spec(convs=["conv", "dsep"], budget="params=6k,20k"), out)  # grows to three budgets
    assert json.loads((out / "study.json").read_text())["budget"] == "params=6000,12000,20000"
    rows = results["rows"]
    assert [(r["budget"], r["conv"]) for r in rows] == [
        (b, c) for b in ("params=6k", "params=12k", "params=20k") for c in ("conv", "dsep")]
    for conv in ("conv", "dsep"):
        sizes = [r["deploy_params"] for r in rows if r["conv"] == conv]
        assert sizes == sorted(sizes) and len(set(sizes)) == 3
    for path, stamp in first.items():  # the 12k runs were not trained again
        assert path.stat().st_mtime_ns == stamp
    assert sum(r["front_params"] for r in rows) >= 1
    assert "| conv | budget | width |" in (out / "report.md").read_text()
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_workers_do_not_change_any_runs_result(tmp_path: Path) -> None:
    """Each run's threads are in its config, so 2 worker processes give the numbers of 1 in-process worker."""
    torch.set_num_threads(1)
    small = spec(convs=["conv", "dsep"], seeds=2)
    one = run_study(small, tmp_path / "one", executor=LocalExecutor(1), measure_latency=False)
    two = run_study(spec(convs=["conv", "dsep"], seeds=2), tmp_path / "two", executor=LocalExecutor(2),
                    measure_latency=False)
    assert [[x["acc"] for x in r["runs"]] for r in one["rows"]] == [[x["acc"] for x in r["runs"]] for r in two["rows"]]
    for r in one["rows"]:
        for seed in range(2):
            a = json.loads((run_dir_of(tmp_path / "one", r["conv"], r["width"], seed) / "result.json").read_text())
            b = json.loads((run_dir_of(tmp_path / "two", r["conv"], r["width"], seed) / "result.json").read_text())
            assert a["loss_trace"] == b["loss_trace"] and a["test_loss"] == b["test_loss"]


def test_a_diverged_run_is_flagged_not_averaged(tmp_path: Path, capsys) -> None:
    out = tmp_path / "div"
    argv = ["--threads", "1", "compare", "--convs", "conv,dsep", "--budget", "none", "--data", "synthetic",
            "--preset", "smoke", "--out", str(out), "--no-latency", "--seeds", "2"]
    for key, value in {**SMOKE, "lr": 1e9}.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == FLAGGED_EXIT
    captured = capsys.readouterr()
    assert "diverged" in captured.err and "Traceback" not in captured.err
    results = json.loads((out / "results.json").read_text())
    assert results["flags"]["diverged"] == 4
    for row in results["rows"]:
        assert row["accuracy"] is None and row["diverged"] == 2 and "2/2 diverged" in captured.out
    result = json.loads((run_dir_of(out, "conv", 1.0, 0) / "result.json").read_text())
    assert result["status"] == DIVERGED and result["health"]["status"] == DIVERGED
    # a rerun does not train a deterministic diverged run again
    assert main(argv) == FLAGGED_EXIT
    assert "4 of 4 runs finished before" in capsys.readouterr().err


def test_compare_command_without_budget_and_with_a_finished_run_changed(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    argv = ["--threads", "1", "compare", "--convs", "conv,doconv", "--budget", "none", "--data", "synthetic",
            "--preset", "smoke", "--out", str(out), "--no-latency", "--opt", "doconv:D_mul=12", "--seeds", "1",
            "--workers", "1"]
    for key, value in SMOKE.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) in (0, FLAGGED_EXIT)
    table = capsys.readouterr().out
    assert "| conv | 1 |" in table and "| doconv | 1 |" in table and "Pareto front" in table
    # a run whose saved config no longer matches is reported, not silently reused
    result = run_dir_of(out, "conv", 1.0, 0) / "result.json"
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
    conv_width = json.loads((out / "study.json").read_text())["widths"]["params=12k"]["conv"]
    stamp = (run_dir_of(out, "conv", conv_width, 0) / "checkpoint.pt").stat().st_mtime_ns
    grown = run_study(spec(convs=["osep"], model_kwargs={"osep": {"shortcut": "conv"}}), out, measure_latency=False)
    assert [r["conv"] for r in grown["rows"]] == ["conv", "osep"]  # the earlier operator stays in the study
    assert (run_dir_of(out, "conv", conv_width, 0) / "checkpoint.pt").stat().st_mtime_ns == stamp
    osep = grown["rows"][1]
    config = json.loads((run_dir_of(out, "osep", osep["width"], 0) / "config.json").read_text())
    assert config["model_kwargs"] == {"shortcut": "conv"} and config["threads"] == 1
    with pytest.raises(StudyError, match="model_kwargs"):  # the same operator with other backbone options
        run_study(spec(convs=["osep"], model_kwargs={"osep": {"shortcut": "B"}}), out, measure_latency=False)
    # a run saved before a config field existed (here: cutout, aux_weight) is the same run at that default
    result_path = run_dir_of(out, "conv", conv_width, 0) / "result.json"
    saved = json.loads(result_path.read_text())
    for key in ("cutout", "aux_weight", "train_only", "classes", "init_from"):
        saved["config"].pop(key)
    result_path.write_text(json.dumps(saved))
    run_study(spec(convs=["conv"]), out, measure_latency=False)
    assert (run_dir_of(out, "conv", conv_width, 0) / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_the_longest_known_runs_start_first() -> None:
    from factorconv.study.execution import LongestFirst, RunTask

    def task(key: str, seed: int) -> RunTask:
        return RunTask({"run_dir": f"{key}/{seed}"}, f"{key} {seed}", key)

    order = LongestFirst()
    queue = [task(k, s) for s in range(2) for k in ("fast", "slow", "mid")]
    first = [order.pick(queue) for _ in range(3)]  # nothing measured yet: the plan's order
    assert [t.label for t in first] == ["fast 0", "slow 0", "mid 0"]
    for t, seconds in zip(first, (10.0, 300.0, 60.0), strict=True):
        order.record(t, seconds)
    assert [order.pick(queue).label for _ in range(3)] == ["slow 1", "mid 1", "fast 1"]


def test_plot_labels_of_operators_at_one_point_are_merged() -> None:
    from factorconv.study.plot import _merge_labels

    # the study-long plot: doconv and acdc both at 52,111 deploy params, 0.01 point apart, printed as "dodonv"
    labels = [(52111, 89.92, "doconv"), (52111, 89.91, "acdc"), (52111, 89.57, "conv"), (46576, 87.35, "bdsc"),
              (46378, 89.63, "igcv2")]
    assert _merge_labels(labels) == {(52111, 89.92): ["doconv", "acdc"], (52111, 89.57): ["conv"],
                                     (46576, 87.35): ["bdsc"], (46378, 89.63): ["igcv2"]}


_ORPHAN_SCRIPT = """
import concurrent.futures as futures, multiprocessing, os, sys, time
from factorconv.study.execution import init_worker
if __name__ == "__main__":
    # the control starts its worker without the study's initializer, so nothing watches the parent
    init = dict(initializer=init_worker, initargs=(None, os.getpid())) if sys.argv[1] == "watch" else {}
    ctx = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(1, mp_context=ctx, **init) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 300)
        time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("mode", ["watch", "no-watch"])
def test_a_killed_study_leaves_no_worker_training(tmp_path: Path, mode: str) -> None:
    """SIGKILL (or an uncaught SIGTERM) of the study process: its workers end within seconds instead of
    finishing their runs unseen. Without the watch (the control) the worker outlives it."""
    script = tmp_path / "study.py"
    script.write_text(_ORPHAN_SCRIPT)
    study = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(study.stdout.readline())
        assert _alive(worker)
        study.send_signal(signal.SIGKILL)
        study.wait(timeout=30)
        deadline = time.monotonic() + (15 if mode == "watch" else 3)  # the watch looks once a second
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(worker) == (mode == "no-watch")
    finally:
        study.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
