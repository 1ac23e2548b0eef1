"""`factorconv show RUN`: the views of a trained run as PNGs (matplotlib, Agg) and the numbers behind each as
JSON, in one directory. Views: `doconv` (the kernel-shift map H per DO-Conv layer), `acdc` (atoms per layer,
the shared coefficients per bank), `bdsc` (the binary spatial configurations: density per tap and q per
layer), `cam` (class activation maps at every stage for a few test images, any model), `redundancy`
(ACDC's cross-layer coefficient analysis, for a standard CNN). By default every view that applies."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..ops.acdc import ACDCConv2d
from ..ops.bdsc import BalancedDecoupledConv2d
from ..ops.doconv import DOConv2d
from ..outputs import check_outputs
from .cam import class_activation_maps
from .kernels import acdc_atoms, acdc_coefficients, bdsc_configurations, doconv_shift
from .redundancy import coefficient_redundancy, spatial_convs

__all__ = ["VIEWS", "VIEW_FILES", "applicable_views", "show_model", "show_run", "view_reasons"]

VIEWS = ("doconv", "acdc", "bdsc", "cam", "redundancy")


# the files each view writes (show.json holds every view's numbers)
VIEW_FILES = {"doconv": ("doconv_shift.png",), "acdc": ("acdc_atoms.png", "acdc_coefficients.png"),
              "bdsc": ("bdsc_taps.png", "bdsc_density.png"), "cam": ("cam.png",), "redundancy": ("redundancy.png",)}


def view_reasons(model: nn.Module, task: str = "classification") -> dict[str, str | None]:
    """Every view: None where it applies to `model` (trained for `task`), else why it does not."""
    kinds = {type(m) for m in model.modules()}
    reasons: dict[str, str | None] = {}
    for view, cls in (("doconv", DOConv2d), ("acdc", ACDCConv2d), ("bdsc", BalancedDecoupledConv2d)):
        reasons[view] = None if any(issubclass(k, cls) for k in kinds) else f"the model has no {view} layer"
    if any(why is None for why in reasons.values()):
        reasons["redundancy"] = "the model's convs are already an operator's (the analysis is of a standard CNN)"
    elif len(spatial_convs(model)) < 2:
        reasons["redundancy"] = ("the model has fewer than two dense k×k conv layers (its operator factors them: "
                                 "the analysis is of a standard CNN)")
    else:
        reasons["redundancy"] = None
    reasons["cam"] = (None if task == "classification" else
                      f"Grad-CAM of a class score needs a classifier; this model is trained for {task}")
    return reasons


def applicable_views(model: nn.Module, task: str = "classification") -> list[str]:
    """The views that apply to `model`, in VIEWS order."""
    return [view for view, why in view_reasons(model, task).items() if why is None]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("factorconv show draws with matplotlib: pip install 'factorconv[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 6)
    return math.ceil(n / cols), cols


def _heatmaps(maps: dict[str, torch.Tensor], title: str, path: Path, cmap: str = "viridis") -> None:
    plt = _pyplot()
    rows, cols = _grid(len(maps))
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.0 * rows + 0.5), squeeze=False)
    vmax = max(float(m.max()) for m in maps.values()) or 1.0
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, m) in zip(axes.flat, maps.items(), strict=False):
        ax.imshow(m.numpy(), cmap=cmap, vmin=0, vmax=vmax)
        ax.set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _doconv(model: nn.Module, out: Path) -> dict[str, Any]:
    shift = doconv_shift(model)
    _heatmaps(shift, "DO-Conv: H = Σ|W' − W| per kernel position (the conv's own kernel W, trained D∘W)",
              out / "doconv_shift.png", cmap="magma")
    return {name: h.tolist() for name, h in shift.items()}


def _acdc(model: nn.Module, out: Path) -> dict[str, Any]:
    plt = _pyplot()
    atoms = acdc_atoms(model)
    # one mosaic, a row of atoms per layer (each atom scaled to its layer's largest magnitude)
    flats = {n: a.reshape(-1, *a.shape[-2:]) for n, a in atoms.items()}
    kh, kw = next(iter(flats.values())).shape[-2:]
    cols = max(f.shape[0] for f in flats.values())
    mosaic = torch.full((len(flats) * (kh + 1), cols * (kw + 1)), float("nan"))
    for r, f in enumerate(flats.values()):
        f = f / f.abs().max().clamp_min(1e-12)
        for c, atom in enumerate(f):
            mosaic[r * (kh + 1): r * (kh + 1) + kh, c * (kw + 1): c * (kw + 1) + kw] = atom
    fig, ax = plt.subplots(figsize=(0.45 * cols + 2.2, 0.4 * len(flats) + 0.8))
    ax.imshow(mosaic.numpy(), cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_yticks([r * (kh + 1) + (kh - 1) / 2 for r in range(len(flats))], list(flats), fontsize=6)
    ax.set_xticks([])
    ax.set_title("ACDC: each layer's filter atoms (a row per layer)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "acdc_atoms.png", dpi=110)
    plt.close(fig)
    banks = acdc_coefficients(model)
    mats = {f"{name} ({len(b['layers'])} layers)": b["coefficients"].reshape(b["coefficients"].shape[0], -1).abs()
            for name, b in banks.items()}
    _heatmaps(mats, "ACDC: shared coefficients |A| per bank (out × in·m)", out / "acdc_coefficients.png")
    return {"atoms": {n: a.tolist() for n, a in atoms.items()},
            "banks": {n: {"layers": b["layers"], "shape": list(b["coefficients"].shape)} for n, b in banks.items()}}


def _bdsc(model: nn.Module, out: Path) -> dict[str, Any]:
    plt = _pyplot()
    configs = bdsc_configurations(model)
    _heatmaps({n: c["tap_density"] for n, c in configs.items()},
              "BDSC: share of ones per tap of the binary configuration", out / "bdsc_taps.png")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(configs)), 3))
    ax.bar(range(len(configs)), [c["density"] for c in configs.values()])
    ax.set_xticks(range(len(configs)), list(configs), rotation=90, fontsize=6)
    ax.set_ylabel("density q")
    ax.set_title("BDSC: density q of each layer's configuration", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "bdsc_density.png", dpi=110)
    plt.close(fig)
    return {n: {"density": c["density"], "tap_density": c["tap_density"].tolist(),
                "shape": list(c["configuration"].shape)} for n, c in configs.items()}


def _cam(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, raw: torch.Tensor, out: Path) -> dict:
    plt = _pyplot()
    maps = class_activation_maps(model, images, labels)
    n, names = images.shape[0], list(maps)
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(1.8 * (len(names) + 1), 1.8 * n + 0.4), squeeze=False)
    for i in range(n):
        picture = raw[i].permute(1, 2, 0).squeeze(-1).numpy()
        axes[i, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        axes[i, 0].set_title(f"class {int(labels[i])}", fontsize=7)
        for j, name in enumerate(names, 1):
            axes[i, j].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
            axes[i, j].imshow(maps[name][i].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if i == 0:
                axes[i, j].set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Grad-CAM of the true class at every stage", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "cam.png", dpi=110)
    plt.close(fig)
    return {"labels": labels.tolist(), "maps": {k: v.round(decimals=4).tolist() for k, v in maps.items()}}


def _redundancy(model: nn.Module, images: torch.Tensor, out: Path) -> dict[str, Any]:
    plt = _pyplot()
    result = coefficient_redundancy(model, images)
    pairs = result["pairs"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.scatter([p["channels"] for p in pairs], [p["erank_joint"] / p["channels"] for p in pairs], s=12)
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    ax.axhline(2, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("channels c of the pair")
    ax.set_ylabel("effective rank of [Ã_i; Ã_j] / c")
    ax.set_title("ACDC §3.2: 1 = one shared coefficient subspace, 2 = unrelated", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "redundancy.png", dpi=110)
    plt.close(fig)
    return result


def show_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, raw: torch.Tensor, out: str | Path,
               what: list[str] | None = None, cam_images: int | None = None, task: str = "classification",
               force: bool = False) -> dict[str, Any]:
    """Write the views `what` (default: every view that applies, `applicable_views`) of `model` to `out`: a
    PNG or two each and show.json, whose "skipped" entry says which views did not apply and why. `images` are
    normalised inputs, `raw` the same images for display (C, H, W in [0, 1]). The CAM grid shows the first
    `cam_images` of them (default all); the redundancy analysis uses all. Files of an earlier show in `out`
    are replaced only with `force`."""
    out = Path(out)
    reasons = view_reasons(model, task)
    unknown = [v for v in what or () if v not in VIEWS]
    if unknown:
        raise ValueError(f"show: unknown view {', '.join(unknown)} (views: {', '.join(VIEWS)})")
    refused = [f"{v}: {reasons[v]}" for v in what or () if reasons[v] is not None]
    if refused:
        present = ", ".join(applicable_views(model, task))
        raise ValueError(f"show: {'; '.join(refused)} (this model's views: {present})")
    views = what or applicable_views(model, task)
    check_outputs([out / "show.json", *(out / name for v in views for name in VIEW_FILES[v])], force=force)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    data: dict[str, Any] = {}
    if not what:
        data["skipped"] = {v: why for v, why in reasons.items() if why is not None}
    for view in views:
        if view == "doconv":
            data[view] = _doconv(model, out)
        elif view == "acdc":
            data[view] = _acdc(model, out)
        elif view == "bdsc":
            data[view] = _bdsc(model, out)
        elif view == "cam":
            n = cam_images or len(images)
            data[view] = _cam(model, images[:n], labels[:n], raw[:n], out)
        else:
            data[view] = _redundancy(model, images, out)
    (out / "show.json").write_text(json.dumps(data) + "\n")
    return data


def show_run(run: str | Path, out: str | Path | None = None, what: list[str] | None = None, images: int = 4,
             data_dir: str | None = None, force: bool = False) -> dict[str, Any]:
    """`show_model` on a trained run (its directory or checkpoint) with `images` of its test images (the
    redundancy analysis uses 64); writes to `out` (default RUN/show)."""
    from ..data import TensorLoader
    from ..train import load_trained

    model, _cfg, state, test = load_trained(run, data_dir)
    views = what or applicable_views(model, test.task)
    count = max(images, 64) if "redundancy" in views else images
    loader = TensorLoader(test.subset(count, 0), count, shuffle=False, mean=state["mean"], std=state["std"])
    x, y = next(iter(loader.epoch(0)))
    raw = test.subset(count, 0).images[:count].float() / 255.0
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    return show_model(model, x, y, raw, Path(out) if out else run_dir / "show", what, cam_images=images,
                      task=test.task, force=force)
