"""The `factorconv` command: argparse subcommands over the library.

Each subcommand is a `_cmd_*` function taking the parsed arguments and returning an exit status; errors
the user can fix (ValueError from the library, bad option syntax) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from . import __version__
from .accounting import check_memory, count_params, profile
from .outputs import OutputError, check_outputs, write_atomic
from .registry import check_model_options, conv_entry, create_model, list_convs, list_models, model_entry

__all__ = ["main", "parse_input_size", "parse_options"]


class UsageError(ValueError):
    """A command-line value that cannot be parsed."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`factorconv CMD: error: ...`, exit 2), like every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def count(minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def number(minimum: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number, > 0 (or >= minimum when one is given)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or (value <= 0 if minimum is None else value < minimum):
            bound = "a finite number > 0" if minimum is None else f"a finite number >= {minimum:g}"
            raise argparse.ArgumentTypeError(f"expected {bound}, got {text!r}")
        return value
    return parse


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'none' -> None, '(8,16)' -> (8, 16), else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_options(items: Sequence[str] | None, flag: str = "--opt") -> dict[str, Any]:
    """['atoms=8', 'share=net'] -> {'atoms': 8, 'share': 'net'}."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def parse_input_size(text: str) -> tuple[int, int, int]:
    """'3x32x32' -> (3, 32, 32)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise UsageError(f"--input expects CxHxW with positive integers (e.g. 3x32x32), got {text!r}")
    return dims


def _add_executor_args(p: argparse.ArgumentParser) -> None:
    """Where a study's runs execute (compare, reproduce)."""
    from .study import EXECUTORS

    p.add_argument("--workers", type=count(), default=None,
                   help="training runs at a time, each in its own process (default: CPU cores / --threads-per-run; "
                        "on GPUs each worker takes one device)")
    p.add_argument("--threads-per-run", type=count(), default=1,
                   help="torch threads of every run (default 1; part of what a run computes, so fixed per study)")
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="where runs execute: local worker processes (default), a Ray cluster, or submitit "
                        "(Slurm, or local jobs); ray and submitit need pip install 'factorconv[cluster]'")
    p.add_argument("--ray-address", default=None,
                   help="ray: an existing cluster ('auto' or host:port; default: a local Ray started for the study)")
    p.add_argument("--gpus-per-run", type=count(0), default=None,
                   help="ray/submitit: GPUs each run asks for (default 1 where this machine has CUDA, else 0)")
    p.add_argument("--submitit-cluster", default=None, choices=("slurm", "local", "debug"),
                   help="submitit: where jobs go (default: slurm where sbatch exists, else local)")
    p.add_argument("--slurm-partition", default=None, help="submitit on Slurm: the partition")
    p.add_argument("--slurm-time", type=count(), default=60, help="submitit: minutes each job may run (default 60)")
    p.add_argument("--slurm-gpus-per-job", type=count(0), default=None, dest="gpus_per_run",
                   help="submitit: GPUs per job (the same as --gpus-per-run)")
    p.add_argument("--slurm-cpus-per-job", type=count(), default=None,
                   help="submitit: CPUs per job (default: --threads-per-run)")


def _executor(args: argparse.Namespace, out: str) -> Any:
    from .study import create_executor

    return create_executor(args.executor, workers=args.workers, threads=args.threads_per_run, out=Path(out),
                           ray_address=args.ray_address, gpus=args.gpus_per_run,
                           submitit_cluster=args.submitit_cluster, slurm_partition=args.slurm_partition,
                           slurm_time=args.slurm_time, slurm_cpus=args.slurm_cpus_per_job)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model name (see `factorconv list`)")
    p.add_argument("--conv", default=None,
                   help="operator replacing the spatial convs (default: the model's own, as create_model builds it: "
                        "conv for most, dsep for DARTS, the IGC operators for the IGC nets)")
    p.add_argument("--width", type=number(), default=None, help="width multiplier (default: the model's, 1.0)")
    p.add_argument("--input", default=None, help="input size CxHxW (default: the model's, e.g. 3x32x32)")
    p.add_argument("--num-classes", type=count(), default=None,
                   help="classifier outputs (default: the model's, 10 for CIFAR models, 1000 for ImageNet ones)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="operator option, repeatable")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="model option, repeatable")


def _build(args: argparse.Namespace, device: str | None = None) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    entry = model_entry(args.model)
    input_size = parse_input_size(args.input) if args.input else entry.input_size
    kwargs = {"width": args.width, "num_classes": args.num_classes or entry.num_classes}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model_options = parse_options(args.model_opt, "--model-opt")
    check_model_options(model_options, "--model-opt")
    if device != "meta":  # count first on meta: a model too large for memory is an error, not a crash
        with torch.device("meta"):
            counted = create_model(args.model, conv=args.conv, in_chans=input_size[0],
                                   conv_kwargs=parse_options(args.opt), **model_options, **kwargs)
        check_memory(count_params(counted), 1, f"{args.model} at width {args.width or 1:g}")
    with torch.device(device) if device else contextlib.nullcontext():
        model = create_model(args.model, conv=args.conv, in_chans=input_size[0], conv_kwargs=parse_options(args.opt),
                             **model_options, **kwargs)
    return model, input_size


def _cmd_list(args: argparse.Namespace) -> int:
    convs = [{"name": n, "description": conv_entry(n).description} for n in list_convs()]
    models = []
    for name in list_models(args.pattern):
        entry = model_entry(name)
        with torch.device("meta"):  # counting only: nothing is allocated
            params = count_params(create_model(name, num_classes=entry.num_classes))
        models.append({"name": name, "params": params, "input_size": list(entry.input_size),
                       "num_classes": entry.num_classes, "description": entry.description})
    if args.json:
        print(json.dumps({"convs": convs, "models": models}, indent=2))
        return 0
    print("convs:")
    width = max(len(c["name"]) for c in convs)
    for c in convs:
        print(f"  {c['name']:<{width}}  {c['description']}")
    print("\nmodels (params at width 1.0, with the classes and input size their papers use):")
    width = max((len(m["name"]) for m in models), default=0)
    for m in models:
        size = "x".join(map(str, m["input_size"]))
        print(f"  {m['name']:<{width}}  {m['params'] / 1e6:8.3f} M  {size:>9}  {m['num_classes']:>4}  "
              f"{m['description']}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    model, input_size = _build(args, "meta" if args.meta else None)
    prof = profile(model, input_size)
    if args.json:
        print(prof.to_json(indent=2))
        return 0
    if not args.summary:
        print(prof.table())
        print()
    conv = args.conv or getattr(model, "build_config", {}).get("conv", "the model's own")
    print(f"model          {args.model} (conv={conv}{'' if args.width is None else f', width={args.width}'})")
    print(prof.summary())
    return 0


def _train_config(args: argparse.Namespace) -> tuple[Any, bool]:
    from .train import resolve_config, resume_config

    overrides = parse_options(args.set, "--set")
    flags = {"model": args.model, "conv": args.conv, "width": args.width, "data": args.data,
             "data_dir": args.data_dir, "run_dir": args.run_dir, "epochs": args.epochs, "seed": args.seed}
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.opt:
        overrides = {**{f"conv_kwargs.{k}": v for k, v in parse_options(args.opt).items()}, **overrides}
    if args.model_opt:
        overrides = {**{f"model_kwargs.{k}": v for k, v in parse_options(args.model_opt, "--model-opt").items()},
                     **overrides}
    if args.resume is None:
        return resolve_config(args.preset, args.config, {**flags, **overrides}), False
    if args.preset or args.config:
        raise UsageError(f"--resume continues the run with its saved config; it cannot change "
                         f"{'--preset' if args.preset else '--config'}")
    changes = {k: v for k, v in {**flags, **overrides}.items() if k != "run_dir"}
    return resume_config(args.resume, changes), True


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import fit
    from .train.task import score_label

    if args.list_presets:
        from .train import PRESETS

        for name, preset in sorted(PRESETS.items()):
            print(f"{name:<8} {preset.description}")
        return 0
    cfg, resume = _train_config(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    result = fit(cfg, resume=resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        acc, score = result.get("test_acc"), score_label([result.get("score")])
        print(f"test {score} {100 * acc:.2f}% (loss {result['test_loss']:.4f}) after {result['steps']} steps, "
              f"{result['train_seconds']:.0f} s training / {result['seconds']:.0f} s total; "
              f"{result['profile']['params']:,} params; results in {result['run_dir']}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_checkpoint

    result = evaluate_checkpoint(args.path, data_dir=args.data_dir, device=args.device, fold=args.fold)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    line = f"{result['model']} on {result['data']} ({result['images']} test images, step {result['step']}): " \
           f"{'mean IoU' if result.get('score') == 'mean IoU' else 'accuracy'} {100 * result['test_acc']:.2f}%" + \
           (f" (pixel accuracy {100 * result['test_pixel_acc']:.2f}%)" if "test_pixel_acc" in result else "") + \
           f", loss {result['test_loss']:.4f}"
    if args.fold:
        line += (f"; folded: {100 * result['folded_test_acc']:.2f}%, largest logit difference "
                 f"{result['folded_max_logit_diff']:.2e}")
    print(line)
    return 0


def _parse_conv_options(items: Sequence[str] | None, flag: str = "--opt") -> dict[str, dict[str, Any]]:
    """['dsep:norm=false', 'acdc:atoms=8'] -> {'dsep': {'norm': False}, 'acdc': {'atoms': 8}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        conv, sep, option = item.partition(":")
        if not sep or not conv.strip():
            raise UsageError(f"{flag} expects CONV:KEY=VALUE (e.g. acdc:atoms=8), got {item!r}")
        out.setdefault(conv.strip(), {}).update(parse_options([option], flag))
    return out


def _default_study_dir(spec: Any) -> str:
    budgets = spec.budgets
    budget = (budgets[0].tag + (f"-sweep{len(budgets)}" if len(budgets) > 1 else "")) if budgets else "none"
    return str(Path("runs") / f"compare-{spec.model}-{spec.data}-{budget}-{spec.preset}")


# `compare` exits with this when the study finished but some runs diverged or had not converged
FLAGGED_EXIT = 3


def _flagged_status(results: dict[str, Any]) -> int:
    flags = results["flags"]
    if flags["diverged"] or flags["not_converged"]:
        print(f"factorconv: {flags['diverged']} run(s) diverged and {flags['not_converged']} had not converged; "
              "see the health column of the report", file=sys.stderr)
        return FLAGGED_EXIT
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .study import StudySpec, run_study, summarize_text

    spec = StudySpec(
        model=args.model, convs=[c.strip() for c in args.convs.split(",") if c.strip()], budget=args.budget,
        data=args.data, data_dir=args.data_dir, preset=args.preset, seeds=args.seeds, reference=args.reference,
        threads=args.threads_per_run, overrides=parse_options(args.set, "--set"), width=args.width,
        conv_kwargs=_parse_conv_options(args.opt), model_kwargs=_parse_conv_options(args.model_opt, "--model-opt"),
        latency_batch=_batches(args.latency_batch, "1,32", False, "--latency-batch"),
        latency_repeats=args.latency_repeats, latency_runtime=args.latency_runtime,
        command="factorconv " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else None,
    ).validate()
    out = args.out or _default_study_dir(spec)
    results = run_study(spec, out, executor=_executor(args, out), measure_latency=not args.no_latency)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(summarize_text(results))
        print(f"\nreport: {Path(out) / 'report.md'}   plot: {Path(out) / 'study.png'}   data: "
              f"{Path(out) / 'results.json'}")
    return _flagged_status(results)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import get_reproduction, list_reproductions, plan, render_claims, render_plan, reproduce

    if args.list or not args.name:
        if not args.list:
            raise UsageError("name a study (factorconv reproduce --list shows them)")
        for study in list_reproductions():
            print(f"{study.name:<16} {study.source}")
        return 0
    study = get_reproduction(args.name)
    if args.dry_run:
        rows = plan(study, args.scale)
        if args.json:
            seeds = args.seeds or study.scale(args.scale)["seeds"]
            print(json.dumps({"study": study.name, "scale": args.scale, "seeds": seeds, "runs": seeds * len(rows),
                              "rows": rows}, indent=2))
        else:
            print(render_plan(study, args.scale, rows, seeds=args.seeds), end="")
        return 1 if any(r["ok"] is False for r in rows) else 0
    out = args.out or str(Path("runs") / f"reproduce-{study.name}-{args.scale}")
    command = "factorconv " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else None
    result = reproduce(study, args.scale, out, executor=_executor(args, out), seeds=args.seeds,
                       data_dir=args.data_dir, overrides=parse_options(args.set, "--set"), command=command)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "results"}, indent=2, default=str))
    else:
        print(render_claims(study, args.scale, result["claims"]), end="")
        print(f"\nclaims: {Path(out) / 'reproduce.md'}   study report: {Path(out) / 'report.md'}")
    return _flagged_status(result["results"])


def _cmd_show(args: argparse.Namespace) -> int:
    from .analysis import show_run

    what = [w.strip() for w in args.what.split(",") if w.strip()] if args.what else None
    data = show_run(args.run, out=args.out, what=what, images=args.images, data_dir=args.data_dir, force=args.force)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out = Path(args.out) if args.out else run_dir / "show"
    skipped = data.pop("skipped", {})
    print(f"{', '.join(data)}: {', '.join(sorted(p.name for p in out.glob('*.png')))} and show.json in {out}")
    layerless = [v for v, why in skipped.items() if why == f"the model has no {v} layer"]
    if layerless:
        print(f"skipped {', '.join(layerless)}: the model has no such layer")
    for view, why in skipped.items():
        if view not in layerless:
            print(f"skipped {view}: {why}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .study import build_report, summarize_text

    results = build_report(args.dir)
    print(json.dumps(results, indent=2, default=str) if args.json else summarize_text(results))
    return _flagged_status(results)


def _cmd_export(args: argparse.Namespace) -> int:
    from .train import export_run

    report = export_run(args.path, args.format, fold=args.fold, pack=args.pack, out=args.out, check=args.check,
                        check_images=args.check_images, check_batch=args.check_batch, dynamo=args.dynamo,
                        force=args.force, objective=args.objective, runtime=args.runtime, batch=args.batch)
    failed = args.check and max(report[k]["max_rel_error"] for k in ("check_random", "check_real")) > args.tolerance
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k not in ("form", "data")}, indent=2))
    else:
        print(f"wrote {report['file']} ({report['bytes']:,} bytes, {args.format}, {report['form'].replace('-', ', ')})")
        if "deploy" in report:
            d = report["deploy"]
            print(f"latency form for {d['runtime']} at batch {d['batch']}: {d['latency_ms']:.3f} ms against the size "
                  f"form's {d['size_ms']:.3f} ms ({_form_counts(d['forms'])})")
        for key, what in (("check_random", "random inputs"), ("check_real", f"{report['data']} test images")):
            if key in report:
                c = report[key]
                per = " per pixel" if c.get("agreement_of") == "pixels" else ""
                print(f"check on {c['images']} {what}: max |error| {c['max_abs_error']:.2e} (relative "
                      f"{c['max_rel_error']:.2e}), top-1 agreement{per} {100 * c['top1_agreement']:.2f}%")
    if failed:
        print(f"factorconv export: error: the exported model differs from PyTorch by more than {args.tolerance:g} "
              "(relative)", file=sys.stderr)
        return 1
    return 0


def _plan_osep(args: argparse.Namespace) -> tuple[dict[str, Any], torch.nn.Module]:
    from .ops.osep import plan_osep

    plan = plan_osep(args.c_in, args.c_out or args.c_in, args.kernel, n_parts=args.parts, gamma=args.gamma,
                     policy=args.policy, spatial=args.spatial)
    op = _plan_layer(args, "sosep" if args.spatial else "osep", n_parts=args.parts, gamma=args.gamma,
                                policy=args.policy)
    parts = [{"in": p.in_channels, "out": p.out_channels, "kernel": list(p.kernel_size), "groups": p.groups,
              "channels_per_group": p.channels_per_group, "in_padded": p.in_padded, "out_padded": p.out_padded,
              "params": p.params} for p in plan.parts]
    return {"operator": "osep", "parts": parts, "continuous_groups": list(plan.continuous_groups),
            "params": plan.params}, op


def _plan_igcv2(args: argparse.Namespace) -> tuple[dict[str, Any], torch.nn.Module]:
    from .ops.igcv import plan_igcv2

    channels = args.c_out or args.c_in
    kh, kw = (args.kernel, args.kernel)
    plan = plan_igcv2(channels, kh * kw, args.L, K=args.K, channelwise=True)
    if args.c_in != channels:
        raise UsageError("plan igcv2: the IGCV2 block keeps its width; give one channel count (or c_out = c_in)")
    op = _plan_layer(args, "igcv2", branch_sizes=list(plan.branch_sizes[1:]))
    parts = [{"in": args.c_in if i == 0 else channels, "out": channels, "kernel": [kh, kw] if i == 0 else [1, 1],
              "groups": channels // k if i else channels, "branch": k} for i, k in enumerate(plan.branch_sizes)]
    return {"operator": "igcv2", "parts": parts, "branch_sizes": list(plan.branch_sizes),
            "continuous_branch": plan.continuous_branch, "continuous_L": plan.continuous_L,
            "params": plan.params}, op


def _plan_layer(args: argparse.Namespace, conv: str, **options: Any) -> torch.nn.Module:
    """The layer the plan builds (its chain gives connectivity and receptive field)."""
    from .registry import create_conv2d

    return create_conv2d(args.c_in, args.c_out or args.c_in, args.kernel, conv=conv, padding=args.kernel // 2,
                         **options)


def _cmd_plan(args: argparse.Namespace) -> int:
    from .ops.igcv import connectivity
    from .ops.osep import volumetric_rf

    hw = parse_input_size(f"1x{args.hw}")[1:] if args.hw else (32, 32)
    plan, op = (_plan_osep if args.operator == "osep" else _plan_igcv2)(args)
    dense = args.c_in * (args.c_out or args.c_in) * args.kernel * args.kernel
    cost = op.cost(hw)
    links = connectivity([m for m in op.chain() if not isinstance(m, torch.nn.Identity)])
    rf = volumetric_rf([m for m in op.chain() if not isinstance(m, torch.nn.Identity)], args.kernel)
    plan.update(dense_params=dense, macs=cost.macs, dense_macs=dense * hw[0] * hw[1], input_hw=list(hw),
                connectivity={"dense": links.dense, "one_path": links.one_path, "density": links.density},
                receptive_field=list(rf.receptive_field), volumetric_rf_ok=rf.ok)
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    head = f"{args.operator} plan for a {args.c_in}->{args.c_out or args.c_in} {args.kernel}x{args.kernel} conv"
    print(head)
    for i, part in enumerate(plan["parts"]):
        k = "x".join(map(str, part["kernel"]))
        extra = (f", {part['channels_per_group']} channels/group, padded {part['in_padded']}->{part['out_padded']}"
                 if "channels_per_group" in part else f", branch {part['branch']}")
        print(f"  part {i + 1}: {part['in']}->{part['out']} {k}, {part['groups']} groups{extra}")
    print(f"params         {plan['params']:,} ({plan['params'] / dense:.3f} of the dense conv's {dense:,})")
    print(f"MACs at {hw[0]}x{hw[1]}   {plan['macs']:,} ({plan['macs'] / plan['dense_macs']:.3f} of the dense conv's)")
    print(f"connectivity   {'dense' if links.dense else 'NOT dense'}"
          + (", exactly one path per input-output pair" if links.one_path else f", density {links.density:.3f}"))
    print(f"receptive field {rf.receptive_field[0]}x{rf.receptive_field[1]}; volumetric RF condition "
          f"{'holds' if rf.ok else 'does NOT hold'}")
    return 0


def _form_counts(forms: dict[str, str]) -> str:
    """{'layer1.0.conv1': 'merged', ...} -> 'merged x13, size x6'."""
    counts: dict[str, int] = {}
    for form in forms.values():
        counts[form] = counts.get(form, 0) + 1
    return ", ".join(f"{form} x{n}" for form, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _batches(text: str | None, default: str, single: bool, flag: str = "--batch") -> list[int]:
    """'1,32' -> [1, 32]; one value where the suite takes one."""
    values = []
    for item in (text or default).split(","):
        try:
            value = int(item)
        except ValueError:
            value = 0
        if value < 1:
            raise UsageError(f"{flag} expects positive integers separated by commas, got {text!r}")
        values.append(value)
    if single and len(values) != 1:
        raise UsageError("--batch takes one value for this suite (several only for `bench deploy`)")
    return values


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_models, bench_ops, render_bench

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    convs = [c.strip() for c in args.convs.split(",") if c.strip()] if args.convs else None
    for conv in convs or ():
        conv_entry(conv)
    command = "factorconv " + " ".join(sys.argv[1:]) if sys.argv[1:2] in (["bench"], ["--threads"]) else ""
    if args.suite == "deploy":
        from .deployment.benchmark import bench_deploy, parse_runtimes, render_deploy
        from .study import DEFAULT_CONVS

        model_entry(args.model)
        result = bench_deploy(args.model, convs or list(DEFAULT_CONVS), None if args.budget == "none" else args.budget,
                              parse_runtimes(args.runtimes), _batches(args.batch, "1,32", False),
                              parse_input_size(args.input), repeats=args.repeats or 20)
        result["command"] = command
        text = render_deploy(result)
    else:
        batch = _batches(args.batch, "32", True)[0]
        if args.suite == "ops":
            result = bench_ops(convs, batch=batch, device=args.device, repeats=args.repeats or 20)
        else:
            model_entry(args.model)
            result = bench_models(args.model, convs, batch=batch, device=args.device, repeats=args.repeats or 15)
        result["command"] = command
        text = render_bench(result, command)
    if args.out:
        name = "deploy_latency_cpu" if args.suite == "deploy" else f"bench_{args.suite}_{args.device}"
        stem = Path(args.out) / name
        record, rendered = stem.with_suffix(".json"), stem.with_suffix(".md")
        check_outputs((record, rendered), force=args.force)
        write_atomic(record, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
        write_atomic(rendered, lambda tmp: tmp.write_text(f"# factorconv bench {args.suite} ({args.device})\n\n"
                                                          + text))
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="factorconv",
        description="Efficient convolution operators: list, profile, and compare them on one backbone.",
    )
    parser.add_argument("--version", action="version", version=f"factorconv {__version__}")
    parser.add_argument("--threads", type=count(), default=None, help="torch CPU threads (default: torch's)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="registered operators and models")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern on model names")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("profile", help="params, bits, MACs, deploy size and per-layer table of a model")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (Profile.to_dict())")
    p.add_argument("--summary", action="store_true", help="totals only, no per-layer table")
    p.add_argument("--meta", action="store_true", help="count on the meta device (large models, no memory)")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("train", help="train a model on a data set (single process, or under torchrun: DDP)",
                       description="Train one model. Config precedence: defaults < --preset < --config < flags "
                                   "< --set. Every config field can be set with --set KEY=VALUE.")
    p.add_argument("--model", default=None, help="registered model (default resnet20)")
    p.add_argument("--conv", default=None, help="operator replacing the spatial convs (default: the model's)")
    p.add_argument("--width", type=number(), default=None, help="width multiplier")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="operator option, repeatable")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="model option, repeatable")
    p.add_argument("--data", default=None, help="data set: fashion-mnist (default), mnist, kmnist, cifar10, "
                                                "cifar100, folder, synthetic")
    p.add_argument("--data-dir", default=None, help="where the data set is (default: its usual places)")
    p.add_argument("--preset", default=None, help="training recipe (--list-presets shows them)")
    p.add_argument("--config", default=None, help="JSON or YAML file of config fields")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config field, repeatable "
                                                                        "(conv_kwargs.p=3 reaches into mappings)")
    p.add_argument("--epochs", type=number(), default=None, help="training epochs")
    p.add_argument("--seed", type=count(0), default=None, help="random seed")
    p.add_argument("--run-dir", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run saved in RUN_DIR exactly")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-presets", action="store_true", help="list the training presets and exit")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="test accuracy of a trained run (run directory or checkpoint)")
    p.add_argument("path", help="run directory or its checkpoint.pt")
    p.add_argument("--data-dir", default=None, help="where the data set is (default: as trained)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--fold", action="store_true", help="also evaluate the folded (deploy) model and compare logits")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_eval)

    from .study import DEFAULT_BUDGET, DEFAULT_CONVS, DEFAULT_PRESET, DEFAULT_SEEDS

    p = sub.add_parser(
        "compare", help="the main job: operators side by side on one backbone, budget-matched, with the Pareto front",
        description="Train each operator on one backbone and recipe at the width that meets each budget (on the "
                    "model that ships), over paired seeds; report mean, std and 95% CI per operator, the paired "
                    "difference to --reference with its CI and a verdict, run health, the deploy forms' latency and "
                    "the Pareto front, in report.md, study.png and results.json in --out. Rerunning skips finished "
                    "runs (more --seeds, --convs or budget values add runs). Exit status 3: the study finished but "
                    "some runs diverged or had not converged. With no arguments: the default study on "
                    "Fashion-MNIST (see the README for its time on 2 CPU cores).")
    p.add_argument("--model", default="resnet20", help="backbone (default resnet20)")
    p.add_argument("--convs", default=",".join(DEFAULT_CONVS), help=f"operators (default {','.join(DEFAULT_CONVS)})")
    p.add_argument("--budget", default=DEFAULT_BUDGET,
                   help="KIND=COUNT[,COUNT...] with KIND params (the deploy form's parameters), size (its bytes), "
                        "macs, or train-params (parameters trained); k/M/G suffixes; several counts sweep the size; "
                        f"none: --width for all (default {DEFAULT_BUDGET})")
    p.add_argument("--width", type=float, default=1.0,
                   help="with --budget none: the width multiplier of every operator's backbone (default 1)")
    p.add_argument("--reference", default=None,
                   help="operator the others are compared with, seed by seed (default conv, or the first listed)")
    p.add_argument("--data", default="fashion-mnist", help="data set (as for train; default fashion-mnist)")
    p.add_argument("--data-dir", default=None, help="where the data set is")
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"training recipe (default {DEFAULT_PRESET}; `factorconv train --list-presets`)")
    p.add_argument("--seeds", type=count(), default=DEFAULT_SEEDS, help=f"paired seeds per operator (default "
                                                                    f"{DEFAULT_SEEDS})")
    _add_executor_args(p)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config field for every run")
    p.add_argument("--opt", action="append", metavar="CONV:KEY=VALUE", help="operator option, e.g. acdc:atoms=8")
    p.add_argument("--model-opt", action="append", metavar="CONV:KEY=VALUE",
                   help="backbone option for one operator's model, e.g. osep:shortcut=conv (o-ResNet)")
    p.add_argument("--out", default=None,
                   help="study directory (default: runs/compare-<model>-<data>-<budget>-<preset>)")
    p.add_argument("--latency-batch", default="1,32",
                   help="comma-separated batches of the latency measurement (default 1,32): a column each")
    p.add_argument("--latency-runtime", default=None, choices=("torch", "onnxruntime", "openvino", "best"),
                   help="where latency is measured, each point deployed for latency there (default onnxruntime "
                        "where installed, else torch; best: the fastest installed)")
    p.add_argument("--latency-repeats", type=count(), default=30, help="interleaved timing repetitions (default 30)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--json", action="store_true", help="print results.json instead of the table")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "reproduce", help="a paper's comparison as a named study, with the paper's numbers and a verdict per claim",
        description="Run one of the papers' comparison tables as a study (paired seeds) and print the paper's "
                    "numbers beside ours with a verdict on each claim. --scale cpu: Fashion-MNIST, minutes on 2 "
                    "cores; --scale paper: the paper's backbone, data and recipe (a GPU machine or a cluster). "
                    "--dry-run prints the plan (widths and counts beside the paper's) without training; its exit "
                    "status is 1 when a count is off by more than the table's tolerance.")
    p.add_argument("name", nargs="?", help="the study (--list shows them)")
    p.add_argument("--list", action="store_true", help="list the named studies")
    p.add_argument("--scale", default="cpu", choices=("cpu", "paper"), help="cpu (default) or paper")
    p.add_argument("--dry-run", action="store_true", help="print the plan and counts, do not train")
    p.add_argument("--seeds", type=count(), default=None, help="paired seeds (default: the study's, 3 or 5)")
    p.add_argument("--data-dir", default=None, help="where the data set is")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config field for every run")
    p.add_argument("--out", default=None, help="study directory (default: runs/reproduce-<name>-<scale>)")
    p.add_argument("--json", action="store_true", help="print the plan or the claims as JSON")
    _add_executor_args(p)
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser(
        "show", help="look inside a trained run: DO-Conv's kernel shift, ACDC's atoms, BDSC's configurations, CAMs",
        description="Draw what a trained run learned as PNGs, with the numbers behind them in show.json: doconv "
                    "(the map H of how far each DO-Conv kernel moved from the conv it holds), acdc (atoms and shared "
                    "coefficients), bdsc (binary configurations: density per tap, q per layer), cam (Grad-CAM at "
                    "every stage for a few test images), redundancy (ACDC's cross-layer coefficient analysis of a "
                    "standard CNN). Default: every view that applies to the run's model.")
    p.add_argument("run", help="a run directory (or its checkpoint.pt)")
    p.add_argument("--what", default=None, help="comma-separated views: doconv,acdc,bdsc,cam,redundancy")
    p.add_argument("--out", default=None, help="where to write (default RUN/show)")
    p.add_argument("--force", action="store_true", help="replace the files of an earlier show in --out")
    p.add_argument("--images", type=count(), default=4, help="test images in the CAM grid (default 4)")
    p.add_argument("--data-dir", default=None, help="where the run's data set is")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("export", help="export a trained run: ONNX, TorchScript or state_dict, folded/packed, checked",
                       description="Export the model of a run directory (or checkpoint). --fold ships every operator "
                                   "in its deploy form (folded, or factorized where smaller), --pack bit-packs BDSC "
                                   "masks; --check runs the exported file (onnxruntime for ONNX) on random and real "
                                   "test inputs against the trained PyTorch model and reports the largest error.")
    p.add_argument("path", help="run directory or its checkpoint.pt")
    p.add_argument("--format", default="onnx", choices=("onnx", "torchscript", "state_dict"))
    p.add_argument("--fold", action="store_true", help="deploy form of every operator")
    p.add_argument("--pack", action="store_true", help="bit-packed BDSC configurations")
    p.add_argument("--check", action="store_true", help="compare the exported model with PyTorch")
    p.add_argument("--check-images", type=count(), default=512, help="test images for --check (default 512)")
    p.add_argument("--check-batch", type=count(), default=64, help="batch for --check (default 64)")
    p.add_argument("--tolerance", type=number(0.0), default=1e-4, help="largest relative logit error --check accepts")
    p.add_argument("--dynamo", action="store_true", help="ONNX: the torch.export-based exporter")
    p.add_argument("--objective", default="size", choices=("size", "latency"),
                   help="with --fold: size (default: fewest bits) or latency (the exact form of each layer that runs "
                        "fastest in --runtime, timed on this machine)")
    p.add_argument("--runtime", default=None, choices=("torch", "onnxruntime", "openvino", "best"),
                   help="--objective latency: the runtime it ships to (default onnxruntime where installed)")
    p.add_argument("--batch", type=count(), default=1,
                   help="--objective latency: the batch it is timed at (default 1)")
    p.add_argument("--out", default=None, help="output file (default: in the run directory)")
    p.add_argument("--force", action="store_true", help="replace an existing output file (never a run's own files)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="operator and model speed as ratios to nn.Conv2d, measured side by side",
                       description="ops: every operator as a 64->64 3x3 layer on 32x32 maps, train step and eval "
                                   "forward as ratios to nn.Conv2d, contiguous and channels_last. models: a backbone "
                                   "with each operator, train/eval/deployed as ratios to the standard model. Both "
                                   "report achieved GFLOP/s next to the machine's measured matmul rate. deploy: each "
                                   "operator at its --budget width deployed for size and for latency in every "
                                   "runtime of --runtimes, at every --batch, timed side by side (ms, ratio to the "
                                   "plain conv, GMAC/s, the forms chosen, the largest logit difference).")
    p.add_argument("suite", choices=("ops", "models", "deploy"))
    p.add_argument("--model", default="resnet20", help="backbone for `models` (default resnet20)")
    p.add_argument("--convs", default=None, help="operators (default: every registered one)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", default=None, help="batch (default 32); deploy: comma-separated batches (default 1,32)")
    p.add_argument("--budget", default="params=50k", help="deploy: the budget every operator's width meets, as for "
                                                          "compare (default params=50k; none: width 1)")
    p.add_argument("--runtimes", default="all", help="deploy: comma-separated runtimes (torch, onnxruntime, "
                                                     "openvino), or all installed ones (default)")
    p.add_argument("--input", default="1x28x28", help="deploy: input size CxHxW (default 1x28x28, the default "
                                                      "study's Fashion-MNIST)")
    p.add_argument("--repeats", type=count(), default=None, help="interleaved repetitions (default 20 ops, 15 models)")
    p.add_argument("--out", default=None, help="also write bench_<suite>_<device>.json/.md in this directory")
    p.add_argument("--force", action="store_true", help="replace existing files of an earlier bench in --out")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("plan", help="the factor plan of an osep or igcv2 layer: parts, cost, connectivity",
                       description="Print the plan an operator builds for one conv: its group convs (channels, "
                                   "kernels, groups), parameters and MACs against the dense conv, whether every "
                                   "output reaches every input (and by how many paths), and the receptive field.")
    p.add_argument("operator", choices=("osep", "igcv2"))
    p.add_argument("c_in", type=count(), help="input channels")
    p.add_argument("c_out", type=count(), nargs="?", default=None, help="output channels (default: c_in)")
    p.add_argument("--kernel", type=count(), default=3, help="kernel size (default 3)")
    p.add_argument("--hw", default=None, help="feature size HxW for MACs (default 32x32)")
    p.add_argument("--parts", default=2, type=lambda t: t if t == "auto" else count(2)(t),
                   help="osep: number of parts N, or auto (eq. 21; default 2)")
    p.add_argument("--gamma", type=number(), default=1.0, help="osep: overlap coefficient gamma (default 1)")
    p.add_argument("--policy", default="min", help="osep: internal channels policy (default min)")
    p.add_argument("--spatial", action="store_true", help="osep: split the kernel into KxH and 1xK parts (sosep)")
    p.add_argument("--L", type=count(2), default=None, help="igcv2: number of group convs (default: eq. 14)")
    p.add_argument("--K", type=count(2), default=None, help="igcv2: branch size of the 1x1 convs (IGCV2*)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("report", help="rebuild a study's table, report.md and study.png from its directory")
    p.add_argument("dir", help="the study directory (compare --out)")
    p.add_argument("--json", action="store_true", help="print results.json instead of the table")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .data import DatasetError
    from .study import StudyError
    from .train import CheckpointError, RunDirError, TrainError

    def fail(message: str, status: int) -> int:
        print(f"factorconv {args.command}: {message}", file=sys.stderr)
        return status

    try:
        return int(args.func(args))
    except (ValueError, UsageError) as err:
        return fail(f"error: {_one_line(err)}", 2)
    except (DatasetError, TrainError, CheckpointError, RunDirError, StudyError, OutputError) as err:
        return fail(f"error: {_one_line(err)}", 1)
    except KeyboardInterrupt as err:
        hint = getattr(err, "resume_hint", "")
        return fail("interrupted" + (f"; {hint}" if hint else ""), 130)
    except BrokenPipeError:  # `factorconv list | head`: the reader left; say nothing more
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # a file that cannot be read or written: the file and why, not a traceback
        return fail(f"error: {_os_error(err)}", 1)
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "allocate" not in str(err):
            raise  # a real bug: its traceback is what a report needs
        return fail(f"error: not enough memory for what was asked ({_one_line(err) or 'MemoryError'}); use a "
                    "smaller width, batch or model", 1)


def _os_error(err: OSError) -> str:
    from .outputs import write_error

    if err.filename is not None:
        return write_error(err, err.filename, "use")
    return _one_line(err)


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
