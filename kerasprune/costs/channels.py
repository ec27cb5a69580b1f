"""What each channel of a group costs: parameters, multiply-adds, feature-map size.

Selection by parameters or FLOPs (``unit="params"`` / ``"flops"``) and the FLOPs shares
of hierarchical selection need, for every channel, how much removing it alone saves:

- **parameters**: the weight entries that depend on the channel, read from
  :meth:`PruningGraph.entries` (so they follow the handlers' own slicing: the filter,
  its bias and BatchNormalization entries, and the next layers' input weights);
- **multiply-adds**: for every layer holding the channel, the layer's MACs times the
  share of the layer's slot the channel occupies (removing ``m`` of ``c`` output
  channels of a convolution cuts its MACs and the next convolution's by ``m / c``, as
  Liu and Wu (2019) count in their Table 1). These are *marginal* costs, exact for one channel;
  removing many channels of a layer and of its successor at once saves a little less
  than the sum (the product term), so a FLOPs budget is met to within that term.
- **feature-map size**: the number of spatial positions of the producers' output
  (``H * W`` for a convolution, 1 for a Dense layer), which groups the channels into
  the levels of the hierarchical selection of Liu and Wu (2019).

:class:`RemovalMeter` then measures what a whole keep-set removes, without building
the thin model: parameters exactly (an entry goes when any channel it depends on
goes), multiply-adds as each layer's MACs times the kept fraction of each of its
changed slots (exact for convolutions and Dense layers, whose work is bilinear in
their input and output widths). Selection uses it to meet parameter and FLOPs
budgets that the marginal costs alone would miss.

References:

- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional

import keras
import numpy as np

from kerasprune.costs.counting import count_flops
from kerasprune.graph.composite import iter_calls
from kerasprune.graph.entries import AxisPositions
from kerasprune.graph.groups import ChannelGroup, PruningGraph, check_graph

__all__ = ["ChannelCosts", "channel_costs", "RemovalMeter"]


@dataclass
class ChannelCosts:
    """Per-channel costs of the groups of one graph.

    Attributes:
        params: group name -> parameters removed with each channel.
        flops: group name -> multiply-adds (per example) removed with each channel.
        spatial: group name -> positions of the feature map the group's channels run
            along (the producers' output, ``1`` for vectors).
        layer_flops: group name -> MACs of the layers producing the group.
    """

    params: Dict[str, np.ndarray] = field(default_factory=dict)
    flops: Dict[str, np.ndarray] = field(default_factory=dict)
    spatial: Dict[str, int] = field(default_factory=dict)
    layer_flops: Dict[str, int] = field(default_factory=dict)


def _param_costs(graph: PruningGraph, group: ChannelGroup) -> np.ndarray:
    # an entry reached through two slots of one layer (a recurrent kernel read by the
    # unit's input and recurrent slots) counts once per channel it depends on
    pairs: Dict[tuple, list] = {}
    for e in graph.entries(group):
        pairs.setdefault((e.layer, e.weight), []).append(e.flat.astype(np.int64) * group.size + e.channel)
    cost = np.zeros(group.size, dtype=np.float64)
    for chunks in pairs.values():
        both = chunks[0] if len(chunks) == 1 else np.unique(np.concatenate(chunks))
        cost += np.bincount(both % group.size, minlength=group.size)
    return cost


def _first_calls(model: keras.Model) -> Dict[str, object]:
    first: Dict[str, object] = {}
    for path, _, node in iter_calls(model):
        first.setdefault(path, node)
    return first


def _spatial(node, axis: int) -> int:
    outs = getattr(node, "outputs", None) or []
    if not outs:
        return 1
    shape = tuple(outs[0].shape)
    dims = [d for i, d in enumerate(shape) if i not in (0, axis) and d is not None]
    return int(math.prod(dims)) if dims else 1


def channel_costs(
    graph: PruningGraph,
    model: Optional[keras.Model] = None,
    groups: Optional[Iterable[str]] = None,
) -> ChannelCosts:
    """Parameters and multiply-adds removed with each channel, and feature-map sizes.

    Args:
        graph: the model's :func:`~kerasprune.analyze` result.
        model: the analyzed model (default: ``graph.model``).
        groups: names of the groups to cost (default: every prunable group).

    Returns:
        A :class:`ChannelCosts` keyed by group name.
    """
    check_graph(graph, model if model is not None else graph.model, "channel_costs")
    model = graph.model if model is None else model
    names = [g.name for g in graph.prunable] if groups is None else list(groups)
    macs = count_flops(model).per_layer
    first = _first_calls(model)
    out = ChannelCosts()
    for name in names:
        group = graph[name]
        out.params[name] = _param_costs(graph, group)
        flops = np.zeros(group.size, dtype=np.float64)
        spatial, produced_macs, seen = 1, 0, set()
        for m in group.members:
            if (m.layer, m.slot) in seen:
                continue
            seen.add((m.layer, m.slot))
            layer_macs = macs.get(m.layer, 0)
            if m.produced:
                produced_macs += layer_macs
                if m.layer in first:
                    spatial = max(spatial, _spatial(first[m.layer], m.axis))
            if not layer_macs:
                continue
            chan_of_pos = graph.slot_channels(m.layer, m.slot, group)
            per_channel = np.bincount(chan_of_pos[chan_of_pos >= 0], minlength=group.size)
            flops += layer_macs * per_channel / len(chan_of_pos)
        out.flops[name] = flops
        out.spatial[name] = spatial
        out.layer_flops[name] = produced_macs
    return out


class RemovalMeter:
    """Parameters and MACs a keep-set removes from the analyzed model, without rebuilding.

    Args:
        graph: the model's :func:`~kerasprune.analyze` result.
        model: the analyzed model (default: ``graph.model``).
    """

    def __init__(self, graph: PruningGraph, model: Optional[keras.Model] = None) -> None:
        check_graph(graph, model if model is not None else graph.model, "RemovalMeter")
        self.graph = graph
        self.macs = count_flops(graph.model if model is None else model).per_layer

    def __call__(self, keep: Dict[str, np.ndarray]) -> Dict[str, float]:
        """What keeping ``keep`` (group name -> kept channel indices) removes.

        Returns:
            ``{"params": ..., "flops": ...}``: parameters and MACs per example removed.
        """
        masks = {}
        for name, kept in keep.items():
            group = self.graph[name]
            mask = np.zeros(group.size, dtype=bool)
            mask[np.asarray(kept, dtype=np.int64)] = True
            masks[name] = mask
        params = flops = 0.0
        for path, slots in self.graph.slot_masks(masks).items():
            rec = self.graph.record(path)
            alive_share = 1.0
            for slot, mask in slots.items():
                alive_share *= float(mask.mean())
            flops += self.macs.get(path, 0) * (1.0 - alive_share)
            for w, var in enumerate(getattr(rec.layer, "weights", None) or []):  # ops: none
                alive = None
                for slot, mask in slots.items():
                    pos = self.graph.weight_positions(path, slot)[w]
                    if pos is None:
                        continue
                    if isinstance(pos, AxisPositions):  # the mask along one axis, broadcast
                        view = [1] * len(pos.shape)
                        view[pos.axis] = mask.size
                        ok = mask.reshape(view)
                    else:
                        ok = (pos < 0) | mask[np.maximum(pos, 0)]
                    alive = ok if alive is None else alive & ok
                if alive is not None:
                    shape = tuple(int(d) for d in var.shape)
                    params += float(math.prod(shape) - np.count_nonzero(np.broadcast_to(alive, shape)))
        return {"params": params, "flops": flops}
