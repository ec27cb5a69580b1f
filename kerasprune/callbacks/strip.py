"""``strip``: the thin model, without the channels that carry nothing.

After soft pruning (:class:`~kerasprune.callbacks.SoftFilterPruning`, or
:func:`~kerasprune.surgery.mask.mask_weights` by hand) the masked channels are still in
the model, as zeros. ``strip`` finds them from the weights alone, so it works on any
model, one reloaded from a ``.keras`` file included, and removes them with
:func:`kerasprune.rebuild`.

A channel of a prunable group is *dead* when every weight entry that holds it is zero
(``|w| <= tol``) in every member of the group: the producers' filters and biases, the
per-channel parameters of the layers it passes through (BatchNormalization ``gamma`` and
``beta``, depthwise kernels, ...) and the next layers' input weights. BatchNormalization
moving statistics are not looked at (with ``gamma`` and ``beta`` zero they do not reach
the output). With every one of those zero the channel neither receives nor passes
anything, so removing it leaves the outputs unchanged (up to float rounding in sums over
fewer terms). A channel whose filter is zero but whose BatchNormalization ``beta`` is not
still sends a constant to the next layer and is kept.
"""

from __future__ import annotations

from typing import Dict, Optional

import keras
import numpy as np

from kerasprune.graph.analysis import analyze
from kerasprune.graph.composite import iter_layers
from kerasprune.graph.groups import PruningGraph, check_graph
from kerasprune.surgery.rebuild import rebuild

__all__ = ["strip", "dead_channels"]

_IGNORED = ("moving_mean", "moving_variance")


def dead_channels(model: keras.Model, graph: Optional[PruningGraph] = None, tol: float = 0.0) -> Dict[str, np.ndarray]:
    """The channels of each prunable group that carry nothing (see the module doc).

    Args:
        model: a functional or Sequential model.
        graph: ``analyze(model)``, if already computed.
        tol: entries with ``|w| <= tol`` count as zero.

    Returns:
        group name -> sorted indices of the dead channels, for the groups that have some.
    """
    check_graph(graph, model, "dead_channels")
    if graph is None:
        graph = analyze(model, warn=False)
    layers = dict(iter_layers(model))
    values: Dict[tuple, np.ndarray] = {}
    out: Dict[str, np.ndarray] = {}
    for group in graph.prunable:
        alive = np.zeros(group.size, dtype=bool)
        produced = np.zeros(group.size, dtype=bool)
        for e in graph.entries(group):
            if e.name.split("/")[-1] in _IGNORED:
                continue
            key = (e.layer, e.weight)
            if key not in values:
                var = layers[e.layer].weights[e.weight]
                values[key] = np.asarray(keras.ops.convert_to_numpy(var)).reshape(-1)
            big = np.abs(values[key][e.flat].astype(np.float64)) > tol
            np.logical_or.at(alive, e.channel, big)
            if e.produced:
                produced[np.unique(e.channel)] = True
        dead = np.nonzero(~alive & produced)[0]
        if dead.size:
            out[group.name] = dead
    return out


def strip(model: keras.Model, graph: Optional[PruningGraph] = None, tol: float = 0.0) -> keras.Model:
    """The model without its dead channels, rebuilt thin by :func:`kerasprune.rebuild`.

    Args:
        model: the (soft-pruned) model; it is not modified.
        graph: ``analyze(model)``, if already computed.
        tol: weights with ``|w| <= tol`` count as zero (0: exact zeros only).

    Returns:
        A new model whose outputs equal ``model``'s (exactly so for ``tol=0`` up to float
        rounding). A group whose channels are all dead keeps its first channel (a group
        is never emptied). Compiled like ``model`` if ``model`` is compiled.
    """
    check_graph(graph, model, "strip")
    if graph is None:
        graph = analyze(model, warn=False)
    keep = {}
    for name, dead in dead_channels(model, graph, tol).items():
        mask = np.ones(graph[name].size, dtype=bool)
        mask[dead] = False
        if not mask.any():
            mask[0] = True
        if not mask.all():
            keep[name] = np.nonzero(mask)[0]
    return rebuild(model, keep, graph=graph)
