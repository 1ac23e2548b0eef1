"""Operator comparison studies: `run_study(spec)` trains every operator of `spec.convs` on one backbone and
recipe, at the width that meets a parameter or MAC budget, over several seeds; measures the deploy forms'
inference latency side by side; and writes the table with its Pareto front, a markdown report and a plot.

An output directory holds `study.json` (the spec), `runs/<conv>/seed<k>/` (ordinary training run
directories: config.json, metrics.jsonl, result.json, checkpoint.pt), `latency.json`, `results.json` (the
table as data), `report.md` and `study.png`. Running the same study again skips every run whose result.json
matches its config (an unfinished run with a checkpoint is resumed); `build_report(out)` rebuilds the table,
report and plot from those files alone.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .bench import compare_timings, inference_fn, machine_info
from .budget import match_width
from .convert import deploy
from .registry import conv_entry, model_entry
from .train.rundir import write_json

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_CONVS",
    "DEFAULT_CONV_KWARGS",
    "Budget",
    "StudyError",
    "StudySpec",
    "build_report",
    "pareto_front",
    "parse_budget",
    "parse_count",
    "run_study",
]

DEFAULT_CONVS = ("conv", "dsep", "doconv", "acdc", "igcv2", "osep", "bdsc")
DEFAULT_BUDGET = "params=0.05M"
DEFAULT_PRESET = "study"
# The papers' forms: d-ResNet puts a BatchNorm between depthwise and pointwise; BDSC's tables count its BN.
DEFAULT_CONV_KWARGS: dict[str, dict[str, Any]] = {"dsep": {"norm": True}, "bdsc": {"norm": True}}
BUDGET_KINDS = ("params", "macs")
# Config fields that say where or how visibly a run ran, not what it computed: a rerun may change them.
_BOOKKEEPING = frozenset({"run_dir", "progress", "threads", "log_every", "data_dir", "device", "download",
                          "checkpoint_every", "eval_every"})
_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9}


class StudyError(RuntimeError):
    """A study cannot go on (its directory holds a different study, a run failed); the message says which."""


def parse_count(text: str) -> float:
    """'0.27M' -> 270000.0, '41m' -> 41e6, '50k' -> 50000.0, '269722' -> 269722.0."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmg]?)\s*", text.lower())
    if not match:
        raise ValueError(f"a count must be a number with an optional k/M/G suffix (e.g. 0.27M), got {text!r}")
    value = float(match.group(1)) * _SUFFIXES.get(match.group(2), 1.0)
    if not value > 0:
        raise ValueError(f"a count must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class Budget:
    """Match every operator's width to `value` of `by` (params: parameters; macs: MACs at batch 1)."""

    by: str
    value: float

    def __str__(self) -> str:
        return f"{self.by}={_human(self.value)}"


def parse_budget(text: str | None) -> Budget | None:
    """'params=0.27M' / 'macs=41M' -> Budget; 'none' (or None) -> None: every operator at width 1."""
    if text is None or text.strip().lower() in ("none", ""):
        return None
    by, sep, value = text.partition("=")
    by = by.strip().lower()
    if not sep or by not in BUDGET_KINDS:
        raise ValueError(f"--budget expects params=COUNT, macs=COUNT or none (e.g. params=0.27M), got {text!r}")
    return Budget(by, parse_count(value))


def _human(value: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


@dataclass
class StudySpec:
    """What to compare. `overrides` are training config fields (as `factorconv train --set`); `conv_kwargs`
    options per operator (DEFAULT_CONV_KWARGS fill in what they leave unset); `model_kwargs` backbone options
    per operator (o-ResNet's strided 1x1 conv shortcut: {"osep": {"shortcut": "conv"}})."""

    model: str = "resnet20"
    convs: list[str] = field(default_factory=lambda: list(DEFAULT_CONVS))
    budget: str | None = DEFAULT_BUDGET
    data: str = "fashion-mnist"
    data_dir: str | None = None
    preset: str = DEFAULT_PRESET
    seeds: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    conv_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    width_grid: float = 1 / 16
    latency_batch: int = 1
    latency_repeats: int = 30
    command: str | None = None

    def validate(self) -> StudySpec:
        model_entry(self.model)  # raises naming the registered models
        if not self.convs:
            raise ValueError("compare: --convs is empty; name at least one operator")
        if len(set(self.convs)) != len(self.convs):
            raise ValueError(f"compare: --convs names an operator twice: {','.join(self.convs)}")
        for conv in self.convs:
            conv_entry(conv)
        unknown = sorted((set(self.conv_kwargs) | set(self.model_kwargs)) - set(self.convs))
        if unknown:
            raise ValueError(f"compare: options given for {', '.join(unknown)}, which is not in --convs")
        parse_budget(self.budget)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"compare: --seeds must be a positive integer, got {self.seeds!r}")
        if self.latency_batch < 1 or self.latency_repeats < 1:
            raise ValueError("compare: --latency-batch and --latency-repeats must be positive")
        from .train import resolve_config

        resolve_config(self.preset, None, self.overrides)  # unknown preset or field: raises now, not mid-study
        return self

    def options(self, conv: str) -> dict[str, Any]:
        return {**DEFAULT_CONV_KWARGS.get(conv, {}), **self.conv_kwargs.get(conv, {})}

    def backbone_options(self, conv: str) -> dict[str, Any]:
        return {**self.overrides.get("model_kwargs", {}), **self.model_kwargs.get(conv, {})}

    def identity(self) -> dict[str, Any]:
        """The fields that decide what every run computes (seeds and convs may grow between reruns)."""
        keys = ("model", "budget", "data", "preset", "overrides", "width_grid")
        return {k: getattr(self, k) for k in keys} | {"conv_kwargs": {c: self.options(c) for c in self.convs},
                                                     "model_kwargs": {c: self.backbone_options(c) for c in self.convs}}


# ---------------------------------------------------------------------------------------------- Pareto front


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[bool]:
    """Which points are non-dominated when cost is minimised and accuracy maximised: no other point is at
    most as costly and at least as accurate, and strictly better in one of the two. Equal points all stay."""
    if len(costs) != len(accuracies):
        raise ValueError("pareto_front: costs and accuracies differ in length")
    front = []
    for i, (c, a) in enumerate(zip(costs, accuracies, strict=True)):
        dominated = any(cj <= c and aj >= a and (cj < c or aj > a)
                        for j, (cj, aj) in enumerate(zip(costs, accuracies, strict=True)) if j != i)
        front.append(not dominated)
    return front


# ---------------------------------------------------------------------------------------------- running


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _computing(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in _BOOKKEEPING}


def _input_shape(spec: StudySpec) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) and the class count of the data set, from its test split (small and cached)."""
    from .data import load_dataset
    from .train import resolve_config

    cfg = resolve_config(spec.preset, None, {"data": spec.data, "data_dir": spec.data_dir, **spec.overrides})
    test = load_dataset(cfg.data, "test", cfg.data_dir, cfg.download, cfg.data_verify, cfg.image_size)
    return tuple(test.images.shape[1:]), test.num_classes


def match_widths(spec: StudySpec, input_size: tuple[int, int, int], num_classes: int) -> dict[str, float]:
    """Width per conv meeting the budget (1.0 without one)."""
    budget = parse_budget(spec.budget)
    out = {}
    for conv in spec.convs:
        if budget is None:
            out[conv] = 1.0
            continue
        try:
            m = match_width(spec.model, conv, budget.value, budget.by, grid=spec.width_grid, input_size=input_size,
                            conv_kwargs=spec.options(conv), num_classes=num_classes,
                            **spec.backbone_options(conv))
        except ValueError as err:
            raise ValueError(f"compare: cannot match {conv!r} on {spec.model} to {budget}: {err}") from None
        out[conv] = m.width
    return out


def _run_config(spec: StudySpec, out: Path, conv: str, width: float, seed: int) -> Any:
    from .train import resolve_config

    fields = {"model": spec.model, "conv": conv, "width": width, "conv_kwargs": spec.options(conv),
              "model_kwargs": spec.backbone_options(conv), "data": spec.data, "data_dir": spec.data_dir, "seed": seed,
              "run_dir": str(out / "runs" / conv / f"seed{seed}")}
    overrides = {k: v for k, v in spec.overrides.items() if k != "model_kwargs"}
    return resolve_config(spec.preset, None, {**{k: v for k, v in fields.items() if v is not None}, **overrides})


def _train_one(cfg: Any, label: str) -> dict[str, Any]:
    """Train one run, or reuse / resume what its directory holds."""
    from .train import fit

    run = Path(cfg.run_dir)
    done = _read_json(run / "result.json")
    if done is not None and done.get("status") == "done":
        saved, wanted = _computing(done.get("config", {})), _computing(cfg.to_dict())
        changed = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
        if changed:
            raise StudyError(f"{run} holds a finished run with different settings ({', '.join(changed)}); "
                             "use another --out for a different study, or delete that run to retrain it")
        _log(f"{label}: finished before, skipped ({100 * done['test_acc']:.2f}%)")
        return done
    resume = (run / "checkpoint.pt").exists()
    _log(f"{label}: {'resuming' if resume else 'training'} {cfg.conv} at width {cfg.width:g}, seed {cfg.seed}")
    return fit(cfg, resume=resume)


def run_study(spec: StudySpec, out: str | Path, *, measure_latency: bool = True) -> dict[str, Any]:
    """Run (or finish) the study in `out` and write its report; returns the results (also results.json)."""
    spec.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = _read_json(out / "study.json")
    if saved is not None:
        old = StudySpec(**{k: v for k, v in saved.items() if k in StudySpec.__dataclass_fields__})
        mine, theirs = spec.identity(), old.identity()
        common = [c for c in spec.convs if c in old.convs]  # operators added now have nothing to agree with
        for key in ("conv_kwargs", "model_kwargs"):
            mine[key] = {c: mine[key][c] for c in common}
            theirs[key] = {c: theirs[key][c] for c in common}
        if mine != theirs:
            diff = sorted(k for k in mine if mine[k] != theirs[k])
            raise StudyError(f"{out} holds a study with other settings ({', '.join(diff)}); choose another --out")
        spec.convs = list(dict.fromkeys(old.convs + spec.convs))
        spec.seeds = max(spec.seeds, old.seeds)
        spec.conv_kwargs = {**old.conv_kwargs, **spec.conv_kwargs}
        spec.model_kwargs = {**old.model_kwargs, **spec.model_kwargs}
    write_json(out / "study.json", asdict(spec))

    input_size, num_classes = _input_shape(spec)
    widths = match_widths(spec, input_size, num_classes)
    plan = [(conv, seed) for seed in range(spec.seeds) for conv in spec.convs]
    t0 = time.perf_counter()
    for i, (conv, seed) in enumerate(plan, 1):
        cfg = _run_config(spec, out, conv, widths[conv], seed)
        _train_one(cfg, f"[{i}/{len(plan)}] {conv}")
    _log(f"trained {len(plan)} runs in {time.perf_counter() - t0:.0f} s")
    if measure_latency:
        _log("measuring inference latency of the deploy forms side by side ...")
        write_json(out / "latency.json", measure_latencies(spec, out, input_size, num_classes))
    return build_report(out)


# ---------------------------------------------------------------------------------------------- latency


def _load_deployed(run: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(trained model in eval mode, its deploy form) from a run's checkpoint."""
    from .train import load_trained

    model = load_trained(run)[0]
    return model, deploy(copy.deepcopy(model)).eval()


def measure_latencies(spec: StudySpec, out: Path, input_size: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """Inference time of every conv's deploy form (seed 0's trained weights) and of the standard model (the
    backbone with nn.Conv2d at width 1), interleaved in one process; ratios to the standard model."""
    from .registry import create_model

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    models: dict[str, torch.nn.Module] = {}
    diffs: dict[str, float] = {}
    x = torch.randn(spec.latency_batch, *input_size)
    model_kwargs = spec.overrides.get("model_kwargs", {})
    models["standard"] = create_model(spec.model, num_classes=num_classes, in_chans=input_size[0],
                                      **model_kwargs).eval()
    for conv in spec.convs:
        trained, deployed = _load_deployed(out / "runs" / conv / "seed0")
        with torch.no_grad():
            diffs[conv] = float((trained(x) - deployed(x)).abs().max())
        models[conv] = deployed
    result: dict[str, Any] = {"batch": spec.latency_batch, "repeats": spec.latency_repeats,
                              "machine": machine_info(), "deploy_max_logit_diff": diffs, "devices": {}}
    for device in devices:
        inputs = x.to(device)
        if device == "cpu":  # the memory format the engine trains and evaluates in on CPU
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        runners: dict[str, Callable[[], Any]] = {}
        for name, model in models.items():
            model = copy.deepcopy(model).to(device)
            if device == "cpu":
                model = model.to(memory_format=torch.channels_last)
            runners[name] = inference_fn(model, inputs)
        timings = compare_timings(runners, baseline="standard", repeats=spec.latency_repeats, warmup=3,
                                  device=device)
        result["devices"][device] = {t.name: {"median_ms": 1e3 * t.median_s, "ratio": t.ratio, "spread": t.spread}
                                     for t in timings}
    return result


# ---------------------------------------------------------------------------------------------- report


def _collect(out: Path, spec: StudySpec) -> list[dict[str, Any]]:
    rows = []
    for conv in spec.convs:
        results = []
        for seed in range(spec.seeds):
            r = _read_json(out / "runs" / conv / f"seed{seed}" / "result.json")
            if r is not None and r.get("status") == "done":
                results.append(r)
        if not results:
            continue
        accs = [100 * r["test_acc"] for r in results]
        prof = results[0]["profile"]
        rows.append({
            "conv": conv, "width": results[0]["width"], "params": prof["params"], "macs": prof["macs"],
            "deploy_params": prof["deploy_params"], "deploy_macs": prof["deploy_macs"],
            "size_mib": prof["size_bytes"] / 2**20, "acc_mean": statistics.fmean(accs),
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else None, "accs": accs, "seeds": len(accs),
            "train_seconds": [r["train_seconds"] for r in results],
            "runs": [r["run_dir"] for r in results],
        })
    return rows


def build_report(out: str | Path) -> dict[str, Any]:
    """Table (with the Pareto fronts), results.json, report.md and study.png from the files in `out`."""
    out = Path(out)
    saved = _read_json(out / "study.json")
    if saved is None:
        raise StudyError(f"{out} holds no study (no readable study.json); run `factorconv compare --out {out}`")
    spec = StudySpec(**{k: v for k, v in saved.items() if k in StudySpec.__dataclass_fields__})
    rows = _collect(out, spec)
    if not rows:
        raise StudyError(f"{out} holds no finished runs yet; run `factorconv compare` with the same --out")
    latency = _read_json(out / "latency.json") or {}
    for row in rows:
        for device, timings in latency.get("devices", {}).items():
            if row["conv"] in timings:
                row[f"latency_{device}_ratio"] = timings[row["conv"]]["ratio"]
                row[f"latency_{device}_ms"] = timings[row["conv"]]["median_ms"]
        row["deploy_max_logit_diff"] = latency.get("deploy_max_logit_diff", {}).get(row["conv"])
    accs = [r["acc_mean"] for r in rows]
    for by in ("params", "macs"):
        for row, on in zip(rows, pareto_front([r[by] for r in rows], accs), strict=True):
            row[f"front_{by}"] = on
    results = {"spec": asdict(spec), "rows": rows, "latency": latency}
    write_json(out / "results.json", results)
    plotted = plot_study(rows, out / "study.png", title=_title(spec))
    (out / "report.md").write_text(render_report(spec, rows, latency, plotted))
    return results


def _title(spec: StudySpec) -> str:
    budget = parse_budget(spec.budget)
    return f"{spec.model} on {spec.data}, {'budget ' + str(budget) if budget else 'width 1'}, preset {spec.preset}"


def _acc_text(row: dict[str, Any]) -> str:
    return f"{row['acc_mean']:.2f}" + (f" ± {row['acc_std']:.2f}" if row["acc_std"] is not None else "")


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a markdown table; 'P' / 'M' mark the Pareto fronts in accuracy vs params / MACs."""
    devices = [d for d in ("cpu", "cuda") if any(f"latency_{d}_ratio" in r for r in rows)]
    head = ["conv", "width", "params", "size MiB", "MACs (M)", "accuracy %"] + \
        [f"{d.upper()} latency ×standard" for d in devices] + ["front"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        front = ("P" if r["front_params"] else "") + ("M" if r["front_macs"] else "")
        cells = [r["conv"], f"{r['width']:g}", f"{r['params']:,}", f"{r['size_mib']:.3f}", f"{r['macs'] / 1e6:.2f}",
                 _acc_text(r)]
        cells += [f"{r[f'latency_{d}_ratio']:.2f}" if f"latency_{d}_ratio" in r else "" for d in devices]
        lines.append("| " + " | ".join([*cells, front or "·"]) + " |")
    return "\n".join(lines)


def render_report(spec: StudySpec, rows: Sequence[dict[str, Any]], latency: dict[str, Any], plotted: bool) -> str:
    from .train import resolve_config

    cfg = resolve_config(spec.preset, None, spec.overrides)
    length = f"{cfg.steps} steps" if cfg.steps is not None else f"{cfg.epochs:g} epochs"
    seeds = max(r["seeds"] for r in rows)
    parts = [
        f"# factorconv compare: {_title(spec)}", "",
        f"Command: `{spec.command or 'factorconv compare'}`", "",
        f"Recipe: preset `{spec.preset}` ({length}, batch {cfg.batch_size}, {cfg.schedule} lr {cfg.lr:g}, "
        f"weight decay {cfg.weight_decay:g}, amp {cfg.amp}"
        + (f", {cfg.train_subset} training images" if cfg.train_subset else "")
        + (f", {cfg.test_subset} test images" if cfg.test_subset else ", full test set") + f"); "
        f"{seeds} seed{'s' if seeds > 1 else ''} per operator (accuracy: mean ± sample std).",
        "", render_table(rows), "",
        "front: P = on the Pareto front of accuracy vs params, M = of accuracy vs MACs (no other operator is "
        "at most as large and at least as accurate).", "",
    ]
    for by in ("params", "macs"):
        names = [r["conv"] for r in sorted(rows, key=lambda r: r[by]) if r[f"front_{by}"]]
        parts.append(f"- Pareto front, accuracy vs {by}: {' → '.join(names)}")
    if plotted:
        parts += ["", "![accuracy vs params and MACs](study.png)"]
    if latency:
        m = latency.get("machine", {})
        parts += ["", f"Latency: the deploy form (`factorconv.deploy`: folded, or factorized/packed where smaller) "
                      f"of seed 0's trained model, batch {latency['batch']}, median of {latency['repeats']} "
                      f"interleaved runs, ratio to the standard {spec.model} (nn.Conv2d, width 1) timed in the same "
                      f"process; {m.get('cpu', '?')}, {m.get('torch_threads', '?')} threads, torch "
                      f"{m.get('torch', '?')}" + (f", GPU {m['gpu']}" if m.get("gpu") else "") + "."]
    parts += ["", "## Runs", "", "| conv | seed | accuracy % | training s | deploy max logit diff | run |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        for seed, (acc, secs, run) in enumerate(zip(r["accs"], r["train_seconds"], r["runs"], strict=True)):
            diff = r.get("deploy_max_logit_diff")
            diff_text = f"{diff:.1e}" if diff is not None and seed == 0 else ""
            parts.append(f"| {r['conv']} | {seed} | {acc:.2f} | {secs:.0f} | {diff_text} | {run} |")
    return "\n".join(parts) + "\n"


def plot_study(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> bool:
    """Accuracy vs params and vs MACs, one marker per operator (error bars: std over seeds), each front drawn
    as a step line. Returns False (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("matplotlib is not installed (pip install 'factorconv[plot]'): no plot written")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    colors = plt.get_cmap("tab10")
    markers = "osD^v<>pX*h"
    for ax, by, label in ((axes[0], "params", "parameters"), (axes[1], "macs", "MACs (batch 1)")):
        for i, r in enumerate(rows):
            on = r[f"front_{by}"]
            ax.errorbar(r[by], r["acc_mean"], yerr=r["acc_std"] or 0, fmt=markers[i % len(markers)],
                        color=colors(i % 10), markersize=9 if on else 7, capsize=3,
                        markeredgecolor="black" if on else colors(i % 10), label=r["conv"])
            ax.annotate(r["conv"], (r[by], r["acc_mean"]), textcoords="offset points", xytext=(6, 5), fontsize=9)
        front = sorted((r[by], r["acc_mean"]) for r in rows if r[f"front_{by}"])
        if front:
            xs, ys = zip(*front, strict=True)
            ax.step(xs, ys, where="post", linestyle="--", color="gray", linewidth=1.2, label="Pareto front")
        spread = max(r[by] for r in rows) / max(min(r[by] for r in rows), 1)
        if spread > 20:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy %")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"accuracy vs {by}")
    axes[1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def summarize(results: dict[str, Any]) -> str:
    """The table and fronts as plain text for the terminal."""
    rows = results["rows"]
    lines = [render_table(rows), ""]
    for by in ("params", "macs"):
        names = [r["conv"] for r in sorted(rows, key=lambda r: r[by]) if r[f"front_{by}"]]
        lines.append(f"Pareto front (accuracy vs {by}): {' → '.join(names)}")
    return "\n".join(lines)

