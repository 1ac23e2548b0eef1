"""`factorconv eval`: test accuracy of a trained run, and of its folded form."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="test accuracy of a trained run (run directory or checkpoint)")
    p.add_argument("path", help="run directory or its checkpoint.pt")
    p.add_argument("--data-dir", default=None, help="where the data set is (default: as trained)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--fold", action="store_true", help="also evaluate the folded (deploy) model and compare logits")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import evaluate_checkpoint

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
