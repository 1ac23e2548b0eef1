"""DO-Conv vs nn.Conv2d (and vs the public reference code's algorithm), side by side on one process.

    .venv/bin/python benchmarks/bench_doconv.py [--threads 2] [--repeats 300] [--out benchmarks/results] [--render]

64->64 3x3 conv, inputs 32x64x32x32 and 2x64x32x32: train step (forward + backward) and eval forward.
"reference" recomposes W' = D∘W in every forward with the public code's reshape + einsum and no cache,
as that code does. Ratios are medians of per-repetition ratios to nn.Conv2d (interleaved runs).
Writes doconv_cpu.json and doconv_cpu.md; docs/doconv.md says what the numbers mean.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch
from torch import nn

from factorconv.bench import compare_timings, layer_eval_fn, layer_train_fn, record_header, run_benchmark
from factorconv.ops.doconv import DOConv2d


class ReferenceStyleDOConv(nn.Module):
    """The public code's forward: D = D' + D_diag, reshape W to (out/g, in, D_mul), einsum, conv (groups=1 here)."""

    def __init__(self, op: DOConv2d) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = self.op
        d = op.D + op.D_diag
        w = torch.reshape(op.W, (op.out_channels // op.groups, op.in_channels, op.D_mul))
        kernel = torch.reshape(torch.einsum("ims,ois->oim", d, w), (op.out_channels, op.in_channels // op.groups, 3, 3))
        return nn.functional.conv2d(x, kernel, op.bias, op.stride, op.padding, op.dilation, op.groups)


# The targets for doconv, as ratios to nn.Conv2d.
TARGETS = {("train", 32): 1.05, ("train", 2): 1.10, ("eval", 32): 1.02, ("eval", 2): 1.02}





def measure(args: argparse.Namespace) -> dict:
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
    doconv = DOConv2d.from_conv(conv)
    reference = ReferenceStyleDOConv(DOConv2d.from_conv(conv))
    rows = []
    for batch, layout, mode in itertools.product((32, 2), ("nchw", "channels_last"), ("train", "eval")):
        x = torch.randn(batch, 64, 32, 32)
        if layout == "channels_last":  # as the training engine runs on CPU (model.to(memory_format=...))
            x = x.contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        conv.to(memory_format=fmt)
        for m in (conv, doconv, reference):
            m.train(mode == "train")
        make = layer_train_fn if mode == "train" else layer_eval_fn
        timings = compare_timings(
            {"conv": make(conv, x), "doconv": make(doconv, x), "reference": make(reference, x)},
            repeats=args.repeats if batch == 2 else max(10, args.repeats // 6),
        )
        target = TARGETS[mode, batch]
        for t in timings:
            rows.append({"batch": batch, "layout": layout, "mode": mode, "candidate": t.name,
                         "median_ms": t.median_s * 1e3,
                         "ratio_to_conv": t.ratio, "iqr_rel": t.spread,
                         "target": target if t.name == "doconv" else None})
    return {"rows": rows}


def render(result: dict) -> list[str]:
    lines = [
        *record_header("DO-Conv vs nn.Conv2d on CPU (64->64, 3x3, 32x32 maps)", result),
        "Interleaved runs; ratio = median over repetitions of (candidate / nn.Conv2d in the same repetition).",
        "train = forward + backward; eval = forward under inference_mode (doconv: cached kernel).",
        "",
        "| batch | layout | mode | candidate | median ms | ratio to conv | target | IQR / median |",
        "|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        verdict = "" if r["target"] is None else (
            f"<= {r['target']:.2f} " + ("met" if r["ratio_to_conv"] <= r["target"] else "missed"))
        lines.append(f"| {r['batch']} | {r['layout']} | {r['mode']} | {r['candidate']} | {r['median_ms']:.3f} | "
                     f"{r['ratio_to_conv']:.3f} | {verdict} | {r['iqr_rel']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--repeats", type=int, default=300, help="repetitions at batch 2 (batch 32: a sixth)")

    return run_benchmark("doconv_cpu", __doc__.splitlines()[0], measure, render, "docs/doconv.md", options, argv)


if __name__ == "__main__":
    sys.exit(main())
