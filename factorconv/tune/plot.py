"""The tuning study's plots (matplotlib, optional: without it the report says there are none): each
operator's optimisation history (every completed trial's validation accuracy and the best so far, by trial)
and its parameter importances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_history", "plot_importances"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_history(operators: dict[str, dict[str, Any]], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (op, r) in enumerate(operators.items()):
        color = f"C{i}"
        done = [(h["number"], 100 * h["value"]) for h in r["history"] if h["state"] == "complete"]
        best = [(h["number"], 100 * h["best"]) for h in r["history"] if h["best"] is not None]
        if done:
            ax.scatter(*zip(*done, strict=True), color=color, s=14, alpha=0.5)
        if best:
            ax.step(*zip(*best, strict=True), where="post", color=color, label=op)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("optimisation history: each completed trial, and the best so far")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_importances(operators: dict[str, dict[str, Any]], path: Path) -> bool:
    plt = _pyplot()
    with_any = {op: r["importances"] for op, r in operators.items() if r["importances"]}
    if plt is None or not with_any:
        return False
    fig, axes = plt.subplots(1, len(with_any), figsize=(3.2 * len(with_any), 2.8), squeeze=False)
    for ax, (op, imp) in zip(axes[0], with_any.items(), strict=True):
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="C0")
        ax.set_title(op)
        ax.set_xlim(0, 1)
    fig.suptitle("parameter importances (fANOVA)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
