"""Looking inside trained models: what an operator learned (kernels.py), class activation maps at every stage
(cam.py), ACDC's cross-layer coefficient redundancy (redundancy.py), and `factorconv show` drawing them
(show.py)."""

from .cam import class_activation_maps, stages
from .kernels import acdc_atoms, acdc_coefficients, bdsc_configurations, doconv_shift
from .redundancy import coefficient_redundancy, decompose_kernel, effective_rank
from .show import VIEWS, applicable_views, show_model, show_run, view_reasons

__all__ = [
    "VIEWS",
    "acdc_atoms",
    "acdc_coefficients",
    "applicable_views",
    "bdsc_configurations",
    "class_activation_maps",
    "coefficient_redundancy",
    "decompose_kernel",
    "doconv_shift",
    "effective_rank",
    "show_model",
    "show_run",
    "stages",
    "view_reasons",
]
