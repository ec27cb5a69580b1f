"""Criteria computed from the weights alone.

The *filter* of a channel is the set of kernel entries (rank >= 2) that its producer
creates: ``kernel[..., c]`` of a convolution (``k*k*c_in`` entries, ``k*k*c_in/groups``
for a grouped one), the incoming column of a Dense unit. Biases are left out.

- ``aaws``: mean |w| over the filter (average absolute weight sum, Wang et al. (2017); the
  size-normalized L1 norm of Salama et al. (2019)).
- ``l1``: sum |w| over the filter.
- ``l2``: ``sqrt(sum w^2 / n)`` over the filter's n weights (Xu et al. (2018), Eq. 3).
- ``bn_gamma``: |gamma| of the group's BatchNormalization layer(s). A group without one is
  an error that names the group (leave it out with ``exclude=``).
- ``aaws_out``: mean |w| over the weights that read the channel (the next layers' input
  slices or rows, depthwise kernels): the *outgoing* weights.
- ``aaws_dense_out``: ``aaws`` for groups made by convolutions, ``aaws_out`` for groups
  made only by Dense layers, as the original GGP notebooks did (SPEC: "the original
  notebooks used the outgoing row for Dense").

A group with several producers (several filter sets) gets, per channel, the mean of the
producers' scores; likewise for several consumers (``aaws_out``) and several
BatchNormalization layers (``bn_gamma``).

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Salama et al. (2019), global normalized-L1 pruning: Abdullah Salama, Oleksiy Ostapenko,
  Tassilo Klein and Moin Nabi, "Pruning at a Glance: Global Neural Pruning for Model
  Compression", arXiv preprint, 2019; arXiv:1912.00200.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import keras
import numpy as np

from kerasprune.graph.groups import ChannelGroup
from kerasprune.importance.base import ScoringContext, register_criterion
from kerasprune.importance.filters import ChannelWeights, combine_layers, producer_layers

__all__ = ["aaws", "l1", "l2", "bn_gamma", "aaws_out", "aaws_dense_out"]


def _score_layers(
    ctx: ScoringContext,
    group: ChannelGroup,
    layers: List[ChannelWeights],
    per_layer: Callable[[ChannelWeights], np.ndarray],
    what: str,
) -> np.ndarray:
    if not layers:
        raise ctx.fail(group, f"it has no {what}")
    combined = combine_layers([per_layer(cw) for cw in layers])
    missing = np.nonzero(np.isnan(combined))[0]
    if missing.size:
        raise ctx.fail(group, f"channels {missing[:5].tolist()} have no {what}")
    return combined


def _mean_abs(cw: ChannelWeights) -> np.ndarray:
    return cw.reduce(np.abs, "mean")


def _sum_abs(cw: ChannelWeights) -> np.ndarray:
    return cw.reduce(np.abs, "sum")


def _rms(cw: ChannelWeights) -> np.ndarray:
    return np.sqrt(cw.reduce(np.square, "mean"))


def _filters(ctx: ScoringContext, per_layer: Callable[[ChannelWeights], np.ndarray]) -> Dict[str, np.ndarray]:
    return {
        g.name: _score_layers(ctx, g, ctx.filters(g), per_layer, "filter weights (a kernel its producer creates)")
        for g in ctx.groups
    }


def _outgoing(ctx: ScoringContext, group: ChannelGroup) -> np.ndarray:
    return _score_layers(ctx, group, ctx.outgoing(group), _mean_abs, "outgoing weights (no layer reads it with a kernel)")


@register_criterion("aaws", needs="weights")
def aaws(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Mean |w| of each channel's filter, AAWS (Wang et al. (2017); Salama et al. (2019))."""
    return _filters(ctx, _mean_abs)


@register_criterion("l1", needs="weights")
def l1(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """L1 norm of each channel's filter: sum |w|."""
    return _filters(ctx, _sum_abs)


@register_criterion("l2", needs="weights")
def l2(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Size-normalized L2 norm of each filter: sqrt(sum w^2 / n) (Xu et al. (2018), Eq. 3)."""
    return _filters(ctx, _rms)


@register_criterion("bn_gamma", needs="weights")
def bn_gamma(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """|gamma| of the group's BatchNormalization layer(s) (mean over several)."""
    out = {}
    for g in ctx.groups:
        out[g.name] = _score_layers(
            ctx, g, ctx.bn_scales(g), lambda cw: cw.per_channel(np.abs(cw.values()), "mean"),
            "BatchNormalization layer with a gamma (scale=True)",
        )
    return out


@register_criterion("aaws_out", needs="weights")
def aaws_out(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Mean |w| of the weights that read each channel (its outgoing weights)."""
    return {g.name: _outgoing(ctx, g) for g in ctx.groups}


def _made_by_dense(ctx: ScoringContext, group: ChannelGroup) -> bool:
    producers = producer_layers(ctx.graph, group)
    return bool(producers) and all(isinstance(p, keras.layers.Dense) for p in producers)


@register_criterion("aaws_dense_out", needs="weights")
def aaws_dense_out(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """AAWS of the filters, except Dense-made groups: mean |w| of their outgoing rows."""
    out = {}
    for g in ctx.groups:
        if _made_by_dense(ctx, g):
            out[g.name] = _outgoing(ctx, g)
        else:
            out[g.name] = _score_layers(ctx, g, ctx.filters(g), _mean_abs, "filter weights")
    return out
