"""Export a (thin) Keras model to TFLite, checked against Keras before the file is written."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Union

import keras
import numpy as np

from kerasprune.backend import require_backend, require_tensorflow
from kerasprune.errors import ExportError
from kerasprune.export.interpreter import interpreter_name, make_interpreter, run_tflite

__all__ = ["ExportError", "TFLiteExport", "export_tflite", "sample_batches", "QUANTIZATIONS", "TOLERANCES"]

QUANTIZATIONS = (None, "float16", "int8")

#: largest accepted difference between Keras and TFLite outputs, relative to the range
#: of the Keras outputs on the check samples
TOLERANCES = {None: 1e-4, "float16": 1e-2, "int8": 0.1}


@dataclass
class TFLiteExport:
    """What :func:`export_tflite` wrote.

    Attributes:
        path: the ``.tflite`` file.
        bytes: its size on disk.
        quantize: ``None``, ``"float16"`` or ``"int8"``.
        max_abs_diff: largest |Keras - TFLite| over the check samples.
        relative_diff: ``max_abs_diff`` divided by the range of the Keras outputs.
        samples: number of examples the check ran on.
        interpreter: ``"LiteRT"`` or ``"tf.lite"``.
    """

    path: Path
    bytes: int
    quantize: Optional[str]
    max_abs_diff: float
    relative_diff: float
    samples: int
    interpreter: str

    def __str__(self) -> str:
        mode = self.quantize or "float32"
        return (
            f"{self.path} ({self.bytes:,} bytes, {mode}): max |Keras - TFLite| = {self.max_abs_diff:.3g} "
            f"({self.relative_diff:.2%} of the output range) on {self.samples} examples, {self.interpreter} interpreter"
        )


def _inputs_of(batch: Any, n_inputs: int) -> List[np.ndarray]:
    """The model inputs of one batch: ``x`` or ``(x, y[, w])``, ``x`` a tuple for several inputs."""
    if isinstance(batch, dict):
        raise ExportError("dict batches are not supported by the export check; give inputs in order")
    x = batch
    if isinstance(batch, (tuple, list)):
        nested = isinstance(batch[0], (tuple, list))
        x = batch[0] if (n_inputs == 1 or nested) else batch
    xs = list(x) if isinstance(x, (tuple, list)) else [x]
    if len(xs) != n_inputs:
        raise ExportError(f"the model has {n_inputs} inputs; a sample batch gives {len(xs)}")
    return [np.asarray(keras.ops.convert_to_numpy(a), dtype=np.float32) for a in xs]


def sample_batches(model: keras.Model, data: Any = None, *, limit: int = 32, seed: int = 0) -> List[List[np.ndarray]]:
    """Up to ``limit`` examples of ``data`` as a list of batches (each a list of input arrays).

    ``data`` may be a ``tf.data.Dataset`` or any iterable of batches (``x`` or
    ``(x, y)``), a numpy array ``x``, a tuple ``(x, y)`` of arrays, or None:
    standard-normal inputs of the model's input shapes.
    """
    n_inputs = len(model.inputs)
    if data is None:
        rng = np.random.default_rng(seed)
        shapes = [tuple(8 if d is None else int(d) for d in t.shape) for t in model.inputs]
        return [[rng.normal(size=s).astype(np.float32) for s in shapes]]
    if isinstance(data, np.ndarray) or (isinstance(data, tuple) and data and isinstance(data[0], np.ndarray)):
        return [[a[:limit] for a in _inputs_of(data, n_inputs)]]
    out, n = [], 0
    for batch in data:
        xs = _inputs_of(batch, n_inputs)
        take = min(limit - n, len(xs[0]))
        out.append([a[:take] for a in xs])
        n += take
        if n >= limit:
            break
    if not out:
        raise ExportError("the sample data is empty")
    return out


def _representative(batches: Sequence[Sequence[np.ndarray]]):
    def gen() -> Iterator[List[np.ndarray]]:
        for xs in batches:
            for i in range(len(xs[0])):
                yield [a[i : i + 1] for a in xs]

    return gen


def _compare(model: keras.Model, flat: bytes, batches) -> tuple:
    interp = make_interpreter(flat)
    worst, span, n = 0.0, 0.0, 0
    for xs in batches:
        ref = model(xs if len(xs) > 1 else xs[0], training=False)
        ref = [np.asarray(keras.ops.convert_to_numpy(r), np.float64) for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
        got = [np.asarray(g, np.float64) for g in run_tflite(interp, xs)]
        for r in ref:
            same = [g for g in got if g.shape == r.shape]
            if not same:
                raise ExportError(f"the TFLite model has no output of shape {r.shape}")
            worst = max(worst, min(float(np.max(np.abs(g - r))) for g in same))
            span = max(span, float(r.max() - r.min()))
        n += len(xs[0])
    return worst, worst / span if span > 0 else worst, n


def export_tflite(
    model: keras.Model,
    path: Union[str, os.PathLike],
    *,
    quantize: Optional[str] = None,
    calibration_data: Any = None,
    calibration_steps: int = 100,
    check_data: Any = None,
    tolerance: Optional[float] = None,
) -> TFLiteExport:
    """Convert ``model`` to a TFLite flatbuffer, check it against Keras, then write it.

    The conversion is Keras's own LiteRT export (``model.export(format="litert")``,
    through a SavedModel). Before ``path`` is written, the TFLite model runs on check
    samples and its outputs are compared with the Keras model's; an export whose
    largest difference exceeds ``tolerance`` (relative to the range of the Keras
    outputs) is refused.

    Args:
        model: the model to export (a thin model from :func:`kerasprune.rebuild`, or any).
        path: the ``.tflite`` file to write.
        quantize: ``None`` (float32), ``"float16"`` (weights stored as float16) or
            ``"int8"`` (weights and activations int8, calibrated on
            ``calibration_data``; inputs and outputs stay float32).
        calibration_data: batches for int8 calibration (a ``tf.data.Dataset`` of
            ``x`` or ``(x, y)``, or arrays); required for ``int8``.
        calibration_steps: examples used for calibration.
        check_data: examples for the check (default: the calibration data, else
            standard-normal inputs).
        tolerance: largest accepted relative difference (default :data:`TOLERANCES`).

    Returns:
        A :class:`TFLiteExport` with the file, its size and the measured difference.

    Raises:
        ExportError: unknown ``quantize``, ``int8`` without calibration data, a failed
            conversion, or outputs that differ beyond ``tolerance``.
        BackendError: Keras runs on another backend than TensorFlow, or TensorFlow is
            not installed.
    """
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize must be one of None, 'float16', 'int8'; got {quantize!r}")
    if quantize == "int8" and calibration_data is None:
        raise ExportError("int8 quantization needs calibration_data: a few hundred typical inputs")
    path = Path(path)
    if path.suffix != ".tflite":
        raise ExportError(f"the TFLite file name must end with .tflite, got {path.name!r}")
    require_backend("TFLite export", "tensorflow")
    tf = require_tensorflow("TFLite export")

    kwargs: dict = {}
    if quantize is not None:
        kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        kwargs["target_spec"] = {"supported_types": [tf.float16]}
    if quantize == "int8":
        kwargs["representative_dataset"] = _representative(
            sample_batches(model, calibration_data, limit=calibration_steps)
        )
    checks = sample_batches(model, check_data if check_data is not None else calibration_data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".tflite", dir=path.parent, prefix=f".{path.stem}-")
    os.close(fd)
    try:
        try:
            model.export(tmp, format="litert", verbose=False, **kwargs)
        except Exception as exc:  # the converter's own message, first line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"TFLite conversion of '{model.name}' failed: {first[:300]}") from exc
        flat = Path(tmp).read_bytes()
        worst, rel, n = _compare(model, flat, checks)
        limit = TOLERANCES[quantize] if tolerance is None else float(tolerance)
        if not rel <= limit:
            raise ExportError(
                f"the TFLite model differs from the Keras model by {worst:.3g} ({rel:.2%} of the output "
                f"range, limit {limit:.2%}); not written"
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return TFLiteExport(path, path.stat().st_size, quantize, worst, rel, n, interpreter_name())
