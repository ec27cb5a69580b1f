"""Which entries of a layer's weight arrays belong to which channel of a group.

Importance criteria (the filter's weights of a channel), soft pruning (zero a channel
everywhere it lives) and cost counting (parameters per channel) all need the same fact:
for a layer's slot, which weight entries depend on which slot position. kerasprune does
not ask each handler to state it; it is *derived from the handler's own*
``slice_weights``: the handler slices arrays of entry numbers instead of weights, and
the entries that disappear when a position is removed are the ones that depend on it.
Every handler that can slice, a user's custom one included, thereby gets importance,
masking and counting for free.

Probing uses one pair of keep-masks per bit of the position number (position ``p`` is
kept by the first mask of pair ``b`` when bit ``b`` of ``p`` is 1, by the second when it
is 0), so a slot of ``n`` positions costs ``2*ceil(log2 n)`` slicings. A handler that
refuses such masks (a grouped convolution's input needs equal blocks) is probed one
position at a time instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

from kerasprune.errors import KerasPruneError

if TYPE_CHECKING:  # pragma: no cover
    from kerasprune.graph.analysis import ChannelGroup, LayerRecord, PruningGraph

__all__ = ["WeightEntries", "slot_positions", "group_entries"]


@dataclass(frozen=True)
class WeightEntries:
    """The entries of one weight array that hold channels of one group.

    Attributes:
        layer: path of the layer owning the weight.
        slot: the layer's slot through which the weight depends on the group.
        weight: position of the weight in ``layer.weights``.
        name: the weight variable's name (``kernel``, ``gamma``, ``moving_mean``, ...).
        shape: the weight's shape.
        flat: flat indices (into ``array.ravel()``) of the entries.
        channel: for each entry, the channel of the group it belongs to.
        produced: True for the weights that create the channel (a filter, a unit).
        trainable: whether the weight variable is trainable.
    """

    layer: str
    slot: str
    weight: int
    name: str
    shape: Tuple[int, ...]
    flat: np.ndarray
    channel: np.ndarray
    produced: bool
    trainable: bool

    @property
    def rank(self) -> int:
        """Rank of the weight array (kernels have rank >= 2, biases and scales 1)."""
        return len(self.shape)


def _survivors(handler, layer, numbered, slot, keep, axis) -> Optional[List[np.ndarray]]:
    from kerasprune.graph.analysis import SlotMasks

    masks = SlotMasks({slot: keep}, axes={slot: axis})
    try:
        out = handler.slice_weights(layer, [a.copy() for a in numbered], masks)
    except (ValueError, IndexError):
        return None
    if len(out) != len(numbered):
        raise KerasPruneError(
            f"the handler of '{layer.name}' returned {len(out)} weights for {len(numbered)}"
        )
    return [np.asarray(o) for o in out]


def _removed(numbered: Sequence[np.ndarray], kept: Sequence[np.ndarray], path: str) -> List[np.ndarray]:
    out = []
    for a, k in zip(numbered, kept):
        alive = np.zeros(a.size, dtype=bool)
        vals = k.ravel()
        if vals.size and (not np.issubdtype(vals.dtype, np.integer) or vals.min() < 0 or vals.max() >= a.size):
            raise KerasPruneError(
                f"the pruning handler of '{path}' changes weight values while slicing; "
                "kerasprune cannot tell which entries belong to which channel"
            )
        alive[vals] = True
        out.append(~alive)
    return out


def slot_positions(record: "LayerRecord", slot: str) -> List[Optional[np.ndarray]]:
    """For each weight of ``record``'s layer, the slot position each entry depends on.

    Args:
        record: the analysis record of the layer.
        slot: one of the record's slots.

    Returns:
        One item per weight in ``layer.weights``: an int array of the weight's shape with
        the slot position of each entry, ``-1`` where the entry does not depend on the
        slot; or None for a weight that does not depend on the slot at all.
    """
    layer, handler = record.layer, record.handler
    layout = record.slots[slot]
    n = len(layout)
    shapes = [tuple(int(d) for d in w.shape) for w in layer.weights]
    stated = handler.weight_positions(layer, slot, n)
    if stated is not None:
        return [None if p is None else np.asarray(p, dtype=np.int64) for p in stated]
    numbered = [np.arange(math.prod(s), dtype=np.int64).reshape(s) for s in shapes]
    pos = [np.full(math.prod(s), -1, dtype=np.int64) for s in shapes]

    def assign(keep: np.ndarray, value_of_removed) -> bool:
        kept = _survivors(handler, layer, numbered, slot, keep, layout.axis)
        if kept is None:
            return False
        for p, gone in zip(pos, _removed(numbered, kept, record.path)):
            value_of_removed(p, gone)
        return True

    ok = True
    if n == 1:
        ok = assign(np.zeros(1, dtype=bool), lambda p, gone: p.__setitem__(gone, 0))
    else:
        bits = max(1, math.ceil(math.log2(n)))
        number = np.arange(n)
        dependent = [np.zeros(a.size, dtype=bool) for a in numbered]
        value = [np.zeros(a.size, dtype=np.int64) for a in numbered]
        for b in range(bits):
            has = ((number >> b) & 1).astype(bool)
            # keeping the positions whose bit is 1 removes exactly those whose bit is 0
            for keep, bit in ((has, 0), (~has, 1)):
                kept = _survivors(handler, layer, numbered, slot, keep, layout.axis)
                if kept is None:
                    ok = False
                    break
                for d, v, gone in zip(dependent, value, _removed(numbered, kept, record.path)):
                    d |= gone
                    if bit:
                        v[gone] |= 1 << b
            if not ok:
                break
        if ok:
            for p, d, v in zip(pos, dependent, value):
                p[d] = v[d]
    if not ok:  # one position at a time
        pos = [np.full(math.prod(s), -1, dtype=np.int64) for s in shapes]
        for q in range(n):
            keep = np.ones(n, dtype=bool)
            keep[q] = False

            def mark(p, gone, q=q):
                p[gone] = q

            if not assign(keep, mark):
                raise KerasPruneError(
                    f"the pruning handler of '{record.path}' cannot slice slot {slot!r}"
                )
    return [p.reshape(s) if (p >= 0).any() else None for p, s in zip(pos, shapes)]


def group_entries(graph: "PruningGraph", group: "ChannelGroup") -> List[WeightEntries]:
    """Every weight entry that holds a channel of ``group``, member by member.

    The positions of each ``(layer, slot)`` are probed once per graph and cached.
    """
    cache: Dict[Tuple[str, str], List[Optional[np.ndarray]]] = graph._positions
    records = {rec.path: rec for rec in graph.records}
    out: List[WeightEntries] = []
    seen = set()
    for m in group.members:
        if (m.layer, m.role) in seen:
            continue
        seen.add((m.layer, m.role))
        rec = records[m.layer]
        if not rec.layer.weights:
            continue
        key = (m.layer, m.role)
        if key not in cache:
            cache[key] = slot_positions(rec, m.role)
        layout = rec.slots[m.role]
        in_group = graph._roots[layout.src] == group._root
        chan_of_pos = np.where(in_group, layout.idx, -1)
        for i, (var, positions) in enumerate(zip(rec.layer.weights, cache[key])):
            if positions is None:
                continue
            flatpos = positions.ravel()
            hit = np.nonzero(flatpos >= 0)[0]
            chans = chan_of_pos[flatpos[hit]]
            sel = chans >= 0
            if not sel.any():
                continue
            out.append(
                WeightEntries(
                    layer=m.layer,
                    slot=m.role,
                    weight=i,
                    name=var.name,
                    shape=tuple(int(d) for d in var.shape),
                    flat=hit[sel],
                    channel=chans[sel],
                    produced=m.produced,
                    trainable=bool(var.trainable),
                )
            )
    return out
