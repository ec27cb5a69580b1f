"""Graph analysis: which channels of a Keras model must be pruned together.

Words used throughout kerasprune:

- **channel**: one filter of a convolution (one output channel) or one unit of a Dense
  layer (a *neuron*), and every place downstream that carries it.
- **source**: a set of channels created at one place: a layer's slot (a convolution's
  filters), a model input, the output of a layer kerasprune cannot slice.
- **layout**: which channel of which source sits at each position of one tensor axis
  (:class:`~kerasprune.graph.layout.Layout`). A ``Concatenate`` lays several sources
  side by side; a ``Flatten`` repeats each channel ``H*W`` times.
- **slot**: a named place in a layer that holds channels: ``"out"`` (the channels it
  produces), ``"in"`` (the input channels its weights read), ``"channels"`` (per-channel
  parameters: BatchNormalization, depthwise kernels), or a family's own names.
- **member**: one ``(layer, slot)`` that holds channels of a group
  (:class:`~kerasprune.graph.groups.Member`).
- **group**: the channels that every member must lose together
  (:class:`~kerasprune.graph.groups.ChannelGroup`): a convolution's filters, the
  BatchNormalization after it, the next convolution's input channels, every input of a
  residual ``Add``. Pruning decisions are made per group, never per layer.
- **alias**: a source that is only a view of another layout (a gate coupled channel by
  channel to a concatenation), resolved to what it views.
- **frozen reason**: why a group may not lose channels (it reaches a model output, it
  passes through a layer without a handler, ...); a group with none is *prunable*.
- **blocks**: a group split into equal blocks that must keep the same number of
  channels each (grouped convolutions kept aligned, GroupNormalization). A grouped
  convolution can instead lose whole groups (``analyze(model, grouped_conv="groups")``,
  the default with one input channel per group): one channel of its group is then one
  convolution group.
- **FLOPs**: everywhere in kerasprune, multiply-adds (MACs): a convolution costs
  ``c_out * c_in * k^2 * h_out * w_out`` per example.

The phases of :func:`analyze`:

1. *Read the graph* (:mod:`~kerasprune.graph.keras_graph`): the call nodes of the
   functional model in topological order, nested models entered.
2. *Walk* (:mod:`~kerasprune.graph.analysis`): each model input is a frozen source; each
   call's handler (:mod:`~kerasprune.graph.handler`, looked up in
   :mod:`~kerasprune.graph.registry`) turns its inputs' layouts into its outputs'
   layouts, creates sources for what it produces, binds the slots its weights read, and
   couples (unifies) or freezes layouts. Coupled sources are merged with a union-find.
   Keras operations in the graph (``x + 3.0``, ``keras.ops.relu(x)``, ``x[:, 0]``) are
   calls like layer calls, with handlers of their own
   (:mod:`~kerasprune.graph.handlers.ops`).
3. *Freeze the outputs*: channels that reach a model output are frozen.
4. *Group* (:mod:`~kerasprune.graph.groups`): each class of merged sources becomes a
   :class:`ChannelGroup` with its members, blocks and frozen reasons, in a
   :class:`PruningGraph` that the rest of kerasprune reads by group name.

Which weight entries hold which channel (:mod:`~kerasprune.graph.entries`) is derived
from each handler's own slicing. Which constructor argument of a composite layer or a
model subclass sets which sublayer width can be stated with
:func:`~kerasprune.graph.constructors.register_constructor` (else the rebuilder probes
the class); another class that computes what a block computes and can hold thinner
widths than the block's own, with
:func:`~kerasprune.graph.stand_ins.register_stand_in`; a function of core Keras layers
that computes what a block computes, at any sequence length, with
:func:`~kerasprune.graph.stand_ins.register_graph_stand_in`.
"""

from kerasprune.graph import handlers  # noqa: F401  (registers the built-in families)
from kerasprune.graph.analysis import analyze
from kerasprune.graph.composite import iter_calls, iter_layers
from kerasprune.graph.constructors import (
    constructor_for,
    register_constructor,
    registered_constructors,
    unregister_constructor,
)
from kerasprune.graph.groups import ChannelGroup, Member, PruningGraph, check_graph
from kerasprune.graph.handler import LayerHandler, LayerRecord, NodeContext, SlotMasks
from kerasprune.graph.handlers import PassThroughHandler, PerChannelHandler
from kerasprune.graph.keras_graph import functional_of
from kerasprune.graph.layout import Layout
from kerasprune.graph.registry import handler_for, register_handler, registered_handlers
from kerasprune.graph.stand_ins import (
    graph_stand_in_for,
    register_graph_stand_in,
    register_stand_in,
    stand_in_for,
)

__all__ = [
    "analyze",
    "PruningGraph",
    "ChannelGroup",
    "Member",
    "check_graph",
    "NodeContext",
    "LayerRecord",
    "SlotMasks",
    "Layout",
    "LayerHandler",
    "PassThroughHandler",
    "PerChannelHandler",
    "register_handler",
    "registered_handlers",
    "handler_for",
    "register_constructor",
    "unregister_constructor",
    "registered_constructors",
    "constructor_for",
    "register_stand_in",
    "stand_in_for",
    "register_graph_stand_in",
    "graph_stand_in_for",
    "functional_of",
    "iter_calls",
    "iter_layers",
]
