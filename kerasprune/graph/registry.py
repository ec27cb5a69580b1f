"""The handler registry: one small class per layer family says how channels pass through it.

A handler answers four questions about the layers of its family:

* ``analyze(ctx)``: given the channel layouts of a call's inputs, what are the layouts of
  its outputs, which channels does the layer create (``ctx.produce``), and which input
  channels do its weights depend on (``ctx.bind``)?
* ``edit_config(layer, config, masks)``: how does the layer's config change when its
  slots keep only the channels in ``masks``?
* ``slice_weights(layer, weights, masks)``: the same for its weight arrays.
* ``macs(layer, node)``: how many multiply-adds one call costs.

Handlers are looked up by layer class, walking the class's MRO, so a subclass of a
supported layer is handled like its parent unless it overrides ``call``: then its
behaviour is unknown and kerasprune freezes the channels that pass through it (register
a handler for it with :func:`register_handler`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Sequence, Type, TypeVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from kerasprune.graph.analysis import NodeContext
    from kerasprune.graph.layout import Layout

__all__ = ["LayerHandler", "register_handler", "handler_for", "registered_handlers"]

Masks = Mapping[str, Optional[np.ndarray]]


class LayerHandler:
    """Base class of the per-family handlers.

    The base class is what kerasprune does with a layer it does not know: every channel
    that enters it is frozen, and each output gets a fresh frozen source.

    Attributes:
        exact: False for layers whose output on the kept channels changes when other
            channels are removed (LayerNormalization and GroupNormalization statistics,
            for example). Pruning through them is allowed, but the thin model is then
            not exactly the cut-off original.
    """

    exact: bool = True

    def analyze(self, ctx: "NodeContext") -> Sequence[Optional["Layout"]]:
        """Record one call of the layer; returns the layouts of its outputs."""
        reason = (
            f"passes through layer '{ctx.path}' ({type(ctx.layer).__name__}), "
            "which kerasprune cannot slice"
        )
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


_REGISTRY: Dict[type, LayerHandler] = {}
_FALLBACK = LayerHandler()

H = TypeVar("H", bound=LayerHandler)


def register_handler(
    *layer_classes: type,
) -> Callable[[Type[H]], Type[H]]:
    """Register a :class:`LayerHandler` subclass for one or more layer classes.

    Use it as a class decorator::

        @kerasprune.register_handler(MyScale)
        class MyScaleHandler(kerasprune.PassThroughHandler):
            def slice_weights(self, layer, weights, masks):
                ...

    A later registration for the same layer class replaces the earlier one.

    Args:
        *layer_classes: the Keras layer classes the handler covers.

    Returns:
        The decorator, which returns the handler class unchanged.
    """
    if not layer_classes:
        raise TypeError("register_handler() needs at least one layer class")
    for cls in layer_classes:
        if not isinstance(cls, type):
            raise TypeError(f"register_handler() takes layer classes, got {cls!r}")

    def decorator(handler_cls: Type[H]) -> Type[H]:
        if not (isinstance(handler_cls, type) and issubclass(handler_cls, LayerHandler)):
            raise TypeError(
                f"{handler_cls!r} is not a subclass of kerasprune.LayerHandler"
            )
        instance = handler_cls()
        for cls in layer_classes:
            _REGISTRY[cls] = instance
        return handler_cls

    return decorator


def handler_for(layer: object) -> LayerHandler:
    """The handler for ``layer``: registered for its class, or inherited along its MRO.

    A subclass that overrides ``call`` does not inherit its parent's handler (it may do
    something else with its channels) and gets the freezing fallback.
    """
    cls = type(layer)
    handler = _REGISTRY.get(cls)
    if handler is not None:
        return handler
    for base in cls.__mro__[1:]:
        handler = _REGISTRY.get(base)
        if handler is not None:
            if getattr(cls, "call", None) is getattr(base, "call", None):
                return handler
            break
    return _FALLBACK


def registered_handlers() -> Dict[type, LayerHandler]:
    """A copy of the registry: layer class -> handler instance."""
    return dict(_REGISTRY)
