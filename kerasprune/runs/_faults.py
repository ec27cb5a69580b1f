"""Kill points for the resume tests: the run dies where ``_KERASPRUNE_KILL_AT`` says.

Not an API. ``_KERASPRUNE_KILL_AT=PHASE`` or ``PHASE@ROUND`` ends the process with
``os._exit(137)`` (no ``finally``, no flush: what ``kill -9`` does) when the run reaches
that phase (of that round). The phases are ``fine_tune`` (after the first training
batch), ``score`` (after a round's scores, before its selection), ``checkpoint_write``,
``history_write`` and ``final_save`` (half-way through writing the round's checkpoint,
``history.json`` or ``pruned.keras``: the temporary file is cut to half its size first).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

KILL_AT_ENV = "_KERASPRUNE_KILL_AT"
PHASES = ("fine_tune", "score", "checkpoint_write", "history_write", "final_save")


def _die() -> None:
    os._exit(137)


def reached(phase: str, round: Optional[int] = None, partial: Optional[Path] = None) -> None:
    """Die here if ``_KERASPRUNE_KILL_AT`` names ``phase`` (and ``round``).

    Args:
        phase: one of :data:`PHASES`.
        round: the round being worked on (None: matches any ``@ROUND``).
        partial: a file being written, cut to half its size before dying.
    """
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    name, _, at = spec.partition("@")
    if name != phase or (at and round is not None and int(at) != round):
        return
    if partial is not None and os.path.exists(partial):
        size = os.path.getsize(partial)
        with open(partial, "rb+") as f:
            f.truncate(size // 2)
    _die()
