"""The study plot: mean accuracy against size, one panel per size axis (the budget's own, then MACs), one
line per operator through its budgets (a single marker when there is one budget), 95% CI bars, the Pareto
front over all points as a dashed step line. Needs matplotlib (the `plot` extra); without it nothing is
written and the report says so.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..train.task import score_label
from .spec import AXES

__all__ = ["plot_study"]



def _merge_labels(labels: Sequence[tuple[float, float, str]], closeness: float = 0.03
                  ) -> dict[tuple[float, float], list[str]]:
    """Operators at one size whose means lie within `closeness` of the panel's accuracy range share one label
    (at the first one's point): their names drawn apart would print over each other."""
    ys = [y for _, y, _ in labels]
    span = (max(ys) - min(ys)) if ys else 0.0
    merged: dict[tuple[float, float], list[str]] = {}
    for x, y, name in labels:
        near = next((k for k in merged if k[0] == x and abs(k[1] - y) <= closeness * span), None)
        merged.setdefault(near or (x, y), []).append(name)
    return merged


def plot_study(rows: Sequence[dict[str, Any]], axes: Sequence[str], path: Path, title: str = "") -> bool:
    """Write the plot to `path`; False (nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'factorconv[plot]'): no plot written", file=sys.stderr)
        return False
    scored = [r for r in rows if r["accuracy"] is not None]
    if not scored:  # every run diverged: nothing to draw
        return False
    convs = list(dict.fromkeys(r["conv"] for r in scored))
    fig, panels = plt.subplots(1, len(axes), figsize=(6.2 * len(axes), 4.8), constrained_layout=True, squeeze=False)
    colors = plt.get_cmap("tab10")
    markers = "osD^v<>pX*h"
    sweep = len({r["budget"] for r in scored}) > 1
    for ax, axis in zip(panels[0], axes, strict=True):
        key, _, label = AXES[axis]
        labels: list[tuple[float, float, str]] = []
        for i, conv in enumerate(convs):
            mine = sorted((r for r in scored if r["conv"] == conv), key=lambda r: r[key])
            xs = [r[key] for r in mine]
            ys = [r["accuracy"]["mean"] for r in mine]
            err = [(r["accuracy"]["half_width"] or 0.0) for r in mine]
            ax.errorbar(xs, ys, yerr=err, fmt=markers[i % len(markers)] + ("-" if sweep else ""),
                        color=colors(i % 10), markersize=7, capsize=3, linewidth=1.2, label=conv)
            for r in mine:
                if r.get(f"front_{axis}"):
                    ax.plot(r[key], r["accuracy"]["mean"], marker="o", markersize=13, markerfacecolor="none",
                            markeredgecolor="black", linewidth=0)
            if not sweep and mine:
                labels.append((xs[0], ys[0], conv))
        for (x, y), names in _merge_labels(labels).items():
            ax.annotate(" / ".join(names), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
        front = sorted((r[key], r["accuracy"]["mean"]) for r in scored if r.get(f"front_{axis}"))
        if front:
            fx, fy = zip(*front, strict=True)
            ax.step(fx, fy, where="post", linestyle="--", color="gray", linewidth=1.2, label="Pareto front")
        values = [r[key] for r in scored]
        if values and max(values) / max(min(values), 1) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {score_label(r.get('score') for r in rows)} % (mean, 95% CI)")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"accuracy vs {label}")
    panels[0][-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
