"""Per-group normalization of channel scores.

A global ranking compares the channels of different groups, whose raw scores can differ
by orders of magnitude (early layers respond more strongly, late layers have smaller
weights). Each group's scores are therefore divided by a per-group scale:

- ``layer_mean`` (Wang et al. (2017), Eq. 2): ``s'_i = s_i / mean_j s_j``; the group's mean
  becomes 1. It is the per-layer relative norm ``N_l * x_n / sum_j x_j`` of the two factors
  of Xu et al. (2018), Eq. 5, and both are :func:`relative_norm`, the one implementation
  (for numpy arrays here, for TensorFlow tensors inside the ``gsfp`` step).
- ``l2`` (Liu and Wu (2019), Eq. 4): ``s'_i = s_i / sqrt(sum_j s_j^2)``; the group's vector gets
  unit Euclidean length.
- ``none``: the raw scores (as float64 copies).

A group whose scale is 0 (every score 0) is returned unchanged (all zeros), never NaN.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Mapping

import keras
import numpy as np

from kerasprune.errors import ImportanceError

__all__ = ["normalize", "normalize_group", "available_normalizations", "relative_norm"]


def relative_norm(values: Any, held: Any = None) -> Any:
    """The per-layer relative norm ``N * x_n / sum_j x_j`` over the ``N`` held channels.

    The normalization of both factors of Xu et al. (2018), Eq. 5, and the ``layer_mean``
    of Wang et al. (2017), Eq. 2 (``x_n / mean_j x_j``): one implementation for numpy
    arrays (computed with numpy) and for backend tensors (with ``keras.ops``, so that it
    traces into a compiled train step).

    Args:
        values: a 1-D numpy array or tensor of per-channel values.
        held: which channels count (a boolean array or tensor of the same length); None:
            all of them.

    Returns:
        The same kind of array as ``values``: the relative norm where held, 0 elsewhere.
        Where the held values sum to 0 (every value 0, for non-negative scores) or to a
        non-finite number, the held values are returned as they are.
    """
    xp = np if isinstance(values, np.ndarray) else keras.ops
    zero, one = xp.zeros_like(values), xp.ones_like(values)
    if held is None:
        held = xp.ones_like(values, dtype="bool")
    kept = xp.where(held, values, zero)
    count = xp.sum(xp.where(held, one, zero))
    total = xp.sum(kept)
    usable = xp.logical_and(xp.isfinite(total), xp.not_equal(total, 0))
    unit = xp.ones_like(total)
    return kept * xp.where(usable, count / xp.where(usable, total, unit), unit)


def _layer_mean(s: np.ndarray) -> np.ndarray:
    return relative_norm(s)


def _l2(s: np.ndarray) -> np.ndarray:
    scale = float(np.sqrt(np.sum(s * s))) if s.size else 0.0
    return s / scale if scale != 0.0 and np.isfinite(scale) else s.copy()


def _none(s: np.ndarray) -> np.ndarray:
    return s.copy()


_METHODS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "layer_mean": _layer_mean,
    "l2": _l2,
    "none": _none,
}


def available_normalizations() -> List[str]:
    """The names accepted by :func:`normalize` (and ``score(normalization=...)``)."""
    return list(_METHODS)


def check_method(method: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function of normalization ``method``.

    Raises:
        ImportanceError: ``method`` is not a known normalization; the message lists the
            known names and the closest ones.
    """
    fn = _METHODS.get(method) if isinstance(method, str) else None
    if fn is None:
        close = difflib.get_close_matches(str(method), list(_METHODS), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ImportanceError(
            f"unknown normalization {method!r}.{hint} Known normalizations: "
            f"{', '.join(_METHODS)}."
        )
    return fn


def normalize_group(scores: np.ndarray, method: str = "layer_mean") -> np.ndarray:
    """Normalize the scores of one group (a 1-D array); returns a new float64 array."""
    return check_method(method)(np.asarray(scores, dtype=np.float64).ravel())


def normalize(scores: Mapping[str, np.ndarray], method: str = "layer_mean") -> Dict[str, np.ndarray]:
    """Normalize every group's scores on its own.

    Args:
        scores: group name -> one score per channel (as returned by
            :func:`kerasprune.importance.raw_scores`).
        method: ``layer_mean`` (divide by the group's mean, Wang et al. (2017), Eq. 2), ``l2``
            (divide by the group's Euclidean norm, Liu and Wu (2019), Eq. 4) or ``none``.

    Returns:
        group name -> float64 array, same keys and order. A group whose scores are all
        zero stays all zero.

    Raises:
        ImportanceError: unknown ``method``.
    """
    fn = check_method(method)
    return {name: fn(np.asarray(s, dtype=np.float64).ravel()) for name, s in scores.items()}
