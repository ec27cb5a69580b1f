"""Pruning schemes: one shot, and gradual rounds with fine-tuning."""

from kerasprune.pruning.gradual import GradualPruner, TargetNotMetError
from kerasprune.pruning.oneshot import prune
from kerasprune.pruning.schedules import ConstantRatio, RatioSchedule, RisingPercentile
from kerasprune.pruning.speedup import SpeedupNotReachedError, SpeedupResult, prune_for_speedup
from kerasprune.runs.target import Target, parse_target

__all__ = [
    "prune",
    "prune_for_speedup",
    "SpeedupResult",
    "SpeedupNotReachedError",
    "GradualPruner",
    "TargetNotMetError",
    "RatioSchedule",
    "ConstantRatio",
    "RisingPercentile",
    "Target",
    "parse_target",
]
