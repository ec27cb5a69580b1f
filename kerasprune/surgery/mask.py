"""Masking: zero removed channels in place, without changing any shape.

The soft counterpart of :func:`kerasprune.rebuild`: every weight entry of a masked
channel (its filter and bias, its BatchNormalization entries, the next layers' input
weights that read it, every member of a residual group) is set to zero, so the channel
carries nothing, yet it can still be trained back, as in Xu et al. (2018). For exact layers the
masked model computes what the rebuilt thin model computes.

References:

- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Tuple

import keras
import numpy as np

from kerasprune.graph.analysis import analyze
from kerasprune.graph.composite import iter_layers
from kerasprune.graph.groups import PruningGraph, check_graph
from kerasprune.surgery.keep import keep_masks

__all__ = ["mask_weights", "masked_entries"]


def masked_entries(
    graph: PruningGraph, keep: Mapping[str, Iterable[int]]
) -> Dict[Tuple[str, int], np.ndarray]:
    """The weight entries a keep-set leaves out: ``(layer path, weight index) -> flat indices``.

    Raises:
        KeepSetError, FrozenGroupError: as :func:`kerasprune.rebuild` does.
    """
    masks = keep_masks(graph, keep)
    parts: Dict[Tuple[str, int], list] = {}
    for name, mask in masks.items():
        for e in graph.entries(name):
            gone = e.flat[~mask[e.channel]]
            if gone.size:
                parts.setdefault((e.layer, e.weight), []).append(gone)
    return {k: np.unique(np.concatenate(v)) for k, v in parts.items()}


def mask_weights(
    model: keras.Model,
    keep: Mapping[str, Iterable[int]],
    *,
    graph: Optional[PruningGraph] = None,
) -> int:
    """Zero, in place, every weight entry of the channels that ``keep`` leaves out.

    Unlike :func:`kerasprune.rebuild`, this modifies ``model`` (that is its purpose: soft
    pruning keeps the shapes and lets masked channels train back).

    Args:
        model: the model to mask.
        keep: group name -> channel indices to keep, as for :func:`kerasprune.rebuild`.
        graph: ``analyze(model)``, if already computed.

    Returns:
        The number of weight entries set to zero.
    """
    check_graph(graph, model, "mask_weights")
    if graph is None:
        graph = analyze(model, warn=False)
    layers = dict(iter_layers(model))
    zeroed = 0
    for (path, i), flat in masked_entries(graph, keep).items():
        var = layers[path].weights[i]
        value = np.array(var.numpy())
        value.reshape(-1)[flat] = 0
        var.assign(value)
        zeroed += int(flat.size)
    return zeroed
