"""Stand-ins: another class that computes exactly what a block computes, and can be thinner.

Some blocks cannot be rebuilt thinner as their own class. keras-hub 0.32's
``LlamaTransformerDecoder`` sets its attention's ``head_dim`` to ``hidden_dim //
num_query_heads`` (no argument holds it), so no config of it builds fewer heads of the
same width, and its ``get_config`` fails (it reads an attribute it never sets), so it
cannot be serialized at all. keras-hub's ``MistralTransformerDecoder`` with
``sliding_window=None`` and an explicit ``head_dim`` computes the same function with the
same weights in the same order (RMS normalization, grouped-query attention with rotary
embeddings, SwiGLU feed-forward), and takes any number of heads. So does it for Phi-3's
``Phi3Decoder`` without a rotary scaling and dropout, whose sublayers have other names
(:attr:`StandIn.names` pairs them).

A stand-in is registered for a class with a function of a layer that returns the
stand-in's config computing exactly what that layer computes, or None where it does not
(a Llama 3 rotary scaling that the stand-in lacks). The rebuilder uses it where a block
must be rebuilt thinner and its own class cannot be (a non-uniform keep-set), and says so
in a warning; a uniform selection leaves the groups that only a stand-in can remove whole,
so that the model keeps its class. Handler modules register the stand-ins of the library
they cover (:mod:`kerasprune.graph.handlers.hub_attention`).

Where no class computes the same, a *graph stand-in* does: a function that calls, on the
block's inputs, core Keras layers and operations (and the block's own sublayers, built
thin where :attr:`GraphStandIn.thin` names them) that compute exactly what the block
computes for the channels kept, at any sequence length. The rebuilder traces it into the
functional model in place of the block (:func:`kerasprune.graph.composite.trace_call`):
GPT-2's ``TransformerDecoder``, whose ``key_dim`` is ``hidden_dim // num_heads``, and a
Qwen2 decoder block have one (:mod:`kerasprune.graph.handlers.hub_attention`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from kerasprune.errors import RegistryError

__all__ = [
    "StandIn", "register_stand_in", "stand_in_for", "stand_in_config", "stand_in_pairs", "stand_in_order",
    "GraphStandIn", "register_graph_stand_in", "graph_stand_in_for",
]


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
        names: the block's sublayer paths whose layer in the stand-in has another path
            (original -> stand-in); the others pair with the stand-in's layer of the
            same path.
    """

    cls: type
    config: Callable[[Any], Optional[Dict[str, Any]]]
    head_dim: Optional[str] = None
    names: Mapping[str, str] = field(default_factory=dict)


_STAND_INS: Dict[type, StandIn] = {}


def register_stand_in(
    for_cls: type, cls: type, config: Callable[[Any], Optional[Dict[str, Any]]],
    head_dim: Optional[str] = None, names: Optional[Mapping[str, str]] = None,
) -> None:
    """Let instances of ``for_cls`` be rebuilt as ``cls`` where their own class cannot
    hold the thin widths.

    Args:
        for_cls: the block class stood in for (exact class, not its subclasses).
        cls: the stand-in class, serializable by Keras.
        config: ``config(layer)``: the stand-in's config equal to ``layer`` (see
            :class:`StandIn`).
        head_dim: the stand-in's argument that holds the attention head width.
        names: sublayer paths of a ``for_cls`` block -> the paths of the stand-in's
            layers that hold the same weights, where they differ.

    Raises:
        RegistryError: ``for_cls`` or ``cls`` is not a class, ``config`` is not callable,
            or ``names`` maps anything but strings to strings.
    """
    if not isinstance(for_cls, type) or not isinstance(cls, type):
        raise RegistryError(f"register_stand_in takes two classes, got {for_cls!r} and {cls!r}")
    if not callable(config):
        raise RegistryError(f"the config of a stand-in must be callable, got {config!r}")
    names = dict(names or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
        raise RegistryError(f"the names of a stand-in map sublayer paths to paths, got {names!r}")
    _STAND_INS[for_cls] = StandIn(cls, config, head_dim, names)


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


def stand_in_order(
    stand_in: StandIn, original: Sequence[str], substitute: Sequence[str]
) -> List[Optional[int]]:
    """For each of the stand-in's sublayer paths ``substitute``, the position in
    ``original`` (the block's sublayer paths) of the layer holding its weights, or None
    where the block has none (a layer without weights)."""
    where = {stand_in.names.get(path, path): i for i, path in enumerate(original)}
    return [where.get(path) for path in substitute]


@dataclass(frozen=True)
class GraphStandIn:
    """A function of fresh layers that computes what a block's call computes.

    Some blocks cannot be rebuilt thinner as their own class and, traced, give a graph
    that holds for one sequence length only (keras-hub's ``TransformerDecoder`` builds its
    causal mask from the length). A graph stand-in is written once per class: called
    like the block (``call(block, kept, *args, **kwargs)``, on symbolic tensors of any
    length), it builds fresh layers (core Keras, or the block's library's own) with the
    block's sublayer configs and names and returns the block's outputs computed with
    them, or None for a call it does not cover. The rebuilder then holds the block as
    the functional model of that call, whose layers pair with the block's sublayers by
    path and take their weights, and edits their widths like any layer's, except those
    of the sublayers named in :attr:`thin`, which the function builds thin itself from
    ``kept`` (sublayer name -> its channel masks, or None where it keeps them all).

    Attributes:
        call: ``call(block, kept, *args, **kwargs) -> outputs or None``.
        applies: ``applies(block) -> bool``: whether the block is one ``call`` covers
            (its own build, not a call's arguments).
        thin: the names of the block's sublayers that ``call`` builds thin itself.
        what: what stands in, for messages.
    """

    call: Callable[..., Any]
    applies: Callable[[Any], bool]
    thin: Tuple[str, ...] = ()
    what: str = "a functional model of core Keras layers"


_GRAPH_STAND_INS: Dict[type, GraphStandIn] = {}


def register_graph_stand_in(
    for_cls: type, call: Callable[..., Any], applies: Optional[Callable[[Any], bool]] = None,
    thin: Sequence[str] = (), what: str = "a functional model of core Keras layers",
) -> None:
    """Let calls of ``for_cls`` blocks be rebuilt as the functional model ``call`` builds
    (see :class:`GraphStandIn`) where their own class cannot hold the thin widths.

    Args:
        for_cls: the block class stood in for (exact class, not its subclasses).
        call: ``call(block, kept, *args, **kwargs)``: the block's outputs computed with
            fresh layers, or None where it does not cover the call.
        applies: ``applies(block)``: whether ``call`` covers this block (default: every
            block of the class).
        thin: names of the block's sublayers that ``call`` builds thin itself.
        what: what stands in, for messages.

    Raises:
        RegistryError: ``for_cls`` is not a class, or ``call`` or ``applies`` is not
            callable.
    """
    if not isinstance(for_cls, type):
        raise RegistryError(f"register_graph_stand_in takes a class, got {for_cls!r}")
    if not callable(call) or (applies is not None and not callable(applies)):
        raise RegistryError(f"a graph stand-in takes functions, got {call!r} and {applies!r}")
    _GRAPH_STAND_INS[for_cls] = GraphStandIn(call, applies or (lambda block: True), tuple(thin), what)


def graph_stand_in_for(layer: Any) -> Optional[GraphStandIn]:
    """The graph stand-in registered for ``layer``'s class, if it covers ``layer``."""
    found = _GRAPH_STAND_INS.get(type(layer))
    if found is None:
        return None
    try:
        return found if found.applies(layer) else None
    except Exception:  # noqa: BLE001  (an attribute missing in another library version)
        return None
