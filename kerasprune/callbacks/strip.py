"""``strip``: the thin model, without the channels that carry nothing.

After soft pruning (:class:`~kerasprune.callbacks.SoftFilterPruning`, or
:func:`~kerasprune.surgery.mask.mask_weights` by hand), network slimming (BatchNormalization
``gamma`` driven to 0) or an L1-regularized training, channels that carry nothing are
still in the model. ``strip`` finds them from the model alone, so it works on any model,
one reloaded from a ``.keras`` file included, and removes them with
:func:`kerasprune.rebuild`.

A channel of a prunable group is *dead* when it carries exactly zero to every layer
that reads it with its weights (the next convolutions and Dense layers), decided from
the producer side: its filter and bias, the per-channel layers it passes
(BatchNormalization in inference: ``gamma * (x - mean) / sqrt(var + eps) + beta``), the
activations between (``relu``, ``gelu``, ``tanh``, ``swish`` map 0 to 0; ``sigmoid`` does
not) and the merges it meets (a product with 0 is 0); see
:mod:`kerasprune.surgery.fold`. A channel is dead too where every weight that reads it
is zero (``|w| <= tol``), whatever it carries. A channel whose filter is zero but whose
BatchNormalization ``beta`` is not sends a constant; ``fold_constants=True`` removes such
channels as well, folding the constant into each next layer's bias (exact for Dense and
for convolutions that reach no zero padding: ``padding="valid"`` or 1x1 kernels; a
channel read by a padded convolution is kept, because at the borders the window sees the
padding's zeros instead of the constant). Groups whose layers normalize across channels
(LayerNormalization) are left alone.
"""

from __future__ import annotations

from typing import Dict, Optional

import keras
import numpy as np

from kerasprune.graph.analysis import analyze
from kerasprune.graph.groups import PruningGraph, check_graph
from kerasprune.surgery.fold import carried_channels, fold_values, rebuild_folded
from kerasprune.surgery.rebuild import rebuild

__all__ = ["strip", "dead_channels"]


def dead_channels(model: keras.Model, graph: Optional[PruningGraph] = None, tol: float = 0.0) -> Dict[str, np.ndarray]:
    """The channels of each prunable group that carry nothing (see the module doc).

    Args:
        model: a functional or Sequential model.
        graph: ``analyze(model)``, if already computed.
        tol: values and weight entries with ``|v| <= tol`` count as zero.

    Returns:
        group name -> sorted indices of the dead channels, for the groups that have some.
    """
    check_graph(graph, model, "dead_channels")
    if graph is None:
        graph = analyze(model, warn=False)
    return carried_channels(model, graph, tol).dead


def strip(
    model: keras.Model,
    graph: Optional[PruningGraph] = None,
    tol: float = 0.0,
    *,
    fold_constants: bool = False,
) -> keras.Model:
    """The model without its dead channels, rebuilt thin by :func:`kerasprune.rebuild`.

    Args:
        model: the (soft-pruned) model; it is not modified.
        graph: ``analyze(model)``, if already computed.
        tol: values and weights with ``|v| <= tol`` count as zero (0: exact zeros only).
        fold_constants: remove the channels that carry a nonzero constant too, folding
            it into the biases of the layers that read them (see the module doc).

    Returns:
        A new model whose outputs equal ``model``'s (exactly so for ``tol=0`` up to float
        rounding). A group whose channels are all removable keeps its first channel (a
        group is never emptied). Compiled like ``model`` if ``model`` is compiled.
    """
    check_graph(graph, model, "strip")
    if graph is None:
        graph = analyze(model, warn=False)
    carried = carried_channels(model, graph, tol)
    found = carried.constant if fold_constants else carried.dead
    keep, removed = {}, {}
    for name, gone in found.items():
        mask = np.ones(graph[name].size, dtype=bool)
        mask[gone] = False
        if not mask.any():
            mask[0] = True
        if not mask.all():
            keep[name] = np.nonzero(mask)[0]
            removed[name] = np.nonzero(~mask)[0]
    folds = fold_values(graph, removed, carried.values) if fold_constants else {}
    if not folds:
        return rebuild(model, keep, graph=graph)
    return rebuild_folded(model, keep, folds, graph)
