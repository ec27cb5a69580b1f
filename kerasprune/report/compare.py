"""Layer-by-layer comparison of two models (before and after pruning).

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import keras

from kerasprune.costs.counting import _table, count_flops, count_params
from kerasprune.graph.analysis import analyze
from kerasprune.graph.composite import is_container, iter_layers

__all__ = ["ModelStats", "model_stats", "layer_widths", "compare"]

_WIDTH_ATTRS = ("filters", "units", "output_dim", "num_heads")


def layer_widths(model: keras.Model) -> Dict[str, int]:
    """Width (filters, units, embedding size, heads) of every layer that has one."""
    widths = {}
    for path, layer in iter_layers(model):
        if is_container(layer):
            continue
        for attr in _WIDTH_ATTRS:
            value = getattr(layer, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                widths[path] = value
                break
    return widths


@dataclass
class ModelStats:
    """What a pruning report shows of one model."""

    params: int
    flops: int
    neurons: int
    widths: Dict[str, int] = field(default_factory=dict)
    params_per_layer: Dict[str, int] = field(default_factory=dict)
    flops_per_layer: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain-JSON form, as written into a run's history."""
        return {"params": self.params, "flops": self.flops, "neurons": self.neurons, "widths": self.widths}


def model_stats(model: keras.Model) -> ModelStats:
    """Parameters, multiply-adds, prunable neurons and per-layer widths of ``model``.

    ``neurons`` counts the channels of the prunable groups (conv filters and hidden units;
    the output layer and anything frozen are not counted), as Wang et al. (2017) count them.
    """
    params, flops = count_params(model), count_flops(model)
    graph = analyze(model, warn=False)
    return ModelStats(
        params=params.total,
        flops=flops.total,
        neurons=sum(g.size for g in graph.prunable),
        widths=layer_widths(model),
        params_per_layer=params.per_layer,
        flops_per_layer=flops.per_layer,
    )


def _pct(before: int, after: int) -> str:
    return "" if not before else f"{100.0 * (before - after) / before:.1f}%"


def compare(before: keras.Model, after: Optional[keras.Model] = None) -> str:
    """A plain-text report: per layer width, parameters and MACs, before and after.

    With one model, the same table for that model alone.
    """
    a = model_stats(before)
    if after is None:
        rows = [
            (name, a.widths.get(name, ""), f"{a.params_per_layer.get(name, 0):,}", f"{a.flops_per_layer.get(name, 0):,}")
            for name in _layer_order(a)
        ]
        rows.append(("total", a.neurons, f"{a.params:,}", f"{a.flops:,}"))
        return _table(rows, ("layer", "width", "params", "MACs"))
    b = model_stats(after)
    rows = []
    for name in _layer_order(a):
        wa, wb = a.widths.get(name), b.widths.get(name)
        rows.append(
            (
                name,
                "" if wa is None else f"{wa} -> {wb}",
                f"{a.params_per_layer.get(name, 0):,} -> {b.params_per_layer.get(name, 0):,}",
                f"{a.flops_per_layer.get(name, 0):,} -> {b.flops_per_layer.get(name, 0):,}",
            )
        )
    rows.append(("neurons", f"{a.neurons} -> {b.neurons}", _pct(a.neurons, b.neurons), ""))
    rows.append(("total params", f"{a.params:,} -> {b.params:,}", _pct(a.params, b.params), ""))
    rows.append(("total MACs", f"{a.flops:,} -> {b.flops:,}", _pct(a.flops, b.flops), ""))
    return _table(rows, ("layer", "width", "params", "MACs"))


def _layer_order(stats: ModelStats):
    seen = dict.fromkeys(list(stats.widths) + list(stats.params_per_layer) + list(stats.flops_per_layer))
    return list(seen)
