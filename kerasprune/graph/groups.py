"""The result of the analysis: channel groups, their members, and the graph that holds them.

:func:`kerasprune.analyze` returns a :class:`PruningGraph`. Everything downstream
(costs, importance, selection, the rebuilder, masking) reads the analysis through the
public methods here, keyed by group name and layer path; the source ids the walk used
stay inside this module.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    Union,
)

import keras
import numpy as np

from kerasprune.errors import GraphMismatchError, GroupNotFoundError, NothingPrunableError
from kerasprune.graph.entries import AxisPositions, Positions, WeightEntries, slot_positions
from kerasprune.graph.handler import LayerRecord, SlotMasks
from kerasprune.graph.layout import Layout

__all__ = ["Member", "ChannelGroup", "OutsideClass", "PruningGraph", "check_graph"]


@dataclass(frozen=True)
class Member:
    """One place that holds the channels of a group.

    Attributes:
        layer: path of the layer (``outer/inner`` for layers of nested models).
        slot: the layer's slot: ``"out"`` for the channels it produces, ``"in"`` for the
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
    slot: str
    axis: int
    offset: int = 0
    factor: int = 1
    exact: bool = True
    produced: bool = False


class OutsideClass(str):
    """A reason why a group's channels can be removed only with its block rebuilt as a
    stand-in of another class (:mod:`kerasprune.graph.stand_ins`); given to
    ``ctx.freeze`` it leaves the group prunable, and a uniform selection (which keeps
    every class) leaves the group whole."""


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
        outside_class: why the group's channels can be removed only with a block rebuilt
            as its stand-in (another class): a uniform selection leaves it whole.
    """

    name: str
    size: int
    prunable: bool
    reasons: List[str]
    producers: List[str]
    members: List[Member]
    blocks: int = 1
    outside_class: List[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """The reasons the group is frozen, as one sentence ('' when prunable)."""
        return "; ".join(self.reasons)

    @property
    def exact(self) -> bool:
        """Whether removing channels of this group leaves the kept ones unchanged
        (False when a member normalizes the channels together, like
        ``LayerNormalization``)."""
        return all(m.exact for m in self.members)

    @property
    def producer_layers(self) -> List[str]:
        """The paths of the layers that create these channels (``producers`` without slots)."""
        return [p.split(":", 1)[0] for p in self.producers]


GroupRef = Union[str, ChannelGroup]


class PruningGraph:
    """The channel groups of a model, as found by :func:`kerasprune.analyze`.

    Index it by group name (``graph["conv2d"]``), iterate over it for every group, or use
    :attr:`prunable` for the groups that may lose channels.

    Args:
        model: the analyzed model.
        groups: its groups, in graph order.
        records: what the analysis learned about each layer, in graph order.
        unsupported: ``(layer path, class name)`` of every layer without a handler.
        source_group: for each source id of the walk, the index in ``groups`` of the
            group it belongs to (-1 for a source that is only a view of others).
        observed: ``(keras_tensor, layout)`` of every top-level tensor that a layer's
            weights read.
        composites: path -> the traced functional graph of each composite layer the
            walk entered (see :func:`kerasprune.graph.composite.trace_composite`).
        nested_observed: ``(key, rank, layout, readers)`` of every tensor inside a
            nested model or a composite layer that a layer's weights read.
    """

    def __init__(
        self,
        model: keras.Model,
        groups: Sequence[ChannelGroup],
        records: Sequence[LayerRecord],
        unsupported: Sequence[Tuple[str, str]],
        source_group: np.ndarray,
        observed: Sequence[Tuple[Any, Layout]],
        composites: Optional[Mapping[str, keras.Model]] = None,
        nested_observed: Sequence[Tuple[Tuple[Any, ...], int, Layout, Tuple[Any, ...]]] = (),
    ) -> None:
        self.model = model
        self.groups: List[ChannelGroup] = list(groups)
        self.records: List[LayerRecord] = list(records)
        self.unsupported: List[Tuple[str, str]] = list(unsupported)
        self._index: Dict[str, int] = {g.name: i for i, g in enumerate(self.groups)}
        self._records: Dict[str, LayerRecord] = {r.path: r for r in self.records}
        self._source_group = np.asarray(source_group, dtype=np.int64)
        self._observed = list(observed)
        self._positions: Dict[Tuple[str, str], List[Optional[Positions]]] = {}
        self.composites: Dict[str, keras.Model] = dict(composites or {})
        self._nested_observed = list(nested_observed)

    # lookup --------------------------------------------------------------

    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> ChannelGroup:
        try:
            return self.groups[self._index[name]]
        except (KeyError, TypeError):
            raise GroupNotFoundError(self.unknown_group_message(name)) from None

    def _idx(self, group: GroupRef) -> int:
        name = group.name if isinstance(group, ChannelGroup) else group
        if name not in self._index:
            raise GroupNotFoundError(self.unknown_group_message(name))
        return self._index[name]

    def unknown_group_message(self, name: object) -> str:
        """The error text for a group name that does not exist, with close names."""
        close = difflib.get_close_matches(str(name), list(self._index), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"no channel group named {name!r} in model '{self.model.name}'.{hint} "
            "Group names are listed by kerasprune.analyze(model).summary()."
        )

    def matching(
        self,
        patterns: Union[str, Iterable[str]],
        error: Type[Exception] = GroupNotFoundError,
    ) -> Set[str]:
        """The names of the groups that ``patterns`` match: what every ``exclude=`` means.

        A pattern (``fnmatch`` syntax, case-sensitive: ``conv*``, ``block_?_out``,
        ``b[12]_*``) matches a group by the group's name or by the path of one of the
        layers producing it, so ``["fc1"]`` names every channel of layer ``fc1`` and
        ``["b1_conv2"]`` the residual group that layer adds to. :func:`kerasprune.select`,
        :func:`kerasprune.score`, the callbacks and the pruning loops all call this.

        Example:

        ```python
        graph = kp.analyze(model)
        graph.matching(["conv*"])   # {"conv1", "conv2"}
        graph.matching("fc1")       # one pattern may be given alone
        ```

        Args:
            patterns: one pattern or several; frozen groups match too.
            error: the exception class raised for a pattern that matches nothing (each
                caller raises its own kind: ``SelectionError``, ``ImportanceError``, ...).

        Returns:
            The matched group names (empty for no patterns).

        Raises:
            GroupNotFoundError: (or ``error``) a pattern matches no group and no producing
                layer; the message names the closest group and layer names.
        """
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        names = [(g.name, [g.name] + g.producer_layers) for g in self.groups]
        out: Set[str] = set()
        for pat in map(str, patterns):
            hit = {n for n, cands in names if any(fnmatch.fnmatchcase(c, pat) for c in cands)}
            if not hit:
                known = sorted({c for _, cands in names for c in cands})
                close = difflib.get_close_matches(pat, known, n=5, cutoff=0.5)
                hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
                raise error(
                    f"exclude pattern {pat!r} matches nothing in model '{self.model.name}': no "
                    f"channel group named {pat!r} and no layer of that name producing one.{hint} "
                    "Group names are listed by kerasprune.analyze(model).summary()."
                )
            out |= hit
        return out

    @property
    def prunable(self) -> List[ChannelGroup]:
        """The groups that may lose channels, in graph order."""
        return [grp for grp in self.groups if grp.prunable]

    @property
    def frozen(self) -> List[ChannelGroup]:
        """The groups that may not lose channels, each with its reasons."""
        return [grp for grp in self.groups if not grp.prunable]

    def require_prunable(self) -> None:
        """Refuse to prune a model none of whose groups may lose a channel.

        Raises:
            NothingPrunableError: every group is frozen; the message gives the most
                common reasons, with how many groups each one freezes.
        """
        if self.prunable:
            return
        counts = Counter(r for g in self.groups for r in g.reasons)
        shown = [f"{r} ({n} group{'s' if n > 1 else ''})" for r, n in counts.most_common(6)]
        more = f"; and {len(counts) - 6} other reasons" if len(counts) > 6 else ""
        raise NothingPrunableError(
            f"model '{self.model.name}' has nothing to prune: all {len(self.groups)} of its "
            f"channel groups are frozen. Why: {'; '.join(shown)}{more}. "
            "kerasprune.analyze(model).summary() lists every group"
        )

    def record(self, layer: str) -> LayerRecord:
        """What the analysis learned about the layer at path ``layer``."""
        rec = self._records.get(layer)
        if rec is None:
            close = difflib.get_close_matches(layer, list(self._records), n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
            raise GroupNotFoundError(f"no layer {layer!r} in this graph.{hint}")
        return rec

    def group_of(self, layer: str, slot: str = "out") -> ChannelGroup:
        """The group holding the channels of ``layer``'s ``slot`` (default: its output)."""
        rec = self._records.get(layer)
        if rec is None or slot not in rec.slots:
            raise GroupNotFoundError(f"layer {layer!r} has no slot {slot!r} in this graph")
        ids = np.unique(self._source_group[rec.slots[slot].src])
        if len(ids) != 1:
            raise GroupNotFoundError(
                f"slot {slot!r} of layer {layer!r} holds channels of {len(ids)} groups; "
                "look at graph.groups instead"
            )
        return self.groups[int(ids[0])]

    def slot_channels(self, layer: str, slot: str, group: GroupRef) -> np.ndarray:
        """For each position of ``layer``'s ``slot``, the channel of ``group`` there (-1
        where the position holds another group's channel)."""
        layout = self.record(layer).slots[slot]
        return np.where(self._source_group[layout.src] == self._idx(group), layout.idx, -1)

    def weight_positions(self, layer: str, slot: str) -> List[Optional[Positions]]:
        """For each weight of ``layer``, the position of ``slot`` each entry depends on
        (see :func:`kerasprune.graph.entries.slot_positions`), computed once per graph."""
        key = (layer, slot)
        if key not in self._positions:
            self._positions[key] = slot_positions(self.record(layer), slot)
        return self._positions[key]

    def slot_masks(self, keep_masks: Mapping[str, np.ndarray]) -> Dict[str, SlotMasks]:
        """Per layer path, the boolean masks of kept positions of its changed slots.

        Args:
            keep_masks: group name -> boolean keep mask of the group's channels.
        """
        out: Dict[str, SlotMasks] = {}
        if not keep_masks:
            return out
        # one flat array of every group's mask, and each group's offset into it
        group_offset = np.full(len(self.groups), -1, dtype=np.int64)
        flat, pos = [], 0
        for name, mask in keep_masks.items():
            flat.append(np.asarray(mask, dtype=bool))
            group_offset[self._idx(name)] = pos
            pos += len(mask)
        flat_mask = np.concatenate(flat)
        offset = np.where(self._source_group >= 0, group_offset[self._source_group], -1)
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

    def entries(self, group: GroupRef) -> List[WeightEntries]:
        """Every weight entry holding a channel of ``group``, member by member.

        Derived from the handlers' own slicing (see :mod:`kerasprune.graph.entries`); the
        producers' filters, per-channel parameters and the consumers' input weights are
        all there, each entry tagged with its channel.
        """
        group = self[group] if isinstance(group, str) else group
        out: List[WeightEntries] = []
        seen = set()
        for m in group.members:
            if (m.layer, m.slot) in seen:
                continue
            seen.add((m.layer, m.slot))
            rec = self._records[m.layer]
            if not getattr(rec.layer, "weights", None):  # Keras operations have none
                continue
            chan_of_pos = self.slot_channels(m.layer, m.slot, group)
            positions_of = self.weight_positions(m.layer, m.slot)
            for i, (var, positions) in enumerate(zip(rec.layer.weights, positions_of)):
                if positions is None:
                    continue
                common = dict(
                    layer=m.layer, slot=m.slot, weight=i, name=var.name,
                    shape=tuple(int(d) for d in var.shape), produced=m.produced,
                    trainable=bool(var.trainable),
                )
                if isinstance(positions, AxisPositions):
                    if (chan_of_pos >= 0).any():
                        out.append(
                            WeightEntries(**common, axis=positions.axis, axis_channel=chan_of_pos)
                        )
                    continue
                flatpos = positions.ravel()
                hit = np.nonzero(flatpos >= 0)[0]
                chans = chan_of_pos[flatpos[hit]]
                sel = chans >= 0
                if sel.any():
                    out.append(
                        WeightEntries(**common, explicit_flat=hit[sel], explicit_channel=chans[sel])
                    )
        return out

    def response_points(self, group: GroupRef) -> List[Tuple[Any, np.ndarray, np.ndarray]]:
        """Where the channels of ``group`` can be observed as activations.

        Returns the top-level tensors that layers' weights read (the feature maps the
        next layers see: after BatchNormalization and activation), as a list of
        ``(keras_tensor, positions, channels)``: along the tensor's last axis, position
        ``positions[i]`` carries channel ``channels[i]`` of the group. Groups seen only
        inside nested models have no response points.
        """
        index = self._idx(group)
        out = []
        for kt, layout in self._observed:
            hit = self._source_group[layout.src] == index
            if hit.any() and layout.axis == len(kt.shape) - 1:
                out.append((kt, np.nonzero(hit)[0], layout.idx[hit]))
        return out

    def nested_response_points(
        self, group: GroupRef
    ) -> List[Tuple[Tuple[Any, ...], np.ndarray, np.ndarray, Tuple[Any, ...]]]:
        """Where the channels of ``group`` can be observed inside nested models and
        composite layers (tensors that no top-level layer reads).

        Returns a list of ``(key, positions, channels, readers)``: ``key`` names the
        tensor in the model's flattened graph
        (:class:`kerasprune.graph.composite.FlatRunner`), ``positions`` and ``channels``
        are as in :meth:`response_points`, ``readers`` are the layers whose weights read
        the tensor.
        """
        index = self._idx(group)
        out = []
        for key, rank, layout, readers in self._nested_observed:
            hit = self._source_group[layout.src] == index
            if hit.any() and layout.axis == rank - 1:
                out.append((key, np.nonzero(hit)[0], layout.idx[hit], readers))
        return out

    # display -------------------------------------------------------------

    def summary(self, print_fn: Callable[[str], Any] = print, show_frozen: bool = True) -> None:
        """Print one line per group: name, size, prunable (``yes*``: only outside its
        block's class) or why not, members."""
        rows = [("group", "size", "prunable", "members / reason")]
        for grp in self.groups:
            if not grp.prunable and not show_frozen:
                continue
            kind = ("yes" if not grp.outside_class else "yes*") if grp.prunable else "no"
            detail = ", ".join(f"{m.layer}:{m.slot}" for m in grp.members[:6])
            if len(grp.members) > 6:
                detail += f", ... ({len(grp.members)} members)"
            if not grp.prunable:
                detail = grp.reason
            rows.append((grp.name, str(grp.size), kind, detail))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print_fn(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
        if any(g.prunable and g.outside_class for g in self.groups):
            print_fn("yes*: prunable with its block rebuilt as a stand-in of another class "
                     "(ChannelGroup.outside_class says why); uniform=True leaves it whole")

    def __repr__(self) -> str:
        n = len(self.prunable)
        name = self.model.name if self.model is not None else "?"
        return f"<PruningGraph of '{name}': {len(self.groups)} groups, {n} prunable>"


def check_graph(graph: Optional[PruningGraph], model: keras.Model, caller: str) -> None:
    """Refuse a ``graph=`` argument that was analyzed from another model than ``model``.

    Every function that takes both a model and an optional graph calls this, so the
    misuse gives the same error everywhere.

    Raises:
        GraphMismatchError: ``graph`` is not ``kerasprune.analyze(model)``'s result.
    """
    if graph is not None and graph.model is not model:
        raise GraphMismatchError(
            f"the graph passed to {caller}() was analyzed from another model "
            f"('{getattr(graph.model, 'name', '?')}'); pass graph=kerasprune.analyze(model) "
            "of this model, or leave graph out"
        )
