"""ACDC's motivating analysis (its Section 3.2): decompose each spatial conv of a trained standard CNN over
atoms of its own (K = A·D, m atoms by truncated SVD: exact when m = kh·kw), then, for two layers i and j of
equal shape, align their atom sub-layer outputs Z (what the atoms alone produce, c·m channels) and their
outputs Y (c channels) by CCA (Raghu et al.: transforms P, Q that maximise the correlation of the two
layers' aligned outputs on the same inputs), rewrite the coefficients as Ã = Q·A·P⁻¹ ("aligned
coefficients"), and compare the effective rank of Ã_i with that of [Ã_i, Ã_j] (stacked: 2c rows of c·m).
CCA whitens both sides, so Ã_i has c equal singular values (effective rank c, the paper's 31.98 of 32); the
joint rank runs from c (the two layers' coefficients span one subspace) to 2c (unrelated). The paper's
4-layer 32-channel MNIST CNN: 38.56 of at most 64, which is what makes sharing coefficients (ACDC-net)
possible.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["coefficient_redundancy", "decompose_kernel", "effective_rank", "spatial_convs"]


def decompose_kernel(weight: Tensor, atoms: int) -> tuple[Tensor, Tensor, float]:
    """(coefficients (out, in, m), atoms (m, kh, kw), relative error) of the best m-atom decomposition."""
    out_c, in_c, kh, kw = weight.shape
    u, s, vh = torch.linalg.svd(weight.reshape(out_c * in_c, kh * kw).double(), full_matrices=False)
    m = min(atoms, s.numel())
    coefficients = (u[:, :m] * s[:m]).reshape(out_c, in_c, m)
    basis = vh[:m].reshape(m, kh, kw)
    approx = torch.einsum("oim,mhw->oihw", coefficients, basis)
    error = float((approx - weight.double()).norm() / weight.double().norm().clamp_min(1e-30))
    return coefficients, basis, error


def effective_rank(matrix: Tensor) -> float:
    """Roy & Vetterli's effective rank: exp of the entropy of the normalised singular values."""
    s = torch.linalg.svdvals(matrix.double())
    p = s / s.sum().clamp_min(1e-300)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _inverse_sqrt(cov: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    return vecs @ torch.diag(vals.clamp_min(1e-12).rsqrt()) @ vecs.T


def _cca(a: Tensor, b: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Square CCA transforms (P_a, P_b) of paired samples a, b (n, p): P_a·aᵀ and P_b·bᵀ are maximally and
    pairwise correlated, uncorrelated within each."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    n = a.shape[0] - 1
    eye = torch.eye(a.shape[1], dtype=a.dtype)
    caa, cbb, cab = a.T @ a / n + eps * eye, b.T @ b / n + eps * eye, a.T @ b / n
    wa, wb = _inverse_sqrt(caa), _inverse_sqrt(cbb)
    u, _, vh = torch.linalg.svd(wa @ cab @ wb)
    return u.T @ wa, vh @ wb


def spatial_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The layers the analysis decomposes: dense k×k convs (groups 1, square k > 1) that are layers of the
    model, not the factors inside an operator (a spatial-separable pair's k×1 and 1×k, an osep part)."""
    from ..ops.base import is_operator

    inner = {id(c) for m in model.modules() if is_operator(m) for c in m.modules() if c is not m}
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and id(m) not in inner and m.groups == 1
            and m.kernel_size[0] == m.kernel_size[1] > 1]


def coefficient_redundancy(model: nn.Module, images: Tensor, atoms: int | None = None,
                           max_samples: int = 4096, seed: int = 0) -> dict[str, Any]:
    """The analysis on `model` (plain nn.Conv2d layers: a standard CNN) fed `images`. Per layer: its shape and
    decomposition error; per pair of layers of equal shape and feature size: the effective ranks of Ã_i,
    Ã_j and [Ã_i, Ã_j]; and their means. `atoms` defaults to kh·kw (an exact decomposition, as the paper's);
    `max_samples` pixel positions (the same for both layers of a pair) are drawn from the outputs."""
    convs = spatial_convs(model)
    if len(convs) < 2:
        raise ValueError("coefficient_redundancy: the model needs two or more dense k×k conv layers (run it on a "
                         "standard CNN, before conversion)")
    inputs: dict[str, Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, i, _o, name=n: inputs.__setitem__(name, i[0].detach()))
             for n, m in convs]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    convs = [(n, m) for n, m in convs if n in inputs]  # a layer the forward never reaches has no outputs
    if len(convs) < 2:
        raise ValueError("coefficient_redundancy: fewer than two of the model's dense k×k convs run in its forward")
    gen = torch.Generator().manual_seed(seed)
    layers: dict[str, dict[str, Any]] = {}
    for name, conv in convs:
        coef, basis, error = decompose_kernel(conv.weight.detach(), atoms or conv.kernel_size[0] * conv.kernel_size[1])
        x = inputs[name].double()
        d, cin, h, w = x.shape
        m = basis.shape[0]
        # the atom sub-layer: every input channel convolved with each atom (cin·m channels)
        z = F.conv2d(x.reshape(d * cin, 1, h, w), basis[:, None], None, conv.stride, conv.padding, conv.dilation)
        z = z.reshape(d, cin * m, *z.shape[-2:])
        a = coef.reshape(conv.out_channels, cin * m)  # the coefficient sub-layer: Y = A·Z
        layers[name] = {"shape": (conv.out_channels, cin, m), "spatial": tuple(z.shape[-2:]), "z": z, "a": a,
                        "decomposition_error": error}
    pairs = []
    for (ni, li), (nj, lj) in itertools.combinations(layers.items(), 2):
        if li["shape"] != lj["shape"] or li["spatial"] != lj["spatial"]:
            continue
        zi, zj = (t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]) for t in (li["z"], lj["z"]))
        pick = torch.randperm(zi.shape[0], generator=gen)[:max_samples]
        zi, zj = zi[pick], zj[pick]
        yi, yj = zi @ li["a"].T, zj @ lj["a"].T
        pi, pj = _cca(zi, zj)
        qi, qj = _cca(yi, yj)
        ai = qi @ li["a"] @ torch.linalg.inv(pi)
        aj = qj @ lj["a"] @ torch.linalg.inv(pj)
        pairs.append({"i": ni, "j": nj, "erank_i": effective_rank(ai), "erank_j": effective_rank(aj),
                      "erank_joint": effective_rank(torch.cat([ai, aj], 0)), "channels": li["shape"][0]})
    mean = (lambda key: sum(p[key] for p in pairs) / len(pairs)) if pairs else (lambda key: math.nan)
    return {"layers": {n: {"shape": list(v["shape"]), "decomposition_error": v["decomposition_error"]}
                       for n, v in layers.items()},
            "pairs": pairs, "mean_erank": mean("erank_i"), "mean_erank_joint": mean("erank_joint")}
