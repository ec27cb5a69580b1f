"""A gradual run's directory: checkpoints and history, written so a kill never corrupts them.

Every file the run writes goes through :func:`atomic_write_text` or
:func:`atomic_save_model`: written to a temporary name in the same directory, flushed to
disk and then renamed over its final name (an atomic operation on POSIX file systems), so
a reader sees either the old or the new file, never half of one. A round is complete once
its row is in ``history.json``; its checkpoint is written before the row and carries a
copy of that row inside its archive (``kerasprune/row.json``, which Keras ignores), so a
run killed between the two records the round with its own ratio, metrics and time.

A file that is truncated or corrupt all the same (copied half-way, damaged on disk,
written by an older version in place) is named in a :class:`~kerasprune.errors.RunError`
that says what to do.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import keras
import numpy as np

from kerasprune import distribute
from kerasprune.errors import RunError, first_line
from kerasprune.runs import _faults
from kerasprune.runs.history import HISTORY_FILE, SETTINGS_FILE, read_history, read_json

__all__ = ["RunDirectory", "atomic_write_text", "atomic_save_model", "PRUNED_FILE"]

PRUNED_FILE = "pruned.keras"
_ROW_ENTRY = "kerasprune/row.json"
_SCORES_ENTRY = "kerasprune/scores.npz"
_TMP_PREFIX = ".tmp-"

PathLike = Union[str, os.PathLike]


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


def _atomic(final: Path, write: Callable[[str], None], phase: Optional[str], round: Optional[int]) -> None:
    """Write ``final`` through ``write(temporary path)``, then rename the temporary over it.

    The one place where a run's files are written: a gate on who writes (one process of
    several) belongs here.
    """
    final = Path(final)
    if not distribute.is_writer():  # process 0 writes; the others wait until it has
        distribute.barrier(f"write {final.name}")
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    # the temporary keeps the final suffix: keras only saves to names ending in .keras
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{final.stem}.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    try:
        with distribute.alone():
            write(tmp)
        if phase is not None:
            _faults.reached(phase, round, partial=Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except Exception:
        # a kill leaves the temporary behind; RunDirectory.clean_temporaries removes it
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    distribute.barrier(f"write {final.name}")


def atomic_write_text(path: PathLike, text: str, *, phase: Optional[str] = None, round: Optional[int] = None) -> None:
    """Write ``text`` to ``path`` atomically (a temporary in the same folder, then renamed).

    Args:
        path: the file to write; its folder is created if needed.
        text: the whole content.
        phase, round: a kill point of the resume tests (see ``kerasprune.runs._faults``).
    """

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic(Path(path), write, phase, round)


def atomic_save_model(
    model: keras.Model,
    path: PathLike,
    *,
    extra: Optional[Mapping[str, bytes]] = None,
    phase: Optional[str] = None,
    round: Optional[int] = None,
) -> None:
    """Save ``model`` to the ``.keras`` file ``path`` atomically, optimizer state included.

    Args:
        model: the model to save.
        path: a file name ending in ``.keras``; its folder is created if needed.
        extra: more entries of the archive (name -> bytes), which ``keras.models.load_model``
            ignores.
        phase, round: a kill point of the resume tests (see ``kerasprune.runs._faults``).
    """

    _warn_python_lambdas(model, Path(path))

    def write(tmp: str) -> None:
        model.save(tmp)
        if extra:
            with zipfile.ZipFile(tmp, "a") as z:
                for name, data in extra.items():
                    z.writestr(name, data)

    _atomic(Path(path), write, phase, round)


def _python_lambdas(model: keras.Model) -> List[str]:
    """Names of the ``Lambda`` layers in ``model`` (nested models too) whose function is a
    Python ``lambda``: Keras saves its bytecode, and loads it only with ``safe_mode=False``."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        function = getattr(layer, "function", None)
        if isinstance(layer, keras.layers.Lambda) and getattr(function, "__name__", "") == "<lambda>":
            found.append(layer.name)
    return found


def _warn_python_lambdas(model: keras.Model, path: Path) -> None:
    names = _python_lambdas(model)
    if names:
        warnings.warn(
            f"kerasprune: {path.name} holds Lambda layer(s) {', '.join(repr(n) for n in names)} "
            f"with a Python lambda, saved as bytecode: keras.models.load_model loads it only "
            f"with safe_mode=False and on the Python version that saved it; a named function "
            f"registered with keras.saving.register_keras_serializable loads safely",
            UserWarning,
            stacklevel=3,
        )


def _check_archive(path: Path, what_to_do: str) -> None:
    if not path.exists():
        raise RunError(f"{path} is missing: {what_to_do}")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise RunError(f"{path} is truncated or corrupt ({first_line(exc, type(exc).__name__)}): {what_to_do}") from None
    if bad is not None:
        raise RunError(f"{path} is truncated or corrupt (entry {bad} fails its CRC check): {what_to_do}")


def load_checkpoint(path: PathLike, what_to_do: str) -> keras.Model:
    """``keras.models.load_model(path)``, with a :class:`RunError` naming a bad file.

    Args:
        path: a ``.keras`` file of a run.
        what_to_do: the end of the message when it is missing, truncated or corrupt.
    """
    path = Path(path)
    _check_archive(path, what_to_do)
    try:
        return keras.models.load_model(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise RunError(f"{path} is truncated or corrupt ({first_line(exc, type(exc).__name__)}): {what_to_do}") from None
    except Exception as exc:  # an unknown layer, a custom object not registered, ...
        raise RunError(f"{path} cannot be loaded: {first_line(exc, type(exc).__name__)}") from None


class RunDirectory:
    """Checkpoints ``round_NNN.keras``, ``history.json``, ``run.json`` and ``pruned.keras`` of one run."""

    def __init__(self, path: PathLike) -> None:
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

    @property
    def pruned_file(self) -> Path:
        """The run's ``pruned.keras``: the model the run returned."""
        return self.path / PRUNED_FILE

    # writing -------------------------------------------------------------

    def write_json(self, final: Path, data: Any, *, phase: Optional[str] = None, round: Optional[int] = None) -> None:
        """Write ``data`` as JSON to ``final`` atomically."""
        atomic_write_text(final, json.dumps(data, indent=1), phase=phase, round=round)

    def save_model(
        self, model: keras.Model, round: int, row: Optional[Mapping[str, Any]] = None,
        scores: Optional[Mapping[str, Any]] = None,
    ) -> Path:
        """Save ``model`` as the checkpoint of ``round`` atomically.

        Args:
            model: the round's model.
            round: its number.
            row: the round's history row, kept inside the archive until the row is in
                ``history.json`` (:meth:`checkpoint_row`).
            scores: the scores accumulated while fine-tuning the model (group -> array),
                kept inside the archive for the next round (:meth:`checkpoint_scores`).
        """
        final = self.checkpoint(round)
        extra = {}
        if row is not None:
            extra[_ROW_ENTRY] = json.dumps(dict(row)).encode()
        if scores:
            buf = io.BytesIO()
            np.savez(buf, **{k: np.asarray(v) for k, v in scores.items()})
            extra[_SCORES_ENTRY] = buf.getvalue()
        atomic_save_model(model, final, extra=extra, phase="checkpoint_write", round=round)
        return final

    def save_pruned(self, model: keras.Model) -> Path:
        """Save the run's result as ``pruned.keras`` atomically."""
        atomic_save_model(model, self.pruned_file, phase="final_save")
        return self.pruned_file

    def append(self, row: Dict[str, Any]) -> None:
        """Add one completed round to the history (rewritten atomically)."""
        rows = self.history()
        rows = [r for r in rows if r["round"] != row["round"]] + [row]
        self.write_json(self.history_file, rows, phase="history_write", round=row["round"])

    def clean_temporaries(self) -> None:
        """Remove temporary files left by a process killed mid-write (process 0 only)."""
        if distribute.is_writer() and self.path.exists():
            for p in self.path.glob(f"{_TMP_PREFIX}*"):
                p.unlink(missing_ok=True)

    # reading -------------------------------------------------------------

    def history(self) -> List[Dict[str, Any]]:
        """The completed rounds' rows (empty for a new directory).

        Raises:
            RunError: ``history.json`` is truncated or corrupt (the message names it).
        """
        if not self.history_file.exists():
            return []
        return read_history(self.history_file)

    def settings(self) -> Optional[Dict[str, Any]]:
        """The run's settings as first written, or None.

        Raises:
            RunError: ``run.json`` is truncated or corrupt (the message names it).
        """
        if not self.settings_file.exists():
            return None
        data = read_json(
            self.settings_file,
            "restore it from a copy, or delete it (the run then resumes with the settings it is given)",
        )
        if not isinstance(data, dict):
            raise RunError(f"{self.settings_file} holds no run settings (a JSON object): delete it or restore it")
        return data

    def load_model(self, round: int, recorded: bool = True) -> keras.Model:
        """Load the checkpoint of ``round``.

        Args:
            round: the round.
            recorded: whether its row is in ``history.json`` (it sets what the error
                message says to do about a bad file).

        Raises:
            RunError: the checkpoint is missing, truncated or corrupt, or cannot be loaded.
        """
        if recorded:
            todo = (
                f"restore it from a copy, or prune again in a new run directory (round {round} "
                f"is recorded in {HISTORY_FILE}, so the run cannot resume from it)"
            )
        else:
            todo = f"delete it to redo round {round} (it was never recorded in {HISTORY_FILE})"
        return load_checkpoint(self.checkpoint(round), todo)

    def checkpoint_row(self, round: int) -> Optional[Dict[str, Any]]:
        """The history row kept inside the checkpoint of ``round``, or None (none kept)."""
        try:
            with zipfile.ZipFile(self.checkpoint(round)) as z:
                if _ROW_ENTRY not in z.namelist():
                    return None
                return json.loads(z.read(_ROW_ENTRY))
        except (zipfile.BadZipFile, OSError, ValueError):
            return None

    def checkpoint_scores(self, round: int) -> Optional[Dict[str, np.ndarray]]:
        """The accumulated scores kept inside the checkpoint of ``round``, or None."""
        try:
            with zipfile.ZipFile(self.checkpoint(round)) as z:
                if _SCORES_ENTRY not in z.namelist():
                    return None
                with np.load(io.BytesIO(z.read(_SCORES_ENTRY))) as npz:
                    return {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
