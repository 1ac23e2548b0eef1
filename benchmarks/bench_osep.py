"""ResNet20 vs o-ResNet20 ×3.625 vs d-ResNet20 ×2.75 on CPU, side by side in one process.

    .venv/bin/python benchmarks/bench_osep.py [--threads 2] [--repeats 20] [--out benchmarks/results]

Train step (SGD, batch 64) and inference (batch 1 and 32), 32x32 inputs, NCHW and channels_last;
ratios are medians of per-repetition ratios to ResNet20 in the same setting. The paper (Table 6, i5-8250
CPU) reports o-ResNet20 and d-ResNet20 inference at 1.51x ResNet20. Writes osep_cpu.json / osep_cpu.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import factorconv as fc
from factorconv.bench import compare_timings, inference_fn, machine_info, time_breakdown, train_step_fn

MODELS = {
    "ResNet20": {"conv": "conv"},
    "o-ResNet20 x3.625": {"conv": "osep", "width": 3.625, "shortcut": "conv"},
    "d-ResNet20 x2.75": {"conv": "dsep", "width": 2.75, "conv_kwargs": {"norm": True}},
}


NOTES = """## Where the time goes

- The paper's CPU figure (o-ResNet20 1.5x ResNet20's inference) is not reached on this CPU: 4-5x in
  channels_last, 8x in NCHW. An o-ResNet layer does 1/10 of a dense layer's MACs in thin group convs, and
  those run at 1/4-1/6 of a dense conv's rate (3x3 with 3 channels per group: ~11 GMAC/s against 67; 1x1
  with 20: ~17), and its channel gathers (padding to a multiple of the groups, the shuffle, the
  truncation) move every activation three times more.
- Stage-1 layers (58 channels) run their 1x1 part, with the shuffle before it and the truncation after,
  as one dense 58x60 1x1 conv (exact: a linear map; GroupConvChain's cost model decides per layer): 3x
  the MACs of the g=3 group conv but run at a dense rate and without two gathers; a layer's training
  step went 0.63x of the chain's. At 116 and 232 channels (29 and 39 per group) the chain is as fast or
  faster and is kept. This took channels_last training from 5.9x to 5.4x and batch-32 inference from
  5.7x to 4.9x ResNet20 (the table above is after it; the per-factor table runs the factors one by one).
- What is left is the 3x3 group conv and BatchNorm over 3.6x wider activations (BatchNorm's share of the
  step grows from 18% to 23%): both scale with width, which the o-ResNet buys its MAC budget with."""

def layer_rates(batch: int = 32) -> list[dict]:
    """Each factor of one stage-1 layer of every model's deploy form (execution order, BatchNorm folded),
    timed alone: MACs, time and achieved GMAC/s."""
    cl = torch.channels_last
    layers = {
        "ResNet20 16->16": fc.create_conv2d(16, 16, 3, padding=1),
        "o-ResNet20 58->58": fc.create_conv2d(58, 58, 3, conv="osep", padding=1),
        "d-ResNet20 44->44": fc.create_conv2d(44, 44, 3, conv="dsep", padding=1, norm=True),
    }
    rows = []
    for name, layer in layers.items():
        deployed = layer.eval().deploy().to(memory_format=cl)
        x = torch.randn(batch, layer.in_channels, 32, 32).to(memory_format=cl)
        factors = list(deployed) if isinstance(deployed, torch.nn.Sequential) else [deployed]
        inputs, h = [], x
        with torch.inference_mode():
            for m in factors:
                inputs.append(h)
                h = m(h)
        fns = {f"{i}:{type(m).__name__}": (lambda m=m, h=h_in: m(h))
               for i, (m, h_in) in enumerate(zip(factors, inputs, strict=True))}
        with torch.inference_mode():
            timings = compare_timings(fns, repeats=30)
        for (i, m), t in zip(enumerate(factors), timings, strict=True):
            macs = 0
            if isinstance(m, torch.nn.Conv2d):
                macs = fc.profile(m, tuple(inputs[i].shape[1:])).macs * batch
            desc = type(m).__name__ + (f" {m.in_channels}->{m.out_channels} k{m.kernel_size[0]}x{m.kernel_size[1]}"
                                       f" g{m.groups}" if isinstance(m, torch.nn.Conv2d) else "")
            rows.append({"layer": name, "op": desc, "macs": macs, "ms": t.median_s * 1e3,
                         "gmacs": macs / t.median_s / 1e9 if macs else 0.0})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: fc.create_model("resnet20", **kw) for name, kw in MODELS.items()}
    counts = {name: {"params": fc.profile(m).params, "macs": fc.profile(m).macs} for name, m in models.items()}
    rows, breakdown = [], {}
    for memory_format in (torch.contiguous_format, torch.channels_last):
        fmt = "channels_last" if memory_format is torch.channels_last else "NCHW"
        for m in models.values():
            m.to(memory_format=memory_format)
        settings = [("train b64", 64, True), ("infer b1", 1, False), ("infer b32", 32, False)]
        for label, batch, train in settings:
            x = torch.randn(batch, 3, 32, 32).to(memory_format=memory_format)
            y = torch.randint(0, 10, (batch,))
            fns = {n: (train_step_fn(m, x, y) if train else inference_fn(m, x)) for n, m in models.items()}
            repeats = args.repeats if train else args.repeats * 5
            for t in compare_timings(fns, repeats=repeats):
                rows.append({"setting": label, "format": fmt, "model": t.name, "median_ms": t.median_s * 1e3,
                             "ratio": t.ratio, "iqr_rel": t.spread})
            if fmt == "channels_last" and label == "train b64":
                breakdown = {n: time_breakdown(f, repeats=3) for n, f in fns.items()}
    layers = layer_rates()
    result = {"command": " ".join(["python", *sys.argv]), "machine": machine_info(), "counts": counts,
              "rows": rows, "train_time_breakdown_channels_last": breakdown, "stage1_layers": layers}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "osep_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# ResNet20, o-ResNet20 ×3.625, d-ResNet20 ×2.75 on CPU",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['cpu']}, {args.threads} threads, torch {result['machine']['torch']}",
        "",
        "| model | params | MACs |",
        "|---|---:|---:|",
        *[f"| {n} | {c['params']:,} | {c['macs']:,} |" for n, c in counts.items()],
        "",
        "Ratio = median over interleaved repetitions of (model time / ResNet20 time in the same repetition).",
        "",
        "| setting | format | model | median ms | ratio to ResNet20 | IQR / median |",
        "|---|---|---|---:|---:|---:|",
        *[f"| {r['setting']} | {r['format']} | {r['model']} | {r['median_ms']:.2f} | {r['ratio']:.2f} | "
          f"{r['iqr_rel']:.2f} |" for r in rows],
        "",
        "Where a training step's CPU time goes (channels_last, batch 64, torch.profiler self time):",
        "",
        "| model | " + " | ".join(sorted({c for b in breakdown.values() for c in b})) + " |",
        "|---|" + "---:|" * len({c for b in breakdown.values() for c in b}),
    ]
    cats = sorted({c for b in breakdown.values() for c in b})
    lines += [f"| {n} | " + " | ".join(f"{100 * b.get(c, 0):.0f}%" for c in cats) + " |" for n, b in breakdown.items()]
    lines += [
        "",
        "One stage-1 layer of each (inference, channels_last, batch 32, 32x32): the factors' achieved rate.",
        "",
        "| layer | op | MACs | median ms | GMAC/s |",
        "|---|---|---:|---:|---:|",
        *[f"| {r['layer']} | {r['op']} | {r['macs']:,} | {r['ms']:.2f} | {r['gmacs']:.1f} |" for r in layers],
        "",
        NOTES,
    ]
    (out / "osep_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
