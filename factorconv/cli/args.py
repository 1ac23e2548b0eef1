"""What every `factorconv` command shares: argparse with one-line errors, value parsers (counts, numbers,
key=value options, input sizes, batch lists), the model and executor arguments, and the exit status of a
flagged study."""

from __future__ import annotations

import argparse
import ast
import contextlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from ..accounting import check_memory, count_params
from ..registry import check_model_options, create_model, model_entry


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


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """Where a study's runs execute (compare, reproduce)."""
    from ..study import EXECUTORS

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


def executor_from_args(args: argparse.Namespace, out: str) -> Any:
    from ..study import create_executor

    return create_executor(args.executor, workers=args.workers, threads=args.threads_per_run, out=Path(out),
                           ray_address=args.ray_address, gpus=args.gpus_per_run,
                           submitit_cluster=args.submitit_cluster, slurm_partition=args.slurm_partition,
                           slurm_time=args.slurm_time, slurm_cpus=args.slurm_cpus_per_job)


def add_model_args(p: argparse.ArgumentParser) -> None:
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


def build_from_args(args: argparse.Namespace,
                    device: str | None = None) -> tuple[torch.nn.Module, tuple[int, int, int]]:
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


def parse_conv_options(items: Sequence[str] | None, flag: str = "--opt") -> dict[str, dict[str, Any]]:
    """['dsep:norm=false', 'acdc:atoms=8'] -> {'dsep': {'norm': False}, 'acdc': {'atoms': 8}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        conv, sep, option = item.partition(":")
        if not sep or not conv.strip():
            raise UsageError(f"{flag} expects CONV:KEY=VALUE (e.g. acdc:atoms=8), got {item!r}")
        out.setdefault(conv.strip(), {}).update(parse_options([option], flag))
    return out


def parse_batches(text: str | None, default: str, single: bool, flag: str = "--batch") -> list[int]:
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


def form_counts(forms: dict[str, str]) -> str:
    """{'layer1.0.conv1': 'merged', ...} -> 'merged x13, size x6'."""
    counts: dict[str, int] = {}
    for form in forms.values():
        counts[form] = counts.get(form, 0) + 1
    return ", ".join(f"{form} x{n}" for form, n in sorted(counts.items(), key=lambda kv: -kv[1]))


# `compare` exits with this when the study finished but some runs diverged or had not converged
FLAGGED_EXIT = 3


def flagged_status(results: dict[str, Any]) -> int:
    flags = results["flags"]
    if flags["diverged"] or flags["not_converged"]:
        print(f"factorconv: {flags['diverged']} run(s) diverged and {flags['not_converged']} had not converged; "
              "see the health column of the report", file=sys.stderr)
        return FLAGGED_EXIT
    return 0


def os_error_line(err: OSError) -> str:
    from ..outputs import write_error

    if err.filename is not None:
        return write_error(err, err.filename, "use")
    return one_line(err)


def one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
