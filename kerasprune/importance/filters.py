"""The weights of a group's channels, layer by layer, as flat index arrays.

Built on :meth:`PruningGraph.entries`, which says for every weight entry of every
member which channel of the group it holds. Three views are used by the criteria:

- the *filters*: the entries of rank >= 2 that the producers create (a conv's kernel
  slice ``[..., c]``, a Dense unit's incoming column); biases are left out;
- the *outgoing* weights: the entries of rank >= 2 of the layers that read the channels
  without creating them (the next conv's input slice, the next Dense's rows, a depthwise
  kernel);
- the *BatchNormalization scales*: the ``gamma`` entries of the group's BatchNormalization
  layers.

Each view is one :class:`ChannelWeights` per layer. A group made by several layers (a
residual group: a block's last conv and its shortcut conv) is scored layer by layer, and
the layers' per-channel scores are combined by :func:`combine_layers`: **the mean, over the
layers that hold the channel, of each layer's score**.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import keras
import numpy as np

from kerasprune.graph.entries import WeightEntries
from kerasprune.graph.groups import ChannelGroup, PruningGraph

__all__ = [
    "ChannelWeights",
    "filter_weights",
    "outgoing_weights",
    "bn_scales",
    "combine_layers",
    "producer_layers",
]


@dataclass(frozen=True)
class ChannelWeights:
    """The entries of one layer's weights that hold the channels of one group.

    Attributes:
        layer: path of the layer.
        size: number of channels of the group.
        entries: the :class:`WeightEntries` gathered (one per weight array).
        variables: the weight variable of each entry block, in the same order.
    """

    layer: str
    size: int
    entries: Tuple[WeightEntries, ...]
    variables: Tuple[object, ...]

    @property
    def channel(self) -> np.ndarray:
        """The channel of every entry (all weight arrays concatenated)."""
        return np.concatenate([e.channel for e in self.entries]).astype(np.int64)

    @property
    def counts(self) -> np.ndarray:
        """Entries per channel (0 for a channel this layer does not hold)."""
        return sum(e.counts(self.size) for e in self.entries)

    def values(self) -> np.ndarray:
        """The current values of the entries, as float64, aligned with :attr:`channel`."""
        parts = [
            np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64).ravel()[e.flat]
            for e, v in zip(self.entries, self.variables)
        ]
        return np.concatenate(parts)

    def per_channel(self, values: np.ndarray, reduce: str = "mean") -> np.ndarray:
        """Sum or mean of per-entry ``values`` for each channel; NaN where not held."""
        total = np.bincount(self.channel, weights=values, minlength=self.size).astype(np.float64)
        return self._finish(total, reduce)

    def reduce(self, fn: Callable[[np.ndarray], np.ndarray], reduce: str = "mean") -> np.ndarray:
        """Sum or mean over each channel's entries of ``fn(weight values)`` (``fn``
        element-wise, e.g. ``np.abs``); NaN where not held.

        Equals ``per_channel(fn(values()), reduce)``, without gathering the entries of
        the weights that hold the channels along one axis (kernels).
        """
        total = np.zeros(self.size)
        for e, v in zip(self.entries, self.variables):
            array = np.asarray(keras.ops.convert_to_numpy(v))
            if not np.issubdtype(array.dtype, np.floating):
                array = array.astype(np.float64)
            total += e.reduce_axis(fn(array), self.size)  # sums in float64
        return self._finish(total, reduce)

    def _finish(self, total: np.ndarray, reduce: str) -> np.ndarray:
        counts = self.counts
        out = np.full(self.size, np.nan)
        held = counts > 0
        out[held] = total[held] if reduce == "sum" else total[held] / counts[held]
        return out


def _layers_by_path(graph: PruningGraph) -> Dict[str, keras.layers.Layer]:
    return {rec.path: rec.layer for rec in graph.records}


def _grouped(graph: PruningGraph, group: ChannelGroup, keep: Callable[[WeightEntries], bool]) -> List[ChannelWeights]:
    layers = _layers_by_path(graph)
    by_layer: Dict[str, List[WeightEntries]] = {}
    for e in graph.entries(group):
        if keep(e):
            by_layer.setdefault(e.layer, []).append(e)
    out = []
    for path, entries in by_layer.items():
        weights = layers[path].weights
        out.append(
            ChannelWeights(
                layer=path,
                size=group.size,
                entries=tuple(entries),
                variables=tuple(weights[e.weight] for e in entries),
            )
        )
    return out


def filter_weights(graph: PruningGraph, group: ChannelGroup) -> List[ChannelWeights]:
    """The filters of the group's channels: produced entries of rank >= 2, per producer."""
    return _grouped(graph, group, lambda e: e.produced and e.rank >= 2)


def outgoing_weights(graph: PruningGraph, group: ChannelGroup) -> List[ChannelWeights]:
    """The weights that read the group's channels: non-produced entries of rank >= 2."""
    return _grouped(graph, group, lambda e: not e.produced and e.rank >= 2)


def bn_scales(graph: PruningGraph, group: ChannelGroup) -> List[ChannelWeights]:
    """The ``gamma`` entries of every BatchNormalization layer in the group."""
    layers = _layers_by_path(graph)

    def is_gamma(e: WeightEntries) -> bool:
        return isinstance(layers[e.layer], keras.layers.BatchNormalization) and e.name == "gamma"

    return _grouped(graph, group, is_gamma)


def producer_layers(graph: PruningGraph, group: ChannelGroup) -> List[keras.layers.Layer]:
    """The layer objects that create the group's channels."""
    layers = _layers_by_path(graph)
    seen: List[str] = []
    for m in group.members:
        if m.produced and m.layer not in seen:
            seen.append(m.layer)
    return [layers[p] for p in seen]


def combine_layers(per_layer: Sequence[np.ndarray]) -> np.ndarray:
    """Combine per-layer channel scores (NaN: the layer does not hold the channel).

    Each channel gets the mean of the scores of the layers that hold it; a channel held
    by no layer gets NaN (the caller reports it).
    """
    stack = np.vstack([np.asarray(s, dtype=np.float64) for s in per_layer])
    held = ~np.isnan(stack)
    n = held.sum(axis=0)
    total = np.where(held, stack, 0.0).sum(axis=0)
    out = np.full(stack.shape[1], np.nan)
    out[n > 0] = total[n > 0] / n[n > 0]
    return out
