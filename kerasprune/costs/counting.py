"""Parameter and multiply-add counts, per layer and in total."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import keras
import numpy as np

from kerasprune.graph.composite import is_container, iter_calls, iter_layers
from kerasprune.graph.registry import handler_for

__all__ = ["count_params", "count_flops", "ParamCount", "FlopCount"]


def _table(rows: List[tuple], header: tuple) -> str:
    rows = [header] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for j, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass
class ParamCount:
    """Parameters of a model: totals and one row per layer that owns weights."""

    total: int
    trainable: int
    non_trainable: int
    per_layer: Dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text table, one row per layer, then the total."""
        rows = [(name, f"{n:,}") for name, n in self.per_layer.items()]
        rows.append(("total", f"{self.total:,}"))
        return _table(rows, ("layer", "params"))

    def __int__(self) -> int:
        return self.total


@dataclass
class FlopCount:
    """Multiply-adds of one forward pass of one example, totals and per layer."""

    total: int
    per_layer: Dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text table, one row per layer with work, then the total."""
        rows = [(name, f"{n:,}") for name, n in self.per_layer.items() if n]
        rows.append(("total", f"{self.total:,}"))
        return _table(rows, ("layer", "MACs"))

    def __int__(self) -> int:
        return self.total


def count_params(model: keras.Model) -> ParamCount:
    """Count the parameters of ``model`` (shared weights once).

    Args:
        model: any built Keras model.

    Returns:
        A :class:`ParamCount` with ``total``, ``trainable``, ``non_trainable`` and
        ``per_layer`` (layer path -> parameters owned by that leaf layer).
    """
    seen = set()

    def size(variables):
        n = 0
        for v in variables:
            if id(v) not in seen:
                seen.add(id(v))
                n += int(np.prod(v.shape)) if len(v.shape) else 1
        return n

    trainable = size(model.trainable_weights)
    non_trainable = size(model.non_trainable_weights)
    per_layer = {}
    for path, layer in iter_layers(model):
        if is_container(layer):
            continue
        n = sum(int(np.prod(v.shape)) if len(v.shape) else 1 for v in layer.weights)
        if n:
            per_layer[path] = n
    return ParamCount(trainable + non_trainable, trainable, non_trainable, per_layer)


def count_flops(model: keras.Model) -> FlopCount:
    """Count the multiply-adds of one example's forward pass through ``model``.

    Convolutions count ``c_out * c_in / groups * prod(kernel) * prod(output spatial)``
    (transposed convolutions over their input positions), Dense layers ``in * out`` per
    position they are applied at, depthwise and separable convolutions their two parts,
    recurrent layers their input and recurrent matmuls per time step and attention its
    projections. Element-wise layers (activations, normalization, pooling, merges) count
    0. Unknown (``None``) spatial sizes count as 1. A layer called several times counts
    every call.

    Returns:
        A :class:`FlopCount` with ``total`` and ``per_layer`` (layer path -> MACs).
    """
    per_layer: Dict[str, int] = {}
    for path, layer, node in iter_calls(model):
        macs = int(handler_for(layer).macs(layer, node))
        per_layer[path] = per_layer.get(path, 0) + macs
    return FlopCount(sum(per_layer.values()), per_layer)
