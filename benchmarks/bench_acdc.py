"""resnet18_cifar with ACDC-net m8 vs the standard model: CPU train step at batch 32, side by side.

    .venv/bin/python benchmarks/bench_acdc.py [--threads 2] [--repeats 8] [--out benchmarks/results] [--render]

Also the same with per-layer composition (the bank's batching switched off) to show what batching buys,
and inference. Ratios are medians of per-repetition ratios to the standard model. Writes acdc_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import sys

import torch

import factorconv as fc
from factorconv.bench import (
    breakdown_table,
    compare_timings,
    inference_fn,
    record_header,
    run_benchmark,
    time_breakdown,
    train_step_fn,
)
from factorconv.ops.acdc import CoefficientBank


def per_layer(model: torch.nn.Module) -> torch.nn.Module:
    """Compose every layer on its own (what a naive implementation does every step)."""
    for m in model.modules():
        if isinstance(m, CoefficientBank):
            m.batched = False
    return model


def measure(args: argparse.Namespace) -> dict:
    kwargs = {"atoms": 8, "share": "net"}
    models = {
        "resnet18_cifar": fc.create_model("resnet18_cifar"),
        "ACDC-net m8": fc.create_model("resnet18_cifar", conv="acdc", conv_kwargs=kwargs),
        "ACDC-net m8, per-layer composition": per_layer(fc.create_model("resnet18_cifar", conv="acdc",
                                                                        conv_kwargs=kwargs)),
    }
    counts = {n: fc.profile(m).params for n, m in models.items()}
    rows, breakdown = [], {}
    for fmt, memory_format in (("channels_last", torch.channels_last), ("NCHW", torch.contiguous_format)):
        for m in models.values():
            m.to(memory_format=memory_format)
        x = torch.randn(32, 3, 32, 32).to(memory_format=memory_format)
        y = torch.randint(0, 10, (32,))
        for label in ("train b32", "infer b32"):
            fns = {n: train_step_fn(m, x, y) if label.startswith("train") else inference_fn(m, x)
                   for n, m in models.items()}
            for t in compare_timings(fns, repeats=args.repeats, warmup=2):
                rows.append({"setting": label, "format": fmt, "model": t.name, "median_ms": t.median_s * 1e3,
                             "ratio": t.ratio, "iqr_rel": t.spread})
            if label == "train b32" and fmt == "channels_last":
                breakdown = {n: time_breakdown(f, repeats=2) for n, f in fns.items()}
    return {"params": counts, "rows": rows, "train_time_breakdown_channels_last": breakdown}


def render(result: dict) -> list[str]:
    return [
        *record_header("resnet18_cifar: ACDC-net m8 vs the standard model on CPU", result),
        *[f"- {n}: {p:,} parameters" for n, p in result["params"].items()],
        "",
        "Ratio = median over interleaved repetitions of (model time / resnet18_cifar time in the same repetition).",
        "Target (issue): ACDC-net m8 train step <= 1.15x at batch 32.",
        "",
        "| setting | format | model | median ms | ratio | IQR / median |",
        "|---|---|---|---:|---:|---:|",
        *[f"| {r['setting']} | {r['format']} | {r['model']} | {r['median_ms']:.1f} | {r['ratio']:.3f} | "
          f"{r['iqr_rel']:.2f} |" for r in result["rows"]],
        "",
        "Where a training step's time goes (channels_last, torch.profiler self time):",
        "",
        *breakdown_table(result["train_time_breakdown_channels_last"]),
    ]


def main(argv: list[str] | None = None) -> int:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--repeats", type=int, default=8)

    return run_benchmark("acdc_cpu", __doc__.splitlines()[0], measure, render, "docs/acdc.md (Speed)", options,
                         argv)


if __name__ == "__main__":
    sys.exit(main())
