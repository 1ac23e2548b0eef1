"""Fitting an operator's parameters to a given dense kernel where no closed form exists: `fit_kernel` (any
operator: Adam on the kernel's least-squares error) and `fit_shared_coefficients` (ACDC: the coefficients one
bank shares and every member's atoms, by alternating least squares). `from_conv` reaches both through the
operators' `load_from_conv`; the operators' modules keep their protocol and import the fitting from here.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["fit_kernel", "fit_shared_coefficients"]


def fit_kernel(op: nn.Module, weight: Tensor, steps: int = 400, lr: float = 0.05) -> float:
    """Fit the parameters of operator `op` (in place) so that op.dense_weight() approximates `weight` in least
    squares, by Adam with a cosine schedule; returns the relative error of the best iterate.

    For factorizations without a closed-form fit (structured, non-convex): an approximation whose
    quality `from_conv` reports as `fit_error`. The bias is not touched.
    """
    params = [p for p in op.parameters() if p.requires_grad and p is not op.bias]
    target = weight.detach().to(dtype=params[0].dtype, device=params[0].device)
    norm = target.pow(2).sum().clamp_min(1e-30)
    # Adam's steps are absolute: scale the rate to the parameters' own magnitude
    scale = torch.cat([p.detach().flatten() for p in params]).abs().mean().clamp_min(1e-8)
    opt = torch.optim.Adam(params, lr=lr * float(scale))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    best, best_state = math.inf, None
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = (op.dense_weight() - target).pow(2).sum() / norm
            if loss.item() < best:
                best, best_state = loss.item(), [p.detach().clone() for p in params]
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        final = float(((op.dense_weight() - target).pow(2).sum() / norm).item())
        if best_state is not None and best < final:
            for p, v in zip(params, best_state, strict=True):
                p.copy_(v)
    return op.kernel_error(weight)


@torch.no_grad()
def fit_shared_coefficients(bank: Any, targets: dict[Any, Tensor], iters: int = 30) -> None:
    """ACDC: least squares for the shared A of `bank` (a CoefficientBank) and every member's atoms against
    dense target kernels, by alternating minimisation (each step an exact linear least-squares problem, solved
    with the SVD-based driver so that rank-deficient cases, m > kh·kw included, stay stable); keeps the best
    iterate.

    A-step: every entry A[o, i] is fitted to the blocks of the members whose slice contains it; members'
    slices are leading blocks, so the entries split into rectangles covered by the same members, each one
    least-squares solve. D-step: each atom set is the least-squares solution for the fixed A. Atoms start
    from the top right singular vectors of each member's blocks.
    """
    a = bank.coefficients
    m = a.shape[2]
    blocks = {mem: mem.blocks_from_dense(t.to(a)) for mem, t in targets.items()}  # (sets, so, si, L)
    atoms: dict[Any, Tensor] = {}
    for mem, b in blocks.items():
        _, _, vh = torch.linalg.svd(b.reshape(-1, b.shape[-1]), full_matrices=False)
        d = torch.zeros(m, b.shape[-1], dtype=a.dtype, device=a.device)
        r = min(m, vh.shape[0])
        d[:r] = vh[:r]
        atoms[mem] = d.expand(b.shape[0], m, b.shape[-1]).clone()
    o_cuts = sorted({0, *(mem.block[0] for mem in blocks)})
    i_cuts = sorted({0, *(mem.block[1] for mem in blocks)})
    rects = []
    for (o0, o1), (i0, i1) in itertools.product(itertools.pairwise(o_cuts), itertools.pairwise(i_cuts)):
        covering = [mem for mem in blocks if mem.block[0] >= o1 and mem.block[1] >= i1]
        if covering:
            rects.append(((o0, o1), (i0, i1), covering))
    total = sum(b.pow(2).sum() for b in blocks.values()).clamp_min(1e-30)
    driver = "gelsd" if a.device.type == "cpu" else None

    def solve(lhs: Tensor, rhs: Tensor) -> Tensor:
        return torch.linalg.lstsq(lhs, rhs, driver=driver).solution

    def residual() -> float:
        err = 0.0
        for mem, b in blocks.items():
            so, si = mem.block
            fitted = torch.einsum("osm,jml->josl", a[:so, :si], atoms[mem])
            err += float((fitted - b).pow(2).sum())
        return err / float(total)

    best, best_state = math.inf, None
    for _ in range(iters):
        for (o0, o1), (i0, i1), covering in rects:
            # rows: every (member, set, tap) whose block covers the rectangle; columns: its entries
            basis = torch.cat([atoms[mem].permute(0, 2, 1).reshape(-1, m) for mem in covering])  # (ΣL, m)
            values = torch.cat([blocks[mem][:, o0:o1, i0:i1].permute(0, 3, 1, 2).reshape(-1, (o1 - o0) * (i1 - i0))
                                for mem in covering])  # (ΣL, entries)
            a[o0:o1, i0:i1] = solve(basis, values).t().reshape(o1 - o0, i1 - i0, m)
        for mem, b in blocks.items():
            so, si = mem.block
            lhs = a[:so, :si].reshape(1, so * si, m).expand(b.shape[0], -1, -1)
            atoms[mem] = solve(lhs, b.reshape(b.shape[0], so * si, -1))
        err = residual()
        if err < best - 1e-12:
            best, best_state = err, (a.clone(), {mem: d.clone() for mem, d in atoms.items()})
        else:
            break  # converged, or the numerics stopped helping
    if best_state is not None:
        a.copy_(best_state[0])
        atoms = best_state[1]
    for mem, d in atoms.items():
        mem.atoms.copy_(d.reshape_as(mem.atoms))
        mem._cache = mem._fast = None
