"""Stand-ins: another class that computes exactly what a block computes, and can be thinner.

Some blocks cannot be rebuilt thinner as their own class. keras-hub 0.32's
``LlamaTransformerDecoder`` sets its attention's ``head_dim`` to ``hidden_dim //
num_query_heads`` (no argument holds it), so no config of it builds fewer heads of the
same width, and its ``get_config`` fails (it reads an attribute it never sets), so it
cannot be serialized at all. keras-hub's ``MistralTransformerDecoder`` with
``sliding_window=None`` and an explicit ``head_dim`` computes the same function with the
same weights in the same order (RMS normalization, grouped-query attention with rotary
embeddings, SwiGLU feed-forward), and takes any number of heads.

A stand-in is registered for a class with a function of a layer that returns the
stand-in's config computing exactly what that layer computes, or None where it does not
(a Llama 3 rotary scaling that the stand-in lacks). The rebuilder uses it where a block
must be rebuilt thinner and its own class cannot be (a non-uniform keep-set), and says so
in a warning; a uniform selection leaves the groups that only a stand-in can remove whole,
so that the model keeps its class. Handler modules register the stand-ins of the library
they cover (:mod:`kerasprune.graph.handlers.hub_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from kerasprune.errors import RegistryError

__all__ = ["StandIn", "register_stand_in", "stand_in_for", "stand_in_config", "stand_in_pairs"]


@dataclass(frozen=True)
class StandIn:
    """The class that stands in for another, and how to configure it.

    Attributes:
        cls: the stand-in class.
        config: ``config(layer) -> dict or None``: the stand-in's constructor arguments
            that compute exactly what ``layer`` computes with ``layer``'s weights in the
            same order, or None where it cannot.
        head_dim: the stand-in's argument that holds the attention head width (None:
            it has none).
    """

    cls: type
    config: Callable[[Any], Optional[Dict[str, Any]]]
    head_dim: Optional[str] = None


_STAND_INS: Dict[type, StandIn] = {}


def register_stand_in(
    for_cls: type, cls: type, config: Callable[[Any], Optional[Dict[str, Any]]],
    head_dim: Optional[str] = None,
) -> None:
    """Let instances of ``for_cls`` be rebuilt as ``cls`` where their own class cannot
    hold the thin widths.

    Args:
        for_cls: the block class stood in for (exact class, not its subclasses).
        cls: the stand-in class, serializable by Keras.
        config: ``config(layer)``: the stand-in's config equal to ``layer`` (see
            :class:`StandIn`).
        head_dim: the stand-in's argument that holds the attention head width.

    Raises:
        RegistryError: ``for_cls`` or ``cls`` is not a class, or ``config`` is not callable.
    """
    if not isinstance(for_cls, type) or not isinstance(cls, type):
        raise RegistryError(f"register_stand_in takes two classes, got {for_cls!r} and {cls!r}")
    if not callable(config):
        raise RegistryError(f"the config of a stand-in must be callable, got {config!r}")
    _STAND_INS[for_cls] = StandIn(cls, config, head_dim)


def stand_in_for(layer: Any) -> Optional[StandIn]:
    """The stand-in registered for ``layer``'s class, if its function applies to ``layer``."""
    found = _STAND_INS.get(type(layer))
    if found is None or stand_in_config(layer, found) is None:
        return None
    return found


def stand_in_config(layer: Any, stand_in: StandIn) -> Optional[Dict[str, Any]]:
    """``stand_in``'s config for ``layer`` (None where it does not compute the same)."""
    try:
        return stand_in.config(layer)
    except Exception:  # noqa: BLE001  (an attribute missing in another library version)
        return None


def stand_in_pairs() -> Dict[type, Tuple[type, Optional[str]]]:
    """Each registered class -> (its stand-in class, the stand-in's head width argument)."""
    return {k: (v.cls, v.head_dim) for k, v in _STAND_INS.items()}
