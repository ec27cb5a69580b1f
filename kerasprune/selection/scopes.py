"""Selection scopes: how many steps each candidate group takes.

Each scope is a small function ``(candidates, budget, ratio, options) -> steps`` (one
step count per candidate; ``options`` the round's
:class:`~kerasprune.selection.options.SelectionOptions`), registered by name in
:data:`SCOPES`:

- ``global`` (Wang et al. (2017)): every step of every group ranked together by score, the
  lowest taken until the budget is spent; or, with ``method="percentile"``
  (Salama et al. (2019)), every channel below the ``ratio``-th percentile of all scores.
- ``layerwise``: every group loses the same fraction of its channels (the uniform
  baseline of the papers); with a parameter or FLOPs budget, the common fraction is
  the one that spends the budget.
- ``hierarchical`` (Liu and Wu (2019)): groups are put into levels by feature-map size; the
  budget is shared among the levels in proportion to their channels (or, with
  ``hierarchy="flops"``, to the MACs of their layers) and spent globally inside each.

Budgets are in the selection's unit (channels, parameters or MACs). A step is taken
when the budget spent so far plus half the step's cost does not exceed the budget, so
the spend is the nearest reachable to the budget; a group whose guards stop it simply
offers no more steps and the others absorb the rest.

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

from typing import Callable, Dict, List, Optional, Protocol, Sequence

import numpy as np

from kerasprune.selection.candidates import Candidate

__all__ = [
    "SCOPES", "ScopeOptions", "take_lowest", "spent_cost", "global_scope", "layerwise_scope",
    "hierarchical_scope",
]


class ScopeOptions(Protocol):
    """What a scope reads of the round's options (a
    :class:`~kerasprune.selection.options.SelectionOptions`, which checks scope names
    against :data:`SCOPES`, so this module does not import it)."""

    @property
    def unit(self) -> str:
        """``neurons``, ``params`` or ``flops``."""

    @property
    def method(self) -> str:
        """``count`` or ``percentile``."""

    @property
    def hierarchy(self) -> str:
        """``channels`` or ``flops``: the hierarchical scope's shares."""


def take_lowest(
    cands: Sequence[Candidate], budget: float, start: Optional[List[int]] = None
) -> List[int]:
    """Take the lowest-scoring steps across ``cands`` until ``budget`` is spent.

    Ties break by group position in the graph, then by step. ``start`` gives steps
    already taken (their cost is not counted against ``budget``).
    """
    taken = list(start) if start is not None else [0] * len(cands)
    if not cands or budget <= 0:
        return taken
    which, step, score, cost, pos = [], [], [], [], []
    for i, c in enumerate(cands):
        ks = np.arange(taken[i], c.limit)
        which.append(np.full(len(ks), i))
        step.append(ks)
        score.append(c.step_scores[ks])
        cost.append(c.step_costs[ks])
        pos.append(np.full(len(ks), c.position))
    which, step, score, cost, pos = (np.concatenate(a) for a in (which, step, score, cost, pos))
    if not len(which):
        return taken
    order = np.lexsort((step, pos, score))
    cost = cost[order]
    over = np.cumsum(cost) - cost / 2.0 > budget
    n = int(np.argmax(over)) if over.any() else len(order)
    for i, k in zip(which[order[:n]], step[order[:n]]):
        taken[i] = max(taken[i], int(k) + 1)
    return taken


def spent_cost(cands: Sequence[Candidate], steps: Sequence[int]) -> float:
    """Total cost (in the selection's unit) of taking ``steps[i]`` steps of ``cands[i]``."""
    return float(sum(c.cost(k) for c, k in zip(cands, steps)))


def _percentile_steps(cands: Sequence[Candidate], ratio: float) -> List[int]:
    scores = np.concatenate([c.scores for c in cands]) if cands else np.zeros(0)
    if not len(scores):
        return [0] * len(cands)
    threshold = float(np.percentile(scores, 100.0 * ratio))
    return [c.below(threshold) for c in cands]


def global_scope(
    cands: Sequence[Candidate], budget: float, ratio: float, options: ScopeOptions
) -> List[int]:
    """Wang et al. (2017): lowest ``N * r`` across all groups; Salama et al. (2019): percentile."""
    if options.method == "percentile":
        return _percentile_steps(cands, ratio)
    return take_lowest(cands, budget)


def layerwise_scope(
    cands: Sequence[Candidate], budget: float, ratio: float, options: ScopeOptions
) -> List[int]:
    """The same fraction of every group (per-group percentile with ``method="percentile"``)."""
    if options.method == "percentile":
        return [_percentile_steps([c], ratio)[0] for c in cands]

    def steps_at(f: float) -> List[int]:
        return [min(c.limit, int(round(c.size * f / c.blocks))) for c in cands]

    if options.unit == "neurons":  # the ratio itself
        return steps_at(ratio)
    # parameters or FLOPs: the common fraction whose removal spends the budget
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if spent_cost(cands, steps_at(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    below, above = steps_at(lo), steps_at(hi)
    if abs(spent_cost(cands, above) - budget) < abs(spent_cost(cands, below) - budget):
        return above
    return below


def hierarchical_scope(
    cands: Sequence[Candidate], budget: float, ratio: float, options: ScopeOptions
) -> List[int]:
    """Liu and Wu (2019): levels by feature-map size, budget shared by channels or FLOPs."""
    levels: Dict[int, List[int]] = {}
    for i, c in enumerate(cands):
        levels.setdefault(c.spatial, []).append(i)
    weight = {}
    for size, members in levels.items():
        if options.hierarchy == "flops":
            weight[size] = float(sum(cands[i].level_flops for i in members))
        else:
            weight[size] = float(sum(cands[i].size for i in members))
    total = sum(weight.values())
    if total <= 0:  # no MACs anywhere (a model of Dense-free pass-throughs): by channels
        weight = {s: float(sum(cands[i].size for i in m)) for s, m in levels.items()}
        total = sum(weight.values())
    steps = [0] * len(cands)
    for size in sorted(levels, reverse=True):
        members = levels[size]
        sub = [cands[i] for i in members]
        if options.method == "percentile":
            got = _percentile_steps(sub, ratio)
        else:
            got = take_lowest(sub, budget * weight[size] / total)
        for i, k in zip(members, got):
            steps[i] = k
    if options.method != "percentile":
        # a level whose guards stopped it early leaves budget: spend it globally
        left = budget - spent_cost(cands, steps)
        if left > 0:
            steps = take_lowest(cands, left, start=steps)
    return steps


#: scope name -> selection function
SCOPES: Dict[str, Callable[..., List[int]]] = {
    "global": global_scope,
    "layerwise": layerwise_scope,
    "hierarchical": hierarchical_scope,
}
