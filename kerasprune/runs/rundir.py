"""A gradual run's directory: checkpoints and history, written so a kill never corrupts them.

Every file is written to a temporary name in the same directory, flushed to disk and then
renamed over its final name (an atomic operation on POSIX file systems), so a reader
sees either the old or the new file, never half of one. A round is complete once its
row is in ``history.json``; its checkpoint is written before the row.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import keras

from kerasprune import distribute
from kerasprune.runs.history import HISTORY_FILE, SETTINGS_FILE, read_history

__all__ = ["RunDirectory"]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RunDirectory:
    """Checkpoints ``round_NNN.keras``, ``history.json`` and ``run.json`` of one run."""

    def __init__(self, path: os.PathLike) -> None:
        self.path = Path(path)

    # files ---------------------------------------------------------------

    def checkpoint(self, round: int) -> Path:
        """Path of the checkpoint of ``round`` (0 is the model before pruning)."""
        return self.path / f"round_{round:03d}.keras"

    @property
    def history_file(self) -> Path:
        """The run's ``history.json``."""
        return self.path / HISTORY_FILE

    @property
    def settings_file(self) -> Path:
        """The run's ``run.json``: its settings as first written."""
        return self.path / SETTINGS_FILE

    # writing -------------------------------------------------------------

    def _atomic(self, final: Path, write) -> None:
        if not distribute.is_writer():  # process 0 writes; the others wait until it has
            distribute.barrier(f"write {final.name}")
            return
        self.path.mkdir(parents=True, exist_ok=True)
        # the temporary keeps the final suffix: keras only saves to names ending in .keras
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.stem}.", suffix=final.suffix, dir=self.path)
        os.close(fd)
        try:
            with distribute.alone():
                write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        distribute.barrier(f"write {final.name}")

    def write_json(self, final: Path, data: Any) -> None:
        """Write ``data`` as JSON to ``final`` atomically."""

        def write(tmp):
            with open(tmp, "w") as f:
                json.dump(data, f, indent=1)

        self._atomic(final, write)

    def save_model(self, model: keras.Model, round: int) -> Path:
        """Save ``model`` as the checkpoint of ``round`` atomically."""
        final = self.checkpoint(round)
        self._atomic(final, lambda tmp: model.save(tmp))
        return final

    # reading -------------------------------------------------------------

    def history(self) -> List[Dict[str, Any]]:
        """The completed rounds' rows (empty for a new directory)."""
        if not self.history_file.exists():
            return []
        return read_history(self.history_file)

    def settings(self) -> Optional[Dict[str, Any]]:
        """The run's settings as first written, or None."""
        if not self.settings_file.exists():
            return None
        with open(self.settings_file) as f:
            return json.load(f)

    def append(self, row: Dict[str, Any]) -> None:
        """Add one completed round to the history (rewritten atomically)."""
        rows = self.history()
        rows = [r for r in rows if r["round"] != row["round"]] + [row]
        self.write_json(self.history_file, rows)

    def clean_temporaries(self) -> None:
        """Remove temporary files left by a process killed mid-write (process 0 only)."""
        if distribute.is_writer() and self.path.exists():
            for p in self.path.glob(".tmp-*"):
                p.unlink(missing_ok=True)
