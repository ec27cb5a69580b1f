"""kerasprune: structured pruning for Keras 3.

Remove whole filters and neurons from a trained Keras model and get back a new,
thinner ``keras.Model``::

    import kerasprune as kp

    graph = kp.analyze(model)                 # channel groups
    keep = {g.name: range(g.size // 2) for g in graph.prunable}
    thin = kp.rebuild(model, keep, graph=graph)
    print(kp.count_params(thin).total, kp.count_flops(thin).total)

The package follows the data: ``graph`` (channel groups), ``surgery`` (the rebuilder)
and ``report`` (counts).
"""

from kerasprune.errors import (
    FrozenGroupError,
    KeepSetError,
    KerasPruneError,
    UnsupportedModelError,
)
from kerasprune.graph import (
    ChannelGroup,
    LayerHandler,
    Member,
    PassThroughHandler,
    PerChannelHandler,
    PruningGraph,
    analyze,
    register_handler,
)
from kerasprune.report import count_flops, count_params
from kerasprune.surgery import mask_weights, rebuild

__version__ = "0.1.0"

__all__ = [
    "analyze",
    "rebuild",
    "mask_weights",
    "count_params",
    "count_flops",
    "PruningGraph",
    "ChannelGroup",
    "Member",
    "LayerHandler",
    "PassThroughHandler",
    "PerChannelHandler",
    "register_handler",
    "KerasPruneError",
    "UnsupportedModelError",
    "KeepSetError",
    "FrozenGroupError",
]
