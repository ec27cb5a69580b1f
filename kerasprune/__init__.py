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

The package follows the data: ``graph`` (channel groups) -> ``importance`` (scores
per channel) -> ``selection`` (which channels go) -> ``surgery`` (the rebuilder) ->
``pruning`` (one-shot and gradual loops); ``callbacks`` feed importance from inside
training; ``report`` and ``export`` read the result; ``models`` and ``data`` hold the
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

from kerasprune import callbacks, errors
from kerasprune.callbacks import strip
from kerasprune.costs import count_flops, count_params
from kerasprune.errors import *  # noqa: F403  (every error class, listed in errors.__all__)
from kerasprune.graph import (
    ChannelGroup,
    LayerHandler,
    Member,
    NodeContext,
    PassThroughHandler,
    PerChannelHandler,
    PruningGraph,
    analyze,
    register_handler,
)
from kerasprune.importance import available_criteria, register_criterion, score
from kerasprune.pruning import GradualPruner, prune, prune_for_speedup
from kerasprune.report import compare
from kerasprune.selection import SelectionOptions, select
from kerasprune.surgery import mask_weights, rebuild

__version__ = "0.1.0"

__all__ = [
    "analyze",
    "score",
    "select",
    "SelectionOptions",
    "rebuild",
    "prune",
    "prune_for_speedup",
    "GradualPruner",
    "strip",
    "callbacks",
    "mask_weights",
    "count_params",
    "count_flops",
    "compare",
    "available_criteria",
    "register_criterion",
    "PruningGraph",
    "ChannelGroup",
    "Member",
    "LayerHandler",
    "PassThroughHandler",
    "PerChannelHandler",
    "register_handler",
    "NodeContext",
    *errors.__all__,
]
