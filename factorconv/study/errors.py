"""The error a study raises when it cannot go on; every study module raises it, so it depends on none of them."""

from __future__ import annotations

__all__ = ["StudyError"]


class StudyError(RuntimeError):
    """A study cannot go on (its directory holds a different study, a run failed); the message says which."""
