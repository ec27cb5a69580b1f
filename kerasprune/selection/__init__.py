"""Selection: from scores per channel to which channels a round removes.

::

    from kerasprune.importance import score
    from kerasprune.selection import select

    keep = select(graph, score(model), 0.05)                      # Wang et al. (2017): global 5%
    keep = select(graph, scores, 0.3, scope="hierarchical", unit="flops", hierarchy="flops")
    thin = kp.rebuild(model, keep, graph=graph)

Scopes live in :mod:`~kerasprune.selection.scopes`, one function each; a group's
removal steps and guards in :mod:`~kerasprune.selection.candidates`; channel costs for
parameter and FLOPs budgets in :mod:`kerasprune.costs.channels`.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
"""

from kerasprune.errors import SelectionError
from kerasprune.selection.scopes import SCOPES
from kerasprune.selection.select import HIERARCHIES, METHODS, UNITS, check_options, excluded_groups, select

__all__ = [
    "select",
    "excluded_groups",
    "check_options",
    "SelectionError",
    "SCOPES",
    "UNITS",
    "METHODS",
    "HIERARCHIES",
]
