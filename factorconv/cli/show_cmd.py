"""`factorconv show`: views of what a trained run learned."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .args import count


def add_parser(sub: Any) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis import show_run

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
