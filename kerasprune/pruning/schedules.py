"""How much to remove in each round of a gradual run (serializable, like Keras objects).

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Salama et al. (2019), global normalized-L1 pruning: Abdullah Salama, Oleksiy Ostapenko,
  Tassilo Klein and Moin Nabi, "Pruning at a Glance: Global Neural Pruning for Model
  Compression", arXiv preprint, 2019; arXiv:1912.00200.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Union

from kerasprune.errors import ScheduleError

__all__ = ["RatioSchedule", "ConstantRatio", "RisingPercentile", "get_schedule"]


class RatioSchedule:
    """Base class: ``schedule(round, removed_so_far) -> fraction of the current model to remove``.

    ``round`` counts from 1; ``removed_so_far`` is the fraction of the original
    neurons (or parameters, or FLOPs: the run's unit) already removed.
    """

    def __call__(self, round: int, removed_so_far: float) -> float:  # pragma: no cover
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so that ``type(s)(**s.get_config())`` rebuilds it."""
        return {}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "RatioSchedule":
        """Rebuild a schedule from :meth:`get_config`."""
        return cls(**config)

    def describe(self) -> Dict[str, Any]:
        """``{"class_name": ..., "config": ...}``, as written in a run directory."""
        return {"class_name": type(self).__name__, "config": self.get_config()}


class ConstantRatio(RatioSchedule):
    """The same fraction of the current model every round (Wang et al. (2017): r = 0.05)."""

    def __init__(self, ratio: float = 0.05) -> None:
        if not 0.0 < float(ratio) < 1.0:
            raise ScheduleError(f"the ratio per round must be in (0, 1), got {ratio!r}")
        self.ratio = float(ratio)

    def __call__(self, round: int, removed_so_far: float) -> float:
        return self.ratio

    def get_config(self) -> Dict[str, Any]:
        return {"ratio": self.ratio}


class RisingPercentile(RatioSchedule):
    """A rising cumulative target, as in Salama et al. (2019): prune p%, retrain, raise p.

    Round k aims at ``min(final, start + (k-1) * step)`` of the original amount removed
    in total; the fraction of the current model to remove is derived from what is
    already gone.
    """

    def __init__(self, start: float = 0.5, step: float = 0.1, final: float = 0.99) -> None:
        if not (0.0 < start < 1.0 and 0.0 < final < 1.0 and step >= 0.0):
            raise ScheduleError("start and final must be in (0, 1) and step >= 0")
        self.start, self.step, self.final = float(start), float(step), float(final)

    def __call__(self, round: int, removed_so_far: float) -> float:
        goal = min(self.final, self.start + (round - 1) * self.step)
        left = 1.0 - removed_so_far
        if left <= 0.0 or goal <= removed_so_far:
            return 0.0
        return min(0.99, (goal - removed_so_far) / left)

    def get_config(self) -> Dict[str, Any]:
        return {"start": self.start, "step": self.step, "final": self.final}


_SCHEDULES = {c.__name__: c for c in (ConstantRatio, RisingPercentile)}


def get_schedule(value: Union[float, RatioSchedule, Dict[str, Any], Callable]) -> RatioSchedule:
    """A schedule from a float (constant ratio), a schedule, or its ``describe()`` dict."""
    if isinstance(value, RatioSchedule):
        return value
    if isinstance(value, dict):
        cls = _SCHEDULES.get(value.get("class_name"))
        if cls is None:
            raise ScheduleError(f"unknown schedule {value.get('class_name')!r}; known: {sorted(_SCHEDULES)}")
        return cls.from_config(value.get("config", {}))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ConstantRatio(float(value))
    raise ScheduleError(f"a ratio schedule must be a float or a RatioSchedule, got {value!r}")
