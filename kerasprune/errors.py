"""Exceptions raised by kerasprune.

Every error a user can trigger derives from :class:`KerasPruneError`, and each also
derives from the built-in exception a Python user would expect (``TypeError`` for a
model kerasprune cannot read, ``ValueError`` for a bad keep-set), so existing
``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "KerasPruneError",
    "UnsupportedModelError",
    "KeepSetError",
    "FrozenGroupError",
    "SelectionError",
]


class KerasPruneError(Exception):
    """Base class of every error raised by kerasprune."""


class UnsupportedModelError(KerasPruneError, TypeError):
    """The model cannot be analyzed (no functional graph, not built, ...)."""


class KeepSetError(KerasPruneError, ValueError):
    """A keep-set passed to :func:`kerasprune.rebuild` is not valid for the model."""


class FrozenGroupError(KeepSetError):
    """A keep-set asks to prune a channel group that cannot be pruned."""


class SelectionError(KerasPruneError, ValueError):
    """A selection request is not valid: bad ratio, scope, unit or guard, scores that do
    not fit the graph, or an ``exclude`` pattern that matches no group or layer."""
