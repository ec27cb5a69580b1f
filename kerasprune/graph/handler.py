"""The handler API: what a pruning handler is given and what it may call.

A handler (one class per layer or operation family, registered with
:func:`kerasprune.register_handler`) answers four questions about the layers of its
family:

* ``analyze(ctx)``: given the channel layouts of a call's inputs (a
  :class:`NodeContext`), what are the layouts of its outputs, which channels does the
  layer create (``ctx.produce``), and which input channels do its weights depend on
  (``ctx.bind``)?
* ``edit_config(layer, config, masks)``: how does the layer's config change when its
  slots keep only the channels in ``masks`` (a :class:`SlotMasks`)?
* ``slice_weights(layer, weights, masks)``: the same for its weight arrays.
* ``macs(layer, node)``: how many multiply-adds one call costs.

and, optionally, ``weight_positions`` (which weight entries hold which slot position)
when deriving it from ``slice_weights`` would be slow. The words (source, layout, slot,
member, group) are defined in :mod:`kerasprune.graph`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Protocol, Sequence, Set, Tuple, Type

import keras
import numpy as np

from kerasprune.errors import HandlerError, KerasPruneError, first_line
from kerasprune.graph.keras_graph import describe_call
from kerasprune.graph.layout import Layout

__all__ = [
    "LayerHandler",
    "NodeContext",
    "LayerRecord",
    "SlotMasks",
    "Masks",
    "WalkState",
    "handler_step",
]

Masks = Mapping[str, Optional[np.ndarray]]


class SlotMasks(dict):
    """Slot name -> boolean mask of kept positions, with ``axes``: slot -> tensor axis."""

    def __init__(self, *args, axes: Optional[Dict[str, int]] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.axes: Dict[str, int] = dict(axes or {})


@dataclass
class LayerRecord:
    """What the analysis learned about one layer object.

    Attributes:
        layer: the layer.
        path: its path (``outer/inner`` inside nested models).
        handler: the handler of its family.
        slots: slot name -> the layout of the channels the slot holds.
        produced: the slots whose channels the layer creates.
    """

    layer: keras.layers.Layer
    path: str
    handler: "LayerHandler"
    slots: Dict[str, Layout] = field(default_factory=dict)
    produced: Set[str] = field(default_factory=set)


class WalkState(Protocol):
    """What the analyzer offers a :class:`NodeContext` (implemented by the walk)."""

    options: Mapping[str, Any]

    def new_source(self, name: str, size: int, frozen: Optional[str] = None) -> int:
        """A new set of ``size`` channels (frozen with reason ``frozen`` if given)."""

    def opaque_layout(self, name: str, shape: Sequence[Optional[int]], reason: str) -> Optional[Layout]:
        """A frozen source along the last axis of ``shape`` (None if unknown)."""

    def add_consumer_input(self, tensor: Any, layout: Layout, reader: Any = None) -> None:
        """Record that the weights of layer ``reader`` read ``tensor`` (an observable
        feature map; inside a nested model or a composite layer too)."""

    def unify(self, layouts: Sequence[Layout], where: str) -> None:
        """Couple layouts position by position."""

    def freeze_layout(self, layout: Layout, reason: str) -> None:
        """Freeze every group with channels in ``layout``."""

    def require_blocks(self, layout: Layout, blocks: int) -> bool:
        """Require equal blocks of the one source ``layout`` is; False if it is not one."""

    def warn_unsupported(self, layer: Any, path: str) -> None:
        """Record (and warn once per class) that ``layer`` has no handler."""

    enclosing: Sequence[Tuple[Any, bool]]
    """``(composite layer, traced at a fixed shape)`` of the blocks around the node now,
    outermost first."""


class NodeContext:
    """What a handler sees of one call of its layer, and the calls it can make."""

    def __init__(
        self,
        walk: "WalkState",
        record: LayerRecord,
        node: Any,
        inputs: List[Optional[Layout]],
        input_kts: Sequence[Any],
    ) -> None:
        self._an = walk
        self.record = record
        self.layer = record.layer
        self.path = record.path
        self.node = node
        self.inputs: List[Optional[Layout]] = inputs
        self.input_tensors = input_kts
        self.input_shapes: List[Tuple[Optional[int], ...]] = [tuple(t.shape) for t in input_kts]
        self.output_shapes: List[Tuple[Optional[int], ...]] = [tuple(t.shape) for t in node.outputs]
        self.top_level = "/" not in record.path

    def describe(self) -> str:
        """How reasons name this node: ``layer 'conv' (Conv2D)``, or for a Keras
        operation ``operation 'add_3' (keras.ops.add)``."""
        return describe_call(self.layer, self.path)

    @property
    def enclosing(self) -> List[Tuple[Any, bool]]:
        """The composite layers this call is inside (walked into by tracing their
        ``call``), outermost first, each with whether its trace was made at a fixed
        shape (then its sublayers can only be rebuilt by its own constructor)."""
        return list(getattr(self._an, "enclosing", ()))

    def option(self, name: str, default: Any = None) -> Any:
        """The value of analysis option ``name`` (an argument of :func:`kerasprune.analyze`,
        such as ``grouped_conv``), or ``default`` when it was not given."""
        return self._an.options.get(name, default)

    # -- looking at inputs

    def input_for(self, tensor) -> Optional[Layout]:
        """The layout of a specific input KerasTensor of this call (None if untracked)."""
        for kt, layout in zip(self.input_tensors, self.inputs):
            if kt is tensor:
                return layout
        return None

    def channel_input(self, i: int = 0, axis: Optional[int] = None) -> Optional[Layout]:
        """Input ``i``'s layout, if its channels run along ``axis`` (default: the last).

        When they run along another axis, this layer would treat them as something else
        (a spatial axis, say): the channels are frozen and None is returned.
        """
        layout = self.inputs[i] if i < len(self.inputs) else None
        if layout is None:
            return None
        rank = len(self.input_shapes[i])
        want = rank - 1 if axis is None else axis % rank
        if layout.axis == want:
            return layout
        self.freeze(
            layout,
            f"layer '{self.path}' ({type(self.layer).__name__}) reads axis {want} as its "
            f"channel axis, not axis {layout.axis} where these channels run",
        )
        return None

    # -- recording

    def produce(self, slot: str, size: int, axis: int) -> Layout:
        """The channels this layer creates in ``slot`` (one source per layer and slot)."""
        existing = self.record.slots.get(slot)
        if existing is not None:
            return existing.moved(axis)
        name = self.path if slot == "out" else f"{self.path}/{slot}"
        sid = self._an.new_source(name, size)
        layout = Layout.of_source(sid, size, axis)
        self.record.slots[slot] = layout
        self.record.produced.add(slot)
        return layout

    def bind(self, slot: str, layout: Optional[Layout]) -> Optional[Layout]:
        """Record that the layer's weights in ``slot`` read the channels of ``layout``.

        A shared layer binds once per call; all its calls are coupled to each other.
        """
        if layout is None:
            return None
        self.observe(layout)
        existing = self.record.slots.get(slot)
        if existing is None:
            self.record.slots[slot] = layout
            return layout
        self.unify([existing, layout], f"shared layer '{self.path}'")
        return existing

    def observe(self, layout: Optional[Layout]) -> None:
        """Record that the layer's weights read the channels of input ``layout`` (a feature
        map where they can be observed as activations) without binding them to a slot;
        :meth:`bind` does this itself."""
        if layout is None:
            return
        for kt, seen in zip(self.input_tensors, self.inputs):
            if seen is layout:
                self._an.add_consumer_input(kt, layout, self.layer)
                break

    def unify(self, layouts: Sequence[Optional[Layout]], where: str) -> None:
        """Couple tensors whose channels meet position by position (``Add``, shared weights)."""
        self._an.unify([l for l in layouts if l is not None], where)

    def freeze(self, layout: Optional[Layout], reason: str) -> None:
        """Mark every group with channels in ``layout`` as not prunable."""
        if layout is not None:
            self._an.freeze_layout(layout, reason)

    def require_blocks(self, layout: Optional[Layout], blocks: int) -> None:
        """Require the channels of ``layout`` to be kept in ``blocks`` equal blocks.

        The layout must be one whole source in order; otherwise it is frozen.
        """
        if layout is None or blocks <= 1:
            return
        if self._an.require_blocks(layout, blocks):
            return
        self.freeze(
            layout,
            f"{self.describe()} splits its channels into {blocks} blocks that do not "
            "line up with a single group",
        )

    def opaque_outputs(self, reason: str) -> List[Optional[Layout]]:
        """Fresh frozen sources for every output of this call (last axis as channels)."""
        outs: List[Optional[Layout]] = []
        for i, shape in enumerate(self.output_shapes):
            outs.append(self._an.opaque_layout(f"{self.path}:{i}", shape, reason))
        return outs

    def frozen_layout(self, size: Optional[int], axis: int, reason: str) -> Optional[Layout]:
        """A fresh frozen source of ``size`` channels along ``axis`` (None if size unknown)."""
        if size is None:
            return None
        sid = self._an.new_source(f"{self.path}:frozen", size, reason)
        return Layout.of_source(sid, size, axis)

    def warn_unsupported(self) -> None:
        """Warn (once per layer class) that channels through this layer are frozen."""
        self._an.warn_unsupported(self.layer, self.path)


class LayerHandler:
    """Base class of the per-family handlers.

    The base class is what kerasprune does with a layer (or Keras operation) it does
    not know: every channel that enters it is frozen, and each output gets a fresh
    frozen source. Operations (``keras.ops`` calls in a functional graph) have handlers
    like layers; they hold no weights, so only ``analyze`` (and ``edit_config`` where
    their config encodes a width) matters for them.

    Attributes:
        exact: False for layers whose output on the kept channels changes when other
            channels are removed (LayerNormalization and GroupNormalization statistics,
            for example). Pruning through them is allowed, but the thin model is then
            not exactly the cut-off original.
    """

    exact: bool = True

    def analyze(self, ctx: "NodeContext") -> Sequence[Optional["Layout"]]:
        """Record one call of the layer; returns the layouts of its outputs."""
        reason = f"passes through {ctx.describe()}, which kerasprune cannot slice"
        ctx.warn_unsupported()
        for layout in ctx.inputs:
            ctx.freeze(layout, reason)
        return ctx.opaque_outputs(reason)

    def edit_config(self, layer: "keras.layers.Layer", config: dict, masks: Masks) -> None:
        """Change ``config`` in place for the new widths (default: nothing to change)."""

    def slice_weights(
        self, layer: "keras.layers.Layer", weights: Sequence[np.ndarray], masks: Masks
    ) -> list:
        """Return the layer's weight arrays reduced to the kept channels."""
        return list(weights)

    def weight_positions(
        self, layer: "keras.layers.Layer", slot: str, size: int
    ) -> Optional[list]:
        """For each weight, the slot position each entry depends on (-1: none), or None.

        None (the default) lets kerasprune derive the answer from :meth:`slice_weights`
        (see :mod:`kerasprune.graph.entries`); override it only for a slot that cannot
        be sliced one position at a time (the input of a grouped convolution).
        """
        return None

    def macs(self, layer: "keras.layers.Layer", node) -> int:
        """Multiply-adds of one call of the layer (0 for layers without matmul work)."""
        return 0

    def passes(self, layer: "keras.layers.Layer", slot: str) -> bool:
        """Whether the layer hands the positions of ``slot`` on to its output one for one
        (per-channel parameters: BatchNormalization, depthwise kernels, PReLU), so that
        what a channel carries there matters only where later layers read it
        (:func:`kerasprune.strip`). Default: False."""
        return False

    def fold_inputs(
        self,
        layer: "keras.layers.Layer",
        slot: str,
        values: np.ndarray,
        weights: Sequence[np.ndarray],
        *,
        exact: bool = True,
    ) -> Optional[list]:
        """The layer's weights with constant inputs folded into its bias.

        Used when channels that carry a constant are removed (:func:`kerasprune.strip`
        with ``fold_constants``, :func:`kerasprune.prune` with ``compensate``): the
        layer must then compute what it computed with those inputs present.

        Args:
            layer: the layer.
            slot: the slot whose positions are removed.
            values: per position of ``slot``, the constant it carries (0 where nothing
                is folded).
            weights: the layer's weight arrays.
            exact: refuse a fold that is not exact (a convolution's zero-padded
                borders); with False, fold as if there were no padding.

        Returns:
            The new weight arrays (same shapes), or None when the layer cannot fold
            these values (then the channels are kept). The default folds nothing: it
            accepts all-zero values only.
        """
        return list(weights) if not np.any(values) else None


@contextlib.contextmanager
def handler_step(
    handler: object,
    layer: object,
    path: str,
    step: str,
    error: Type[KerasPruneError] = HandlerError,
) -> Iterator[None]:
    """Run one step of a handler (``analyze``, ``edit_config``, ``slice_weights``) so
    that an error it raises, a bug in the handler, names the handler, the layer and its
    class instead of surfacing bare; kerasprune's own errors pass unchanged.

    Args:
        handler: the handler.
        layer: the layer (or operation) it works on.
        path: the layer's path.
        step: the name of the method called.
        error: the class of the error raised (the rebuilder's is ``RebuildError``).
    """
    try:
        yield
    except KerasPruneError:
        raise
    except Exception as exc:  # whatever the handler's code raises
        first = first_line(exc)
        raise error(
            f"the pruning handler {type(handler).__name__} failed in {step}() on layer "
            f"'{path}' ({type(layer).__name__}): {type(exc).__name__}: {first[:300]}"
        ) from exc
