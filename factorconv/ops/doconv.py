"""DO-Conv (Cao et al., "Depthwise over-parameterized convolutional layer"): a conv whose kernel is the
composition of a depthwise kernel D and a conv kernel W, folded back into one conv after training.
One operator covers DO-Conv (groups = 1), DO-DConv (depthwise) and DO-GConv (any groups).

Shapes (M×N the kernel size, g the groups): D is (in_channels, M·N, D_mul), W is
(out_channels, in_channels/g, D_mul), and the composed kernel is

    W'[o, c, s] = sum_d W[o, c, d] · D[g(o)·in/g + c, s, d]

i.e. output o reads local input channel c of its own group through the depthwise kernel of that very input
channel. (The public reference code reshapes W to (out/g, in, D_mul) instead, which pairs output o with
the depthwise kernels of group o mod g: wrong whenever 1 < g and out/g > 1.)

D = D_diag + D', with D' the trained parameter `D` (zero at initialisation, so L2 regularisation pulls D
towards the identity rather than towards zero) and D_diag a constant buffer, the same (M·N, D_mul) basis
for every input channel:
- D_mul = M·N (default): D_diag = I, so W' = W at initialisation;
- D_mul > M·N: as many M·N×M·N identity blocks side by side as fit, then zero columns (the paper's
  "filling identity matrices as much as possible", as the public code does);
- D_mul < M·N: D_diag selects the D_mul taps nearest the kernel centre (centre first, ties in row-major
  order). The initial kernel is then W's D_mul columns placed at those taps and zero elsewhere: for a
  3x3 kernel and D_mul = 1 that is a centred 1x1 conv. (The public code starts such a layer at all zeros.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import register_conv
from .base import ConvOperator
from .examples import Draw, ExampleShape
from .space import Dimension, IntRange
from .spec import Cost, conv_macs, float_bits

__all__ = ["DOConv2d", "over_parameterization_basis"]


def over_parameterization_basis(kernel_size: tuple[int, int], d_mul: int) -> Tensor:
    """D_diag for one input channel: an (M·N, D_mul) 0/1 matrix (see the module docstring)."""
    kh, kw = kernel_size
    mn = kh * kw
    if d_mul >= mn:
        blocks = [torch.eye(mn)] * (d_mul // mn)
        return torch.cat([*blocks, torch.zeros(mn, d_mul % mn)], dim=1)
    cy, cx = (kh - 1) / 2, (kw - 1) / 2
    taps = sorted(range(mn), key=lambda s: ((s // kw - cy) ** 2 + (s % kw - cx) ** 2, s))[:d_mul]
    basis = torch.zeros(mn, d_mul)
    basis[taps, torch.arange(d_mul)] = 1.0
    return basis


@register_conv("doconv")
class DOConv2d(ConvOperator):
    """DO-Conv / DO-DConv / DO-GConv: kernel W' = D ∘ W with D = D_diag + D' (module docstring).

    Options: `D_mul` (default M·N; any positive int), `D_init` ("identity", the default: D starts as D_diag,
    so the layer starts as the conv W is; "random": D starts He-initialised, the paper's Table 7 alternative,
    and the layer no longer starts as a plain conv would), `path` ("auto", "kernel": compose W' then one conv,
    "feature": depthwise conv with multiplier D_mul then a grouped pointwise conv). A 1x1 conv has no
    patch to over-parameterize: it is kept as a plain W (no D), as in the paper.
    """

    # D_mul from M·N to (2M)(2N) of a 3x3 kernel (another kernel size rejects a D_mul below its M·N)
    search_space: ClassVar[dict[str, Dimension]] = {"D_mul": IntRange(9, 36)}

    has_feature_path = True

    scriptable = True

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        if draw.boolean():  # DO-DConv: depthwise, with a channel multiplier
            shape = shape.with_(groups=shape.in_channels, out_channels=shape.in_channels * draw.integer(1, 3))
        mn = shape.kernel_size[0] * shape.kernel_size[1]
        return shape, {"D_mul": draw.choice([None, max(1, mn - 2), mn, mn + 1, 2 * mn + 3])}

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        D_mul: int | None = None,  # the paper's and the public code's name
        D_init: str = "identity",
        path: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        kh, kw = self.kernel_size
        mn = kh * kw
        if D_mul is not None and (isinstance(D_mul, bool) or not isinstance(D_mul, int) or D_mul < 1):
            raise ValueError(f"DOConv2d: D_mul must be a positive int (default M·N = {mn}), got {D_mul!r}")
        self.D_mul = mn if D_mul is None or mn == 1 else D_mul
        if D_init not in ("identity", "random"):
            raise ValueError(f"DOConv2d: D_init must be 'identity' or 'random', got {D_init!r}")
        self.D_init = D_init
        self.W = nn.Parameter(torch.empty(self.out_channels, self.in_channels // self.groups, self.D_mul))
        if mn > 1:
            self.D = nn.Parameter(torch.zeros(self.in_channels, mn, self.D_mul))
            self.register_buffer("D_diag", over_parameterization_basis(self.kernel_size, self.D_mul), persistent=False)
            self._basis_is_identity = self.D_mul == mn
            self._dims = (self.groups, self.in_channels // self.groups, self.out_channels // self.groups, mn,
                          self.D_mul)
        else:
            self.register_parameter("D", None)
            self.register_buffer("D_diag", None, persistent=False)
        self.reset_parameters()

    # -- initialisation ----------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Start as nn.Conv2d's default initialisation would (D' = 0, W' = that kernel where representable)."""
        fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        self.reset_like_conv(lambda w: nn.init.kaiming_uniform_(w, a=math.sqrt(5)))
        if self.bias is not None:
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def reset_like_conv(self, init: Callable[[Tensor], object]) -> bool:
        kernel = torch.empty(self.out_channels, self.in_channels // self.groups, *self.kernel_size,
                             device=self.W.device, dtype=self.W.dtype)
        init(kernel)
        with torch.no_grad():
            self._hold_kernel(kernel)
            if self.D is not None and self.D_init == "random":  # D = D_diag + D' He-initialised (fan-in M·N)
                random = torch.randn_like(self.D) * math.sqrt(2 / self.D.shape[1])
                self.D.copy_(random - self.D_diag)
                return False
        return True

    def _hold_kernel(self, kernel: Tensor) -> None:
        """D' = 0 and W the kernel (its taps D_diag selects when D_mul < M·N): exact when D_mul >= M·N."""
        flat = kernel.flatten(2)
        if self.D is None:
            self.W.copy_(flat)
            return
        self.D.zero_()
        if self.D_mul >= flat.shape[-1]:
            self.W.zero_()
            self.W[..., : flat.shape[-1]] = flat
        else:  # W's columns sit at the taps D_diag selects
            taps = self.D_diag.argmax(dim=0)
            self.W.copy_(flat[..., taps])

    # -- the protocol --------------------------------------------------------------------------------
    def _depthwise(self) -> Tensor:
        """D = D_diag + D' for every input channel: (in_channels, M·N, D_mul)."""
        return self.D + self.D_diag

    def dense_weight(self) -> Tensor:
        kh, kw = self.kernel_size
        cin_g = self.in_channels // self.groups
        if self.D is None:
            return self.W.reshape(self.out_channels, cin_g, kh, kw)
        if torch.jit.is_scripting():
            g = self.groups
            w = self.W.view(g, self.out_channels // g, cin_g, self.D_mul)
            d = self._depthwise().view(g, cin_g, kh * kw, self.D_mul)
            return torch.einsum("gocd,gcsd->gocs", w, d).reshape(self.out_channels, cin_g, kh, kw)
        # Through a 2-D view: when the conv hands back its kernel gradient in channels_last (a channels_last
        # input), the backward of the 2-D view makes it contiguous in one copy. Without it the per-channel
        # slices the bmm backward reads have no unit stride and bmm multiplies them one channel at a time:
        # a ResNet-20-size layer at batch 2 took 1.53x an nn.Conv2d step instead of 1.25x (measured).
        return self._compose().view(self.out_channels, -1).view(self.out_channels, cin_g, kh, kw)

    @torch.jit.unused
    def _compose(self) -> Tensor:
        """W' = W·D_diagᵀ + W·D'ᵀ per input channel, as (out, in/g, M·N) contiguous.

        At small batch this costs what its dispatched ops and Python lines cost, so it is written for few
        of both: the shared basis is one plain matmul (nothing when it is the identity), D' one batched
        matmul over input channels, and the add lays the transposed product out in W's order without a
        separate copy. Parameters are read from `_parameters` directly (Module.__getattr__ is slow here).
        """
        w, d = self._parameters["W"], self._parameters["D"]
        g, cin_g, cout_g, mn, dm = self._dims
        base = w if self._basis_is_identity else w @ self._buffers["D_diag"].t()
        if g == 1:  # batch over input channels: (c, o, d) @ (c, d, s) -> (c, o, s), all views
            return base + torch.bmm(w.transpose(0, 1), d.transpose(1, 2)).transpose(0, 1)
        wt = w.view(g, cout_g, cin_g, dm).transpose(1, 2).reshape(g * cin_g, cout_g, dm)
        extra = torch.bmm(wt, d.transpose(1, 2)).view(g, cin_g, cout_g, mn).transpose(1, 2)
        return base + extra.reshape(g * cout_g, cin_g, mn)

    def feature_forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        if self.D is None:
            return self._conv(x, self.dense_weight())
        depthwise = self._depthwise().transpose(1, 2).reshape(self.in_channels * self.D_mul, 1, kh, kw)
        y = F.conv2d(x, depthwise, None, self.stride, self.padding, self.dilation, self.in_channels)
        pointwise = self.W.reshape(self.out_channels, (self.in_channels // self.groups) * self.D_mul, 1, 1)
        return F.conv2d(y, pointwise, self.bias, 1, 0, 1, self.groups)

    def compose_macs(self) -> int:
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.groups) * kh * kw * self.D_mul if self.D is not None else 0

    def feature_macs(self, in_hw: tuple[int, int]) -> int:
        if self.D is None:
            return self.spec.macs(in_hw)
        out_hw = self.spec.out_hw(in_hw)
        mid = self.in_channels * self.D_mul
        return conv_macs(mid, mid, self.kernel_size, mid, out_hw) + conv_macs(
            mid, self.out_channels, (1, 1), self.groups, out_hw
        )

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        """Trained form: W, D' (and bias); MACs are those of the folded conv (DO-Conv adds none at inference)."""
        params = sum(p.numel() for p in self.parameters())
        deploy_params, deploy_bits, deploy_macs, _ = self.deploy_cost(in_hw, 0)  # no factorized form: the fold
        return Cost(params, params * float_bits(self), deploy_macs, deploy_params, deploy_bits, deploy_macs)

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        """Exact when D_mul >= M·N (D' = 0, W holds the kernel); a per-input-channel rank-D_mul least-squares
        fit (truncated SVD of the outputs × taps slice, D' = its right factor − D_diag) otherwise."""
        if self.D is None or self.D_mul >= self.kernel_size[0] * self.kernel_size[1]:
            self._hold_kernel(weight)
        else:
            g, cin_g, cout_g = self.groups, self.in_channels // self.groups, self.out_channels // self.groups
            mn = weight.shape[-1] * weight.shape[-2]
            slices = weight.reshape(g, cout_g, cin_g, mn).transpose(1, 2)  # (g, c, o, s)
            u, s, vh = torch.linalg.svd(slices, full_matrices=False)
            r = self.D_mul  # < mn <= rank bound, and min(o, s) may be smaller still
            r_eff = min(r, s.shape[-1])
            w = torch.zeros(g, cin_g, cout_g, r, dtype=weight.dtype, device=weight.device)
            d = torch.zeros(g, cin_g, mn, r, dtype=weight.dtype, device=weight.device)
            w[..., :r_eff] = u[..., :r_eff] * s[..., None, :r_eff]
            d[..., :r_eff] = vh[:, :, :r_eff].transpose(-1, -2)
            self.W.copy_(w.transpose(1, 2).reshape_as(self.W))
            self.D.copy_(d.reshape_as(self.D) - self.D_diag)
        if self.bias is not None:
            self.bias.copy_(bias if bias is not None else torch.zeros_like(self.bias))
        return self.kernel_error(weight)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", D_mul={self.D_mul}" + (", D_init=random" if self.D_init == "random" else "")
