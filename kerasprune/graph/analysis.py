"""Graph analysis: walk a Keras 3 functional graph and find its channel groups.

The walk visits every node of the functional graph in topological order (nested models
are walked through, shared layers are visited once per call). Each layer's handler turns
the channel layouts of the call's inputs into layouts of its outputs, creates sources for
the channels the layer produces and binds the input channels its weights depend on.
Sources that must lose the same channel together are merged with a union-find; the
merged classes are the channel groups.
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np

from kerasprune.errors import UnsupportedModelError
from kerasprune.graph.layout import Layout
from kerasprune.graph.registry import LayerHandler, handler_for

__all__ = [
    "analyze",
    "PruningGraph",
    "ChannelGroup",
    "Member",
    "NodeContext",
    "LayerRecord",
    "SlotMasks",
    "functional_of",
    "iter_layers",
]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Member:
    """One place that holds the channels of a group.

    Attributes:
        layer: path of the layer (``outer/inner`` for layers of nested models).
        role: the layer's slot: ``"out"`` for the channels it produces, ``"in"`` for the
            input channels its weights read, ``"channels"`` for per-channel parameters
            (BatchNormalization, PReLU, depthwise kernels), or a family-specific name.
        axis: the tensor axis the channels run along (batch axis is 0).
        offset: position of the group's first channel in the slot (non-zero for a
            slice of a ``Concatenate``).
        factor: how many positions of the slot each channel occupies (``H*W`` for the
            rows of a Dense layer after ``Flatten``, the multiplier of a depthwise conv).
        exact: False where removing channels changes the layer's other outputs
            (normalization statistics over the channel axis).
        produced: True where the layer creates these channels (its filters or units),
            False where it only reads or passes them.
    """

    layer: str
    role: str
    axis: int
    offset: int = 0
    factor: int = 1
    exact: bool = True
    produced: bool = False


@dataclass
class ChannelGroup:
    """A set of channels that every member must lose together.

    Attributes:
        name: stable, readable name derived from the producing layers.
        size: number of channels.
        prunable: False when the group is frozen.
        reasons: why the group is frozen (empty when prunable).
        producers: the layers (and slots) that create these channels.
        members: every place that holds them.
        blocks: the group is split into this many equal blocks that must keep the same
            number of channels each (grouped convolutions, GroupNormalization).
    """

    name: str
    size: int
    prunable: bool
    reasons: List[str]
    producers: List[str]
    members: List[Member]
    blocks: int = 1
    _root: int = field(default=-1, repr=False, compare=False)

    @property
    def reason(self) -> str:
        """The reasons the group is frozen, as one sentence ('' when prunable)."""
        return "; ".join(self.reasons)


class SlotMasks(dict):
    """Slot name -> boolean mask of kept positions, with ``axes``: slot -> tensor axis."""

    def __init__(self, *args, axes: Optional[Dict[str, int]] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.axes: Dict[str, int] = dict(axes or {})


@dataclass
class LayerRecord:
    """What the analysis learned about one layer object."""

    layer: keras.layers.Layer
    path: str
    handler: LayerHandler
    slots: Dict[str, Layout] = field(default_factory=dict)
    produced: set = field(default_factory=set)
    calls: int = 0


@dataclass
class _Source:
    sid: int
    name: str
    size: int
    kind: str  # "layer", "input" or "opaque"
    frozen: List[str] = field(default_factory=list)
    blocks: int = 1


# --------------------------------------------------------------------------- helpers


def functional_of(model: keras.Model):
    """The functional graph behind ``model`` (a Functional, or a built Sequential).

    Raises:
        UnsupportedModelError: for subclassed models and unbuilt Sequential models.
    """
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise UnsupportedModelError(
                f"Sequential model '{model.name}' is not built, so it has no graph to "
                "analyze. Give it an input shape first: start it with "
                "keras.Input(shape=...), or call model.build((None, ...)) or run it on "
                "a batch of data."
            )
        return fn
    if hasattr(model, "_nodes_by_depth") and hasattr(model, "_run_through_graph") and hasattr(
        model, "_inputs_struct"
    ):
        return model
    raise UnsupportedModelError(
        f"model '{getattr(model, 'name', model)}' ({type(model).__name__}) is a "
        "subclassed keras.Model: its layers are called from Python code in call(), so "
        "there is no functional graph to read which channels connect to which. Build "
        "the same network with the functional API instead:\n"
        "    inputs = keras.Input(shape=...)\n"
        "    x = keras.layers.Conv2D(...)(inputs)\n"
        "    ...\n"
        "    model = keras.Model(inputs, outputs)\n"
        "and copy the weights over with model.set_weights(old_model.get_weights())."
    )


def _is_graph_model(layer: object) -> bool:
    if isinstance(layer, keras.Sequential):
        return getattr(layer, "_functional", None) is not None
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth") and hasattr(
        layer, "_inputs_struct"
    )


def iter_layers(model: keras.Model, prefix: str = "") -> Iterator[Tuple[str, keras.layers.Layer]]:
    """Yield ``(path, layer)`` for every layer of ``model``, nested models walked into.

    A nested model yields itself, then its layers. Shared layers are yielded once.
    """
    seen = set()

    def walk(m, pre):
        for layer in m.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            path = pre + layer.name
            yield path, layer
            if isinstance(layer, keras.Model):
                yield from walk(layer, path + "/")

    yield from walk(model, prefix)


def _shape(t) -> Tuple[Optional[int], ...]:
    return tuple(t.shape)


# --------------------------------------------------------------------------- union-find


class _UnionFind:
    def __init__(self) -> None:
        self.parent: List[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra  # the older source stays the root: stable names
        return ra


# --------------------------------------------------------------------------- context


class NodeContext:
    """What a handler sees of one call of its layer, and the calls it can make."""

    def __init__(self, analyzer: "_Analyzer", record: LayerRecord, node, inputs, input_kts):
        self._an = analyzer
        self.record = record
        self.layer = record.layer
        self.path = record.path
        self.node = node
        self.inputs: List[Optional[Layout]] = inputs
        self.input_tensors = input_kts
        self.input_shapes: List[Tuple[Optional[int], ...]] = [_shape(t) for t in input_kts]
        self.output_shapes: List[Tuple[Optional[int], ...]] = [_shape(t) for t in node.outputs]
        self.top_level = "/" not in record.path

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
        sid = self._an.new_source(name, size, "layer")
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
        if self.top_level:
            for kt, seen in zip(self.input_tensors, self.inputs):
                if seen is layout:
                    self._an.consumer_inputs.append((self.path, slot, kt, layout))
                    break
        existing = self.record.slots.get(slot)
        if existing is None:
            self.record.slots[slot] = layout
            return layout
        self.unify([existing, layout], f"shared layer '{self.path}'")
        return existing

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
        an = self._an
        # a source coupled to a concatenation or a repeated layout is only a view of it
        # (see _Analyzer._alias); the blocks must line up with what it is a view of
        layout = an.resolve(layout)
        srcs = layout.sources()
        if (
            len(srcs) == 1
            and an.sources[int(srcs[0])].size == len(layout)
            and np.array_equal(layout.idx, np.arange(len(layout)))
            and len(layout) % blocks == 0
        ):
            src = an.sources[int(srcs[0])]
            src.blocks = src.blocks * blocks // math.gcd(src.blocks, blocks)
            return
        self.freeze(
            layout,
            f"layer '{self.path}' splits its channels into {blocks} blocks that do not "
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
        sid = self._an.new_source(f"{self.path}:frozen", size, "opaque", reason)
        return Layout.of_source(sid, size, axis)

    def warn_unsupported(self) -> None:
        """Warn (once per layer class) that channels through this layer are frozen."""
        self._an.warn_unsupported(self.layer, self.path)


# --------------------------------------------------------------------------- analyzer


class _Analyzer:
    def __init__(self, model: keras.Model, warn: bool = True) -> None:
        self.model = model
        self.warn = warn
        self.uf = _UnionFind()
        self.sources: List[_Source] = []
        self.records: Dict[int, LayerRecord] = {}
        self.order: List[LayerRecord] = []
        self._warned: set = set()
        self.unsupported: List[Tuple[str, str]] = []
        # (layer path, slot, KerasTensor, layout) for every top-level tensor that a
        # layer's weights read: where a group's channels can be observed as activations
        self.consumer_inputs: List[tuple] = []
        # source id -> layout its channels are a view of (set when a whole source is
        # coupled to a concatenation or a repeated layout, see _alias)
        self.alias: Dict[int, Layout] = {}

    # sources -------------------------------------------------------------

    def new_source(self, name: str, size: int, kind: str, frozen: Optional[str] = None) -> int:
        sid = self.uf.add()
        src = _Source(sid, name, int(size), kind)
        if frozen:
            src.frozen.append(frozen)
        self.sources.append(src)
        return sid

    def opaque_layout(self, name: str, shape, reason: str) -> Optional[Layout]:
        if len(shape) < 2 or shape[-1] is None:
            return None
        sid = self.new_source(name, shape[-1], "opaque", reason)
        return Layout.of_source(sid, shape[-1], len(shape) - 1)

    def resolve(self, layout: Layout) -> Layout:
        """The layout with aliased sources replaced by what they are views of."""
        if not self.alias:
            return layout
        src, idx, changed = layout.src, layout.idx, False
        while True:
            hit = [int(s) for s in np.unique(src) if int(s) in self.alias]
            if not hit:
                break
            if not changed:
                src, idx, changed = src.copy(), idx.copy(), True
            for s in hit:
                sel = src == s
                target, pos = self.alias[s], idx[sel]
                src[sel], idx[sel] = target.src[pos], target.idx[pos]
        return Layout(src, idx, layout.axis) if changed else layout

    def freeze_layout(self, layout: Layout, reason: str) -> None:
        for sid in self.resolve(layout).sources():
            src = self.sources[int(sid)]
            if reason not in src.frozen:
                src.frozen.append(reason)

    def _class_of(self, sid: int) -> List[_Source]:
        root = self.uf.find(sid)
        return [s for s in self.sources if s.sid not in self.alias and self.uf.find(s.sid) == root]

    def _alias(self, view: Layout, target: Layout) -> bool:
        """Make the channel set laid out (whole, in order) in ``view`` a view of ``target``.

        This is how a gate or a residual branch whose channels are its own source gets
        coupled, channel by channel, to a concatenation or a depthwise-multiplied layout.
        """
        srcs = view.sources()
        if len(srcs) != 1 or not np.array_equal(view.idx, np.arange(len(view))):
            return False
        members = self._class_of(int(srcs[0]))
        if members[0].size != len(view) or any(m.blocks > 1 for m in members):
            return False
        ids = {m.sid for m in members}
        if any(int(s) in ids for s in target.sources()):
            return False
        reasons = [r for m in members for r in m.frozen]
        for m in members:
            self.alias[m.sid] = target
        for r in reasons:
            self.freeze_layout(target, r)
        return True

    def unify(self, layouts: Sequence[Layout], where: str) -> None:
        layouts = [self.resolve(l) for l in layouts]
        if len(layouts) < 2:
            return
        first = layouts[0]
        for k, other in enumerate(layouts[1:], start=1):
            other = self.resolve(other)
            first = self.resolve(first)
            if first.same_positions(other):
                continue
            if len(other) == len(first) and not np.array_equal(other.idx, first.idx):
                if self._alias(other, first) or self._alias(first, other):
                    continue
            if len(other) != len(first) or not np.array_equal(other.idx, first.idx):
                reason = f"{where} joins channels that are laid out differently"
                for l in layouts:
                    self.freeze_layout(l, reason)
                return
            pairs = np.unique(np.stack([first.src, other.src], axis=1), axis=0)
            for a, b in pairs:
                sa, sb = self.sources[int(a)], self.sources[int(b)]
                if sa.size != sb.size:
                    reason = f"{where} joins channel sets of different sizes"
                    for l in layouts:
                        self.freeze_layout(l, reason)
                    return
                self.uf.union(int(a), int(b))

    def warn_unsupported(self, layer, path: str) -> None:
        self.unsupported.append((path, type(layer).__name__))
        key = type(layer)
        if self.warn and key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"kerasprune: layer '{path}' of class {type(layer).__name__} has no "
                "pruning handler; the channels that pass through it are frozen. "
                "Register one with kerasprune.register_handler if it can be sliced.",
                stacklevel=4,
            )

    # walking -------------------------------------------------------------

    def record_for(self, layer, path: str) -> LayerRecord:
        rec = self.records.get(id(layer))
        if rec is None:
            rec = LayerRecord(layer=layer, path=path, handler=handler_for(layer))
            self.records[id(layer)] = rec
            self.order.append(rec)
        return rec

    def walk(self, fn, input_layouts: Sequence[Optional[Layout]], prefix: str) -> List[Optional[Layout]]:
        tensors: Dict[int, Optional[Layout]] = {}
        for kt, layout in zip(fn.inputs, input_layouts):
            tensors[id(kt)] = layout
        for depth in sorted(fn._nodes_by_depth.keys(), reverse=True):
            for node in fn._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input:
                    continue
                kts = node.input_tensors
                if any(id(t) not in tensors for t in kts):
                    continue
                ins = [tensors[id(t)] for t in kts]
                path = prefix + op.name
                if _is_graph_model(op):
                    outs = self.walk_nested(op, node, ins, path)
                else:
                    rec = self.record_for(op, path)
                    rec.calls += 1
                    ctx = NodeContext(self, rec, node, ins, kts)
                    outs = list(rec.handler.analyze(ctx))
                if len(outs) != len(node.outputs):
                    raise RuntimeError(
                        f"handler for '{path}' returned {len(outs)} layouts for "
                        f"{len(node.outputs)} outputs"
                    )
                for kt, layout in zip(node.outputs, outs):
                    tensors[id(kt)] = layout
        return [tensors.get(id(kt)) for kt in fn.outputs]

    def walk_nested(self, model, node, ins, path: str):
        self.record_for(model, path)
        inner = functional_of(model)
        n_in = len(inner.inputs)
        if len(ins) != n_in:
            reason = f"nested model '{path}' is called with inputs kerasprune cannot match"
            for l in ins:
                if l is not None:
                    self.freeze_layout(l, reason)
            ins = [None] * n_in
        # the nested model's InputLayers fix the width of what enters it: record them
        for kt, layout in zip(inner.inputs, ins):
            hist = getattr(kt, "_keras_history", None)
            if layout is None or hist is None or hist.operation is None:
                continue
            rec = self.record_for(hist.operation, f"{path}/{hist.operation.name}")
            seen = rec.slots.get("channels")
            if seen is None:
                rec.slots["channels"] = layout
            else:
                self.unify([seen, layout], f"shared nested model '{path}'")
        return self.walk(inner, ins, path + "/")

    def run(self) -> "PruningGraph":
        fn = functional_of(self.model)
        ins = []
        for kt in fn.inputs:
            name = kt._keras_history.operation.name if getattr(kt, "_keras_history", None) else kt.name
            ins.append(self.opaque_layout(name, _shape(kt), f"fed by model input '{name}'"))
            if ins[-1] is not None:
                self.sources[int(ins[-1].src[0])].kind = "input"
        outs = self.walk(fn, ins, "")
        for kt, layout in zip(fn.outputs, outs):
            if layout is not None:
                hist = getattr(kt, "_keras_history", None)
                who = hist.operation.name if hist is not None and hist.operation is not None else kt.name
                self.freeze_layout(layout, f"reaches model output '{who}'")
        return PruningGraph._build(self)


# --------------------------------------------------------------------------- graph


class PruningGraph:
    """The channel groups of a model, as found by :func:`analyze`.

    Index it by group name (``graph["conv2d"]``), iterate over it for every group, or use
    :attr:`prunable` for the groups that may lose channels.
    """

    def __init__(self) -> None:
        self.model: Optional[keras.Model] = None
        self.groups: List[ChannelGroup] = []
        self.records: List[LayerRecord] = []
        self.unsupported: List[Tuple[str, str]] = []
        self._by_name: Dict[str, ChannelGroup] = {}
        self._root_of: Dict[int, int] = {}
        self._roots = np.zeros(0, dtype=np.int64)  # source id -> group root, as an array
        self._group_of_root: Dict[int, ChannelGroup] = {}
        self._observed: List[Tuple[object, Layout]] = []
        self._positions: Dict[Tuple[str, str], list] = {}  # (layer, slot) -> entry positions

    @classmethod
    def _build(cls, an: _Analyzer) -> "PruningGraph":
        g = cls()
        g.model = an.model
        g.records = an.order
        g.unsupported = an.unsupported
        seen_kt = set()
        for path, slot, kt, layout in an.consumer_inputs:
            if id(kt) not in seen_kt:
                seen_kt.add(id(kt))
                g._observed.append((kt, an.resolve(layout)))
        members_of: Dict[int, List[_Source]] = {}
        for rec in an.order:
            rec.slots = {k: an.resolve(v) for k, v in rec.slots.items()}
        for src in an.sources:
            if src.sid in an.alias:
                continue
            root = an.uf.find(src.sid)
            g._root_of[src.sid] = root
            members_of.setdefault(root, []).append(src)
        g._roots = np.full(len(an.sources), -1, dtype=np.int64)
        for sid, root in g._root_of.items():
            g._roots[sid] = root
        for root in sorted(members_of):
            srcs = members_of[root]
            reasons: List[str] = []
            blocks = 1
            for s in srcs:
                for r in s.frozen:
                    if r not in reasons:
                        reasons.append(r)
                blocks = blocks * s.blocks // math.gcd(blocks, s.blocks)
            size = srcs[0].size
            if size % blocks:
                reasons.append(f"its {size} channels cannot be split into {blocks} equal blocks")
            producers = [s.name for s in srcs]
            grp = ChannelGroup(
                name=_group_name(producers),
                size=size,
                prunable=not reasons,
                reasons=reasons,
                producers=producers,
                members=[],
                blocks=blocks,
                _root=root,
            )
            g.groups.append(grp)
            g._group_of_root[root] = grp
        for rec in an.order:
            exact = rec.handler.exact
            for slot, layout in rec.slots.items():
                roots = g._roots[layout.src]
                for root in np.unique(roots):
                    grp = g._group_of_root[int(root)]
                    where = np.nonzero(roots == root)[0]
                    grp.members.append(
                        Member(
                            layer=rec.path,
                            role=slot,
                            axis=layout.axis,
                            offset=int(where[0]),
                            factor=max(1, len(where) // grp.size),
                            exact=exact,
                            produced=slot in rec.produced,
                        )
                    )
        g.groups.sort(key=lambda grp: grp._root)
        g._by_name = {grp.name: grp for grp in g.groups}
        return g

    # lookup --------------------------------------------------------------

    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> ChannelGroup:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(self.unknown_group_message(name)) from None

    def unknown_group_message(self, name: str) -> str:
        """The error text for a group name that does not exist, with close names."""
        close = difflib.get_close_matches(str(name), list(self._by_name), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"no channel group named {name!r} in model '{self.model.name}'.{hint} "
            "Group names are listed by kerasprune.analyze(model).summary()."
        )

    @property
    def prunable(self) -> List[ChannelGroup]:
        """The groups that may lose channels, in graph order."""
        return [grp for grp in self.groups if grp.prunable]

    @property
    def frozen(self) -> List[ChannelGroup]:
        """The groups that may not lose channels, each with its reasons."""
        return [grp for grp in self.groups if not grp.prunable]

    def group_of(self, layer: str, role: str = "out") -> ChannelGroup:
        """The group holding the channels of ``layer``'s slot ``role`` (default: its output)."""
        for rec in self.records:
            if rec.path == layer and role in rec.slots:
                layout = rec.slots[role]
                roots = {self._root_of[int(s)] for s in layout.sources()}
                if len(roots) != 1:
                    raise ValueError(
                        f"slot {role!r} of layer {layer!r} holds channels of "
                        f"{len(roots)} groups; look at graph.groups instead"
                    )
                return self._group_of_root[roots.pop()]
        raise KeyError(f"layer {layer!r} has no slot {role!r} in this graph")

    def slot_masks(self, keep_masks: Mapping[int, np.ndarray]) -> Dict[str, "SlotMasks"]:
        """Per layer path, the boolean masks of kept positions of its changed slots.

        Args:
            keep_masks: group root id -> boolean keep mask of the group's channels.
        """
        out: Dict[str, SlotMasks] = {}
        if not keep_masks:
            return out
        # one flat array of every group's mask, and each group's offset into it
        offset = np.full(len(self._roots), -1, dtype=np.int64)
        flat, pos = [], 0
        for root, mask in keep_masks.items():
            flat.append(mask)
            offset[self._roots == root] = pos
            pos += len(mask)
        flat_mask = np.concatenate(flat)
        for rec in self.records:
            for slot, layout in rec.slots.items():
                off = offset[layout.src]
                hit = off >= 0
                if not hit.any():
                    continue
                mask = np.ones(len(layout), dtype=bool)
                mask[hit] = flat_mask[off[hit] + layout.idx[hit]]
                if not mask.all():
                    masks = out.setdefault(rec.path, SlotMasks())
                    masks[slot] = mask
                    masks.axes[slot] = layout.axis
        return out

    def entries(self, group: ChannelGroup) -> list:
        """Every weight entry holding a channel of ``group``: a list of ``WeightEntries``.

        Derived from the handlers' own slicing (see :mod:`kerasprune.graph.entries`); the
        producers' filters, per-channel parameters and the consumers' input weights are
        all there, each entry tagged with its channel.
        """
        from kerasprune.graph.entries import group_entries

        return group_entries(self, group)

    def response_points(self, group: ChannelGroup) -> List[Tuple[object, np.ndarray, np.ndarray]]:
        """Where the channels of ``group`` can be observed as activations.

        Returns the top-level tensors that layers' weights read (the feature maps the
        next layers see: after BatchNormalization and activation), as a list of
        ``(keras_tensor, positions, channels)``: along the tensor's last axis, position
        ``positions[i]`` carries channel ``channels[i]`` of the group. Groups seen only
        inside nested models have no response points.
        """
        out = []
        for kt, layout in self._observed:
            hit = self._roots[layout.src] == group._root
            if hit.any() and layout.axis == len(kt.shape) - 1:
                out.append((kt, np.nonzero(hit)[0], layout.idx[hit]))
        return out

    # display -------------------------------------------------------------

    def summary(self, print_fn=print, show_frozen: bool = True) -> None:
        """Print one line per group: name, size, prunable or why not, members."""
        rows = [("group", "size", "prunable", "members / reason")]
        for grp in self.groups:
            if not grp.prunable and not show_frozen:
                continue
            kind = "yes" if grp.prunable else "no"
            detail = ", ".join(f"{m.layer}:{m.role}" for m in grp.members[:6])
            if len(grp.members) > 6:
                detail += f", ... ({len(grp.members)} members)"
            if not grp.prunable:
                detail = grp.reason
            rows.append((grp.name, str(grp.size), kind, detail))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print_fn(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")

    def __repr__(self) -> str:
        n = len(self.prunable)
        name = self.model.name if self.model is not None else "?"
        return f"<PruningGraph of '{name}': {len(self.groups)} groups, {n} prunable>"


def _group_name(producers: Sequence[str]) -> str:
    if len(producers) <= 3:
        return "+".join(producers)
    return f"{producers[0]}+{producers[1]}+...+{producers[-1]}"


def analyze(model: keras.Model, *, warn: bool = True) -> PruningGraph:
    """Find the channel groups of a Keras 3 functional or Sequential model.

    Args:
        model: a built functional model or Sequential model; nested models and shared
            layers are supported.
        warn: emit a warning for each layer class without a pruning handler.

    Returns:
        The :class:`PruningGraph`: its groups with names, sizes, members and whether
        they may be pruned (and, where not, why).

    Raises:
        UnsupportedModelError: the model is subclassed or not built.
    """
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"kerasprune.analyze() takes a keras.Model, got {type(model).__name__}"
        )
    return _Analyzer(model, warn=warn).run()
