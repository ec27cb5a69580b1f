"""Graph analysis: which channels of a Keras model must be pruned together."""

from kerasprune.graph import handlers  # noqa: F401  (registers the built-in families)
from kerasprune.graph.analysis import (
    ChannelGroup,
    LayerRecord,
    Member,
    NodeContext,
    PruningGraph,
    analyze,
    functional_of,
    iter_layers,
)
from kerasprune.graph.handlers import PassThroughHandler, PerChannelHandler
from kerasprune.graph.layout import Layout
from kerasprune.graph.registry import LayerHandler, handler_for, register_handler

__all__ = [
    "analyze",
    "PruningGraph",
    "ChannelGroup",
    "Member",
    "NodeContext",
    "LayerRecord",
    "Layout",
    "LayerHandler",
    "PassThroughHandler",
    "PerChannelHandler",
    "register_handler",
    "handler_for",
    "functional_of",
    "iter_layers",
]
