"""Masking: zero removed channels in place, without changing any shape.

The soft counterpart of :func:`kerasprune.rebuild`: every weight entry of a masked
channel (its filter and bias, its BatchNormalization entries, the next layers' input
weights that read it, every member of a residual group) is set to zero, so the channel
carries nothing, yet it can still be trained back, as in Xu et al. (2018). For exact layers the
masked model computes what the rebuilt thin model computes.

A keep-set becomes one boolean array per weight variable (:func:`weight_masks`), built
from the channel entries of :meth:`PruningGraph.entries` without listing entries one by
one where a handler states them along an axis: a kernel's output filters give a mask of
shape ``(1, ..., 1, filters)``, its input channels one of shape ``(1, ..., in, 1)``, and
the variable's mask is their broadcast product. Applying it is one ``keras.ops.where`` per
variable on the backend's own arrays; the masks of the last keep-set are kept on the
graph, so a callback that masks with the same selection every epoch builds them once.

References:

- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Optional, Tuple

import keras
import numpy as np

from kerasprune.graph.analysis import analyze
from kerasprune.graph.composite import iter_layers
from kerasprune.graph.groups import PruningGraph, check_graph
from kerasprune.surgery.keep import keep_masks

__all__ = ["mask_weights", "masked_entries", "weight_masks"]

WeightKey = Tuple[str, int]


def _entry_mask(entry, keep: np.ndarray) -> Optional[np.ndarray]:
    """The kept entries of one :class:`WeightEntries` under group mask ``keep``: a boolean
    array broadcastable to the weight's shape, or None when it keeps everything."""
    if entry.axis is not None:
        held = entry.axis_channel >= 0
        along = np.ones(entry.axis_channel.shape, dtype=bool)
        along[held] = keep[entry.axis_channel[held]]
        if along.all():
            return None
        view = [1] * len(entry.shape)
        view[entry.axis] = along.size
        return along.reshape(view)
    gone = entry.flat[~keep[entry.channel]]
    if not gone.size:
        return None
    out = np.ones(math.prod(entry.shape), dtype=bool)
    out[gone] = False
    return out.reshape(entry.shape)


def weight_masks(graph: PruningGraph, keep: Mapping[str, Iterable[int]]) -> Dict[WeightKey, np.ndarray]:
    """Per weight variable that loses entries, the boolean mask of the entries it keeps.

    Args:
        graph: the analysis of the model.
        keep: group name -> channel indices to keep, as for :func:`kerasprune.rebuild`.

    Returns:
        ``(layer path, weight index) -> mask``: a boolean array that broadcasts to the
        weight's shape (False where the entry holds a removed channel). The masks of the
        most recent keep-set are cached on ``graph``; do not modify them.

    Raises:
        KeepSetError, FrozenGroupError: as :func:`kerasprune.rebuild` does.
    """
    masks = keep_masks(graph, keep)
    key = tuple(sorted((name, m.tobytes()) for name, m in masks.items()))
    cached = graph.__dict__.get("_weight_masks")
    if cached is not None and cached[0] == key:
        return cached[1]
    out: Dict[WeightKey, np.ndarray] = {}
    for name, mask in masks.items():
        for e in graph.entries(name):
            kept = _entry_mask(e, mask)
            if kept is None:
                continue
            k = (e.layer, e.weight)
            out[k] = kept if k not in out else np.logical_and(out[k], kept)
    graph.__dict__["_weight_masks"] = (key, out)
    return out


def _shape_of(graph: PruningGraph, key: WeightKey) -> Tuple[int, ...]:
    return tuple(int(d) for d in graph.record(key[0]).layer.weights[key[1]].shape)


def masked_entries(
    graph: PruningGraph, keep: Mapping[str, Iterable[int]]
) -> Dict[WeightKey, np.ndarray]:
    """The weight entries a keep-set leaves out: ``(layer path, weight index) -> flat indices``
    (sorted, into the weight's ``ravel()``).

    Raises:
        KeepSetError, FrozenGroupError: as :func:`kerasprune.rebuild` does.
    """
    out = {}
    for key, kept in weight_masks(graph, keep).items():
        full = np.broadcast_to(kept, _shape_of(graph, key))
        out[key] = np.flatnonzero(~full)
    return out


def _removed_count(kept: np.ndarray, shape: Tuple[int, ...]) -> int:
    """Entries of a weight of ``shape`` that the broadcastable mask ``kept`` leaves out."""
    return int((kept.size - np.count_nonzero(kept)) * (math.prod(shape) // kept.size))


def mask_weights(
    model: keras.Model,
    keep: Mapping[str, Iterable[int]],
    *,
    graph: Optional[PruningGraph] = None,
) -> int:
    """Zero, in place, every weight entry of the channels that ``keep`` leaves out.

    Unlike :func:`kerasprune.rebuild`, this modifies ``model`` (that is its purpose: soft
    pruning keeps the shapes and lets masked channels train back). The masks are built
    once per keep-set (see :func:`weight_masks`) and applied as one ``where`` per weight
    variable, on the backend's arrays.

    Args:
        model: the model to mask.
        keep: group name -> channel indices to keep, as for :func:`kerasprune.rebuild`.
        graph: ``analyze(model)``, if already computed.

    Returns:
        The number of weight entries set to zero (those holding a removed channel,
        whatever their value was).
    """
    check_graph(graph, model, "mask_weights")
    if graph is None:
        graph = analyze(model, warn=False)
    layers = dict(iter_layers(model))
    zeroed = 0
    for (path, i), kept in weight_masks(graph, keep).items():
        var = layers[path].weights[i]
        shape = tuple(int(d) for d in var.shape)
        value = var.value
        var.assign(keras.ops.where(kept, value, keras.ops.zeros((), dtype=var.dtype)))
        zeroed += _removed_count(kept, shape)
    return zeroed
