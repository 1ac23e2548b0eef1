"""resnet18_cifar with ACDC-net m8 vs the standard model: CPU train step at batch 32, side by side.

    .venv/bin/python benchmarks/bench_acdc.py [--threads 2] [--repeats 8] [--out benchmarks/results]

Also the same with per-layer composition (the bank's batching switched off) to show what batching buys,
and inference. Ratios are medians of per-repetition ratios to the standard model. Writes acdc_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import factorconv as fc
from factorconv.bench import (
    breakdown_table,
    compare_timings,
    inference_fn,
    machine_info,
    time_breakdown,
    train_step_fn,
)
from factorconv.ops.acdc import ACDCConv2d


def per_layer(model: torch.nn.Module) -> torch.nn.Module:
    """Compose every layer on its own (what a naive implementation does every step)."""
    for m in model.modules():
        if isinstance(m, ACDCConv2d):
            object.__setattr__(m, "_eager_forward", _per_layer_forward.__get__(m))
    return model


def _per_layer_forward(self: ACDCConv2d, x: torch.Tensor) -> torch.Tensor:
    if self.choose_path(x) == "feature":
        return self.feature_forward(x)
    return self._grouped_conv(x, self.composed_kernel() if self._kernel_cacheable() else self.group_weight())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
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
    result = {"command": " ".join(["python", *sys.argv]), "machine": machine_info(), "params": counts, "rows": rows,
              "train_time_breakdown_channels_last": breakdown}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "acdc_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# resnet18_cifar: ACDC-net m8 vs the standard model on CPU",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['cpu']}, {args.threads} threads, torch {result['machine']['torch']}",
        "",
        *[f"- {n}: {p:,} parameters" for n, p in counts.items()],
        "",
        "Ratio = median over interleaved repetitions of (model time / resnet18_cifar time in the same repetition).",
        "Target (issue): ACDC-net m8 train step <= 1.15x at batch 32.",
        "",
        "| setting | format | model | median ms | ratio | IQR / median |",
        "|---|---|---|---:|---:|---:|",
        *[f"| {r['setting']} | {r['format']} | {r['model']} | {r['median_ms']:.1f} | {r['ratio']:.3f} | "
          f"{r['iqr_rel']:.2f} |" for r in rows],
        "",
        "Where a training step's time goes (channels_last, torch.profiler self time):",
        "",
        *breakdown_table(breakdown),
    ]
    (out / "acdc_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
