"""Deploying for latency (factorconv.deployment): every exact form of every operator against the operator on
random configurations, the latency-chosen model against the trained one, the exported graphs' node types
(static channel shapes, BatchNorm folded), the timing cache (reused; a new runtime version times afresh), and
the errors a user meets (an objective or runtime that does not exist, a runtime not installed)."""

from __future__ import annotations

import collections
import copy
import json
from pathlib import Path

import pytest
import torch
from helpers import build, conv_config, randomize_
from hypothesis import given, settings
from hypothesis import strategies as st

import factorconv as fc
from factorconv.cli import main
from factorconv.deployment import TimingCache, deploy, get_runtime, layer_forms
from factorconv.deployment import choose as choose_module
from factorconv.deployment.forms import fuse_gathers, merge_pointwise, regroup, segment
from factorconv.deployment.runtimes import RUNTIMES, installed_runtimes, onnx_bytes
from factorconv.ops.channel import ChannelGather


@pytest.mark.parametrize("conv", fc.list_convs())
@settings(max_examples=8)
@given(data=st.data())
def test_every_form_of_every_operator_is_exact(conv: str, data) -> None:
    cfg = data.draw(conv_config(conv))
    op = randomize_(build(conv, cfg)).eval()
    x = torch.randn(cfg["batch"], cfg["in_ch"], *cfg["hw"], dtype=torch.float64)
    with torch.no_grad():
        want = op(x)
        scale = max(float(want.abs().max()), 1e-12)
        forms = layer_forms(op)
        assert forms[0].name == "size" and len({f.signature for f in forms}) == len(forms)
        for form in forms:
            got = form.module(x)
            assert got.shape == want.shape, form.name
            assert float((got - want).abs().max()) / scale < 1e-9, (form.name, form.module)


def test_the_chain_operators_get_their_algebras_forms() -> None:
    torch.manual_seed(0)
    igcv2 = fc.create_conv2d(48, 48, 3, conv="igcv2", padding=1, L=4, K=2).eval()
    names = {f.name for f in layer_forms(igcv2)}
    assert {"size", "fold", "merged", "regrouped:g1+merged"} <= names
    assert any(n.startswith("segments:") for n in names)  # partial merges of its three group 1x1 convs
    osep = fc.create_conv2d(24, 24, 3, conv="osep", padding=1).eval()
    assert {"merged", "regrouped:g1"} <= {f.name for f in layer_forms(osep)}
    bdsc = fc.create_conv2d(8, 8, 3, conv="bdsc", padding=1, norm=True).eval()
    assert [f.name for f in layer_forms(bdsc)] == ["size", "fold", "convs"]
    assert [f.name for f in layer_forms(fc.create_conv2d(8, 8, 3, padding=1))] == ["size"]


def test_the_algebra_helpers() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 12, 3, padding=1, groups=6, bias=True)
    x = torch.randn(2, 12, 5, 5)
    for groups in (3, 2, 1):
        torch.testing.assert_close(regroup(conv, groups)(x), conv(x))
    with pytest.raises(ValueError, match="do not divide"):
        regroup(conv, 4)
    shuffle = ChannelGather(torch.tensor([0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]), 12)
    run = [torch.nn.Conv2d(12, 12, 1, groups=4), shuffle, torch.nn.Conv2d(12, 12, 1, groups=3, bias=False)]
    y = torch.randn(2, 12, 3, 3)
    want = torch.nn.Sequential(*run)(y)
    torch.testing.assert_close(merge_pointwise(run)(y), want, rtol=1e-5, atol=1e-5)
    split = segment(run[:2])  # a grouped conv and a shuffle: still grouped, the shuffle as a gather
    assert [type(m).__name__ for m in split] == ["Conv2d", "ChannelGather"] and split[0].groups == 4
    torch.testing.assert_close(torch.nn.Sequential(*split)(y), torch.nn.Sequential(*run[:2])(y))
    back = ChannelGather(torch.argsort(shuffle.index_cpu), 12)
    assert fuse_gathers([shuffle, back]) == []  # a shuffle and its inverse are nothing


def _small(conv: str) -> torch.nn.Module:
    torch.manual_seed(0)
    width = {"igcv2": 0.75, "osep": 0.5, "dsep": 0.5}.get(conv, 0.25)
    options = {"dsep": {"norm": True}, "bdsc": {"norm": True}}.get(conv, {})
    model = fc.create_model("resnet20", conv=conv, width=width, in_chans=1, conv_kwargs=options)
    return randomize_(model).eval()


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
@pytest.mark.parametrize("conv", ["conv", "dsep", "doconv", "acdc", "igcv2", "osep", "bdsc"])
def test_the_latency_form_is_the_trained_model(conv: str, runtime: str, tmp_path: Path) -> None:
    if runtime not in installed_runtimes():
        pytest.skip(f"{runtime} is not installed (scripts/setup.sh installs it)")
    model = _small(conv)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        want = model(x)
    deployed = deploy(copy.deepcopy(model), "latency", runtime=runtime, input_size=(1, 16, 16), batch=2,
                      repeats=3, cache=TimingCache(tmp_path / "t.json"))
    report = deployed.deploy_report
    assert report.max_rel_diff < 1e-4 and report.batch == 2 and report.runtime.startswith(runtime)
    assert set(report.forms) == {name for name, _ in fc.iter_operators(model)}
    with torch.no_grad():
        assert float((deployed(x) - want).abs().max()) / float(want.abs().max()) < 1e-4
    assert not any(fc.ops.base.is_operator(m) for m in deployed.modules())  # plain modules only


def _in_form(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """A copy of `model` with every operator in its form `name` (the size form where it has none)."""
    from factorconv.convert import _swap_operators

    def pick(op: torch.nn.Module) -> torch.nn.Module:
        forms = layer_forms(op)
        return next((f.module for f in forms if f.name == name), forms[0].module)

    return _swap_operators(copy.deepcopy(model), pick)


def _node_types(module: torch.nn.Module, shape: tuple[int, ...]) -> collections.Counter:
    import onnx

    graph = onnx.load_from_string(onnx_bytes(module.eval(), torch.randn(*shape)))
    return collections.Counter(n.op_type for n in graph.graph.node)


@pytest.mark.export
def test_exported_graphs_have_static_channels_and_folded_norms() -> None:
    pytest.importorskip("onnx")
    shape = (1, 1, 16, 16)
    plain = _node_types(fc.deploy(_small("conv")), shape)  # the backbone's own nodes (shortcuts, pooling)
    dynamic = ("Shape", "Unsqueeze", "Concat", "Cast", "Transpose")
    for conv in ("igcv2", "osep"):
        model = _small(conv)
        size = _node_types(fc.deploy(copy.deepcopy(model)), shape)
        gathers = sum(isinstance(m, ChannelGather) for m in fc.deploy(copy.deepcopy(model)).modules())
        for kind in dynamic:  # no shuffle recomputes its shape at run time
            assert size[kind] <= plain[kind], (conv, kind, size)
        assert size["Gather"] <= plain["Gather"] + gathers
    osep = _node_types(fc.deploy(_small("osep")), shape)
    assert osep["Shape"] == plain["Shape"]  # before: 72 Shape and 144 Unsqueeze nodes for its shuffles
    counts = _node_types(_in_form(_small("igcv2"), "merged"), shape)
    assert counts["Gather"] == plain["Gather"] and counts["Conv"] == plain["Conv"] + 18  # dw 3x3 + one 1x1
    bdsc = _small("bdsc")
    packed = _node_types(fc.deploy(copy.deepcopy(bdsc)), shape)
    unpacked = _node_types(_in_form(bdsc, "convs"), shape)
    assert packed["BatchNormalization"] > plain["BatchNormalization"] and packed["Floor"] > 0  # norms, bits
    for kind in ("BatchNormalization", "Pad", "Floor", "Concat", "Cast"):  # folded, precomputed, padding in the 1x1
        assert unpacked[kind] == plain[kind], (kind, unpacked)


def test_timings_are_cached_and_a_new_runtime_version_retimes(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = choose_module._time_forms

    def counted(forms, shape, runtime, repeats):
        calls.append(len(forms))
        return real(forms, shape, runtime, repeats)

    monkeypatch.setattr(choose_module, "_time_forms", counted)
    cache = TimingCache(tmp_path / "timings.json")
    model = _small("igcv2")
    first = deploy(copy.deepcopy(model), "latency", runtime="torch", input_size=(1, 16, 16), repeats=3, cache=cache)
    timed = len(calls)
    assert timed > 0 and (tmp_path / "timings.json").is_file()
    entries = json.loads((tmp_path / "timings.json").read_text())
    assert all(e["runtime"].startswith("torch") for e in entries.values())
    again = deploy(copy.deepcopy(model), "latency", runtime="torch", input_size=(1, 16, 16), repeats=3,
                   cache=TimingCache(tmp_path / "timings.json"))
    assert len(calls) == timed  # everything came from the file
    assert again.deploy_report.forms.keys() == first.deploy_report.forms.keys()
    monkeypatch.setattr(RUNTIMES["torch"], "version", lambda self: "99.0")
    deploy(copy.deepcopy(model), "latency", runtime="torch", input_size=(1, 16, 16), repeats=3,
           cache=TimingCache(tmp_path / "timings.json"))
    assert len(calls) > timed  # another version: timed afresh
    (tmp_path / "timings.json").write_text("not json")  # a damaged cache is only a cache
    deploy(copy.deepcopy(model), "latency", runtime="torch", input_size=(1, 16, 16), repeats=3,
           cache=TimingCache(tmp_path / "timings.json"))


def test_bad_objectives_runtimes_and_inputs(monkeypatch, capsys) -> None:
    model = _small("conv")
    with pytest.raises(ValueError, match="objective must be one of size, latency"):
        deploy(model, "speed")
    with pytest.raises(ValueError, match=r"needs input_size=\(C, H, W\)"):
        deploy(model, "latency", runtime="torch")
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        get_runtime("tensorrt")
    monkeypatch.setattr(RUNTIMES["openvino"], "installed", classmethod(lambda cls: False))
    with pytest.raises(ValueError, match=r"runtime openvino is not installed: pip install 'factorconv\[openvino\]'"):
        deploy(model, "latency", runtime="openvino", input_size=(1, 16, 16))
    status = main(["bench", "deploy", "--runtimes", "openvino", "--convs", "conv"])
    err = capsys.readouterr().err
    assert status == 2 and "pip install 'factorconv[openvino]'" in err and len(err.strip().splitlines()) == 1
    status = main(["bench", "deploy", "--batch", "1,x"])
    assert status == 2 and "--batch expects positive integers" in capsys.readouterr().err


# the study: latency where it ships, a front over it, and a latency budget ------------------------------------


def test_a_study_reports_latency_per_batch_and_its_front(tmp_path: Path) -> None:
    from factorconv.study import StudySpec, run_study

    spec = StudySpec(model="resnet20", convs=["conv", "igcv2"], budget="params=12k", data="synthetic",
                     preset="smoke", seeds=2, latency_repeats=3, latency_batch=[1, 4], latency_runtime="torch",
                     overrides={"progress": "off", "steps": 4, "train_subset": 128, "test_subset": 64})
    results = run_study(spec, tmp_path / "s")
    assert results["axes"] == ["params", "macs", "latency"]
    latency = json.loads((tmp_path / "s" / "latency.json").read_text())
    assert latency["runtime"].startswith("torch ") and latency["batches"] == [1, 4]
    for row in results["rows"]:
        assert set(row["latency"]) == {"1", "4"} and row["latency_ms"] > 0
        assert row["deploy_max_logit_diff"] < 1e-4
    assert "front_latency" in results["rows"][0] and "latency" in results["front_steps"]
    report = (tmp_path / "s" / "report.md").read_text()
    assert "latency b1 ms (×standard)" in report and "Accuracy vs latency (ms)" in report
    assert "deployed for latency" in report and latency["runtime"] in report


def test_latency_budgets_parse_and_refuse_in_one_line(capsys, monkeypatch) -> None:
    from factorconv.study.spec import Budget, parse_budgets

    assert parse_budgets("latency=0.3ms") == [Budget("latency", 0.3)]
    assert parse_budgets("latency=300us")[0].value == pytest.approx(0.3) and str(Budget("latency", 0.3)) == \
        "latency=0.3ms"
    assert parse_budgets("latency=0.002s")[0].value == pytest.approx(2.0)
    for bad, needle in (("latency=0ms", "must be positive"), ("latency=3min", "unit ms, us or s"),
                        ("latency=0.3", "unit ms, us or s"), ("latency=", "names no count")):
        status = main(["compare", "--data", "synthetic", "--budget", bad])
        err = capsys.readouterr().err
        assert status == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setattr(RUNTIMES["openvino"], "installed", classmethod(lambda cls: False))
    status = main(["compare", "--data", "synthetic", "--budget", "latency=0.3ms", "--latency-runtime", "openvino"])
    err = capsys.readouterr().err
    assert status == 2 and "pip install 'factorconv[openvino]'" in err and len(err.strip().splitlines()) == 1
    status = main(["compare", "--data", "synthetic", "--budget", "latency=0.3ms", "--no-latency"])
    assert status == 1 and "leave out --no-latency" in capsys.readouterr().err


def test_a_latency_budget_finds_widths_and_keeps_them_on_another_machine(tmp_path: Path, monkeypatch,
                                                                         capsys) -> None:
    import factorconv.budget as budget_module
    import factorconv.study.runner as runner_module
    from factorconv.study import StudySpec, run_study

    timed = []

    def fake_latency(model, conv, width, runtime, batch, **options):  # 0.4 ms per unit of width, conv 1.5x
        assert options["threads"] == 1  # the study's threads per run
        timed.append((conv, width, runtime, batch))
        return 0.4 * width * (1.5 if conv == "conv" else 1.0)

    monkeypatch.setattr(budget_module, "measure_latency", fake_latency)
    spec = dict(model="resnet20", convs=["conv", "dsep"], budget="latency=0.3ms", data="synthetic", preset="smoke",
                seeds=1, latency_repeats=3, latency_batch=[2], latency_runtime="torch",
                overrides={"progress": "off", "steps": 2, "train_subset": 64, "test_subset": 32})
    out = tmp_path / "s"
    results = run_study(StudySpec(**spec), out)
    widths = {r["conv"]: r["width"] for r in results["rows"]}
    assert widths == {"conv": 0.5, "dsep": 0.75}  # 0.4 x 1.5 x 0.5 = 0.3 ms; 0.4 x 0.75 = 0.3 ms
    assert {(runtime, batch) for _, _, runtime, batch in timed} == {("torch", 2)}
    recorded = json.loads((out / "study.json").read_text())
    assert recorded["latency_budget"]["batch"] == 2 and recorded["latency_budget"]["runtime"].startswith("torch")
    assert all(r["latency_ms"] > 0 for r in results["rows"])  # measured next to the target
    timed.clear()
    capsys.readouterr()
    monkeypatch.setattr(runner_module, "machine_info", lambda: {"cpu": "Another CPU"})
    again = run_study(StudySpec(**{**spec, "seeds": 2}), out, measure_latency=True)
    assert not timed and {r["conv"]: r["width"] for r in again["rows"]} == widths
    assert "was measured on" in capsys.readouterr().err
