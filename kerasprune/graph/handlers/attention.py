"""MultiHeadAttention and GroupQueryAttention: whole heads are pruned; their input and
output channels are tracked.

Keras builds four (five with ``use_gate``) ``EinsumDense`` sublayers:

* ``query``, ``key``, ``value`` (and ``gate``): kernel ``(in, heads, key_dim)`` (value
  and gate: ``value_dim``), bias ``(heads, key_dim)``;
* ``attention_output``: kernel ``(heads, value_dim, *out)``, bias ``(*out)``.

Slots:

* ``"heads"`` (produced, ``num_heads`` channels): head ``h`` is slice ``[:, h]`` of the
  query, key, value and gate kernels and biases and slice ``[h]`` of the output kernel.
  Every head runs its own softmax, so dropping a head removes exactly its term of the
  output projection; ``num_heads`` changes, ``key_dim`` and ``value_dim`` stay (and so
  does the score scaling ``1/sqrt(key_dim)``).
* ``"query"``, ``"key"``, ``"value"``: the input channels each projection reads (kernel
  rows). With ``key`` omitted the key projection reads the value tensor.
* ``"out"`` (produced): the last axis of the output. With ``output_shape`` given it is
  a group of its own (``output_shape[-1]`` follows the kept width); with
  ``output_shape=None`` the output width *is* the query's width, so the output channels
  are coupled to the query's input channels (one group, like a residual ``Add``).

Returned attention scores (``return_attention_scores=True``) carry the heads on their
head axis; anything reading them sees the head group. Explicit mask tensors are frozen.

Multiply-adds: the projections (query, key, value, gate, output: ``positions * in *
heads * dim``) and the two attention products (scores ``Q K^T`` and the weighted sum of
values: ``heads * T * S * (key_dim + value_dim)`` over the attended positions); softmax
and scaling are not counted.

**Grouped-query attention** (``keras.layers.GroupQueryAttention``, and the layers of other
libraries built the same way, see :class:`GroupedHeads`): ``num_key_value_heads`` key
and value heads, each shared by ``num_query_heads // num_key_value_heads`` consecutive
query heads (``ops.repeat(key, groups, axis=2)``: query head ``u`` reads key/value head
``u // groups``). The unit of the ``"heads"`` slot is one key/value head with its query
heads, so the ratio stays an integer: the slot has ``num_key_value_heads`` channels,
and keeping key/value head ``k`` keeps query heads ``k*groups .. (k+1)*groups - 1``. A
unit is its key and value kernel columns and biases, its query (and gate) columns and
biases, and its rows of the output kernel; every query head runs its own softmax, so
removing a unit removes exactly its terms of the output projection. ``head_dim`` never
changes (nor do the score scale ``1/sqrt(head_dim)`` and rotary embeddings over it);
``num_query_heads`` and ``num_key_value_heads`` are edited. Input channels are tracked
like MultiHeadAttention's (``"query"``, ``"key"``, ``"value"``); the output width is the
query's, and the value must be as wide (one group with both). Returned scores ``(B, num_query_heads, T, S)`` carry
each unit ``groups`` times on axis 1. Multiply-adds: the projections, and
``num_query_heads * T * S * 2 * head_dim``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from keras import layers

from kerasprune.graph.groups import OutsideClass
from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import call_arg, input_index, prod
from kerasprune.graph.registry import register_handler
from kerasprune.graph.stand_ins import graph_stand_in_for, stand_in_for

__all__ = [
    "MultiHeadAttentionHandler",
    "GroupedHeads",
    "GroupedQueryAttentionHandler",
    "register_grouped_attention",
]

_ROLES = (
    ("_query_dense", "query"),
    ("_key_dense", "key"),
    ("_value_dense", "value"),
    ("_gate_dense", "gate"),
    ("_output_dense", "output"),
)


def _roles(layer) -> Dict[int, Tuple[str, str]]:
    """id(variable) -> (projection, variable name) for the layer's sublayer weights."""
    out: Dict[int, Tuple[str, str]] = {}
    for attr, role in _ROLES:
        sub = getattr(layer, attr, None)
        if sub is None:
            continue
        for v in sub.weights:
            out[id(v)] = (role, v.name)
    return out


def _heads_axis_in_scores(layer, query_rank: int) -> int:
    """Axis of the heads in the attention scores ``(<batch dims>, heads, <T>, <S>)``."""
    rank = query_rank + 1  # the projected query (B, ..., heads, dim)
    attn = tuple(int(a) for a in (layer._attention_axes or range(1, rank - 2)))
    batch_dims = [a for a in range(rank) if a not in attn and a != rank - 1]
    return len(batch_dims) - 1


def _freeze_side_inputs(ctx, used: Sequence[Optional[int]], cache: Any) -> None:
    """Freeze the channels of the call's other input tensors (masks, a key/value cache):
    the layer does not read them as channels."""
    ids = {id(ctx.input_tensors[i]) for i in used if i is not None}
    for kt, layout in zip(ctx.input_tensors, ctx.inputs):
        if id(kt) in ids or layout is None:
            continue
        what = "a key/value cache" if kt is cache else "a mask"
        ctx.freeze(layout, f"used as {what} by '{ctx.path}'")


def _cache_outputs(ctx, heads, outs: List[Any], cache: Any) -> List[Any]:
    """The outputs of a call given a key/value cache: the cache holds heads computed
    outside this call, so they stay; the returned cache is opaque."""
    ctx.freeze(heads, f"'{ctx.path}' ({type(ctx.layer).__name__}) is given a key/value cache, "
                      "whose heads come from outside the call")
    reason = f"the key/value cache '{ctx.path}' returns"
    for shape in ctx.output_shapes[len(outs):]:
        outs.append(ctx.frozen_layout(shape[-1] if shape else None, len(shape) - 1, reason))
    return outs


#: constructor arguments by which a block states the head width of its attention
HEAD_WIDTH_ARGUMENTS = ("head_dim", "key_dim")


def head_width_set_by_block(ctx) -> Optional[str]:
    """Why the heads of the attention at ``ctx`` cannot be rebuilt fewer, or None.

    Inside a composite block traced at a fixed shape (a causal decoder block), the
    attention's sublayers can only be rebuilt by the block's own constructor. A block
    whose constructor takes no head width (no ``head_dim``/``key_dim`` argument:
    keras-hub's ``TransformerDecoder`` sets ``key_dim = hidden_dim // num_heads``), or
    was given None for it, builds narrower heads from fewer heads, never fewer heads of
    the same width.
    """
    for block, fixed in ctx.enclosing:
        if not fixed:
            continue
        try:
            takes = set(inspect.signature(type(block).__init__).parameters)
            config = block.get_config()
        except Exception:  # noqa: BLE001  (the rebuild reports it)
            continue
        named = [k for k in HEAD_WIDTH_ARGUMENTS if k in takes]
        # a get_config that leaves the argument out (keras-hub's Qwen3 decoder) says
        # nothing; None means the block derives it
        if not named or all(k in config and config[k] is None for k in named):
            return (
                f"block '{block.name}' ({type(block).__name__}) sets the head width of "
                f"'{ctx.path}' from its hidden width and number of heads (no head_dim "
                "argument given), so no config of it builds fewer heads of the same width"
            )
    return None


def head_width_stand_in(ctx) -> Optional[str]:
    """Where a block enclosing the attention at ``ctx`` cannot hold fewer heads but has
    a stand-in that states the head width (:mod:`kerasprune.graph.stand_ins`): the reason
    its heads can go only with the block rebuilt as the stand-in, else None."""
    for block, fixed in ctx.enclosing:
        found = stand_in_for(block)
        if found is not None and found.head_dim is not None:
            return OutsideClass(
                f"block '{block.name}' ({type(block).__name__}) cannot hold fewer heads of "
                f"the same width; {found.cls.__name__} stands in for it"
            )
        graph = graph_stand_in_for(block) if fixed else None
        if graph is not None:
            return OutsideClass(
                f"block '{block.name}' ({type(block).__name__}) cannot hold fewer heads of "
                f"the same width; {graph.what} stands in for it"
            )
    return None


@register_handler(layers.MultiHeadAttention)
class MultiHeadAttentionHandler(LayerHandler):
    """Heads of a MultiHeadAttention are one group; input and output channels tracked."""

    def cache_argument(self, node) -> Any:
        """The key/value cache tensor a call is given (None: MultiHeadAttention has no
        cache; a subclass with one says where it is)."""
        return None

    def analyze(self, ctx):
        layer = ctx.layer
        node = ctx.node
        iq = input_index(ctx, call_arg(node, 0, "query"))
        iv = input_index(ctx, call_arg(node, 1, "value"))
        ik = input_index(ctx, call_arg(node, 2, "key"))
        if iq is None or iv is None:
            reason = f"'{ctx.path}' is called in a way kerasprune cannot read"
            for l in ctx.inputs:
                ctx.freeze(l, reason)
            return ctx.opaque_outputs(reason)
        q = ctx.channel_input(iq)
        v = ctx.channel_input(iv)
        k = v if ik is None else ctx.channel_input(ik)
        ctx.bind("query", q)
        ctx.bind("value", v)
        ctx.bind("key", k)
        q_rank = len(ctx.input_shapes[iq])
        heads = ctx.produce("heads", layer.num_heads, q_rank - 1)
        derived = head_width_set_by_block(ctx)
        if derived is not None:
            ctx.freeze(heads, head_width_stand_in(ctx) or derived)
        for method in ("_compute_attention", "_masked_softmax"):
            if getattr(type(layer), method) is not getattr(layers.MultiHeadAttention, method):
                ctx.freeze(
                    heads,
                    f"'{ctx.path}' ({type(layer).__name__}) overrides {method}, which may "
                    "mix its heads",
                )
        out_rank = len(ctx.output_shapes[0])
        out_width = ctx.output_shapes[0][-1]
        if out_width is None:
            reason = f"the output width of '{ctx.path}' is unknown"
            ctx.freeze(q, reason)
            ctx.freeze(heads, reason)
            return ctx.opaque_outputs(reason)
        out = ctx.produce("out", out_width, out_rank - 1)
        if not layer._output_shape:
            if q is None:
                ctx.freeze(
                    out,
                    f"the output width of '{ctx.path}' follows its query input, whose "
                    "channels are not tracked",
                )
            else:
                ctx.unify([out, q], f"'{ctx.path}' (output width follows the query)")
        cache = self.cache_argument(node)
        _freeze_side_inputs(ctx, (iq, iv, ik), cache)
        outs = [out]
        returned = len(ctx.output_shapes) - (cache is not None)  # a cache comes last
        if returned == 2:  # attention scores
            outs.append(heads.moved(_heads_axis_in_scores(layer, q_rank)))
        elif returned != 1:
            reason = f"'{ctx.path}' returns outputs kerasprune cannot match"
            ctx.freeze(out, reason)
            ctx.freeze(heads, reason)
            return ctx.opaque_outputs(reason)
        if cache is not None:
            return _cache_outputs(ctx, heads, outs, cache)
        return outs

    def edit_config(self, layer, config, masks):
        if masks.get("heads") is not None:
            config["num_heads"] = int(masks["heads"].sum())
        if masks.get("out") is not None and config.get("output_shape"):
            shape = config["output_shape"]
            shape = [shape] if isinstance(shape, int) else list(shape)
            shape[-1] = int(masks["out"].sum())
            config["output_shape"] = tuple(shape)

    def slice_weights(self, layer, weights, masks):
        roles = _roles(layer)
        heads = masks.get("heads")
        kout = masks.get("out")
        rows = {
            "query": masks.get("query"),
            "gate": masks.get("query"),
            "key": masks.get("key"),
            "value": masks.get("value"),
        }
        out: List[np.ndarray] = []
        for var, w in zip(layer.weights, weights):
            role, name = roles.get(id(var), (None, None))
            if role == "output":
                if name == "kernel":
                    if heads is not None:
                        w = w[heads]
                    if kout is not None:
                        w = w[..., kout]
                elif name == "bias" and kout is not None:
                    w = w[..., kout]
            elif role is not None:
                if name == "kernel":
                    if rows[role] is not None:
                        w = w[rows[role]]
                    if heads is not None:
                        w = w[:, heads]
                elif name == "bias" and heads is not None:
                    w = w[heads]
            out.append(w)
        return out

    def macs(self, layer, node):
        q = call_arg(node, 0, "query")
        v = call_arg(node, 1, "value")
        k = call_arg(node, 2, "key")
        k = v if k is None else k
        q_shape, v_shape, k_shape = (tuple(t.shape) for t in (q, v, k))
        total = 0
        positions = {"query": prod(q_shape[1:-1]), "gate": prod(q_shape[1:-1]),
                     "key": prod(k_shape[1:-1]), "value": prod(v_shape[1:-1]),
                     "output": prod(q_shape[1:-1])}
        for attr, role in _ROLES:
            sub = getattr(layer, attr, None)
            if sub is not None:
                total += positions[role] * prod(sub.kernel.shape)
        # attention products over the attended axes, per head
        rank = len(q_shape) + 1
        attn = tuple(int(a) for a in (layer._attention_axes or range(1, rank - 2)))
        free = prod(q_shape[a] for a in range(1, len(q_shape) - 1) if a not in attn)
        t = prod(q_shape[a] for a in attn)
        s = prod(v_shape[a] for a in attn)
        total += layer.num_heads * free * t * s * (layer.key_dim + layer.value_dim)
        return total


# --------------------------------------------------------------------------- grouped-query


@dataclass(frozen=True)
class GroupedHeads:
    """How a grouped-query attention layer holds its heads, as data for
    :class:`GroupedQueryAttentionHandler` (defaults: ``keras.layers.GroupQueryAttention``).

    Attributes:
        query, key, value, output: the attributes holding the ``EinsumDense``
            projections. Query, key and value kernels are ``(in, heads, head_dim)``
            (``heads_axis`` 1) or ``(heads, in, head_dim)`` (``heads_axis`` 0), their
            biases ``(heads, head_dim)``; the output kernel is ``(heads, head_dim, out)``,
            its bias ``(out,)``.
        gate: an optional projection like the query's (multiplying the attention output
            per query head), or None.
        heads_axis: the axis of the heads in the query, key and value kernels.
        inputs: the call's parameters holding the query, value and key tensors (a key
            that is not given is the value); one name for a self-attention layer called
            on one tensor.
        cache: the call parameter of a key/value cache, or None.
        query_heads_key, kv_heads_key: the config keys of the two head counts.
        head_dim_key: the argument setting ``head_dim``; where the config holds it, the
            edited config holds the built value (a None there would derive it anew);
            None for a class that has no such argument and always sets ``head_dim`` to
            its input width ``// num_query_heads``: no config of it builds fewer heads, or
            another input width, with the same ``head_dim``, so both stay.
        head_norms: sublayers normalizing the query or key over ``head_dim`` alone (Qwen3,
            Gemma3): unchanged by pruning heads, their weights must be ``(head_dim,)``.
        scale_unless: an attribute that, when False, makes the score scale
            ``1/sqrt(input width // num_query_heads)`` (Gemma's
            ``query_head_dim_normalize``): removing heads or input channels would change
            it, so both stay.
        attention_methods: methods whose override by a subclass may mix the heads.
    """

    query: str = "_query_dense"
    key: str = "_key_dense"
    value: str = "_value_dense"
    output: str = "_output_dense"
    gate: Optional[str] = "_gate_dense"
    heads_axis: int = 1
    inputs: Tuple[str, ...] = ("query", "value", "key")
    cache: Optional[str] = None
    query_heads_key: str = "num_query_heads"
    kv_heads_key: str = "num_key_value_heads"
    head_dim_key: Optional[str] = "head_dim"
    head_norms: Tuple[str, ...] = ()
    scale_unless: Optional[str] = None
    attention_methods: Tuple[str, ...] = ("_compute_attention", "_masked_softmax")

    def projections(self) -> Dict[str, str]:
        """Role (``query``, ``key``, ``value``, ``gate``, ``output``) -> attribute."""
        out = {"query": self.query, "key": self.key, "value": self.value, "output": self.output}
        if self.gate is not None:
            out["gate"] = self.gate
        return out


# layer class -> how it holds its heads (subclasses that do not override call inherit)
_GROUPED: Dict[type, GroupedHeads] = {}


def _family(layer) -> Tuple[type, GroupedHeads]:
    for cls in type(layer).__mro__:
        if cls in _GROUPED:
            return cls, _GROUPED[cls]
    raise KeyError(type(layer).__name__)


def _call_arg_named(layer, node, name: str):
    """The argument ``name`` of a call of ``layer`` (positional or keyword), or None."""
    try:
        params = [p for p in inspect.signature(type(layer).call).parameters if p != "self"]
    except (TypeError, ValueError):
        params = []
    position = params.index(name) if name in params else 1 << 30
    return call_arg(node, position, name)


class _Call(NamedTuple):
    query: Any
    value: Any
    key: Any
    cache: Any


class _Geometry(NamedTuple):
    query_heads: int
    kv_heads: int
    head_dim: int

    @property
    def groups(self) -> int:
        return self.query_heads // self.kv_heads


def _kernel(layer, attr: str):
    sub = getattr(layer, attr, None)
    return None if sub is None else getattr(sub, "kernel", None)


class GroupedQueryAttentionHandler(LayerHandler):
    """Grouped-query attention: a key/value head and the query heads sharing it are one
    unit of the ``"heads"`` group; input and output channels tracked. The layer classes
    it handles, and how each holds its heads, are registered with
    :func:`register_grouped_attention`."""

    def _call(self, layer, node, spec: GroupedHeads) -> _Call:
        tensors = [_call_arg_named(layer, node, name) for name in spec.inputs]
        query = tensors[0]
        value = tensors[1] if len(tensors) > 1 else query
        key = tensors[2] if len(tensors) > 2 else value
        key = value if key is None else key
        cache = None if spec.cache is None else _call_arg_named(layer, node, spec.cache)
        return _Call(query, value, key, cache)

    def _geometry(self, layer, spec: GroupedHeads) -> _Geometry:
        q = _kernel(layer, spec.query).shape
        k = _kernel(layer, spec.key).shape
        return _Geometry(int(q[spec.heads_axis]), int(k[spec.heads_axis]), int(q[-1]))

    def _derived_width(self, ctx, spec: GroupedHeads, geo: _Geometry) -> List[str]:
        """Why the class cannot hold other heads: it derives ``head_dim`` (or nothing)."""
        if spec.head_dim_key is not None:
            return []
        what = f"'{ctx.path}' ({type(ctx.layer).__name__})"
        return [
            f"{what} sets head_dim to its input width // num_query_heads (it has no "
            f"head_dim argument): no config of it builds other heads or another input "
            f"width with head_dim {geo.head_dim}"
        ]

    def _stays(self, ctx, family: type, spec: GroupedHeads, geo: _Geometry) -> Tuple[List[str], List[str]]:
        """``(why the heads stay, why the input and output width stays)``."""
        layer, what = ctx.layer, f"'{ctx.path}' ({type(ctx.layer).__name__})"
        heads: List[str] = list(self._derived_width(ctx, spec, geo))
        width: List[str] = list(heads)
        if spec.scale_unless is not None and not getattr(layer, spec.scale_unless, True):
            why = (
                f"{what} scales its scores by 1/sqrt(input width // num_query_heads) "
                f"({spec.scale_unless}=False): other heads or widths would change them"
            )
            heads.append(why)
            width.append(why)
        for method in spec.attention_methods:
            if getattr(type(layer), method, None) is not getattr(family, method, None):
                heads.append(f"{what} overrides {method}, which may mix its heads")
        known = set()
        for attr in spec.projections().values():
            sub = getattr(layer, attr, None)
            known |= {id(v) for v in (sub.weights if sub is not None else ())}
        for attr in spec.head_norms:
            sub = getattr(layer, attr, None)
            for v in sub.weights if sub is not None else ():
                known.add(id(v))
                if tuple(int(d) for d in v.shape) != (geo.head_dim,):
                    heads.append(f"{what}: '{attr}' normalizes over more than one head")
        unknown = sorted({v.path for v in layer.weights if id(v) not in known})
        if unknown:
            why = f"{what} holds weights kerasprune cannot slice: {', '.join(unknown[:3])}"
            heads.append(why)
            width.append(why)
        return heads, width

    def analyze(self, ctx):
        layer, node = ctx.layer, ctx.node
        family, spec = _family(layer)
        call = self._call(layer, node, spec)
        iq, iv, ik = (input_index(ctx, t) for t in (call.query, call.value, call.key))
        kernels = (_kernel(layer, spec.query), _kernel(layer, spec.key))
        if any(i is None for i in (iq, iv, ik) + kernels):
            reason = f"'{ctx.path}' is called in a way kerasprune cannot read"
            for l in ctx.inputs:
                ctx.freeze(l, reason)
            return ctx.opaque_outputs(reason)
        q = ctx.channel_input(iq)
        v = q if iv == iq else ctx.channel_input(iv)
        k = v if ik == iv else (q if ik == iq else ctx.channel_input(ik))
        ctx.bind("query", q)
        ctx.bind("value", v)
        ctx.bind("key", k)
        if iv != iq:  # the class requires the value as wide as the query
            if q is None or v is None:
                why = f"'{ctx.path}' needs its query and value equally wide, and one is not tracked"
                ctx.freeze(q, why)
                ctx.freeze(v, why)
            else:
                ctx.unify([q, v], f"'{ctx.path}' (value as wide as the query)")
        geo = self._geometry(layer, spec)
        q_rank = len(ctx.input_shapes[iq])
        heads = ctx.produce("heads", geo.kv_heads, q_rank - 1)
        for_heads, for_width = self._stays(ctx, family, spec, geo)
        derived = head_width_set_by_block(ctx)
        stand_in = head_width_stand_in(ctx)
        if stand_in is not None:  # the stand-in states the head width the class derives
            derived_width = self._derived_width(ctx, spec, geo)
            for_heads = [r for r in for_heads if r not in derived_width] + [stand_in]
        elif derived is not None:
            for_heads = list(for_heads) + [derived]
        for reason in for_heads:
            ctx.freeze(heads, reason)
        out_width = ctx.output_shapes[0][-1]
        if out_width is None:
            reason = f"the output width of '{ctx.path}' is unknown"
            ctx.freeze(q, reason)
            ctx.freeze(heads, reason)
            return ctx.opaque_outputs(reason)
        out = ctx.produce("out", out_width, len(ctx.output_shapes[0]) - 1)
        if q is None:
            ctx.freeze(
                out,
                f"the output width of '{ctx.path}' follows its query input, whose channels "
                "are not tracked",
            )
        else:
            ctx.unify([out, q], f"'{ctx.path}' (output width follows the query)")
        for reason in for_width:
            ctx.freeze(out, reason)
            ctx.freeze(v, reason)
            ctx.freeze(k, reason)
        _freeze_side_inputs(ctx, (iq, iv, ik), call.cache)
        outs = [out]
        returned = len(ctx.output_shapes) - (call.cache is not None)
        if returned == 2:  # scores (B, num_query_heads, T, S): each unit `groups` times
            outs.append(heads.repeated(geo.groups, 1))
        elif returned != 1:
            reason = f"'{ctx.path}' returns outputs kerasprune cannot match"
            ctx.freeze(out, reason)
            ctx.freeze(heads, reason)
            return ctx.opaque_outputs(reason)
        if call.cache is not None:
            return _cache_outputs(ctx, heads, outs, call.cache)
        return outs

    def edit_config(self, layer, config, masks):
        _, spec = _family(layer)
        geo = self._geometry(layer, spec)
        kept = masks.get("heads")
        if kept is not None:
            units = int(np.count_nonzero(kept))
            config[spec.kv_heads_key] = units
            config[spec.query_heads_key] = units * geo.groups
        if spec.head_dim_key in config:  # explicit (a None would be derived anew)
            config[spec.head_dim_key] = geo.head_dim

    def slice_weights(self, layer, weights, masks):
        _, spec = _family(layer)
        geo = self._geometry(layer, spec)
        kv = masks.get("heads")
        qh = None if kv is None else np.repeat(np.asarray(kv, bool), geo.groups)
        heads = {"query": qh, "gate": qh, "key": kv, "value": kv}
        rows = {"query": masks.get("query"), "gate": masks.get("query"),
                "key": masks.get("key"), "value": masks.get("value")}
        kout = masks.get("out")
        in_axis = 1 - spec.heads_axis
        roles: Dict[int, Tuple[str, str]] = {}
        for role, attr in spec.projections().items():
            sub = getattr(layer, attr, None)
            for var in sub.weights if sub is not None else ():
                roles[id(var)] = (role, var.name.split("/")[-1])
        out: List[np.ndarray] = []
        for var, w in zip(layer.weights, weights):
            role, name = roles.get(id(var), (None, None))
            if role == "output":
                if name == "kernel" and qh is not None:
                    w = np.compress(qh, w, axis=0)
                if kout is not None and name in ("kernel", "bias"):
                    w = np.compress(kout, w, axis=-1)
            elif role is not None and name == "kernel":
                if rows[role] is not None:
                    w = np.compress(rows[role], w, axis=in_axis)
                if heads[role] is not None:
                    w = np.compress(heads[role], w, axis=spec.heads_axis)
            elif role is not None and name == "bias" and heads[role] is not None:
                w = np.compress(heads[role], w, axis=0)
            out.append(w)
        return out

    def macs(self, layer, node):
        _, spec = _family(layer)
        call = self._call(layer, node, spec)
        geo = self._geometry(layer, spec)
        q_shape, v_shape, k_shape = (tuple(t.shape) for t in (call.query, call.value, call.key))
        positions = {"query": prod(q_shape[1:-1]), "gate": prod(q_shape[1:-1]),
                     "key": prod(k_shape[1:-1]), "value": prod(v_shape[1:-1]),
                     "output": prod(q_shape[1:-1])}
        total = 0
        for role, attr in spec.projections().items():
            kernel = _kernel(layer, attr)
            if kernel is not None:
                total += positions[role] * prod(kernel.shape)
        t, s = prod(q_shape[1:-1]), prod(k_shape[1:-1])
        return total + geo.query_heads * t * s * 2 * geo.head_dim


def register_grouped_attention(layer_class: type, spec: GroupedHeads) -> None:
    """Handle ``layer_class`` (and its subclasses that do not override ``call``) with
    :class:`GroupedQueryAttentionHandler`, its heads held as ``spec`` says."""
    _GROUPED[layer_class] = spec
    register_handler(layer_class)(GroupedQueryAttentionHandler)


register_grouped_attention(layers.GroupQueryAttention, GroupedHeads())
