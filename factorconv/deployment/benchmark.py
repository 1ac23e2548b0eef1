"""`factorconv bench deploy`: each operator at its budget width, deployed for size and for latency in every
runtime asked for, timed side by side in one process.

For each batch and runtime, every operator's size form and latency form (and the plain conv's, the reference of
the ratios) are timed in one interleaved `compare_timings` call. Models are random-initialised (seeded):
timings do not depend on the weights, and the exactness of every form is read off the same models (the largest
logit difference from the undeployed model, relative to its largest logit).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..bench import compare_timings, machine_info
from ..convert import deploy as size_deploy
from .cache import TimingCache
from .choose import deploy_latency
from .runtimes import get_runtime, installed_runtimes

__all__ = ["bench_deploy", "parse_runtimes", "render_deploy"]


def parse_runtimes(text: str) -> list[str]:
    """'onnxruntime,openvino' -> the names; 'all' -> every installed runtime. Each must be installed."""
    names = installed_runtimes() if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError("--runtimes names no runtime (e.g. onnxruntime,openvino, or all)")
    for name in names:
        get_runtime(name)  # unknown or missing: one line saying which extra installs it
    return list(dict.fromkeys(names))


def _deploy_macs(module: nn.Module, input_size: tuple[int, ...]) -> int:
    """Conv and linear MACs of one forward of a deployed model at batch 1 (what its runtime computes)."""
    from ..accounting import profile

    return profile(module, input_size).macs


def _models(model: str, convs: Sequence[str], budget: str | None, input_size: tuple[int, int, int],
            num_classes: int) -> dict[str, tuple[float, nn.Module]]:
    """{conv: (width, random-initialised model)} with widths matched to the budget as `compare` matches them."""
    from ..study.spec import StudySpec, match_widths

    spec = StudySpec(model=model, convs=list(convs), budget=budget, data="synthetic", preset="smoke")
    widths = match_widths(spec, input_size, num_classes)
    out = {}
    for conv in convs:
        width = next(w for (label, _), (w, _) in widths.items() if label == conv)
        torch.manual_seed(0)
        out[conv] = (width, spec.entry(conv).create_model(width, num_classes, input_size[0]).eval())
    return out


def bench_deploy(model: str = "resnet20", convs: Sequence[str] = ("conv",), budget: str | None = "params=50k",
                 runtimes: Sequence[str] = ("onnxruntime",), batches: Sequence[int] = (1, 32),
                 input_size: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, repeats: int = 20,
                 cache: TimingCache | None = None) -> dict[str, Any]:
    """The benchmark's data: per operator its width, and per runtime and batch the size and latency forms'
    median ms, the latency form's per-layer forms, its ratio to the plain conv's latency form, its achieved
    GMAC/s and its largest relative logit difference from the undeployed model."""
    convs = list(dict.fromkeys(["conv", *convs]))  # the plain conv is the ratios' reference
    cache = cache or TimingCache()
    models = _models(model, convs, budget, input_size, num_classes)
    results: dict[str, Any] = {c: {"width": w, "runtimes": {}} for c, (w, _) in models.items()}
    labels = {}
    for name in runtimes:
        labels[name] = get_runtime(name).label()
        for batch in batches:
            x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
            runners, info = {}, {}
            runtime = get_runtime(name)
            for conv, (_, net) in models.items():
                size = size_deploy(copy.deepcopy(net))
                latency = deploy_latency(copy.deepcopy(net), name, input_size, batch, cache=cache)
                report = latency.deploy_report
                with torch.no_grad():
                    ref = net(x[:8])
                    diff = float((latency(x[:8]) - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)
                runners[f"{conv}/size"] = runtime.prepare(size, x)
                runners[f"{conv}/latency"] = report.runtime_object().prepare(latency, x)
                info[conv] = {"forms": report.forms, "kept": report.kept, "max_rel_diff": diff,
                              "runtime": report.runtime, "macs": _deploy_macs(latency, input_size) * batch}
            # each operator side by side with the plain conv (a few models per interleaved round, each run
            # `inner` times in a row: at batch 1 a round through 14 models measured their cold caches)
            inner = max(1, 8 // batch)
            for conv in models:
                group = {key: _repeated(runners[key], inner)
                         for key in dict.fromkeys([f"{conv}/size", f"{conv}/latency", "conv/latency"])}
                timings = {t.name: 1e3 * t.median_s / inner
                           for t in compare_timings(group, repeats=repeats, warmup=2)}
                size_ms, latency_ms, conv_ms = (timings[f"{conv}/size"], timings[f"{conv}/latency"],
                                                timings["conv/latency"])
                results[conv]["runtimes"].setdefault(name, {})[str(batch)] = {
                    "size_ms": size_ms, "latency_ms": latency_ms, "latency_vs_size": latency_ms / size_ms,
                    "ratio_to_conv": latency_ms / conv_ms, "gmacs_per_s": info[conv]["macs"] / latency_ms / 1e6,
                    **info[conv]}
    return {"model": model, "budget": budget, "input_size": list(input_size), "batches": list(batches),
            "runtimes": labels, "threads": torch.get_num_threads(), "machine": machine_info(),
            "operators": results}


def _repeated(run: Any, times: int) -> Any:
    def repeated() -> None:
        for _ in range(times):
            run()

    return repeated


def _best(op: dict[str, Any], batch: str) -> tuple[str, float]:
    return min(((rt, b[batch]["latency_ms"]) for rt, b in op["runtimes"].items()), key=lambda p: p[1])


def render_deploy(result: dict[str, Any]) -> str:
    """The benchmark as markdown: per runtime and batch, each operator's size and latency forms, then the
    latency form in the fastest runtime against today's shipped path (the size form in ONNX Runtime)."""
    runtimes = result["runtimes"]
    lines = ([f"Command: `{result['command']}`", ""] if result.get("command") else []) + [
             f"{result['model']} at {result['budget']}, input {'x'.join(map(str, result['input_size']))}, "
             f"{result['threads']} thread(s); runtimes: {', '.join(runtimes.values())}; {result['machine']['cpu']}",
             "", "| operator | width | runtime | batch | size form ms | latency form ms | latency/size | "
             "÷ conv (latency) | GMAC/s | max rel. diff | forms chosen |", "|" + "---|" * 11]
    if "torch" in runtimes:
        lines.insert(-2, "In torch eager the size form is timed in channels_last (the default memory format of "
                         "training and of the study's former latency column); the latency form in whichever format "
                         "is faster for the model, named in the runtime column.\n")
    for conv, op in result["operators"].items():
        for by_batch in op["runtimes"].values():
            for batch, r in by_batch.items():
                forms = {}
                for form in r["forms"].values():
                    forms[form] = forms.get(form, 0) + 1
                chosen = ", ".join(f"{k} ×{v}" for k, v in sorted(forms.items(), key=lambda kv: -kv[1]))
                if r["kept"] == "size":
                    chosen += " (size form kept: the choice was slower whole)"
                lines.append(f"| {conv} | {op['width']:g} | {r['runtime']} | {batch} | {r['size_ms']:.3f} | "
                             f"{r['latency_ms']:.3f} | {r['latency_vs_size']:.2f} | {r['ratio_to_conv']:.2f} | "
                             f"{r['gmacs_per_s']:.1f} | {r['max_rel_diff']:.1e} | {chosen} |")
    if "onnxruntime" in runtimes:
        lines += ["", "Against today's shipped path (the size form in ONNX Runtime): the latency form in the fastest "
                      "runtime measured.", "", "| operator | batch | ORT size ms | best runtime | its latency ms | "
                      "ratio |", "|---|---|---|---|---|---|"]
        for conv, op in result["operators"].items():
            for batch in map(str, result["batches"]):
                base = op["runtimes"]["onnxruntime"][batch]["size_ms"]
                rt, ms = _best(op, batch)
                lines.append(f"| {conv} | {batch} | {base:.3f} | {rt} | {ms:.3f} | {ms / base:.2f} |")
    return "\n".join(lines) + "\n"
