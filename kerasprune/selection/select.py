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

import re
import warnings
from collections import defaultdict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np

from kerasprune.costs.channels import ChannelCosts, RemovalMeter, channel_costs
from kerasprune.costs.counting import count_params
from kerasprune.errors import SelectionError
from kerasprune.graph.groups import PruningGraph
from kerasprune.selection.candidates import Candidate
from kerasprune.selection.options import SelectionOptions, resolve_options
from kerasprune.selection.scopes import SCOPES, spent_cost

__all__ = ["select", "check_ratio"]


def check_ratio(ratio: float) -> float:
    """The fraction a selection removes, checked.

    Args:
        ratio: a number in [0, 1).

    Returns:
        ``float(ratio)``.

    Raises:
        SelectionError: ``ratio`` is not a number in [0, 1).
    """
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise SelectionError(f"ratio must be a number in [0, 1), got {ratio!r}") from None
    if not 0.0 <= value < 1.0:
        raise SelectionError(f"ratio must be in [0, 1), got {ratio}")
    return value


def _candidates(
    graph: PruningGraph,
    scores: Mapping[str, np.ndarray],
    skip: set,
    costs: Optional[ChannelCosts],
    options: SelectionOptions,
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
        if options.unit == "neurons":
            c = np.ones(g.size)
        else:
            c = getattr(costs, options.unit)[g.name]
        cands.append(
            Candidate(
                group=g,
                position=pos,
                scores=s,
                costs=c,
                spatial=costs.spatial[g.name] if costs is not None else 1,
                level_flops=costs.layer_flops[g.name] if costs is not None else 0.0,
                min_keep=max(
                    options.min_channels,
                    g.size - int(np.floor(g.size * options.max_ratio + 1e-9)),
                ),
                round_to=options.round_to,
            )
        )
    return cands


def select(
    graph: PruningGraph,
    scores: Mapping[str, np.ndarray],
    ratio: float,
    *,
    scope: Optional[str] = None,
    unit: Optional[str] = None,
    model: Optional[keras.Model] = None,
    min_channels: Optional[int] = None,
    max_ratio: Optional[float] = None,
    round_to: Optional[int] = None,
    exclude: Optional[Iterable[str]] = None,
    hierarchy: Optional[str] = None,
    method: Optional[str] = None,
    uniform: Optional[bool] = None,
    hidden_size: Optional[bool] = None,
    options: Optional[SelectionOptions] = None,
) -> Dict[str, np.ndarray]:
    """Choose the channels to remove in one round; return what to keep.

    The amount is ``ratio`` of the ``unit``: of the channels of the scored groups
    (``neurons``: ``round(N * ratio)`` of them, Wang et al. (2017)), of the model's parameters or
    of its multiply-adds per example (``params``, ``flops``, as counted by
    :func:`kerasprune.count_params` / :func:`~kerasprune.count_flops`; channels are
    costed by :func:`~kerasprune.costs.channels.channel_costs`). A group always loses its
    lowest-scoring channels first.

    Example:

    ```python
    keep = select(graph, scores, 0.3, scope="layerwise", round_to=8)
    same = select(graph, scores, 0.3, options=kp.SelectionOptions(scope="layerwise", round_to=8))
    ```

    Args:
        graph: the model's :func:`~kerasprune.analyze` result.
        scores: group name -> one score per channel (low = remove first), as returned by
            :func:`kerasprune.importance.score`. Prunable groups without scores are left
            alone; frozen groups are never touched.
        ratio: fraction of the unit to remove, in [0, 1).
        scope, unit, min_channels, max_ratio, round_to, exclude, hierarchy, method,
        uniform, hidden_size: shortcuts for the fields of ``options`` (see
            :class:`~kerasprune.selection.options.SelectionOptions`; None: not given).
            ``scope``: ``global`` (one ranking over all groups), ``layerwise`` (the same
            fraction of every group) or ``hierarchical`` (Liu and Wu (2019)); ``unit``:
            ``neurons``, ``params`` or ``flops``; ``min_channels``, ``max_ratio``,
            ``round_to``: the guards; ``exclude``: ``fnmatch`` patterns of group or
            producing layer names left alone; ``hierarchy``: hierarchical shares by
            ``channels`` or ``flops``; ``method``: ``count`` or ``percentile`` (Salama et
            al. (2019), neurons only); ``uniform``: repeated groups lose the same number
            of channels (groups only a stand-in can thin stay whole); ``hidden_size``: also prune groups normalized together.
        model: the analyzed model, for ``params``/``flops`` (default ``graph.model``).
        options: every selection option in one
            :class:`~kerasprune.selection.options.SelectionOptions` (default: the
            keywords, then the defaults); a keyword given as well must agree with it.

    Returns:
        group name -> sorted indices of the channels to keep, for the groups that lose
        channels only (``{}`` when nothing can be removed). Pass it to
        :func:`kerasprune.rebuild`. Equal scores break ties by graph order, then by
        channel index, so the result is deterministic.

    Raises:
        SelectionError: an invalid argument, scores that do not fit the graph, an
            ``exclude`` pattern that matches nothing, or a keyword that contradicts
            ``options``.
    """
    opts = resolve_options(
        options, scope=scope, unit=unit, min_channels=min_channels, max_ratio=max_ratio,
        round_to=round_to, exclude=exclude, hierarchy=hierarchy, method=method,
        uniform=uniform, hidden_size=hidden_size,
    )
    ratio = check_ratio(ratio)
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
    skip = graph.matching(opts.exclude, error=SelectionError)
    if not opts.hidden_size:
        skip = set(skip) | {g.name for g in graph.prunable if not g.exact}
    if opts.uniform:  # the model keeps its classes: no group that only a stand-in can thin
        skip = set(skip) | {g.name for g in graph.prunable if g.outside_class}
    names = [g.name for g in graph.prunable if g.name not in skip and g.name in scores]
    need_costs = opts.unit != "neurons" or opts.scope == "hierarchical"
    costs = channel_costs(graph, model, names) if need_costs else None
    cands = _candidates(graph, scores, skip, costs, opts)
    meter = None if opts.unit == "neurons" else RemovalMeter(graph, model)
    if meter is None:
        budget = float(round(ratio * sum(c.size for c in cands)))
    elif opts.unit == "params":
        budget = ratio * count_params(model).total
    else:
        budget = ratio * sum(meter.macs.values())  # the model's MACs, as count_flops totals them

    repeats = _repeated(cands) if opts.uniform else []

    def choose(b: float) -> List[int]:
        got = SCOPES[opts.scope](cands, b, ratio, opts)
        for same in repeats:
            got = _even_out(cands, got, same)
        return [c.snap(k) for c, k in zip(cands, got)]

    if meter is None:
        steps = choose(budget)
        spent = spent_cost(cands, steps)
    else:
        everything = float(sum(c.cost(c.limit) for c in cands))
        steps, spent = _meet_budget(
            choose, budget, everything, lambda st: meter(_keep(cands, st))[opts.unit]
        )
    largest = max((float(c.step_costs.max()) for c in cands if c.limit), default=0.0)
    capped = any(k >= c.limit for c, k in zip(cands, steps))
    if opts.method == "count" and capped and budget - spent > 0.5 * largest * opts.round_to:
        warnings.warn(
            f"selection removes {spent:,.0f} of the {budget:,.0f} {opts.unit} asked for: the "
            f"guards (min_channels={opts.min_channels}, max_ratio={opts.max_ratio}, "
            f"round_to={opts.round_to}, "
            f"{len(skip)} excluded groups) leave no more to remove",
            stacklevel=2,
        )
    return _keep(cands, steps)


def _kind(group) -> Tuple:
    """What a group is, block numbers left out: its width, its blocks, and the layer paths
    (digits replaced) and slots of its members. Groups of one kind repeat a block."""
    members = sorted({(re.sub(r"\d+", "#", m.layer), m.slot, m.produced) for m in group.members})
    return (group.size, int(group.blocks), tuple(members))


def _repeated(cands: Sequence[Candidate]) -> List[List[int]]:
    """The candidates of each kind that occurs more than once (positions in ``cands``)."""
    kinds: Dict[Tuple, List[int]] = defaultdict(list)
    for i, c in enumerate(cands):
        kinds[_kind(c.group)].append(i)
    return [same for same in kinds.values() if len(same) > 1]


def _even_out(cands: Sequence[Candidate], steps: Sequence[int], same: Sequence[int]) -> List[int]:
    """``steps`` with every candidate of ``same`` taking the mean of their steps (rounded,
    within the guards of each)."""
    out = list(steps)
    mean = int(round(float(np.mean([steps[i] for i in same]))))
    k = min([mean] + [cands[i].limit for i in same])
    for i in same:
        out[i] = k
    return out


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
