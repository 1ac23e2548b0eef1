"""`factorconv export`: shipping a trained run (ONNX, TorchScript, state_dict), deployed, checked."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .args import count, form_counts, number


def add_parser(sub: Any) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import export_run

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
                  f"form's {d['size_ms']:.3f} ms ({form_counts(d['forms'])})")
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
