"""compare_timings: interleaving order and paired ratios, checked with a fake clock (no real timing)."""

import pytest

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
