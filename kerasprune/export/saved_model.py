"""SavedModel export and the size of a model on disk in each deployed format."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, Union

import keras

from kerasprune.backend import require_backend, require_tensorflow

__all__ = ["export_saved_model", "directory_bytes", "disk_sizes"]


def export_saved_model(model: keras.Model, directory: Union[str, os.PathLike]) -> Path:
    """Write ``model`` as a TensorFlow SavedModel (``serve`` endpoint) to ``directory``.

    This is Keras's ``model.export(directory, format="tf_saved_model")``; the result
    serves with TF Serving and loads with ``tf.saved_model.load``.

    Raises:
        BackendError: TensorFlow is not installed, or Keras runs on another backend than
            TensorFlow or JAX (the ones Keras exports a SavedModel from).
    """
    require_tensorflow("SavedModel export")
    require_backend("SavedModel export", "tensorflow", "jax")
    directory = Path(directory)
    model.export(str(directory), format="tf_saved_model", verbose=False)
    return directory


def directory_bytes(path: Union[str, os.PathLike]) -> int:
    """Bytes of a file, or of every file below a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def disk_sizes(model: keras.Model) -> Dict[str, int]:
    """Bytes of ``model`` as a ``.keras`` file, a SavedModel and a float32 TFLite file.

    Each is written to a temporary directory and measured; nothing is kept.
    """
    from kerasprune.export.tflite import export_tflite

    with tempfile.TemporaryDirectory() as tmp:
        model.save(os.path.join(tmp, "m.keras"))
        out = {"keras": directory_bytes(os.path.join(tmp, "m.keras"))}
        out["saved_model"] = directory_bytes(export_saved_model(model, os.path.join(tmp, "sm")))
        out["tflite"] = export_tflite(model, os.path.join(tmp, "m.tflite")).bytes
    return out
