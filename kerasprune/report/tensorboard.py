"""TensorBoard event files for pruning: per-round or per-epoch scalars, saliency histograms.

:class:`TensorBoardWriter` writes with ``tf.summary.write`` and the metadata of
TensorBoard's scalar and histogram plugins, so TensorBoard shows the figures in its
Scalars, Histograms and Distributions dashboards, and writing needs nothing beyond
TensorFlow (viewing needs ``pip install tensorboard``; ``tensorboard --logdir DIR``).

Tags:

- ``params``, ``flops`` (multiply-adds per example), ``neurons`` (channels of the
  prunable groups), ``ratio`` (of a gradual round);
- ``width/<layer>``: the width of every layer that has one;
- ``metrics/<name>``: the round's measured metrics (``metrics/val_accuracy`` ...), or
  for a soft-pruning epoch, the figures of Keras's epoch logs;
- ``saliency/<group>``: histogram of the normalized scores of each group.

The step is the gradual round (0 = before pruning) or the training epoch.
:func:`read_events` reads a log directory back (scalars as floats, histograms as their
``[left, right, count]`` buckets) without TensorBoard.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from kerasprune.backend import require_tensorflow

__all__ = ["TensorBoardWriter", "read_events", "row_scalars", "histogram_buckets"]

_BUCKETS = 30


def _metadata(plugin: str, data_class: str):
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    meta.data_class = getattr(summary_pb2, data_class)
    return meta


def histogram_buckets(values: Any, bins: int = _BUCKETS) -> np.ndarray:
    """``[left, right, count]`` rows of a histogram of ``values``, as TensorBoard stores them."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros((0, 3))
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return np.array([[lo - 0.5, hi + 0.5, float(v.size)]])
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


def row_scalars(row: Mapping[str, Any]) -> Dict[str, float]:
    """The scalars of one gradual-run history row, by tag (see the module documentation)."""
    out: Dict[str, float] = {}
    for key in ("params", "flops", "neurons", "ratio"):
        if row.get(key) is not None:
            out[key] = float(row[key])
    for layer, width in (row.get("widths") or {}).items():
        out[f"width/{layer}"] = float(width)
    for name, value in (row.get("metrics") or {}).items():
        if value is not None:
            out[f"metrics/{name}"] = float(value)
    return out


class TensorBoardWriter:
    """Writes pruning figures into a TensorBoard log directory.

    Args:
        logdir: the directory of the event files (created when missing).

    Example::

        tb = TensorBoardWriter("logs/pruning")
        tb.write_row(pruner.history[-1], scores=kp.score(model))
        tb.close()
    """

    def __init__(self, logdir: Union[str, os.PathLike]) -> None:
        tf = require_tensorflow("the TensorBoard writer")

        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = tf.summary.create_file_writer(str(self.logdir))
        self._scalar_meta = _metadata("scalars", "DATA_CLASS_SCALAR")
        self._histogram_meta = _metadata("histograms", "DATA_CLASS_TENSOR")

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Write ``{tag: value}`` at ``step``."""
        import tensorflow as tf

        with self._writer.as_default():
            for tag, value in values.items():
                tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step), metadata=self._scalar_meta)

    def histograms(self, values: Mapping[str, Any], step: int, prefix: str = "saliency") -> None:
        """Write a histogram of each array of ``values`` under ``{prefix}/{name}`` at ``step``."""
        import tensorflow as tf

        with self._writer.as_default():
            for name, v in values.items():
                buckets = histogram_buckets(v)
                if buckets.size:
                    tf.summary.write(f"{prefix}/{name}", tf.constant(buckets, tf.float64), step=int(step),
                                     metadata=self._histogram_meta)

    def write_row(self, row: Mapping[str, Any], scores: Optional[Mapping[str, Any]] = None) -> None:
        """Write one gradual round (a history row) and, when given, its saliency histograms."""
        step = int(row["round"])
        self.scalars(row_scalars(row), step)
        if scores:
            self.histograms(scores, step)
        self.flush()

    def flush(self) -> None:
        """Write what is buffered to disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def read_events(logdir: Union[str, os.PathLike]) -> Dict[str, List[Tuple[int, Any]]]:
    """Read the summaries of every event file under ``logdir``.

    Returns:
        tag -> ``[(step, value), ...]`` in the order written: scalars as floats,
        histograms as ``[k, 3]`` arrays of ``[left, right, count]``.
    """
    tf = require_tensorflow("reading TensorBoard events")
    from tensorflow.core.util import event_pb2

    out: Dict[str, List[Tuple[int, Any]]] = {}
    files = sorted(Path(logdir).rglob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))
    for file in files:
        for record in tf.data.TFRecordDataset(str(file)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("tensor"):
                    array = tf.make_ndarray(value.tensor)
                    item = float(array) if array.ndim == 0 else array
                elif value.HasField("simple_value"):
                    item = float(value.simple_value)
                else:
                    continue
                out.setdefault(value.tag, []).append((int(event.step), item))
    return out
