"""The baseline operators every paper compares against: standard (`conv`), depthwise (`dw`),
depthwise-separable (`dsep`) and spatial-separable (`ssep`) convolution.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import is_int
from ..functional import expand_grouped_kernel
from ..registry import register_conv
from .base import ConvOperator, NormAffine, OperatorMixin
from .examples import Draw, ExampleShape
from .space import Dimension, IntRange
from .spec import ConvSpec, Cost, conv_macs, dense_cost, float_bits
from .speed import SSEP_FEATURE_PATH_MARGIN

__all__ = ["DepthwiseConv2d", "DepthwiseSeparableConv2d", "SpatialSeparableConv2d", "StandardConv2d"]


@register_conv("conv")
class StandardConv2d(OperatorMixin, nn.Conv2d):
    """Standard convolution: `nn.Conv2d` with the operator protocol (bias off by default)."""

    search_space: ClassVar[dict[str, Dimension]] = {}  # no options: only the recipe is tuned

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
    ) -> None:
        spec = ConvSpec.make(
            type(self).__name__, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        super().__init__(
            spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding, spec.dilation,
            spec.groups, spec.bias,
        )
        # A strided 1x1 conv is the same conv at stride 1 on every stride-th pixel. Run that way: torch 2.13's
        # oneDNN backward of a strided 1x1 conv on channels_last input with an odd channel count corrupts the
        # heap (7 -> 14 channels, stride 2, 28x28, batch 8+: "double free or corruption"; the shortcut
        # projections of a narrow ResNet-20). tests/test_models.py keeps the crash's reproduction.
        self.subsample = self.kernel_size == (1, 1) and self.stride != (1, 1) and self.padding == (0, 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.subsample:
            return F.conv2d(x[:, :, :: self.stride[0], :: self.stride[1]], self.weight, self.bias, 1, 0, 1, self.groups)
        return super().forward(x)

    def dense_weight(self) -> Tensor:
        return self.weight

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        return dense_cost(self.spec, in_hw, float_bits(self))

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        self.weight.copy_(weight)
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias)
        return 0.0


@register_conv("dw")
class DepthwiseConv2d(StandardConv2d):
    """Depthwise convolution: every input channel convolved on its own (groups = in_channels).

    out_channels must be a multiple of in_channels (the channel multiplier). `groups` may be 1 (the
    layer being replaced is a dense conv) or in_channels; the layer always has groups = in_channels.
    """

    search_space: ClassVar[dict[str, Dimension]] = {}

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        cin = shape.in_channels
        return shape.with_(out_channels=cin * draw.integer(1, 3), groups=draw.choice([1, cin])), {}

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
    ) -> None:
        spec = ConvSpec.make("DepthwiseConv2d", in_channels, out_channels, kernel_size, stride, padding, dilation,
                             groups, bias)
        if spec.out_channels % spec.in_channels:
            raise ValueError(
                f"DepthwiseConv2d: out_channels ({spec.out_channels}) must be a multiple of in_channels "
                f"({spec.in_channels}): a depthwise conv only has a channel multiplier"
            )
        if spec.groups not in (1, spec.in_channels):
            raise ValueError(
                f"DepthwiseConv2d: groups must be 1 or in_channels ({spec.in_channels}), got {spec.groups}"
            )
        super().__init__(in_channels, out_channels, spec.kernel_size, spec.stride, spec.padding, spec.dilation,
                         spec.in_channels, bias)

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        """Least-squares fit: each output keeps the taps of the one input channel it can still read."""
        dense = expand_grouped_kernel(weight, self.in_channels // weight.shape[1])
        rows = torch.arange(self.out_channels, device=weight.device)
        reads = rows // (self.out_channels // self.in_channels)
        self.weight.copy_(dense[rows, reads].unsqueeze(1))
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias)
        fitted = expand_grouped_kernel(self.weight, self.in_channels)
        return float((fitted - dense).norm() / dense.norm().clamp_min(1e-30))


class _TwoFactorOperator(ConvOperator):
    """Shared by operators made of two stacked convs (`first` then `second`): their factorized deploy form is
    the two convs (subclasses give its size, `factorized_size`), their cost the feature path's MACs."""

    first: nn.Conv2d
    second: nn.Conv2d

    def factorized_deploy(self) -> nn.Module:
        """The two convs as plain nn.Conv2d (deploy() ships them where they are smaller than the fold)."""
        return nn.Sequential(_copy_conv(self.first), _copy_conv(self.second, bias=self.bias))

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        params = sum(p.numel() for p in self.parameters())
        feature_macs = self.feature_macs(in_hw)
        deploy_params, deploy_bits, deploy_macs, _ = self.deploy_cost(in_hw, feature_macs)
        return Cost(params, params * float_bits(self), feature_macs, deploy_params, deploy_bits, deploy_macs)


def _copy_conv(conv: nn.Conv2d, weight: Tensor | None = None, bias: Tensor | None = None) -> nn.Conv2d:
    w = conv.weight if weight is None else weight
    out = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=bias is not None, device=w.device, dtype=w.dtype,
    )
    with torch.no_grad():
        out.weight.copy_(w)
        if bias is not None:
            out.bias.copy_(bias)
    return out


@register_conv("dsep")
class DepthwiseSeparableConv2d(NormAffine, _TwoFactorOperator):
    """Depthwise-separable convolution: depthwise k×k (channel multiplier `multiplier`, or "auto": out/in when
    out is a multiple of in), then pointwise 1x1.

    `norm=True` puts a BatchNorm between the two, as the optimized-separable paper's d-ResNet does. The
    operator is then linear only in eval mode (running statistics): dense_weight()/dense_bias() and
    fold() give that eval-mode map, and training always runs the two convs (feature path).
    The conv's `groups` is kept by grouping the pointwise conv.
    """

    search_space: ClassVar[dict[str, Dimension]] = {"multiplier": IntRange(1, 4)}  # the depth multiplier

    has_feature_path = True
    scriptable = True

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        return shape, {"multiplier": draw.integer(1, 3), "norm": draw.boolean()}

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
        multiplier: int | str = 1,
        norm: bool = False,
        path: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        if multiplier == "auto":  # Xception's transitions: depth multiplier out/in when out is a multiple
            whole = self.out_channels % self.in_channels == 0
            multiplier = max(1, self.out_channels // self.in_channels) if whole else 1
        if not is_int(multiplier) or multiplier < 1:
            raise ValueError(f"DepthwiseSeparableConv2d: multiplier must be an int >= 1 or 'auto', got {multiplier!r}")
        if not isinstance(norm, bool):
            raise ValueError(f"DepthwiseSeparableConv2d: norm must be True or False, got {norm!r}")
        self.multiplier = multiplier
        mid = self.in_channels * multiplier
        self.first = nn.Conv2d(self.in_channels, mid, self.kernel_size, self.stride, self.padding, self.dilation,
                               groups=self.in_channels, bias=False)
        self.norm = nn.BatchNorm2d(mid) if norm else None
        self.second = nn.Conv2d(mid, self.out_channels, 1, groups=self.groups, bias=False)

    @property
    def linear_in_train(self) -> bool:
        return self.norm is None

    def dense_weight(self) -> Tensor:
        g, m = self.groups, self.multiplier
        kh, kw = self.kernel_size
        dw = self.first.weight
        affine = self._norm_affine()
        if affine is not None:
            dw = dw * affine[0].view(-1, 1, 1, 1)
        pw = self.second.weight.view(g, self.out_channels // g, self.in_channels // g, m)
        dw = dw.view(g, self.in_channels // g, m, kh, kw)
        dense = torch.einsum("gocm,gcmhw->gochw", pw, dw)
        return dense.reshape(self.out_channels, self.in_channels // g, kh, kw).contiguous()

    def dense_bias(self) -> Tensor | None:
        affine = self._norm_affine()
        if affine is None:
            return self.bias
        g = self.groups
        pw = self.second.weight.view(g, self.out_channels // g, -1)
        shift = torch.einsum("gom,gm->go", pw, affine[1].view(g, -1)).reshape(-1)
        return shift if self.bias is None else shift + self.bias

    def choose_path(self, x: Tensor, cached: bool | None = None) -> str:
        if self.norm is not None and self.training:
            return "feature"  # batch statistics: the two convs are not one linear map
        return super().choose_path(x, cached)

    def feature_forward(self, x: Tensor) -> Tensor:
        y = self.first(x)
        if self.norm is not None:
            y = self.norm(y)
        return F.conv2d(y, self.second.weight, self.bias, groups=self.groups)

    def compose_macs(self) -> int:
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.groups) * self.multiplier * kh * kw

    def feature_macs(self, in_hw: tuple[int, int]) -> int:
        mid = self.in_channels * self.multiplier
        out_hw = self.spec.out_hw(in_hw)
        return conv_macs(mid, mid, self.kernel_size, mid, out_hw) + conv_macs(
            mid, self.out_channels, (1, 1), self.groups, out_hw
        )

    def factorized_size(self) -> tuple[int, int]:
        mid = self.in_channels * self.multiplier
        kh, kw = self.kernel_size
        n = mid * kh * kw + self.out_channels * mid // self.groups
        n += mid if self.norm is not None else 0  # the BatchNorm shift becomes the depthwise bias
        n += self.out_channels if self.bias is not None else 0
        return n, n * float_bits(self)

    def factorized_deploy(self) -> nn.Module:
        """The depthwise and pointwise convs, an eval-mode BatchNorm folded into the depthwise one."""
        affine = self._norm_affine()
        if affine is None:
            return super().factorized_deploy()
        scale, shift = affine
        first = _copy_conv(self.first, self.first.weight * scale.view(-1, 1, 1, 1), shift)
        return nn.Sequential(first, _copy_conv(self.second, bias=self.bias))

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        """Least squares per input channel: the best rank-`multiplier` split of its (outputs × taps) slice."""
        g, m = self.groups, self.multiplier
        kh, kw = self.kernel_size
        cin_g, cout_g = self.in_channels // g, self.out_channels // g
        # slices[g, c] = the (cout_g x taps) matrix of input channel c of group g
        slices = weight.view(g, cout_g, cin_g, kh * kw).transpose(1, 2)
        u, s, vh = torch.linalg.svd(slices, full_matrices=False)
        r = min(m, s.shape[-1])
        pw = torch.zeros(g, cout_g, cin_g, m, dtype=weight.dtype, device=weight.device)
        dw = torch.zeros(g, cin_g, m, kh * kw, dtype=weight.dtype, device=weight.device)
        pw[..., :r] = (u[..., :r] * s[..., None, :r]).transpose(1, 2)
        dw[:, :, :r] = vh[:, :, :r]
        if self.norm is not None:  # a fresh BatchNorm (zero shift): divide its eval-mode scale out
            self.norm.reset_parameters()
            self.norm.reset_running_stats()
            dw = dw / self._norm_affine()[0].view(g, cin_g, m, 1)
        self.first.weight.copy_(dw.reshape_as(self.first.weight))
        self.second.weight.copy_(pw.reshape_as(self.second.weight))
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias)
        return self.kernel_error(weight)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.multiplier != 1:
            s += f", multiplier={self.multiplier}"
        return s


@register_conv("ssep")
class SpatialSeparableConv2d(_TwoFactorOperator):
    """Spatial-separable convolution: a kh×1 conv to `mid_channels` (default min(in, out)), then a 1×kw conv.

    Both convs keep the layer's groups; stride, padding and dilation split by axis, so the pair is
    exactly the conv with the composed kernel.
    """

    search_space: ClassVar[dict[str, Dimension]] = {}  # mid_channels depends on the layer: not searched

    has_feature_path = True
    scriptable = True
    feature_path_margin = SSEP_FEATURE_PATH_MARGIN  # its factors are dense convs (ops/speed.py)

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        g = shape.groups
        return shape, {"mid_channels": g * draw.integer(1, max(1, shape.max_channels // g))}

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
        mid_channels: int | None = None,
        path: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        mid = min(self.in_channels, self.out_channels) if mid_channels is None else mid_channels
        if not is_int(mid) or mid < 1 or mid % self.groups:
            raise ValueError(
                f"SpatialSeparableConv2d: mid_channels must be a positive multiple of groups ({self.groups}), "
                f"got {mid_channels!r}"
            )
        self.mid_channels = mid
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        self.first = nn.Conv2d(self.in_channels, mid, (kh, 1), (sh, 1), (ph, 0), (dh, 1), self.groups, bias=False)
        self.second = nn.Conv2d(mid, self.out_channels, (1, kw), (1, sw), (0, pw), (1, dw), self.groups, bias=False)

    def dense_weight(self) -> Tensor:
        g = self.groups
        kh, kw = self.kernel_size
        first = self.first.weight.view(g, self.mid_channels // g, self.in_channels // g, kh)
        second = self.second.weight.view(g, self.out_channels // g, self.mid_channels // g, kw)
        dense = torch.einsum("gomv,gmcu->gocuv", second, first)
        return dense.reshape(self.out_channels, self.in_channels // g, kh, kw).contiguous()

    def feature_forward(self, x: Tensor) -> Tensor:
        y = self.first(x)
        s = self.second
        return F.conv2d(y, s.weight, self.bias, s.stride, s.padding, s.dilation, s.groups)

    def compose_macs(self) -> int:
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.groups) * (self.mid_channels // self.groups) * kh * kw

    def feature_macs(self, in_hw: tuple[int, int]) -> int:
        f, s = self.first, self.second
        mid_hw = ConvSpec.of(f).out_hw(in_hw)
        out_hw = ConvSpec.of(s).out_hw(mid_hw)
        return conv_macs(f.in_channels, f.out_channels, f.kernel_size, f.groups, mid_hw) + conv_macs(
            s.in_channels, s.out_channels, s.kernel_size, s.groups, out_hw
        )

    def factorized_size(self) -> tuple[int, int]:
        n = self.first.weight.numel() + self.second.weight.numel()
        n += self.out_channels if self.bias is not None else 0
        return n, n * float_bits(self)

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        """Least squares: the kernel as a matrix [(out, kw), (in, kh)] per group, truncated SVD to mid/g."""
        g = self.groups
        kh, kw = self.kernel_size
        cin_g, cout_g, mid_g = self.in_channels // g, self.out_channels // g, self.mid_channels // g
        mat = weight.view(g, cout_g, cin_g, kh, kw).permute(0, 1, 4, 2, 3).reshape(g, cout_g * kw, cin_g * kh)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        r = min(mid_g, s.shape[-1])
        root = s[:, :r].sqrt()
        second = torch.zeros(g, cout_g * kw, mid_g, dtype=weight.dtype, device=weight.device)
        first = torch.zeros(g, mid_g, cin_g * kh, dtype=weight.dtype, device=weight.device)
        second[..., :r] = u[..., :r] * root[:, None, :]
        first[:, :r] = vh[:, :r] * root[..., None]
        self.second.weight.copy_(second.view(g, cout_g, kw, mid_g).permute(0, 1, 3, 2).reshape_as(self.second.weight))
        self.first.weight.copy_(first.reshape_as(self.first.weight))
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias)
        return self.kernel_error(weight)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mid_channels={self.mid_channels}"
