"""Reading a result: per-layer comparisons of two models, plots, TensorBoard output.

The counts themselves (parameters, multiply-adds, latency) are in :mod:`kerasprune.costs`.

The plotting functions (:func:`plot_pattern`, :func:`plot_run`, :func:`plot_saliency`,
from :mod:`kerasprune.report.plots`) and the TensorBoard writer
(:class:`TensorBoardWriter`, from :mod:`kerasprune.report.tensorboard`) are loaded on
first use, so importing kerasprune never imports matplotlib.
"""

from importlib import import_module
from typing import Any

from kerasprune.report.compare import ModelStats, compare, layer_widths, model_stats

_LAZY = {
    "plot_pattern": "kerasprune.report.plots",
    "plot_run": "kerasprune.report.plots",
    "plot_saliency": "kerasprune.report.plots",
    "pattern_data": "kerasprune.report.plots",
    "TensorBoardWriter": "kerasprune.report.tensorboard",
    "read_events": "kerasprune.report.tensorboard",
}

__all__ = [
    "compare",
    "model_stats",
    "layer_widths",
    "ModelStats",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Load the plotting and TensorBoard names on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kerasprune.report' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
