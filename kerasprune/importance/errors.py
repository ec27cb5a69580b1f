"""The error raised for bad scoring requests."""

from __future__ import annotations

from kerasprune.errors import KerasPruneError

__all__ = ["ImportanceError"]


class ImportanceError(KerasPruneError, ValueError):
    """A scoring request kerasprune cannot satisfy.

    Raised for an unknown criterion or normalization, a data-driven criterion without
    data (or without labels or a loss), and a group a criterion cannot score (``bn_gamma``
    on a group without BatchNormalization, a response criterion on a group that is only
    visible inside a nested model).
    """
