"""Shipping a trained run: `export_run` writes its deploy form in an export format (ONNX, TorchScript, a
state_dict) and checks the file against the trained model on random inputs and on the run's own test
images, returning the report the CLI prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data import TensorLoader
from ..export import check_export, export_form, export_model
from ..outputs import check_output
from .engine import load_trained

__all__ = ["SUFFIXES", "export_run"]

SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts.pt", "state_dict": ".state.pt"}


def export_run(path: str | Path, fmt: str, *, fold: bool = False, pack: bool = False, out: str | Path | None = None,
               check: bool = True, check_images: int = 256, check_batch: int = 32,
               dynamo: bool = False, force: bool = False, objective: str = "size", runtime: str | None = None,
               batch: int = 1) -> dict[str, Any]:
    """Export the run at `path` (its directory or checkpoint) as `fmt`, to `out` (default: in the run
    directory, named by the form: model[-folded][-packed] with the format's suffix). With `check`, the file's
    outputs are compared with the trained model's on two batches of random inputs and on `check_images` of
    the run's test images (`check_random`, `check_real`: max absolute and relative error, top-1 agreement);
    a state_dict holds the shipped form, so it is checked against that. With `fold`, `objective="latency"`
    ships each operator in the exact form that runs fastest in `runtime` at `batch` (factorconv.deploy), and
    the report says which. An existing file at the target is
    replaced only with `force`, and never one of the run's or a study's own files (`factorconv.outputs`)."""
    if fmt not in SUFFIXES:
        raise ValueError(f"export: format must be one of {', '.join(SUFFIXES)}, got {fmt!r}")
    run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
    form = "-".join(["model"] + (["folded"] if fold else []) + (["packed"] if pack else [])
                    + ([f"latency-{runtime or 'default'}-b{batch}"] if objective == "latency" else []))
    target = check_output(Path(out) if out else run_dir / f"{form}{SUFFIXES[fmt]}", force=force)
    if objective != "size" and not fold:
        raise ValueError("export: --objective latency chooses among deploy forms; it needs --fold")
    model, cfg, state, test = load_trained(path)
    input_shape = tuple(test.images.shape[1:])
    shipped = export_form(model, fold=fold, pack=pack, objective=objective, runtime=runtime,
                          input_size=input_shape, batch=batch)
    # batch 2: torch.export specialises a dimension of size 1 to a constant, which would fix the batch of an
    # ONNX file exported with --dynamo to 1
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    export_model(shipped, target, fmt, example, dynamo=dynamo, constant_folding=not pack)
    report: dict[str, Any] = {"file": str(target), "bytes": target.stat().st_size, "format": fmt, "fold": fold,
                              "pack": pack, "form": form, "data": cfg.data, "objective": objective,
                              "params": sum(p.numel() for p in shipped.parameters())}
    if getattr(shipped, "deploy_report", None) is not None:
        report["deploy"] = shipped.deploy_report.to_dict()
    if check:
        gen = torch.Generator().manual_seed(0)
        randoms = [torch.randn(check_batch, *input_shape, generator=gen) for _ in range(2)]
        loader = TensorLoader(test.subset(check_images, 0), check_batch, shuffle=False, mean=state["mean"],
                              std=state["std"])
        real = [x for x, _ in loader.epoch(0)]
        reference = shipped if fmt == "state_dict" else model
        report["check_random"] = check_export(target, fmt, reference, randoms)
        report["check_real"] = check_export(target, fmt, reference, real)
    return report
