"""Reading a result: parameter and multiply-add counts."""

from kerasprune.report.counting import FlopCount, ParamCount, count_flops, count_params

__all__ = ["count_params", "count_flops", "ParamCount", "FlopCount"]
