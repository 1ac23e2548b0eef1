"""factorconv: efficient convolution operators as exact drop-in replacements for nn.Conv2d.

The public API (stable; see DESIGN.md):

    import factorconv as fc
    fc.list_convs(); fc.create_conv2d(16, 32, 3, conv="dsep", padding=1)
    fc.list_models(); fc.create_model("resnet20", conv="dsep", width=2.75, conv_kwargs={"norm": True})
    fc.convert(model, "dsep"); fc.fold(model); fc.profile(model, (3, 32, 32))
"""

from . import models, ops  # noqa: F401  (registers operators and backbones)
from .accounting import LayerRow, Profile, count_params, profile
from .budget import WidthMatch, count_model, match_width
from .convert import convert, fold, iter_operators, pack
from .deployment import deploy
from .export import load_compact, save_compact
from .ops.base import ConvOperator, is_operator
from .ops.bdsc import decouple
from .ops.channel import chain_connectivity
from .ops.igcv import complementary_permutations, connectivity, plan_igcv2
from .ops.osep import plan_osep, volumetric_rf
from .ops.spec import Cost
from .registry import (
    create_conv2d,
    create_model,
    list_convs,
    list_models,
    register_conv,
    register_model,
)
from .sharing import expand, share_coefficients
from .version import __version__

__all__ = [
    "ConvOperator",
    "Cost",
    "LayerRow",
    "Profile",
    "WidthMatch",
    "__version__",
    "chain_connectivity",
    "complementary_permutations",
    "connectivity",
    "convert",
    "count_model",
    "count_params",
    "create_conv2d",
    "create_model",
    "decouple",
    "deploy",
    "expand",
    "fold",
    "is_operator",
    "iter_operators",
    "list_convs",
    "list_models",
    "load_compact",
    "match_width",
    "pack",
    "plan_igcv2",
    "plan_osep",
    "profile",
    "register_conv",
    "register_model",
    "save_compact",
    "share_coefficients",
    "volumetric_rf",
]
