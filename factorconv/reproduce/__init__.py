"""The papers' own comparisons as named studies (`factorconv reproduce NAME`): each table as data with the
paper's numbers (catalog.py, tables.py), run at CPU or paper scale through the study machinery, with a
verdict on each claim from the paired differences (verdict.py, runner.py)."""

from . import tables  # noqa: F401  (registers the named studies)
from .catalog import SCALES, Reproduction, Row, get_reproduction, list_reproductions, register_reproduction
from .runner import SHAPES, claims, plan, record, render_claims, render_plan, reproduce, study_spec
from .verdict import HOLDS, NOT_DISTINGUISHABLE, OPPOSITE, TOO_FEW, claim_verdict

__all__ = [
    "HOLDS",
    "NOT_DISTINGUISHABLE",
    "OPPOSITE",
    "SCALES",
    "SHAPES",
    "TOO_FEW",
    "Reproduction",
    "Row",
    "claim_verdict",
    "claims",
    "get_reproduction",
    "list_reproductions",
    "plan",
    "record",
    "register_reproduction",
    "render_claims",
    "render_plan",
    "reproduce",
    "study_spec",
]
