"""Side-by-side timing: the only kind of speed claim factorconv makes.

`compare_timings` runs several callables interleaved (each repetition runs every candidate once, in a
rotating order, so drift in machine load hits all of them alike) and reports medians and ratios to a
baseline. `machine_info` describes where the numbers were taken. `run_benchmark` is the harness every script
under benchmarks/ runs in: an experiment returns data (recorded as JSON with its command and machine), a
renderer turns recorded data into tables (re-rendered from the JSON with `--render`, no rerun), and what the
numbers mean is written in docs/, which the report points to, never typed into the generator.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Timing", "compare_timings", "layer_eval_fn", "layer_train_fn", "machine_info", "record_header",
           "run_benchmark"]


@dataclass
class Timing:
    """One candidate over interleaved repetitions: its median seconds and its ratio to the baseline.

    `ratio` is the median over repetitions of (this candidate's time / the baseline's time in the same
    repetition): pairing cancels slow drifts of a shared machine that a ratio of medians would keep.
    """

    name: str
    median_s: float
    ratio: float
    samples: list[float]

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (how noisy the measurement was)."""
        qs = statistics.quantiles(self.samples, n=4) if len(self.samples) >= 4 else [self.median_s] * 3
        return (qs[2] - qs[0]) / self.median_s if self.median_s else 0.0


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def compare_timings(
    candidates: dict[str, Callable[[], Any]],
    *,
    baseline: str | None = None,
    repeats: int = 30,
    warmup: int = 3,
    device: torch.device | str | None = None,
) -> list[Timing]:
    """Time each callable `repeats` times, interleaved, after `warmup` untimed rounds.

    Returns one Timing per candidate, in the given order, with ratios to `baseline` (default: the first).
    """
    names = list(candidates)
    if not names:
        raise ValueError("compare_timings: no candidates")
    baseline = names[0] if baseline is None else baseline
    if baseline not in candidates:
        raise ValueError(f"compare_timings: baseline {baseline!r} is not a candidate ({', '.join(names)})")
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    _sync(device)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            candidates[name]()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    base = samples[baseline]
    out = []
    for n in names:
        paired = statistics.median(s / b for s, b in zip(samples[n], base, strict=True))
        out.append(Timing(n, statistics.median(samples[n]), paired, samples[n]))
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, cores, threads, torch version (and the GPU when CUDA is available)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def train_step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One SGD step (forward, cross-entropy, backward, update) of `model` on (x, y), as a closure."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def inference_fn(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One eval-mode forward under inference_mode, as a closure."""
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def layer_train_fn(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Forward and backward of one layer (the gradient of the output's sum), as a closure."""
    params = list(module.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        module(x).sum().backward()

    return step


def layer_eval_fn(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward of a layer under inference_mode (in whatever mode the module is), as a closure."""

    def run() -> None:
        with torch.inference_mode():
            module(x)

    return run


def record_header(title: str, result: dict[str, Any]) -> list[str]:
    """The first lines of every benchmark report: title, the command that measured it, the machine."""
    m = result.get("machine", {})
    return [f"# {title}", "", f"Command: `{result.get('command', '?')}`  ",
            f"Machine: {m.get('cpu', '?')}, {result.get('threads', '?')} threads, torch {m.get('torch', '?')}"
            + (f", GPU {m['gpu']}" if m.get("gpu") else ""), ""]


def run_benchmark(stem: str, description: str, run: Callable[[argparse.Namespace], dict[str, Any]],
                  render: Callable[[dict[str, Any]], list[str]], doc: str,
                  options: Callable[[argparse.ArgumentParser], None] | None = None,
                  argv: list[str] | None = None) -> int:
    """The command line of a benchmark script: `--threads`, `--out` and `--render` plus its own `options`.
    Runs `run(args)` (threads set, seed 0), records its data with the command and machine as
    `<out>/<stem>.json`, and writes `render(data)` to `<out>/<stem>.md` with a pointer to `doc`, where
    the numbers are interpreted; `--render` rewrites the report from the recorded JSON without measuring."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(sys.argv[0]).resolve().parent / "results"))
    parser.add_argument("--render", action="store_true", help=f"only re-render {stem}.md from {stem}.json")
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = out / f"{stem}.json"
    if args.render:
        result = json.loads(record.read_text())
    else:
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        script = Path(sys.argv[0])
        shown = f"benchmarks/{script.name}" if script.parent.name == "benchmarks" else str(script)
        command = " ".join(["python", shown, *(sys.argv[1:] if argv is None else argv)])
        result = {"command": command, "machine": machine_info(), "threads": args.threads, **run(args)}
        record.write_text(json.dumps(result, indent=2) + "\n")
    text = "\n".join([*render(result), "", f"What these numbers mean, and what was tried: {doc}."]) + "\n"
    (out / f"{stem}.md").write_text(text)
    print(text, end="")
    return 0


# torch.profiler op names -> the categories a report speaks of (first match of a substring wins)
_CATEGORIES = (
    ("conv", ("conv",)),
    ("batchnorm", ("batch_norm",)),
    ("gather/shuffle", ("index_select", "index_add", "gather", "constant_pad", "transpose", "reshape")),
    ("copy/layout", ("copy_", "clone", "contiguous", "_to_copy")),
    ("matmul", ("mm", "matmul", "einsum", "linear")),
    ("elementwise", ("relu", "threshold", "add", "mul", "sub", "div", "fill_", "zero_", "sum", "mean")),
)


def time_breakdown(fn: Callable[[], Any], repeats: int = 5) -> dict[str, float]:
    """Where the time of `fn` goes: self CPU time per category (conv, gather/shuffle, batchnorm, matmul,
    elementwise, other), as fractions of the total, from torch.profiler over `repeats` calls."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key.removeprefix("aten::")
        if not event.key.startswith("aten::"):
            continue
        category = next((c for c, keys in _CATEGORIES if any(k in name for k in keys)), "other")
        totals[category] = totals.get(category, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def breakdown_table(breakdowns: dict[str, dict[str, float]]) -> list[str]:
    """Markdown lines of a table with one row per name and one column per category of `time_breakdown`
    (categories sorted, a missing one shown as 0%)."""
    categories = sorted({c for b in breakdowns.values() for c in b})
    return [
        "| model | " + " | ".join(categories) + " |",
        "|---|" + "---:|" * len(categories),
        *[f"| {name} | " + " | ".join(f"{100 * b.get(c, 0):.0f}%" for c in categories) + " |"
          for name, b in breakdowns.items()],
    ]


# ---------------------------------------------------------------------------------------------- suites


def matmul_rate(device: str = "cpu", size: int = 1024, repeats: int = 10) -> float:
    """The machine's float32 matmul rate in GFLOP/s (median of `repeats` size×size products): the ceiling
    an operator's achieved rate is read against."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def _layout(t: torch.Tensor | torch.nn.Module, channels_last: bool) -> Any:
    return t.to(memory_format=torch.channels_last) if channels_last else t


def bench_ops(
    convs: list[str] | None = None,
    *,
    channels: int = 64,
    size: int = 32,
    batch: int = 32,
    device: str = "cpu",
    repeats: int = 20,
    layouts: tuple[bool, ...] = (False, True),
) -> dict[str, Any]:
    """Every operator as a `channels`→`channels` 3x3 layer on `size`² maps: train step (forward + backward)
    and eval forward, as ratios to nn.Conv2d in the same memory format (timed interleaved), the ratio of
    channels_last to contiguous for the operator itself, achieved GFLOP/s (2·MACs/time) next to the
    machine's matmul rate, and, in the last layout, operators with two compute paths with each forced
    (`name[kernel]`, `name[feature]`) beside the automatic choice."""
    from .registry import conv_entry, create_conv2d, list_convs

    convs = convs or [c for c in list_convs() if c != "conv"]
    rows = []
    for layout in layouts:
        x = _layout(torch.randn(batch, channels, size, size, device=device), layout)
        candidates: dict[str, Callable[[], Any]] = {}
        macs: dict[str, int] = {}
        variants = [(name, {}) for name in ["conv", *convs]]
        if layout == layouts[-1]:  # the compute path's effect: each path forced, where there are two
            variants += [(f"{name}[{path}]", {"path": path}) for name in convs for path in ("kernel", "feature")
                         if getattr(conv_entry(name).builder, "has_feature_path", False)]
        for label, options in variants:
            name = label.split("[")[0]
            torch.manual_seed(0)
            op = _layout(create_conv2d(channels, channels, 3, conv=name, padding=1, **options).to(device), layout)
            macs[label] = op.cost((size, size)).macs if hasattr(op, "cost") else 0
            xg = x.detach().clone().requires_grad_()

            def train(op: torch.nn.Module = op, xg: torch.Tensor = xg) -> None:
                op.train()
                op(xg).sum().backward()

            candidates[f"{label}/train"] = train
            candidates[f"{label}/eval"] = inference_fn(op, x)
        for mode in ("train", "eval"):
            group = {k: v for k, v in candidates.items() if k.endswith(mode)}
            for t in compare_timings(group, baseline=f"conv/{mode}", repeats=repeats, warmup=2, device=device):
                name = t.name.rsplit("/", 1)[0]
                flops = 2 * macs[name] * batch * (3 if mode == "train" else 1)  # backward ~ 2x forward
                rows.append({"conv": name, "mode": mode, "channels_last": layout, "median_ms": 1e3 * t.median_s,
                             "ratio": t.ratio, "gflops": flops / t.median_s / 1e9, "spread": t.spread})
    by_key = {(r["conv"], r["mode"], r["channels_last"]): r for r in rows}
    for r in rows:
        other = by_key.get((r["conv"], r["mode"], not r["channels_last"]))
        if r["channels_last"] and other:
            r["vs_contiguous"] = r["median_ms"] / other["median_ms"]
    return {"kind": "ops", "shape": [batch, channels, size, size], "device": device, "repeats": repeats,
            "matmul_gflops": matmul_rate(device), "machine": machine_info(), "rows": rows}


def bench_models(
    model: str = "resnet20",
    convs: list[str] | None = None,
    *,
    batch: int = 32,
    device: str = "cpu",
    repeats: int = 15,
    channels_last: bool = True,
    width: float = 1.0,
) -> dict[str, Any]:
    """`model` built with each operator: train step and inference as ratios to the standard model (timed
    interleaved), and the inference of its deploy form (`factorconv.deploy`) — for folding operators the
    very network of the standard model, so its ratio should be 1."""
    from .accounting import profile
    from .convert import deploy
    from .registry import create_model, list_convs, model_entry

    entry = model_entry(model)
    convs = convs or [c for c in list_convs() if c != "conv"]
    size = entry.input_size
    x = _layout(torch.randn(batch, *size, device=device), channels_last)
    y = torch.randint(0, entry.num_classes, (batch,), device=device)
    train, infer, deployed, info = {}, {}, {}, {}
    for name in ["conv", *convs]:
        torch.manual_seed(0)
        net = _layout(create_model(model, conv=name, width=width, num_classes=entry.num_classes,
                                   in_chans=size[0]).to(device), channels_last)
        prof = profile(net, size)
        folded = deploy(copy.deepcopy(net).eval())
        info[name] = {"params": prof.params, "macs": prof.macs, "deploy_macs": prof.deploy_macs}
        train[name] = train_step_fn(net, x, y)
        infer[name] = inference_fn(copy.deepcopy(net), x)
        deployed[name] = inference_fn(folded, x)
        if name == "conv":  # the noise floor: the very same network, another copy in memory
            info["conv (copy)"] = info["conv"]
            deployed["conv (copy)"] = inference_fn(copy.deepcopy(folded), x)
    rows = []
    for mode, group in (("train", train), ("eval", infer), ("deployed", deployed)):
        for t in compare_timings(group, baseline="conv", repeats=repeats, warmup=2, device=device):
            macs = info[t.name]["deploy_macs" if mode == "deployed" else "macs"]
            flops = 2 * macs * batch * (3 if mode == "train" else 1)
            rows.append({"conv": t.name, "mode": mode, "median_ms": 1e3 * t.median_s, "ratio": t.ratio,
                         "gflops": flops / t.median_s / 1e9, "spread": t.spread, **info[t.name]})
    return {"kind": "models", "model": model, "width": width, "batch": batch, "device": device,
            "channels_last": channels_last, "repeats": repeats, "matmul_gflops": matmul_rate(device),
            "machine": machine_info(), "rows": rows}


def render_bench(result: dict[str, Any], command: str = "") -> str:
    """A benchmark result as markdown (what benchmarks/results/*.md and the README hold)."""
    m = result["machine"]
    head = [f"Command: `{command}`  " if command else "",
            f"Machine: {m['cpu']}, {m['torch_threads']} threads, torch {m['torch']}"
            + (f", GPU {m['gpu']}" if m.get("gpu") else "") + f"; device {result['device']}; "
            f"float32 matmul rate {result['matmul_gflops']:.0f} GFLOP/s", ""]
    if result["kind"] == "ops":
        b, c, h, w = result["shape"]
        lines = [*head, f"{c}→{c} 3x3 layer, input {b}x{c}x{h}x{w}; ratio to nn.Conv2d in the same memory format "
                 "(median of paired ratios over interleaved runs); CL/NCHW = the operator's channels_last time over "
                 "its contiguous time; `name[kernel]` / `name[feature]`: that compute path forced (channels_last), "
                 "beside the automatic choice in the operator's own row.", "",
                 "| conv | train ×conv (NCHW) | train ×conv (CL) | eval ×conv (NCHW) | eval ×conv (CL) | "
                 "train CL/NCHW | eval CL/NCHW | eval GFLOP/s (CL) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        rows = {(r["conv"], r["mode"], r["channels_last"]): r for r in result["rows"]}
        for conv in dict.fromkeys(r["conv"] for r in result["rows"]):
            def cell(mode: str, cl: bool, key: str = "ratio", fmt: str = "{:.2f}", conv: str = conv) -> str:
                r = rows.get((conv, mode, cl))
                return fmt.format(r[key]) if r and key in r else ""
            lines.append(f"| {conv} | {cell('train', False)} | {cell('train', True)} | {cell('eval', False)} | "
                         f"{cell('eval', True)} | {cell('train', True, 'vs_contiguous')} | "
                         f"{cell('eval', True, 'vs_contiguous')} | {cell('eval', True, 'gflops', '{:.1f}')} |")
        return "\n".join(lines) + "\n"
    lines = [*head, f"{result['model']} (width {result['width']:g}) with each operator, batch {result['batch']}, "
             f"{'channels_last' if result['channels_last'] else 'contiguous'}; ratios to the standard model "
             "(interleaved runs, median of paired ratios); deployed = `factorconv.deploy` of the eval model.", "",
             "| conv | params | MACs (M) | train ×standard | eval ×standard | deployed ×standard | "
             "deployed GFLOP/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    rows = {(r["conv"], r["mode"]): r for r in result["rows"]}
    for conv in dict.fromkeys(r["conv"] for r in result["rows"]):
        t, e, d = (rows.get((conv, mode)) for mode in ("train", "eval", "deployed"))
        train_ratio = f"{t['ratio']:.2f}" if t else ""
        eval_ratio = f"{e['ratio']:.2f}" if e else ""
        lines.append(f"| {conv} | {d['params']:,} | {d['macs'] / 1e6:.1f} | {train_ratio} | {eval_ratio} | "
                     f"{d['ratio']:.2f} | {d['gflops']:.1f} |")
    lines += ["", "`conv (copy)` is a second copy of the standard network timed alongside: its ratio is the noise "
              "floor of this run, against which the folded operators (acdc, decoupled, doconv: the standard "
              "network once deployed) are read."]
    return "\n".join(lines) + "\n"
