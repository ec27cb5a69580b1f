"""``select``: from scores per channel to the keep-set of a round.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Salama et al. (2019), global normalized-L1 pruning: Abdullah Salama, Oleksiy Ostapenko,
  Tassilo Klein and Moin Nabi, "Pruning at a Glance: Global Neural Pruning for Model
  Compression", arXiv preprint, 2019; arXiv:1912.00200.
- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np

from kerasprune.costs.channels import ChannelCosts, RemovalMeter, channel_costs
from kerasprune.costs.counting import count_params
from kerasprune.errors import SelectionError
from kerasprune.graph.groups import ChannelGroup, PruningGraph
from kerasprune.selection.candidates import Candidate
from kerasprune.selection.scopes import SCOPES, spent_cost

__all__ = ["select", "check_options", "excluded_groups", "UNITS", "METHODS", "HIERARCHIES"]

UNITS = ("neurons", "params", "flops")
METHODS = ("count", "percentile")
HIERARCHIES = ("channels", "flops")


def _producer_layers(group: ChannelGroup) -> List[str]:
    return [p.split(":", 1)[0] for p in group.producers]


def excluded_groups(graph: PruningGraph, patterns: Iterable[str]) -> set:
    """Names of the groups matched by ``patterns``.

    A pattern (``fnmatch`` syntax: ``conv*``, ``block_?_out``) matches a group by the
    group's name or by the name (or nested path) of one of the layers producing it, so
    ``exclude=["fc1"]`` keeps every neuron of layer ``fc1``.

    Raises:
        SelectionError: a pattern matches nothing (with the closest names).
    """
    out = set()
    for pat in patterns:
        pat = str(pat)
        hit = False
        for g in graph.groups:
            names = [g.name] + _producer_layers(g)
            if any(fnmatch.fnmatchcase(n, pat) for n in names):
                out.add(g.name)
                hit = True
        if not hit:
            known = sorted({n for g in graph.groups for n in [g.name] + _producer_layers(g)})
            close = difflib.get_close_matches(pat, known, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
            raise SelectionError(
                f"exclude pattern {pat!r} matches no channel group or producing layer of "
                f"model '{graph.model.name}'.{hint}"
            )
    return out


def _check(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise SelectionError(f"unknown {name} {value!r}; use one of: {', '.join(allowed)}")


def check_options(
    ratio: Optional[float] = None,
    *,
    scope: str = "global",
    unit: str = "neurons",
    method: str = "count",
    hierarchy: str = "channels",
    min_channels: int = 1,
    max_ratio: float = 1.0,
    round_to: int = 1,
) -> None:
    """Validate selection options (as :func:`select` takes them) before any work is done.

    Raises:
        SelectionError: the first invalid option, with the accepted values.
    """
    _check("scope", scope, tuple(SCOPES))
    _check("unit", unit, UNITS)
    _check("method", method, METHODS)
    _check("hierarchy", hierarchy, HIERARCHIES)
    if ratio is not None and not 0.0 <= float(ratio) < 1.0:
        raise SelectionError(f"ratio must be in [0, 1), got {ratio}")
    if not 0.0 < float(max_ratio) <= 1.0:
        raise SelectionError(f"max_ratio must be in (0, 1], got {max_ratio}")
    if int(min_channels) < 1:
        raise SelectionError(f"min_channels must be at least 1 (no group may be emptied), got {min_channels}")
    if int(round_to) < 1:
        raise SelectionError(f"round_to must be a positive integer, got {round_to}")
    if method == "percentile" and unit != "neurons":
        raise SelectionError("method='percentile' thresholds channel scores; use unit='neurons'")


def _candidates(
    graph: PruningGraph,
    scores: Mapping[str, np.ndarray],
    skip: set,
    unit: str,
    costs: Optional[ChannelCosts],
    min_channels: int,
    max_ratio: float,
    round_to: int,
) -> List[Candidate]:
    cands = []
    for pos, g in enumerate(graph.groups):
        if not g.prunable or g.name in skip or g.name not in scores:
            continue
        s = np.asarray(scores[g.name], dtype=np.float64).reshape(-1)
        if s.shape != (g.size,):
            raise SelectionError(
                f"scores of group {g.name!r} have {s.size} entries; the group has {g.size} channels"
            )
        if not np.isfinite(s).all():
            raise SelectionError(f"scores of group {g.name!r} contain NaN or infinity")
        if unit == "neurons":
            c = np.ones(g.size)
        else:
            c = getattr(costs, unit)[g.name]
        cands.append(
            Candidate(
                group=g,
                position=pos,
                scores=s,
                costs=c,
                spatial=costs.spatial[g.name] if costs is not None else 1,
                level_flops=costs.layer_flops[g.name] if costs is not None else 0.0,
                min_keep=max(int(min_channels), g.size - int(np.floor(g.size * max_ratio + 1e-9))),
                round_to=int(round_to),
            )
        )
    return cands


def select(
    graph: PruningGraph,
    scores: Mapping[str, np.ndarray],
    ratio: float,
    *,
    scope: str = "global",
    unit: str = "neurons",
    model: Optional[keras.Model] = None,
    min_channels: int = 1,
    max_ratio: float = 1.0,
    round_to: int = 1,
    exclude: Iterable[str] = (),
    hierarchy: str = "channels",
    method: str = "count",
) -> Dict[str, np.ndarray]:
    """Choose the channels to remove in one round; return what to keep.

    The amount is ``ratio`` of the ``unit``: of the channels of the scored groups
    (``neurons``: ``round(N * ratio)`` of them, Wang et al. (2017)), of the model's parameters or
    of its multiply-adds per example (``params``, ``flops``, as counted by
    :func:`kerasprune.count_params` / :func:`~kerasprune.count_flops`; channels are
    costed by :func:`~kerasprune.costs.channels.channel_costs`). A group always loses its
    lowest-scoring channels first.

    Args:
        graph: the model's :func:`~kerasprune.analyze` result.
        scores: group name -> one score per channel (low = remove first), as returned by
            :func:`kerasprune.importance.score`. Prunable groups without scores are left
            alone; frozen groups are never touched.
        ratio: fraction of the unit to remove, in [0, 1).
        scope: ``global`` (one ranking over all groups), ``layerwise`` (the same fraction
            of every group) or ``hierarchical`` (Liu and Wu (2019): levels by feature-map size,
            global inside each).
        unit: ``neurons``, ``params`` or ``flops``.
        model: the analyzed model, for ``params``/``flops`` (default ``graph.model``).
        min_channels: no group keeps fewer channels (default 1: never emptied).
        max_ratio: no group loses more than this fraction of its channels.
        round_to: every pruned group keeps a multiple of this many channels (widths
            that suit vector units); untouched groups keep their width.
        exclude: groups to leave alone, as ``fnmatch`` patterns of group names or of
            producing layer names.
        hierarchy: hierarchical shares by ``channels`` or by ``flops`` of each level.
        method: ``count`` (the lowest ``ratio`` of the unit) or ``percentile`` (every
            channel below the ``100 * ratio``-th percentile of the scores, Salama et al. (2019);
            neurons only).

    Returns:
        group name -> sorted indices of the channels to keep, for the groups that lose
        channels only (``{}`` when nothing can be removed). Pass it to
        :func:`kerasprune.rebuild`. Equal scores break ties by graph order, then by
        channel index, so the result is deterministic.

    Raises:
        SelectionError: an invalid argument, scores that do not fit the graph, or an
            ``exclude`` pattern that matches nothing.
    """
    check_options(
        ratio, scope=scope, unit=unit, method=method, hierarchy=hierarchy,
        min_channels=min_channels, max_ratio=max_ratio, round_to=round_to,
    )
    ratio = float(ratio)
    unknown = [n for n in scores if n not in graph]
    if unknown:
        raise SelectionError(graph.unknown_group_message(unknown[0]))
    frozen = [n for n in scores if not graph[n].prunable]
    if frozen:
        g = graph[frozen[0]]
        raise SelectionError(f"group {g.name!r} has scores but cannot be pruned: {g.reason}")
    if ratio == 0.0:
        return {}
    model = graph.model if model is None else model
    skip = excluded_groups(graph, exclude)
    names = [g.name for g in graph.prunable if g.name not in skip and g.name in scores]
    need_costs = unit != "neurons" or scope == "hierarchical"
    costs = channel_costs(graph, model, names) if need_costs else None
    cands = _candidates(graph, scores, skip, unit, costs, min_channels, max_ratio, round_to)
    meter = None if unit == "neurons" else RemovalMeter(graph, model)
    if meter is None:
        budget = float(round(ratio * sum(c.size for c in cands)))
    elif unit == "params":
        budget = ratio * count_params(model).total
    else:
        budget = ratio * sum(meter.macs.values())  # the model's MACs, as count_flops totals them

    def choose(b: float) -> List[int]:
        got = SCOPES[scope](cands, b, ratio, method, hierarchy=hierarchy, uniform_unit=unit == "neurons")
        return [c.snap(k) for c, k in zip(cands, got)]

    if meter is None:
        steps = choose(budget)
        spent = spent_cost(cands, steps)
    else:
        everything = float(sum(c.cost(c.limit) for c in cands))
        steps, spent = _meet_budget(choose, budget, everything, lambda st: meter(_keep(cands, st))[unit])
    largest = max((float(c.step_costs.max()) for c in cands if c.limit), default=0.0)
    capped = any(k >= c.limit for c, k in zip(cands, steps))
    if method == "count" and capped and budget - spent > 0.5 * largest * max(1, round_to):
        warnings.warn(
            f"selection removes {spent:,.0f} of the {budget:,.0f} {unit} asked for: the guards "
            f"(min_channels={min_channels}, max_ratio={max_ratio}, round_to={round_to}, "
            f"{len(skip)} excluded groups) leave no more to remove",
            stacklevel=2,
        )
    return _keep(cands, steps)


def _keep(cands: Sequence[Candidate], steps: Sequence[int]) -> Dict[str, np.ndarray]:
    return {c.name: c.keep(k) for c, k in zip(cands, steps) if k > 0}


def _meet_budget(choose, budget: float, upper: float, measured) -> Tuple[List[int], float]:
    """The selection whose *measured* removal is nearest ``budget``, and that removal.

    The per-channel costs are marginal: removing a filter and the next layer's input
    channel saves their shared kernel entries once, not twice, so a selection made on
    them removes less than its budget. The budget given to the scope (``choose``) is
    adjusted by bisection over ``[0, upper]`` until the measured removal
    (``measured(steps)``) brackets the request.
    """
    lo, hi = 0.0, upper
    lo_steps, hi_steps = choose(lo), choose(hi)
    lo_got, hi_got = measured(lo_steps), measured(hi_steps)
    if hi_got <= budget:
        return hi_steps, hi_got
    for _ in range(48):
        if lo_steps == hi_steps or hi - lo <= 1e-9 * max(hi, 1.0):
            break
        mid = (lo + hi) / 2
        mid_steps = choose(mid)
        mid_got = measured(mid_steps)
        if mid_got <= budget:
            lo, lo_steps, lo_got = mid, mid_steps, mid_got
        else:
            hi, hi_steps, hi_got = mid, mid_steps, mid_got
    if abs(hi_got - budget) < abs(budget - lo_got):
        return hi_steps, hi_got
    return lo_steps, lo_got
