"""compare_timings: interleaving order and paired ratios, checked with a fake clock (no real timing); the ops
and models suites and the bench command at tiny sizes (their structure, not their speed)."""

import json

import pytest
import torch

from factorconv import bench


def test_interleaved_order_and_paired_ratios(monkeypatch) -> None:
    clock = {"t": 0.0}
    calls: list[str] = []
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["t"])

    def make(name: str, cost: float):
        def run() -> None:
            calls.append(name)
            clock["t"] += cost * (2.0 if len(calls) > 30 else 1.0)  # the machine slows down half-way

        return run

    timings = bench.compare_timings({"a": make("a", 1.0), "b": make("b", 3.0), "c": make("c", 0.5)},
                                    repeats=20, warmup=0)
    assert calls[:6] == ["a", "b", "c", "b", "c", "a"]  # each repetition starts one further along
    by_name = {t.name: t for t in timings}
    assert by_name["a"].ratio == 1.0
    assert by_name["b"].ratio == pytest.approx(3.0)  # pairing cancels the slowdown
    assert by_name["c"].ratio == pytest.approx(0.5)
    assert len(by_name["b"].samples) == 20


def test_bad_baseline() -> None:
    with pytest.raises(ValueError, match="baseline"):
        bench.compare_timings({"a": lambda: None}, baseline="b")
    with pytest.raises(ValueError, match="no candidates"):
        bench.compare_timings({})


def test_bench_ops_and_models_suites_report_ratios_and_rates() -> None:
    from factorconv.bench import bench_models, bench_ops, render_bench

    torch.set_num_threads(1)
    ops = bench_ops(["dsep", "doconv"], channels=8, size=8, batch=2, repeats=2, layouts=(False, True))
    rows = {(r["conv"], r["mode"], r["channels_last"]): r for r in ops["rows"]}
    forced = {(f"{c}[{path}]", m, True) for c in ("dsep", "doconv") for path in ("kernel", "feature")
              for m in ("train", "eval")}  # each compute path forced, in the last layout only
    assert set(rows) == {(c, m, cl) for c in ("conv", "dsep", "doconv") for m in ("train", "eval")
                         for cl in (False, True)} | forced
    for layout in (False, True):
        for mode in ("train", "eval"):
            assert rows[("conv", mode, layout)]["ratio"] == 1.0  # the baseline against itself
            assert rows[("dsep", mode, layout)]["gflops"] > 0
    assert "vs_contiguous" in rows[("dsep", "eval", True)] and ops["matmul_gflops"] > 0
    assert "| dsep |" in render_bench(ops)

    models = bench_models("resnet20", ["doconv"], batch=2, repeats=2, width=0.25)
    by = {(r["conv"], r["mode"]): r for r in models["rows"]}
    expected = {(c, m) for c in ("conv", "doconv") for m in ("train", "eval", "deployed")}
    assert set(by) == expected | {("conv (copy)", "deployed")}
    assert by[("doconv", "deployed")]["deploy_macs"] == by[("conv", "deployed")]["macs"]  # folds to the same net
    assert "| doconv |" in render_bench(models)


def test_bench_command(capsys) -> None:
    from factorconv.cli import main

    assert main(["--threads", "1", "bench", "models", "--convs", "acdc", "--batch", "2", "--repeats", "1",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "models" and {r["conv"] for r in result["rows"]} == {"conv", "acdc", "conv (copy)"}
    assert main(["bench", "ops", "--convs", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_breakdown_table_aligns_categories_across_models() -> None:
    from factorconv.bench import breakdown_table

    lines = breakdown_table({"a": {"conv": 0.75, "other": 0.25}, "b": {"batchnorm": 0.5, "conv": 0.5}})
    assert lines == [
        "| model | batchnorm | conv | other |",
        "|---|---:|---:|---:|",
        "| a | 0% | 75% | 25% |",
        "| b | 50% | 50% | 0% |",
    ]
