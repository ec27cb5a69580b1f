"""Independent references used by the tests.

``cut_off`` builds the *original* model with the removed channels cut off: each removed
channel is zeroed where it is created (the producer's filter and bias, the
BatchNormalization's shift and mean, the depthwise bias), so it carries exactly zero to
every consumer. Keras then runs the full-width graph itself. The zeroing rules below are
this file's own knowledge of the layer classes, not kerasprune's handlers.
"""

from __future__ import annotations

import keras
import numpy as np

from kerasprune.graph.keras_graph import iter_layers
from kerasprune.surgery.keep import keep_masks


def _zero_out(layer, removed: np.ndarray):
    w = {v.name: np.array(v.numpy()) for v in layer.weights}
    cls = type(layer)
    L = keras.layers
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        w["kernel"][..., removed, :] = 0
        if "bias" in w:
            w["bias"][removed] = 0
    elif isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        w["pointwise_kernel"][..., removed] = 0
        if "bias" in w:
            w["bias"][removed] = 0
    elif isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense)) and not isinstance(
        layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)
    ):
        w["kernel"][..., removed] = 0
        if "bias" in w:
            w["bias"][removed] = 0
    elif isinstance(layer, L.Embedding):
        w["embeddings"][:, removed] = 0
    else:
        raise NotImplementedError(f"reference cannot zero outputs of {cls.__name__}")
    layer.set_weights([w[v.name] for v in layer.weights])


def _zero_channels(layer, removed: np.ndarray):
    w = {v.name: np.array(v.numpy()) for v in layer.weights}
    L = keras.layers
    if isinstance(layer, L.BatchNormalization):
        w["beta"][removed] = 0
        w["moving_mean"][removed] = 0
    elif isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        m = layer.depth_multiplier
        pos = (removed[:, None] * m + np.arange(m)[None, :]).ravel()
        if "bias" in w:
            w["bias"][pos] = 0
        key = "kernel" if "kernel" in w else "depthwise_kernel"
        w[key][..., removed, :] = 0
    elif isinstance(layer, (L.PReLU, L.Reshape, L.InputLayer)):
        return  # 0 stays 0
    else:
        raise NotImplementedError(f"reference cannot zero channels of {type(layer).__name__}")
    layer.set_weights([w[v.name] for v in layer.weights])


def cut_off(model: keras.Model, graph, keep) -> keras.Model:
    """A copy of ``model`` whose removed channels are zero wherever they are created."""
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    layers = dict(iter_layers(ref))
    masks = graph.slot_masks(keep_masks(graph, keep))
    for path, slots in masks.items():
        for slot, mask in slots.items():
            removed = np.nonzero(~mask)[0]
            if slot == "out":
                _zero_out(layers[path], removed)
            elif slot == "channels":
                _zero_channels(layers[path], removed)
    return ref


def assert_close(a, b, rtol: float = 1e-5):
    """Equal to within ``rtol`` relative to the largest magnitude of the reference."""
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        assert x.shape == y.shape, (x.shape, y.shape)
        scale = max(1.0, float(np.abs(y).max()))
        err = float(np.abs(x - y).max())
        assert err <= rtol * scale + 1e-6, f"max abs diff {err} (scale {scale})"


def random_keep(graph, rng, fraction: float = 0.5):
    """Random keep-set: about ``fraction`` of each prunable group, blocks kept equal."""
    keep = {}
    for g in graph.prunable:
        per = g.size // g.blocks
        n = max(1, int(round(per * fraction)))
        idx = []
        for b in range(g.blocks):
            idx.extend((b * per + np.sort(rng.choice(per, n, replace=False))).tolist())
        keep[g.name] = idx
    return keep
