"""The rows of a gradual run's ``history.json``: one per completed round.

A row is a plain JSON object, so that a run directory can be read without kerasprune:

- ``round``: 0 for the model before pruning, then 1, 2, ...;
- ``ratio``: the fraction asked of selection that round (0.0 for round 0);
- ``neurons``, ``params``, ``flops`` (multiply-adds per example) and ``widths`` (layer
  path -> width) of the round's model;
- ``metrics``: the validation metrics after fine-tuning, as Keras logs them;
- ``seconds``: the round's wall time; ``checkpoint``: its ``.keras`` file name;
- ``meets_target``: whether the metrics met the run's target (None without one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from kerasprune.errors import RunError, first_line

__all__ = ["HISTORY_FILE", "SETTINGS_FILE", "history_row", "read_history", "read_json"]

HISTORY_FILE = "history.json"
SETTINGS_FILE = "run.json"


def history_row(
    round: int,
    ratio: Optional[float],
    stats: Mapping[str, Any],
    metrics: Mapping[str, float],
    seconds: Optional[float],
    checkpoint: str,
    meets_target: Optional[bool],
) -> Dict[str, Any]:
    """One round's row, in the layout described above.

    Args:
        round: the round number.
        ratio: the fraction asked of selection (None where not known).
        stats: the model's ``neurons``, ``params``, ``flops`` and ``widths``.
        metrics: the validation metrics.
        seconds: the round's wall time (None where not known).
        checkpoint: the file name of the round's checkpoint.
        meets_target: whether ``metrics`` met the target (None without a target).
    """
    return {
        "round": int(round),
        "ratio": ratio,
        **dict(stats),
        "metrics": dict(metrics),
        "seconds": None if seconds is None else _milliseconds(seconds),
        "checkpoint": checkpoint,
        "meets_target": meets_target,
    }


def _milliseconds(seconds: float) -> float:
    return float(f"{float(seconds):.3f}")


def read_json(path: Union[str, os.PathLike], what_to_do: str) -> Any:
    """The JSON content of ``path``; a :class:`RunError` naming it when it cannot be read.

    Args:
        path: a JSON file of a run directory.
        what_to_do: the end of the message when the file is truncated or corrupt.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        RunError: the file is truncated or corrupt (not JSON, not UTF-8).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"{path} is truncated or corrupt ({first_line(exc)}): {what_to_do}") from None


def read_history(path: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """The rows of a run directory (or of a ``history.json`` file itself).

    Raises:
        FileNotFoundError: there is no history at ``path``.
        RunError: the history is truncated or corrupt, or is not a list of rows.
    """
    p = Path(path)
    file = p / HISTORY_FILE if p.is_dir() else p
    rows = read_json(
        file,
        "restore it from a copy, or prune again in a new run directory (the run cannot "
        "resume without the rows of its rounds)",
    )
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "round" in r for r in rows):
        raise RunError(
            f"{file} is not a run history (a list of rows with a \"round\"): restore it from "
            "a copy, or prune again in a new run directory"
        )
    return rows
