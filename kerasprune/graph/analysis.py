"""The walk: visit every call of a functional graph and merge the channels that must
be pruned together into groups.

The phases and the words are described in :mod:`kerasprune.graph`. This module holds
the algorithm alone: the result types are in :mod:`kerasprune.graph.groups`, the
handler API in :mod:`kerasprune.graph.handler`, and the reading of Keras's graph in
:mod:`kerasprune.graph.keras_graph`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import keras
import numpy as np

from kerasprune.errors import (
    HandlerError,
    OptionError,
    UnsupportedModelError,
)
from kerasprune.graph.composite import (
    call_key,
    input_key,
    is_composite,
    scope_of,
    trace_composite,
    traced_at_fixed_shape,
)
from kerasprune.graph.groups import ChannelGroup, Member, OutsideClass, PruningGraph
from kerasprune.graph.handler import LayerRecord, NodeContext, handler_step
from kerasprune.graph.keras_graph import (
    functional_of,
    is_graph_model,
    is_operation,
    iter_nodes,
    operation_name,
    producer,
    producer_name,
)
from kerasprune.graph.layout import Layout
from kerasprune.graph.registry import handler_for

__all__ = ["analyze", "GROUPED_CONV_MODES"]

#: The values of :func:`analyze`'s ``grouped_conv`` option (see ``ConvHandler``).
GROUPED_CONV_MODES = ("auto", "aligned", "groups")


@dataclass
class _Source:
    """A set of channels created at one place (a layer's slot, a model input, an
    unsupported layer's output); coupled sources end up in one group."""

    sid: int
    name: str
    size: int
    frozen: List[str] = field(default_factory=list)
    blocks: int = 1


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


class _Analyzer:
    def __init__(
        self, model: keras.Model, warn: bool = True, options: Optional[Mapping[str, Any]] = None
    ) -> None:
        self.model = model
        self.warn = warn
        self.options: Dict[str, Any] = dict(options or {})
        self.uf = _UnionFind()
        self.sources: List[_Source] = []
        self.records: Dict[int, LayerRecord] = {}
        self.order: List[LayerRecord] = []
        self._warned: set = set()
        self.unsupported: List[Tuple[str, str]] = []
        # (KerasTensor, layout) for every top-level tensor that a layer's weights read:
        # where a group's channels can be observed as activations
        self.consumer_inputs: List[Tuple[Any, Layout]] = []
        # (key, rank, layout, reading layer) for every tensor inside a nested model or a
        # traced composite that a layer's weights read; keys as in composite.FlatRunner
        self.nested_inputs: List[Tuple[Tuple[Any, ...], int, Layout, Any]] = []
        # id(KerasTensor) -> its observation key, for the tensors of the graphs walked
        self.tensor_keys: Dict[int, Tuple[Any, ...]] = {}
        # path -> calls of a nested graph walked so far (part of its scope)
        self.call_counts: Dict[str, int] = {}
        # the scopes of the nested graphs the walk is inside now ("": the top level)
        self.scopes: List[str] = [""]
        # source id -> layout its channels are a view of (set when a whole source is
        # coupled to a concatenation or a repeated layout, see _alias)
        self.alias: Dict[int, Layout] = {}
        # path -> the traced functional graph of each composite layer walked inside
        self.composites: Dict[str, keras.Model] = {}
        # (composite layer, traced at a fixed shape) of the blocks the walk is inside now
        self.enclosing: List[Tuple[Any, bool]] = []

    # sources -------------------------------------------------------------

    def new_source(self, name: str, size: int, frozen: Optional[str] = None) -> int:
        sid = self.uf.add()
        src = _Source(sid, name, int(size))
        if frozen:
            src.frozen.append(frozen)
        self.sources.append(src)
        return sid

    def opaque_layout(self, name: str, shape, reason: str) -> Optional[Layout]:
        if len(shape) < 2 or shape[-1] is None:
            return None
        sid = self.new_source(name, shape[-1], reason)
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

    def add_consumer_input(self, tensor: Any, layout: Layout, reader: Any = None) -> None:
        if len(self.scopes) == 1:
            self.consumer_inputs.append((tensor, layout))
            return
        key = self.tensor_keys.get(id(tensor))
        if key is not None:
            self.nested_inputs.append((key, len(tensor.shape), layout, reader))

    def _repeats(self, layout: Layout) -> Optional[Tuple[int, int]]:
        """``(source id, times)`` when ``layout`` is one whole source in order, each
        channel repeated ``times`` times in place (``times`` 1: the source itself)."""
        srcs = layout.sources()
        if len(srcs) != 1 or len(layout) == 0:
            return None
        size = self.sources[int(srcs[0])].size
        if len(layout) % size:
            return None
        times = len(layout) // size
        if not np.array_equal(layout.idx, np.repeat(np.arange(size), times)):
            return None
        return int(srcs[0]), times

    def require_blocks(self, layout: Layout, blocks: int) -> bool:
        # a source coupled to a concatenation or a repeated layout is only a view of it
        # (see _alias); the blocks must line up with what it is a view of. A source
        # repeated in place (a depthwise multiplier) lines up when no channel straddles
        # two blocks.
        layout = self.resolve(layout)
        found = self._repeats(layout)
        if found is None or len(layout) % blocks or (len(layout) // blocks) % found[1]:
            return False
        src = self.sources[found[0]]
        src.blocks = src.blocks * blocks // math.gcd(src.blocks, blocks)
        return True

    def _coarsen(self, a: Layout, b: Layout) -> bool:
        """Couple two layouts that repeat whole sources in place, ``A`` each channel
        ``ka`` times and ``B`` ``kb`` times, ``kb`` a multiple of ``ka``: position ``p``
        holds ``A[p // ka]`` and ``B[p // kb]``, so ``A`` becomes a view of ``B``
        repeated ``kb / ka`` times (a grouped convolution whose groups each read several
        groups of the one before it)."""
        found_a, found_b = self._repeats(a), self._repeats(b)
        if found_a is None or found_b is None or found_a[0] == found_b[0]:
            return False
        if found_a[1] > found_b[1]:
            (found_a, a), (found_b, b) = (found_b, b), (found_a, a)
        (sa, ka), (sb, kb) = found_a, found_b
        if kb % ka:
            return False
        view = Layout.of_source(sa, len(a) // ka, a.axis)
        target = Layout.of_source(sb, len(b) // kb, a.axis).repeated(kb // ka, a.axis)
        return self._alias(view, target)

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
                if self._coarsen(first, other):
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
            if is_operation(layer):
                what = f"operation {operation_name(layer)} ('{path}')"
            else:
                what = f"layer '{path}' of class {type(layer).__name__}"
            warnings.warn(
                f"kerasprune: {what} has no pruning handler; the channels that pass "
                "through it are frozen. Register one with kerasprune.register_handler "
                "if it can be sliced.",
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
        scope = self.scopes[-1]
        for ordinal, node in enumerate(iter_nodes(fn)):
            op = node.operation
            kts = node.input_tensors
            path = prefix + op.name
            for j, kt in enumerate(node.outputs):
                self.tensor_keys[id(kt)] = call_key(scope, ordinal, j)
            if any(id(t) not in tensors for t in kts):
                continue
            ins = [tensors[id(t)] for t in kts]
            traced = trace_composite(op, node) if is_composite(op) else None
            if is_graph_model(op):
                outs = self.walk_nested(op, node, ins, path)
            elif isinstance(traced, keras.Model):
                self.composites[path] = traced
                outs = self.walk_nested(traced, node, ins, path, record=op)
            elif traced is not None:  # a composite layer whose call could not be traced
                rec = self.record_for(op, path)
                self.warn_unsupported(op, path)
                for layout in ins:
                    if layout is not None:
                        self.freeze_layout(layout, str(traced))
                outs = [
                    self.opaque_layout(f"{path}:{i}", tuple(t.shape), str(traced))
                    for i, t in enumerate(node.outputs)
                ]
            else:
                rec = self.record_for(op, path)
                ctx = NodeContext(self, rec, node, ins, kts)
                with handler_step(rec.handler, op, path, "analyze"):
                    outs = list(rec.handler.analyze(ctx))
                if len(outs) != len(node.outputs):
                    raise HandlerError(
                        f"the pruning handler {type(rec.handler).__name__} of layer '{path}' "
                        f"({type(op).__name__}) returned {len(outs)} layouts for "
                        f"{len(node.outputs)} outputs"
                    )
            for kt, layout in zip(node.outputs, outs):
                tensors[id(kt)] = layout
        return [tensors.get(id(kt)) for kt in fn.outputs]

    def walk_nested(self, model, node, ins, path: str, record: Any = None):
        """Walk the graph of nested ``model`` (for a composite layer: its traced call,
        recorded under ``record``, the layer itself)."""
        self.record_for(model if record is None else record, path)
        inner = functional_of(model)
        n_in = len(inner.inputs)
        # a nested graph's input is the tensor its call was given: the same key
        for kt, outer in zip(inner.inputs, node.input_tensors):
            if id(outer) in self.tensor_keys:
                self.tensor_keys[id(kt)] = self.tensor_keys[id(outer)]
        if len(ins) != n_in:
            reason = f"nested model '{path}' is called with inputs kerasprune cannot match"
            for l in ins:
                if l is not None:
                    self.freeze_layout(l, reason)
            ins = [None] * n_in
        # the nested model's InputLayers fix the width of what enters it: record them
        for kt, layout in zip(inner.inputs, ins):
            op = producer(kt)[0]
            if layout is None or op is None:
                continue
            rec = self.record_for(op, f"{path}/{op.name}")
            seen = rec.slots.get("channels")
            if seen is None:
                rec.slots["channels"] = layout
            else:
                self.unify([seen, layout], f"shared nested model '{path}'")
        occurrence = self.call_counts.get(path, 0)
        self.call_counts[path] = occurrence + 1
        self.scopes.append(scope_of(path, occurrence))
        if record is not None:
            self.enclosing.append((record, traced_at_fixed_shape(model)))
        try:
            return self.walk(inner, ins, path + "/")
        finally:
            self.scopes.pop()
            if record is not None:
                self.enclosing.pop()

    def run(self) -> PruningGraph:
        fn = functional_of(self.model)
        ins = []
        for i, kt in enumerate(fn.inputs):
            self.tensor_keys[id(kt)] = input_key(i)
            name = producer_name(kt)
            ins.append(self.opaque_layout(name, tuple(kt.shape), f"fed by model input '{name}'"))
        outs = self.walk(fn, ins, "")
        for kt, layout in zip(fn.outputs, outs):
            if layout is not None:
                self.freeze_layout(layout, f"reaches model output '{producer_name(kt)}'")
        return self.result()

    def result(self) -> PruningGraph:
        """The channel groups: one per class of coupled sources, in graph order."""
        observed, seen_kt = [], set()
        for kt, layout in self.consumer_inputs:
            if id(kt) not in seen_kt:
                seen_kt.add(id(kt))
                observed.append((kt, self.resolve(layout)))
        nested: Dict[Tuple[Any, ...], Tuple[int, Layout, List[Any]]] = {}
        for key, rank, layout, reader in self.nested_inputs:
            if key not in nested:
                nested[key] = (rank, self.resolve(layout), [])
            if reader is not None and all(r is not reader for r in nested[key][2]):
                nested[key][2].append(reader)
        for rec in self.order:
            rec.slots = {k: self.resolve(v) for k, v in rec.slots.items()}
        members_of: Dict[int, List[_Source]] = {}
        root_of = np.full(len(self.sources), -1, dtype=np.int64)
        for src in self.sources:
            if src.sid in self.alias:
                continue
            root = self.uf.find(src.sid)
            root_of[src.sid] = root
            members_of.setdefault(root, []).append(src)
        groups: List[ChannelGroup] = []
        group_of_root: Dict[int, int] = {}
        for root in sorted(members_of):  # the oldest source first: graph order
            srcs = members_of[root]
            reasons: List[str] = []
            outside: List[str] = []
            blocks = 1
            for s in srcs:
                for r in s.frozen:
                    into = outside if isinstance(r, OutsideClass) else reasons
                    if r not in into:
                        into.append(str(r))
                blocks = blocks * s.blocks // math.gcd(blocks, s.blocks)
            size = srcs[0].size
            if size % blocks:
                reasons.append(f"its {size} channels cannot be split into {blocks} equal blocks")
            producers = [s.name for s in srcs]
            group_of_root[root] = len(groups)
            groups.append(
                ChannelGroup(
                    name=_group_name(producers),
                    size=size,
                    prunable=not reasons,
                    reasons=reasons,
                    producers=producers,
                    members=[],
                    blocks=blocks,
                    outside_class=outside,
                )
            )
        source_group = np.array(
            [group_of_root[int(r)] if r >= 0 else -1 for r in root_of], dtype=np.int64
        )
        for rec in self.order:
            exact = rec.handler.exact
            for slot, layout in rec.slots.items():
                ids = source_group[layout.src]
                for gid in np.unique(ids):
                    grp = groups[int(gid)]
                    where = np.nonzero(ids == gid)[0]
                    grp.members.append(
                        Member(
                            layer=rec.path,
                            slot=slot,
                            axis=layout.axis,
                            offset=int(where[0]),
                            factor=max(1, len(where) // grp.size),
                            exact=exact,
                            produced=slot in rec.produced,
                        )
                    )
        return PruningGraph(
            self.model, groups, self.order, self.unsupported, source_group, observed,
            composites=self.composites,
            nested_observed=[(k, r, l, tuple(rd)) for k, (r, l, rd) in nested.items()],
        )


def _group_name(producers: Sequence[str]) -> str:
    if len(producers) <= 3:
        return "+".join(producers)
    return f"{producers[0]}+{producers[1]}+...+{producers[-1]}"


def _check_grouped_conv(value: Any) -> Union[str, Dict[str, str]]:
    pairs = [("", value)] if isinstance(value, str) else None
    if pairs is None and isinstance(value, Mapping):
        pairs = list(value.items())
    if pairs is None or any(
        not isinstance(k, str) or not isinstance(m, str) or m not in GROUPED_CONV_MODES
        for k, m in pairs
    ):
        raise OptionError(
            f"grouped_conv must be one of {', '.join(repr(m) for m in GROUPED_CONV_MODES)}, "
            "or a mapping from layer paths (fnmatch patterns) to one of them; got "
            f"{value!r}"
        )
    return value if isinstance(value, str) else dict(value)


def analyze(
    model: keras.Model,
    *,
    warn: bool = True,
    grouped_conv: Union[str, Mapping[str, str]] = "auto",
) -> PruningGraph:
    """Find the channel groups of a Keras 3 functional or Sequential model.

    Args:
        model: a built functional model or Sequential model; nested models and shared
            layers are supported.
        warn: emit a warning for each layer class without a pruning handler.
        grouped_conv: how convolutions with ``groups > 1`` are pruned. ``"aligned"``:
            the groups stay, each of the ``groups`` blocks of the input and of the
            filters keeps the same number of channels. ``"groups"``: whole groups are
            removed (``groups`` shrinks): the channels of one group (its input
            channels and its filters) are one channel of a group of kerasprune's.
            ``"auto"`` (the default): ``"groups"`` for a convolution with one input
            channel per group (a depthwise convolution written as
            ``Conv2D(groups=C)``, as in ConvNeXt), ``"aligned"`` otherwise. A mapping
            gives a mode per layer path (``fnmatch`` patterns, the first match wins;
            ``"auto"`` for layers no pattern matches). Functions that analyze the model
            themselves use ``"auto"``; pass them ``graph=`` for another mode.

    Returns:
        The :class:`PruningGraph`: its groups with names, sizes, members and whether
        they may be pruned (and, where not, why).

    Raises:
        UnsupportedModelError: the model is subclassed or not built.
        OptionError: ``grouped_conv`` is not one of the modes above.
    """
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"kerasprune.analyze() takes a keras.Model, got {type(model).__name__}"
        )
    options = {"grouped_conv": _check_grouped_conv(grouped_conv)}
    return _Analyzer(model, warn=warn, options=options).run()
