"""Decoupled and balance-decoupled spatial convolution (paper 000).

`decoupled` (and `factorconv.decouple(conv)`): the exact two-step form of eq. 10 of any conv: a 1x1 conv
to S = C_out·Kh·Kw channels (row (o, u, v) of the 1x1 kernel is W[o, :, u, v]) and a fixed 0/1 spatial
configuration, a conv with C_out groups whose kernel picks tap (u, v) of channel (o, u, v).

`bdsc`: BDSC-p. A 1x1 conv C_in -> S = p·C_out (float; the text says p·C_in, p·C_out is what the tables'
increments fit), an optional BatchNorm (`norm=True`, as the tables count), and a Kh×Kw spatial
configuration S -> C_out learned by Algorithm 1: a latent float Q clamped to [-1, 1] and a forward with
α(o)·sign(Q) (α(o) = mean |Q(o, ·)|, sign(0) = +1), the gradient passed straight through to Q.
`binary=False` is BDSC-float (the spatial filters are plain floats). `latent_scale` multiplies Q's MSRA
initialisation (1, the paper's): the following BatchNorm makes the layer blind to Q's scale, so the
straight-through step moves Q's signs faster the smaller Q starts; below 1 a short schedule learns the
configuration instead of keeping most of its random start (benchmarks/bdsc_spread.py measures both).

Both pad their input before the 1x1 conv instead of padding between the two convs: the BatchNorm shift
then reaches border taps as it reaches the others, so in eval mode the layer is exactly one conv and
`fold()` is exact. Deployed (`pack()`), BDSC stores the ±1 configuration as packed 0/1 bits M and
compensates the change exactly: ±1·z = 2·M·z − (sum of z over the group's S channels and all taps).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import is_number
from ..registry import register_conv
from .base import ConvOperator, NormAffine
from .examples import Draw, ExampleShape
from .space import Dimension, FloatRange, IntRange
from .spec import Cost, conv_macs, conv_output_hw, float_bits

__all__ = ["BalancedDecoupledConv2d", "DecoupledConv2d", "PackedBDSC", "decouple", "pack_bits", "unpack_bits"]


def _tap_selector(out_channels: int, kernel_size: tuple[int, int]) -> Tensor:
    """The fixed configuration of eq. 10 as a grouped kernel (C_out, Kh·Kw, Kh, Kw): channel (o, u, v)
    contributes at tap (u, v) only."""
    kh, kw = kernel_size
    taps = torch.eye(kh * kw, device="cpu").view(kh * kw, kh, kw)
    return taps.expand(out_channels, kh * kw, kh, kw).contiguous()


class _PaddedInput(ConvOperator):
    """Shared geometry: the input is padded first, the spatial conv runs without padding."""

    def _pad(self, x: Tensor) -> Tensor:
        ph, pw = self.padding
        return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x

    def _padded_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        return (in_hw[0] + 2 * self.padding[0], in_hw[1] + 2 * self.padding[1])


@register_conv("decoupled")
class DecoupledConv2d(_PaddedInput):
    """The exact decoupled form of a conv (eq. 10): 1x1 conv to C_out·Kh·Kw channels, then the fixed 0/1
    spatial configuration. Its 1x1 kernel is the conv's kernel rearranged, so from_conv is exact; it exists
    to show the equivalence and as the p = Kh·Kw end of the BDSC family."""

    search_space: ClassVar[dict[str, Dimension]] = {}  # exact: nothing to choose

    has_feature_path = True

    scriptable = True

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
        path: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        kh, kw = self.kernel_size
        self.hidden = self.out_channels * kh * kw
        self.pointwise = nn.Parameter(torch.empty(self.hidden, self.in_channels // self.groups, 1, 1))
        self.register_buffer("configuration", _tap_selector(self.out_channels, self.kernel_size).to(
            torch.get_default_device()), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.reset_like_conv(lambda w: nn.init.kaiming_uniform_(w, a=math.sqrt(5)))

    def reset_like_conv(self, init) -> bool:
        kernel = torch.empty(self.out_channels, self.in_channels // self.groups, *self.kernel_size,
                             device=self.pointwise.device, dtype=self.pointwise.dtype)
        init(kernel)
        with torch.no_grad():
            self.load_from_conv(kernel, None)
        return True

    def dense_weight(self) -> Tensor:
        kh, kw = self.kernel_size
        w = self.pointwise.view(self.out_channels, kh, kw, self.in_channels // self.groups)
        return w.permute(0, 3, 1, 2).contiguous()

    def feature_forward(self, x: Tensor) -> Tensor:
        z = F.conv2d(self._pad(x), self.pointwise, None, 1, 0, 1, self.groups)
        return F.conv2d(z, self.configuration, self.bias, self.stride, 0, self.dilation, self.out_channels)

    def feature_macs(self, in_hw: tuple[int, int]) -> int:
        return conv_macs(self.in_channels, self.hidden, (1, 1), self.groups, self._padded_hw(in_hw))

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        """The 1x1 conv's MACs; the 0/1 configuration's taps are additions. Deployed: the folded conv."""
        params = sum(p.numel() for p in self.parameters())
        out_hw = self.spec.out_hw(in_hw)
        kh, kw = self.kernel_size
        adds = self.out_channels * kh * kw * out_hw[0] * out_hw[1]
        deploy_params, deploy_bits, deploy_macs, _ = self.deploy_cost(in_hw, 0)  # no factorized form: the fold
        return Cost(params, params * float_bits(self), self.feature_macs(in_hw), deploy_params, deploy_bits,
                    deploy_macs, adds=adds)

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        self.pointwise.copy_(weight.permute(0, 2, 3, 1).reshape_as(self.pointwise))
        if self.bias is not None:
            self.bias.copy_(bias if bias is not None else torch.zeros_like(self.bias))
        return self.kernel_error(weight)


def decouple(conv: nn.Conv2d) -> DecoupledConv2d:
    """The exact decoupled form (eq. 10) of `conv`: `decouple(conv)(x) == conv(x)`."""
    return DecoupledConv2d.from_conv(conv)


class _SignSTE(torch.autograd.Function):
    """α·sign(Q) forward (sign(0) = +1, α per output filter from |Q|), the gradient passed to Q unchanged."""

    @staticmethod
    def forward(ctx, q: Tensor) -> Tensor:
        alpha = q.abs().mean(dim=(1, 2, 3), keepdim=True)
        return torch.where(q >= 0, alpha, -alpha)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


@register_conv("bdsc")
class BalancedDecoupledConv2d(NormAffine, _PaddedInput):
    """BDSC-p (Algorithm 1): 1x1 conv C_in -> S = p·C_out, optional BatchNorm, then a Kh×Kw conv S -> C_out
    whose kernel is α·sign(Q) for a latent Q in [-1, 1] (straight-through gradient); `binary=False` for
    BDSC-float. Options: `p`, `norm`, `binary`, `latent_scale` (module docstring). With `norm`, eval-mode
    semantics for dense_weight/fold; training runs the two convs. `density` is the share of ones in the
    deployed 0/1 configuration."""

    search_space: ClassVar[dict[str, Dimension]] = {
        "p": IntRange(1, 4), "latent_scale": FloatRange(0.125, 1.0, log=True),
    }

    has_feature_path = True
    from_conv_exact: ClassVar[bool] = False  # a binary configuration cannot represent a general conv

    scriptable = True

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        return shape, {"p": draw.choice([0.5, 1, 2]), "norm": draw.boolean(), "binary": draw.boolean()}

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
        p: float = 1,
        norm: bool = False,
        binary: bool = True,
        latent_scale: float = 1.0,
        path: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        name = "BalancedDecoupledConv2d"
        if not is_number(p) or not p > 0:
            raise ValueError(f"{name}: p must be a positive number (S = p·out_channels), got {p!r}")
        if not is_number(latent_scale) or not 0 < latent_scale <= 1:
            raise ValueError(f"{name}: latent_scale must be a number in (0, 1] (a multiple of Q's MSRA "
                             f"initialisation), got {latent_scale!r}")
        for option, value in (("norm", norm), ("binary", binary)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: {option} must be True or False, got {value!r}")
        hidden = max(1, round(p * self.out_channels))
        hidden = -(-hidden // self.groups) * self.groups  # a multiple of groups
        self.p, self.hidden, self.binary, self.latent_scale = p, hidden, binary, float(latent_scale)
        self.pointwise = nn.Parameter(torch.empty(hidden, self.in_channels // self.groups, 1, 1))
        self.norm = nn.BatchNorm2d(hidden) if norm else None
        self.latent = nn.Parameter(torch.empty(self.out_channels, hidden // self.groups, *self.kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MSRA (He) initialisation for both convs, as the paper (Q's times `latent_scale`); Q clipped to
        [-1, 1]."""
        nn.init.kaiming_normal_(self.pointwise, nonlinearity="relu")
        nn.init.kaiming_normal_(self.latent, nonlinearity="relu")
        with torch.no_grad():
            if self.binary:
                self.latent.clamp_(-1, 1)
            if self.latent_scale != 1:
                self.latent.mul_(self.latent_scale)

    @property
    def linear_in_train(self) -> bool:
        return self.norm is None

    def storage_bits(self) -> dict[str, int]:
        return {"latent": 1} if self.binary else {}

    def clamp_(self) -> None:
        """Keep the latent configuration in [-1, 1] (Algorithm 1's first step); the trainer calls this
        after every optimizer step (`after_optimizer_step`), and training forwards do too."""
        if self.binary:
            with torch.no_grad():
                self.latent.clamp_(-1, 1)

    after_optimizer_step = clamp_

    def spatial_weight(self) -> Tensor:
        """The spatial kernel the forward uses: α·sign(Q) (straight-through) or Q for BDSC-float."""
        return _SignSTE.apply(self.latent) if self.binary else self.latent

    @property
    def density(self) -> float:
        """q: the share of ones in the deployed 0/1 configuration (1/2 assumed on the meta device)."""
        if not self.binary:
            return 1.0
        return 0.5 if self.latent.is_meta else float((self.latent >= 0).float().mean())

    def dense_weight(self) -> Tensor:
        g = self.groups
        k = self.spatial_weight()  # (out, hidden/g, kh, kw)
        w = self.pointwise.view(self.hidden, -1)  # (hidden, in/g)
        affine = self._norm_affine()
        if affine is not None:
            w = w * affine[0][:, None]
        kk = k.view(g, self.out_channels // g, self.hidden // g, *self.kernel_size)
        ww = w.view(g, self.hidden // g, self.in_channels // g)
        dense = torch.einsum("goshw,gsc->gochw", kk, ww)
        return dense.reshape(self.out_channels, self.in_channels // g, *self.kernel_size).contiguous()

    def dense_bias(self) -> Tensor | None:
        affine = self._norm_affine()
        if affine is None:
            return self.bias
        g = self.groups
        k = self.spatial_weight().view(g, self.out_channels // g, self.hidden // g, -1).sum(-1)
        shift = torch.einsum("gos,gs->go", k, affine[1].view(g, -1)).reshape(-1)
        return shift if self.bias is None else shift + self.bias

    def choose_path(self, x: Tensor, cached: bool | None = None) -> str:
        if self.training and (self.norm is not None or self.binary):
            return "feature"  # batch statistics / Q's clamp: run the two steps as Algorithm 1 does
        return super().choose_path(x, cached)

    def feature_forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.clamp_()
        z = F.conv2d(self._pad(x), self.pointwise, None, 1, 0, 1, self.groups)
        if self.norm is not None:
            z = self.norm(z)
        return F.conv2d(z, self.spatial_weight(), self.bias, self.stride, 0, self.dilation, self.groups)

    def compose_macs(self) -> int:
        kh, kw = self.kernel_size
        return self.out_channels * (self.hidden // self.groups) * (self.in_channels // self.groups) * kh * kw

    def feature_macs(self, in_hw: tuple[int, int]) -> int:
        first = conv_macs(self.in_channels, self.hidden, (1, 1), self.groups, self._padded_hw(in_hw))
        return first + conv_macs(self.hidden, self.out_channels, self.kernel_size, self.groups, self.spec.out_hw(in_hw))

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        """Trained form: the 1x1 conv's MACs, the binary configuration as additions (q of its entries are
        ones) plus one α multiply per output. Deployed (`pack()`): the 1x1 kernel, the BatchNorm's four
        floats per channel, the configuration at 1 bit per entry, α and the bias."""
        out_hw = self.spec.out_hw(in_hw)
        pixels = out_hw[0] * out_hw[1]
        pointwise = self.pointwise.numel()
        entries = self.latent.numel()
        norm_params = 2 * self.hidden if self.norm is not None else 0
        bias = self.out_channels if self.bias is not None else 0
        params = pointwise + norm_params + entries + bias
        width = float_bits(self)
        bits = (pointwise + norm_params + bias) * width + entries * (1 if self.binary else width)
        if not self.binary:  # BDSC-float has no packed form: it deploys as its exact fold
            deploy_params, deploy_bits, deploy_macs, _ = self.deploy_cost(in_hw, 0)
            return Cost(params, bits, self.feature_macs(in_hw), deploy_params, deploy_bits, deploy_macs)
        first = conv_macs(self.in_channels, self.hidden, (1, 1), self.groups, self._padded_hw(in_hw))
        macs = first + self.out_channels * pixels  # the 1x1 conv, and α
        deploy_params, deploy_bits, deploy_macs, deploy_adds = self.deploy_cost(in_hw, macs, _packed_adds(self, pixels))
        return Cost(params, bits, macs, deploy_params, deploy_bits, deploy_macs, adds=entries * pixels,
                    deploy_adds=deploy_adds)

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        """BDSC cannot represent a general conv (its configuration is binary): a least-squares fit by
        gradient descent of the float parts, the configuration through its latent Q."""
        if self.bias is not None:
            self.bias.copy_(bias if bias is not None else torch.zeros_like(self.bias))
        was = self.training
        self.eval()
        self.fit_kernel(weight)
        self.train(was)
        self.clamp_()
        return self.kernel_error(weight)

    def pack(self) -> PackedBDSC:
        """The deploy form: bit-packed configuration, exact in eval mode (see the module docstring)."""
        if not self.binary:
            raise ValueError("BalancedDecoupledConv2d.pack: BDSC-float has no binary configuration to pack")
        return PackedBDSC.from_bdsc(self)

    def factorized_size(self) -> tuple[int, int] | None:
        """The packed form (`pack()`); BDSC-float has none."""
        return _packed_size(self) if self.binary else None

    def factorized_deploy(self) -> nn.Module:
        return self.pack()

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", p={self.p}, hidden={self.hidden}"
        s += "" if self.latent_scale == 1 else f", latent_scale={self.latent_scale:g}"
        return s + ("" if self.binary else ", binary=False")


def _packed_size(op: BalancedDecoupledConv2d | PackedBDSC) -> tuple[int, int]:
    """(params, bits) of the packed form: the 1x1 kernel, the BatchNorm (two parameters and two running
    statistics per channel, stored), α and the bias as floats; the configuration's entries count as parameters
    of one bit each."""
    entries = op.out_channels * (op.hidden // op.groups) * op.kernel_size[0] * op.kernel_size[1]
    floats = op.pointwise.numel() + op.out_channels + (op.out_channels if op.bias is not None else 0)
    norm = 2 * op.hidden if op.norm is not None else 0  # affine parameters; as many running statistics
    return floats + norm + entries, (floats + 2 * norm) * float_bits(op) + entries


def _packed_adds(op: BalancedDecoupledConv2d | PackedBDSC, pixels: int) -> int:
    """Additions of the packed form: the ones of the 0/1 configuration (q of the entries) and the
    compensation's box sum."""
    entries = op.out_channels * (op.hidden // op.groups) * op.kernel_size[0] * op.kernel_size[1]
    box = op.hidden * op.kernel_size[0] * op.kernel_size[1] * pixels
    return round(op.density * entries * pixels) + box


def pack_bits(bits: Tensor) -> Tensor:
    """A 0/1 tensor as uint8 bytes, 8 entries per byte (numel rounded up), little end first."""
    flat = bits.reshape(-1).to(torch.uint8)
    flat = F.pad(flat, (0, -flat.numel() % 8))
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: list[int]) -> Tensor:
    """Inverse of pack_bits, as float32 0/1 of `shape`.

    In float arithmetic (exact for bytes), because ONNX has no bitwise AND on integers: the exported
    deploy form must unpack its own bits. (Written so that TorchScript compiles it too.)"""
    powers = torch.pow(2.0, torch.arange(8, device=packed.device, dtype=torch.float32))
    shifted = torch.floor(packed.unsqueeze(1).float() / powers)
    bits = shifted - 2.0 * torch.floor(shifted / 2.0)
    count = 1
    for dim in shape:
        count *= dim
    return bits.reshape(-1)[:count].view(shape)


class PackedBDSC(NormAffine, nn.Module):
    """BDSC deployed: the 1x1 conv and BatchNorm as trained, the configuration as packed bits, α per output.

    y = α ⊙ (2·conv(z, M) − box(z)) + bias with z = BN(1x1(pad(x))), M = (sign(Q) + 1)/2, box(z) the sum of z
    over each group's channels and the kernel's taps: equal to the trained layer in eval mode.
    """

    __jit_unused_properties__: ClassVar[list[str]] = ["density"]
    __jit_ignored_attributes__: ClassVar[list[str]] = ["_unpacked"]

    def __init__(self, in_channels: int, out_channels: int, hidden: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                 norm: bool, bias: bool) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.hidden = in_channels, out_channels, hidden
        self.kernel_size, self.stride, self.padding, self.dilation, self.groups = (
            kernel_size, stride, padding, dilation, groups)
        self.pointwise = nn.Parameter(torch.empty(hidden, in_channels // groups, 1, 1))
        self.norm = nn.BatchNorm2d(hidden).eval() if norm else None
        shape = (out_channels, hidden // groups, *kernel_size)
        self.register_buffer("bits", torch.zeros(-(-math.prod(shape) // 8), dtype=torch.uint8))
        self.alpha = nn.Parameter(torch.empty(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._shape = shape
        self._unpacked: Tensor | None = None

    @classmethod
    def from_bdsc(cls, op: BalancedDecoupledConv2d) -> PackedBDSC:
        packed = cls(op.in_channels, op.out_channels, op.hidden, op.kernel_size, op.stride, op.padding,
                     op.dilation, op.groups, op.norm is not None, op.bias is not None)
        packed.to(device=op.pointwise.device, dtype=op.pointwise.dtype)
        with torch.no_grad():
            packed.pointwise.copy_(op.pointwise)
            if op.norm is not None:
                packed.norm.load_state_dict(op.norm.state_dict())
            packed.bits.copy_(pack_bits(op.latent >= 0))
            packed.alpha.copy_(op.latent.abs().mean(dim=(1, 2, 3)))
            if op.bias is not None:
                packed.bias.copy_(op.bias)
        return packed.eval()

    @property
    def density(self) -> float:
        return float(self.configuration().mean())

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        """The packed layer's own costs (its bit buffer and BatchNorm statistics included)."""
        padded = (in_hw[0] + 2 * self.padding[0], in_hw[1] + 2 * self.padding[1])
        out_hw = conv_output_hw(padded, self.kernel_size, self.stride, (0, 0), self.dilation)
        pixels = out_hw[0] * out_hw[1]
        macs = conv_macs(self.in_channels, self.hidden, (1, 1), self.groups, padded) + self.out_channels * pixels
        params = sum(p.numel() for p in self.parameters())
        deploy_params, deploy_bits = _packed_size(self)
        adds = _packed_adds(self, pixels)
        return Cost(params, params * float_bits(self), macs, deploy_params, deploy_bits, macs, adds=adds,
                    deploy_adds=adds)

    def configuration(self) -> Tensor:
        """The 0/1 configuration M, unpacked once (every call when scripted: TorchScript keeps no cache)."""
        if torch.jit.is_scripting():
            return unpack_bits(self.bits, list(self._shape)).to(self.alpha.dtype)
        return self._cached_configuration()

    @torch.jit.unused
    def _cached_configuration(self) -> Tensor:
        if self._unpacked is None or self._unpacked.device != self.bits.device:
            self._unpacked = unpack_bits(self.bits, list(self._shape)).to(self.alpha.dtype)
        return self._unpacked

    def _hidden(self, x: Tensor) -> Tensor:
        ph, pw = self.padding
        z = F.conv2d(F.pad(x, (pw, pw, ph, ph)) if ph or pw else x, self.pointwise, None, 1, 0, 1, self.groups)
        return self.norm(z) if self.norm is not None else z

    def forward(self, x: Tensor) -> Tensor:
        # α·(2M − 1) is the ±1 kernel the layer was trained with, rebuilt from the bits (a few thousand
        # elementwise ops): one conv, as fast as the trained layer. forward_additive is the same map computed
        # with 0/1 entries (additions only), measured 2.6x slower on CPU, for hardware without multipliers.
        z = self._hidden(x)
        kernel = self.alpha.view(-1, 1, 1, 1) * (2 * self.configuration() - 1)
        y = F.conv2d(z, kernel, None, self.stride, 0, self.dilation, self.groups)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def as_convs(self) -> nn.Sequential:
        """The same layer as two plain convs, for runtimes that run convs well and bit unpacking badly: the 1x1
        with the BatchNorm folded in (its zero padding moved into it: a 1x1 conv of a padded zero is its bias,
        as BatchNorm of the 1x1's zero output is the shift) and the K×K with α·(2M − 1) as a float kernel. Exact
        in eval mode; stored in floats, so larger than the packed form."""
        with torch.no_grad():
            w = self.pointwise.detach()
            bias = torch.zeros(self.hidden, dtype=w.dtype, device=w.device)
            affine = self._norm_affine()
            if affine is not None:
                w, bias = w * affine[0].view(-1, 1, 1, 1), affine[1]
            first = nn.Conv2d(self.in_channels, self.hidden, 1, 1, self.padding, 1, self.groups, bias=True,
                              device=w.device, dtype=w.dtype)
            first.weight.copy_(w)
            first.bias.copy_(bias)
            kernel = self.alpha.view(-1, 1, 1, 1) * (2 * self.configuration() - 1)
            second = nn.Conv2d(self.hidden, self.out_channels, self.kernel_size, self.stride, 0, self.dilation,
                               self.groups, bias=self.bias is not None, device=w.device, dtype=w.dtype)
            second.weight.copy_(kernel)
            if self.bias is not None:
                second.bias.copy_(self.bias)
        return nn.Sequential(first, second).eval()

    def forward_additive(self, x: Tensor) -> Tensor:
        """The same output through the 0/1 configuration: α ⊙ (2·conv(z, M) − box(z))."""
        z = self._hidden(x)
        m = self.configuration()
        ones = torch.ones(self.groups, self.hidden // self.groups, *self.kernel_size, dtype=z.dtype, device=z.device)
        box = F.conv2d(z, ones, None, self.stride, 0, self.dilation, self.groups)
        box = box.repeat_interleave(self.out_channels // self.groups, dim=1)
        y = 2 * F.conv2d(z, m, None, self.stride, 0, self.dilation, self.groups) - box
        y = y * self.alpha.view(1, -1, 1, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, hidden={self.hidden}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, bits={math.prod(self._shape)}")

