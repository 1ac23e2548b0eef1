"""Class activation maps at every stage of any model (ACDC's Figure 8 compares them across layers):
Grad-CAM (Selvaraju et al.): a stage's feature maps weighted by the mean gradient of the class score with
respect to each, rectified, upsampled to the image and scaled to [0, 1]. A stage is the last top-level
module of each run of equal feature-map shape (ResNet-20: layer1, layer2, layer3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["class_activation_maps", "stages"]


def stages(model: nn.Module, x: Tensor) -> list[str]:
    """The top-level children that end a run of equal 4-d output shape (spatial maps larger than 1x1)."""
    shapes: list[tuple[str, tuple[int, ...] | None]] = []
    hooks = [child.register_forward_hook(
        lambda _m, _i, out, name=name: shapes.append(
            (name, tuple(out.shape[1:]) if isinstance(out, Tensor) and out.ndim == 4 else None)))
        for name, child in model.named_children()]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    out = []
    for (name, shape), (_, following) in zip(shapes, [*shapes[1:], ("", None)], strict=True):
        if shape is not None and shape[1] * shape[2] > 1 and following != shape:
            out.append(name)
    return out


def class_activation_maps(model: nn.Module, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
    """{stage name: (n, H, W) maps in [0, 1]} for images `x` (n, C, H, W) and classes `target` (default: the
    model's predictions). The model runs in eval mode; its parameters are not changed."""
    was = model.training
    model.eval()
    names = stages(model, x)
    features: dict[str, Tensor] = {}
    children = dict(model.named_children())

    def keep(name: str):
        def hook(_m: nn.Module, _i: object, out: Tensor) -> None:
            out.retain_grad()
            features[name] = out
        return hook

    hooks = [children[n].register_forward_hook(keep(n)) for n in names]
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # so that every stage output is part of the graph
            logits = model(x)
            classes = logits.argmax(1) if target is None else target
            logits.gather(1, classes[:, None]).sum().backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    maps = {}
    for name in names:
        a = features[name]
        weights = a.grad.mean((2, 3), keepdim=True)
        cam = F.relu((weights * a).sum(1, keepdim=True)).detach()
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        maps[name] = (cam / peak).cpu()
    return maps
