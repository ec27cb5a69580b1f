"""Pruning schemes: one shot, and gradual rounds with fine-tuning."""

from kerasprune.pruning.gradual import GradualPruner, TargetNotMetError
from kerasprune.pruning.oneshot import prune
from kerasprune.pruning.schedules import ConstantRatio, RatioSchedule, RisingPercentile
from kerasprune.pruning.target import Target, parse_target

__all__ = [
    "prune",
    "GradualPruner",
    "TargetNotMetError",
    "RatioSchedule",
    "ConstantRatio",
    "RisingPercentile",
    "Target",
    "parse_target",
]
