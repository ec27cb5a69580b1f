"""Selection: from scores per channel to which channels a round removes.

::

    from kerasprune.importance import score
    from kerasprune.selection import select

    keep = select(graph, score(model), 0.05)                      # Wang et al. (2017): global 5%
    keep = select(graph, scores, 0.3, scope="hierarchical", unit="flops", hierarchy="flops")
    opts = SelectionOptions(scope="hierarchical", unit="flops", hierarchy="flops")
    keep = select(graph, scores, 0.3, options=opts)               # the same selection
    thin = kp.rebuild(model, keep, graph=graph)

The options of a selection (scope, unit, hierarchy, method, guards, exclusions) are one
:class:`~kerasprune.selection.options.SelectionOptions`, in
:mod:`~kerasprune.selection.options`; every entry point that selects also takes them as
keywords and merges them with :func:`~kerasprune.selection.options.resolve_options`.
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
from kerasprune.selection.options import (
    HIERARCHIES,
    METHODS,
    UNITS,
    SelectionOptions,
    resolve_options,
)
from kerasprune.selection.scopes import SCOPES
from kerasprune.selection.select import check_ratio, select

__all__ = [
    "select",
    "SelectionOptions",
    "resolve_options",
    "check_ratio",
    "SelectionError",
    "SCOPES",
    "UNITS",
    "METHODS",
    "HIERARCHIES",
]
