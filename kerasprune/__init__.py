"""kerasprune: structured pruning for Keras 3.

Remove whole filters and neurons from a trained Keras model and get back a new,
thinner ``keras.Model``::

    import kerasprune as kp

    graph = kp.analyze(model)                 # channel groups
    keep = {g.name: range(g.size // 2) for g in graph.prunable}
    thin = kp.rebuild(model, keep, graph=graph)
    print(kp.count_params(thin).total, kp.count_flops(thin).total)

Soft filter pruning inside ``model.fit`` (the GSFP of Xu et al. (2018)), then the thin model::

    soft = kp.callbacks.SoftFilterPruning(ratio=0.5, criterion="gsfp")
    model.fit(x, y, epochs=10, callbacks=[soft])
    thin = kp.strip(model)

One shot, or gradually as in the gradually global pruning (GGP) of Wang et al. (2017)::

    thin = kp.prune(model, 0.3, criterion="aaws", scope="global")
    opts = kp.SelectionOptions(scope="layerwise", round_to=8, exclude=["fc*"])
    thin = kp.prune(model, 0.3, options=opts)     # the selection options as one object
    pruner = kp.GradualPruner("runs/lenet", target="val_accuracy>=0.99", ratio=0.05)
    best = pruner.run(model, train_ds, val_ds)

The package follows the data, each layer importing only from those before it:
``errors`` and ``runs`` (targets, run directories, history rows) -> ``graph`` (channel
groups) -> ``costs`` (parameters, multiply-adds, latency) -> ``importance`` (scores per
channel) -> ``selection`` (which channels go) -> ``surgery`` (the rebuilder) ->
``report`` (reads results) -> ``callbacks`` (pruning inside ``fit``) -> ``pruning``
(one-shot and gradual loops) -> ``export`` -> ``cli``; ``models`` and ``data`` hold the
papers' networks and datasets.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Salama et al. (2019), global normalized-L1 pruning: Abdullah Salama, Oleksiy Ostapenko,
  Tassilo Klein and Moin Nabi, "Pruning at a Glance: Global Neural Pruning for Model
  Compression", arXiv preprint, 2019; arXiv:1912.00200.
- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Dict, List

from kerasprune import errors
from kerasprune.errors import *  # noqa: F403  (every error class, listed in errors.__all__)

__version__ = "0.1.0"

# public name -> the module that defines it, imported on first access (PEP 562), so that
# ``import kerasprune``, ``kerasprune.errors`` and ``kerasprune.cli`` load no Keras or TensorFlow
_LAZY: Dict[str, str] = {
    "analyze": "kerasprune.graph",
    "score": "kerasprune.importance",
    "select": "kerasprune.selection",
    "SelectionOptions": "kerasprune.selection",
    "rebuild": "kerasprune.surgery",
    "prune": "kerasprune.pruning",
    "prune_for_speedup": "kerasprune.pruning",
    "GradualPruner": "kerasprune.pruning",
    "strip": "kerasprune.callbacks",
    "callbacks": "kerasprune.callbacks",
    "mask_weights": "kerasprune.surgery",
    "count_params": "kerasprune.costs",
    "count_flops": "kerasprune.costs",
    "compare": "kerasprune.report",
    "load_data": "kerasprune.data",
    "available_criteria": "kerasprune.importance",
    "register_criterion": "kerasprune.importance",
    "PruningGraph": "kerasprune.graph",
    "ChannelGroup": "kerasprune.graph",
    "Member": "kerasprune.graph",
    "LayerHandler": "kerasprune.graph",
    "PassThroughHandler": "kerasprune.graph",
    "PerChannelHandler": "kerasprune.graph",
    "register_handler": "kerasprune.graph",
    "register_constructor": "kerasprune.graph",
    "NodeContext": "kerasprune.graph",
}

# the subpackages and modules reachable as attributes (``kp.report``, ``kp.models``, ...)
_SUBMODULES = (
    "runs", "graph", "costs", "importance", "selection", "surgery", "report", "callbacks",
    "pruning", "export", "models", "data", "cli",
)

__all__ = [*_LAZY, *errors.__all__]


def __getattr__(name: str) -> Any:
    """Import the module behind a public name (or a subpackage) on first access.

    Args:
        name: an attribute of ``kerasprune``: a name of ``__all__`` or a subpackage.

    Returns:
        The object (or module); it is cached in the package's namespace.

    Raises:
        AttributeError: ``name`` is neither.
    """
    if name in _LAZY:
        module = import_module(_LAZY[name])
        value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
    elif name in _SUBMODULES:
        value = import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    """The package's names, the lazy ones included (for ``dir(kerasprune)`` and completion)."""
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
