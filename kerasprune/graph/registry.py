"""The handler registry: layer (or operation) class -> the handler of its family.

Handlers are looked up by class, walking the class's MRO, so a subclass of a supported
layer is handled like its parent unless it overrides ``call``: then its behaviour is
unknown and kerasprune freezes the channels that pass through it (register a handler
for it with :func:`register_handler`). The handler API itself is in
:mod:`kerasprune.graph.handler`.

Handlers for the layers of optional libraries (keras-hub) live in modules that import
that library; they are imported the first time a layer of that library is looked up, so
importing kerasprune never imports keras-hub.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Type, TypeVar

from kerasprune.errors import RegistryError
from kerasprune.graph.handler import LayerHandler

__all__ = ["register_handler", "handler_for", "has_handler", "registered_handlers"]

_REGISTRY: Dict[type, LayerHandler] = {}
_FALLBACK = LayerHandler()

H = TypeVar("H", bound=LayerHandler)

# top-level package of a layer's class -> the handler modules for that package's layers,
# imported (which registers their handlers) when a layer of that package is first looked up
_LAZY: Dict[str, List[str]] = {
    "keras_hub": [
        "kerasprune.graph.handlers.hub_layers",
        "kerasprune.graph.handlers.hub_attention",
    ],
}


def _load_handlers_for(cls: type) -> None:
    """Import the handler modules registered in ``_LAZY`` for the packages of ``cls``
    and its bases (once each)."""
    for base in cls.__mro__:
        modules = _LAZY.pop(str(base.__module__).split(".")[0], None)
        for module in modules or ():
            importlib.import_module(module)


def register_handler(
    *layer_classes: type, replace: bool = False
) -> Callable[[Type[H]], Type[H]]:
    """Register a :class:`~kerasprune.LayerHandler` subclass for one or more layer classes.

    Use it as a class decorator::

        @kerasprune.register_handler(MyScale)
        class MyScaleHandler(kerasprune.PassThroughHandler):
            def slice_weights(self, layer, weights, masks):
                ...

    Args:
        *layer_classes: the Keras layer classes the handler covers.
        replace: allow replacing a handler already registered for one of the classes
            (kerasprune's own, for example). Without it such a registration is refused,
            so that two libraries cannot silently override each other.

    Returns:
        The decorator, which returns the handler class unchanged.

    Raises:
        TypeError: no layer class, or something that is not a class.
        RegistryError: a class already has a handler and ``replace`` is False.
    """
    if not layer_classes:
        raise TypeError("register_handler() needs at least one layer class")
    for cls in layer_classes:
        if not isinstance(cls, type):
            raise TypeError(f"register_handler() takes layer classes, got {cls!r}")

    def decorator(handler_cls: Type[H]) -> Type[H]:
        if not (isinstance(handler_cls, type) and issubclass(handler_cls, LayerHandler)):
            raise TypeError(f"{handler_cls!r} is not a subclass of kerasprune.LayerHandler")
        if not replace:
            for cls in layer_classes:
                old = _REGISTRY.get(cls)
                if old is not None and type(old) is not handler_cls:
                    raise RegistryError(
                        f"{cls.__name__} already has the pruning handler "
                        f"{type(old).__name__}; pass replace=True to register_handler() "
                        f"to replace it with {handler_cls.__name__}"
                    )
        instance = handler_cls()
        for cls in layer_classes:
            _REGISTRY[cls] = instance
        return handler_cls

    return decorator


def handler_for(layer: object) -> LayerHandler:
    """The handler for ``layer``: registered for its class, or inherited along its MRO.

    A subclass that overrides ``call`` does not inherit its parent's handler (it may do
    something else with its channels) and gets the freezing fallback, the base
    :class:`~kerasprune.LayerHandler`.
    """
    cls = type(layer)
    if _LAZY:
        _load_handlers_for(cls)
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


def has_handler(layer: object) -> bool:
    """Whether ``layer`` has a handler of its own (registered or inherited), not the
    freezing fallback."""
    return handler_for(layer) is not _FALLBACK


def registered_handlers() -> Dict[type, LayerHandler]:
    """A copy of the registry: layer class -> handler instance."""
    return dict(_REGISTRY)
