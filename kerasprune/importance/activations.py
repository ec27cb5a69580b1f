"""Criteria computed from the feature maps over data (Wang et al. (2017), Liu and Wu (2019)).

For every example, a channel's response ``r`` is the mean of its feature map over its
spatial positions (a Dense unit: its output); the feature map is where the group is
observed (see :mod:`~kerasprune.importance.observe`). Over the N examples read:

- ``mean_response``: ``|mean_n r_n|`` (the R of Wang et al. (2017)). After a ReLU ``R >= 0`` and the
  absolute value changes nothing; on feature maps that can be negative (no activation,
  tanh, a residual sum) it keeps every score >= 0, so that low still means weak and the
  ``layer_mean`` normalization stays meaningful.
- ``std_response``: ``sqrt(mean_n r_n^2 - (mean_n r_n)^2)``, the population standard
  deviation of ``r`` over the examples (the sigma(R) of Wang et al. (2017)).
- ``apoz``: ``1 - APoZ`` where APoZ is the fraction of zero activations (over examples
  and positions). The sign is flipped so that, like every criterion, a **low score means
  prune first**: a channel that is almost always zero scores near 0.

All three run inference (``training=False``) through one statistics model built once
(``keras.ops`` on the observed feature maps: every backend), and stream the data batch by
batch through its ``predict_on_batch``.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np
from keras import ops

from kerasprune.importance.base import ScoringContext, register_criterion
from kerasprune.importance.observe import ObservationPlan, as_list, batch_size_of, stream_sums

__all__ = ["mean_response", "std_response", "apoz"]


def _response_sums(ctx: ScoringContext, what: Callable[[Any], Any], squares: bool):
    """Mean over examples of the per-example channel values of ``what(feature map)``
    (and of their squares)."""
    plan = ObservationPlan(ctx)
    width = plan.width
    if plan.nested:
        run = plan.nested_statistics(what, squares=squares)
    else:
        run = plan.statistics_model(what, squares=squares).predict_on_batch

    def batch_sums(x, y, sw):
        parts = as_list(run(x))
        vec = np.concatenate([np.asarray(p, np.float64) for p in parts])
        return vec, batch_size_of(x)

    sums, n = stream_sums(ctx, width * (2 if squares else 1), batch_sums)
    return plan, sums[:width] / n, (sums[width:] / n if squares else None)


@register_criterion("mean_response", needs="data")
def mean_response(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """|Mean over examples of each channel's spatial-mean response| (Wang et al. (2017) R)."""
    plan, mean, _ = _response_sums(ctx, lambda t: t, squares=False)
    return plan.combine(np.abs(mean))


@register_criterion("std_response", needs="data")
def std_response(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """Std over examples of each channel's spatial-mean response (Wang et al. (2017) sigma(R))."""
    plan, mean, mean_sq = _response_sums(ctx, lambda t: t, squares=True)
    return plan.combine(np.sqrt(np.maximum(mean_sq - mean * mean, 0.0)))


@register_criterion("apoz", needs="data")
def apoz(ctx: ScoringContext) -> Dict[str, np.ndarray]:
    """1 - average percentage of zeros of each channel (low: mostly zero, pruned first)."""
    plan, zeros, _ = _response_sums(ctx, lambda t: ops.cast(ops.equal(t, 0), "float32"), squares=False)
    return plan.combine(1.0 - zeros)
