"""A complete example operator, the one docs/operators.md builds: a rank-r convolution K = U·V, i.e. a kh×kw
conv to `rank` channels per group (V) followed by a 1x1 conv to the outputs (U). Importing this file
registers it as "lowrank"; tests/test_example_operator.py runs it through the whole per-operator test matrix
(`pytest --operator-file examples/lowrank_conv.py --conv lowrank`), with no edit under tests/."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from factorconv import register_conv
from factorconv.ops.base import ConvOperator
from factorconv.ops.examples import Draw, ExampleShape
from factorconv.ops.space import Dimension, IntRange
from factorconv.ops.spec import Cost, conv_macs, float_bits


@register_conv("lowrank")
class LowRankConv2d(ConvOperator):
    """K = U·V per group: V (rank·groups, in/groups, kh, kw), U (out, rank, 1, 1)."""

    has_feature_path = True
    scriptable = True  # torch.jit.script compiles it (the test checks the flag both ways)
    search_space: ClassVar[dict[str, Dimension]] = {"rank": IntRange(1, 8)}  # what `factorconv tune` searches

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        """What the property tests need: a rank to draw (any shape nn.Conv2d takes is valid)."""
        return shape, {"rank": draw.integer(1, 6)}

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = False, *,
                 rank: int = 4, path: str = "auto") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, path=path)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LowRankConv2d: rank must be a positive int, got {rank!r}")
        self.rank = rank
        self.V = nn.Parameter(torch.empty(self.groups * rank, self.in_channels // self.groups, *self.kernel_size))
        self.U = nn.Parameter(torch.empty(self.out_channels, rank, 1, 1))
        for weight in (self.V, self.U):
            nn.init.kaiming_uniform_(weight, a=5**0.5)

    def dense_weight(self) -> Tensor:
        g, r = self.groups, self.rank
        u, v = self.U.reshape(g, self.out_channels // g, r), self.V.reshape(g, r, -1)
        return torch.bmm(u, v).reshape(self.out_channels, self.in_channels // g, *self.kernel_size).contiguous()

    def feature_forward(self, x: Tensor) -> Tensor:
        z = F.conv2d(x, self.V, None, self.stride, self.padding, self.dilation, self.groups)
        return F.conv2d(z, self.U, self.bias, 1, 0, 1, self.groups)

    def feature_macs(self, in_hw: tuple[int, int]) -> int:
        out_hw = self.spec.out_hw(in_hw)
        mid = self.groups * self.rank
        return (conv_macs(self.in_channels, mid, self.kernel_size, self.groups, out_hw)
                + conv_macs(mid, self.out_channels, (1, 1), self.groups, out_hw))

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        params = sum(p.numel() for p in self.parameters())
        # no factorized_size(): deploy() ships fold(), and deploy_cost gives its size and MACs
        deploy_params, deploy_bits, deploy_macs, _ = self.deploy_cost(in_hw, 0)
        return Cost(params, params * float_bits(self), self.feature_macs(in_hw), deploy_params, deploy_bits,
                    deploy_macs)

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        """The best rank-r fit per group (truncated SVD): exact when the conv has rank <= r."""
        g, r = self.groups, self.rank
        u, s, vh = torch.linalg.svd(weight.reshape(g, self.out_channels // g, -1), full_matrices=False)
        k = min(r, s.shape[-1])
        root = s[:, :k].sqrt()
        self.U.zero_()
        self.V.zero_()
        self.U.view(g, -1, r)[:, :, :k] = u[:, :, :k] * root.unsqueeze(1)
        self.V.view(g, r, -1)[:, :k] = vh[:, :k] * root.unsqueeze(2)
        if bias is not None:
            self.bias.copy_(bias)
        return self.kernel_error(weight)
