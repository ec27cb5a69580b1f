"""Reading a result: parameter and multiply-add counts, per-layer comparisons."""

from kerasprune.report.compare import ModelStats, compare, layer_widths, model_stats
from kerasprune.report.counting import FlopCount, ParamCount, count_flops, count_params

__all__ = [
    "count_params",
    "count_flops",
    "ParamCount",
    "FlopCount",
    "compare",
    "model_stats",
    "layer_widths",
    "ModelStats",
]
