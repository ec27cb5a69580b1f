"""Which entries of a layer's weight arrays belong to which channel of a group.

Importance criteria (the filter's weights of a channel), soft pruning (zero a channel
everywhere it lives) and cost counting (parameters per channel) all need the same fact:
for a layer's slot, which weight entries depend on which slot position. kerasprune does
not ask each handler to state it; it is *derived from the handler's own*
``slice_weights``: the handler slices arrays of entry numbers instead of weights, and
the entries that disappear when a position is removed are the ones that depend on it.
Every handler that can slice, a user's custom one included, thereby gets importance,
masking and counting for free.

Handlers of the common layers (convolutions, Dense) state the answer directly
(:meth:`LayerHandler.weight_positions`), which is what large kernels need: deriving it
costs a few copies of every kernel. The tests check each stated answer against the
derived one.

Probing uses one pair of keep-masks per bit of the position number (position ``p`` is
kept by the first mask of pair ``b`` when bit ``b`` of ``p`` is 1, by the second when it
is 0), so a slot of ``n`` positions costs ``2*ceil(log2 n)`` slicings. A handler that
refuses such masks (a grouped convolution's input needs equal blocks) is probed one
position at a time instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from kerasprune.errors import HandlerError
from kerasprune.graph.handler import LayerRecord, SlotMasks

__all__ = ["WeightEntries", "AxisPositions", "Positions", "slot_positions", "derive_positions"]


@dataclass(frozen=True)
class AxisPositions:
    """Positions stated as "entry ``(..., p, ...)`` along ``axis`` depends on position
    ``p``" for a whole weight of ``shape`` (a kernel's output or input axis): the compact
    form of a position array, which for large kernels is never materialized."""

    shape: Tuple[int, ...]
    axis: int

    def array(self) -> np.ndarray:
        """The equivalent position array (int64, the weight's shape)."""
        view = [1] * len(self.shape)
        view[self.axis] = self.shape[self.axis]
        n = self.shape[self.axis]
        return np.broadcast_to(np.arange(n, dtype=np.int64).reshape(view), self.shape).copy()


Positions = Union[np.ndarray, AxisPositions]


@dataclass(frozen=True)
class WeightEntries:
    """The entries of one weight array that hold channels of one group.

    Two forms: explicit (``flat`` and ``channel`` given), or along an axis (``axis`` and
    ``axis_channel`` given: every entry of the weight whose index along ``axis`` is ``p``
    belongs to channel ``axis_channel[p]``, none where it is -1), whose ``flat`` and
    ``channel`` are built only when asked for. Per-channel reductions of the second form
    (:meth:`reduce_axis`) never build them.

    Attributes:
        layer: path of the layer owning the weight.
        slot: the layer's slot through which the weight depends on the group.
        weight: position of the weight in ``layer.weights``.
        name: the weight variable's name (``kernel``, ``gamma``, ``moving_mean``, ...).
        shape: the weight's shape.
        produced: True for the weights that create the channel (a filter, a unit).
        trainable: whether the weight variable is trainable.
        axis: the axis of the second form (None for the explicit form).
        axis_channel: the channel of each index along ``axis`` (second form).
        flat: flat indices (into ``array.ravel()``) of the entries.
        channel: for each entry, the channel of the group it belongs to.
    """

    layer: str
    slot: str
    weight: int
    name: str
    shape: Tuple[int, ...]
    produced: bool
    trainable: bool
    explicit_flat: Optional[np.ndarray] = None
    explicit_channel: Optional[np.ndarray] = None
    axis: Optional[int] = None
    axis_channel: Optional[np.ndarray] = None

    @property
    def rank(self) -> int:
        """Rank of the weight array (kernels have rank >= 2, biases and scales 1)."""
        return len(self.shape)

    def _materialize(self) -> Tuple[np.ndarray, np.ndarray]:
        cached = self.__dict__.get("_entries")
        if cached is None:
            if self.axis is None:
                cached = (self.explicit_flat, self.explicit_channel)
            else:
                per_entry = self.axis_channel[AxisPositions(self.shape, self.axis).array().ravel()]
                flat = np.nonzero(per_entry >= 0)[0]
                cached = (flat, per_entry[flat])
            self.__dict__["_entries"] = cached
        return cached

    @property
    def flat(self) -> np.ndarray:
        """Flat indices (into ``array.ravel()``) of the entries."""
        return self._materialize()[0]

    @property
    def channel(self) -> np.ndarray:
        """For each entry (aligned with :attr:`flat`), its channel of the group."""
        return self._materialize()[1]

    def counts(self, size: int) -> np.ndarray:
        """Entries per channel of a group of ``size`` channels."""
        if self.axis is None:
            return np.bincount(self.channel, minlength=size)
        held = self.axis_channel >= 0
        per_index = math.prod(self.shape) // self.shape[self.axis]
        return np.bincount(self.axis_channel[held], minlength=size) * per_index

    def reduce_axis(self, values: np.ndarray, size: int) -> np.ndarray:
        """Per channel, the sum of ``values`` (an array of the weight's shape) over the
        channel's entries."""
        if self.axis is None:
            picked = values.ravel()[self.flat].astype(np.float64)
            return np.bincount(self.channel, weights=picked, minlength=size)
        axes = tuple(a for a in range(len(self.shape)) if a != self.axis)
        along = values.sum(axis=axes, dtype=np.float64) if axes else values.astype(np.float64)
        held = self.axis_channel >= 0
        return np.bincount(self.axis_channel[held], weights=along[held], minlength=size)

    def whole_on_last_axis(self, size: int) -> bool:
        """Whether the entries are the whole array, channel ``c`` at index ``c`` of the
        last axis (a kernel producing every channel of the group, in order)."""
        if self.axis is not None:
            return (self.axis == len(self.shape) - 1 and self.shape[-1] == size
                    and np.array_equal(self.axis_channel, np.arange(size)))
        flat = self.flat
        return (
            self.shape[-1:] == (size,)
            and flat.size == math.prod(self.shape)
            and np.array_equal(flat, np.arange(flat.size))
            and np.array_equal(self.channel, flat % size)
        )


def _survivors(handler, layer, numbered, slot, keep, axis) -> Optional[List[np.ndarray]]:
    masks = SlotMasks({slot: keep}, axes={slot: axis})
    try:
        out = handler.slice_weights(layer, [a.copy() for a in numbered], masks)
    except (ValueError, IndexError):
        return None
    if len(out) != len(numbered):
        raise HandlerError(
            f"the handler of '{layer.name}' returned {len(out)} weights for {len(numbered)}"
        )
    return [np.asarray(o) for o in out]


def _removed(numbered: Sequence[np.ndarray], kept: Sequence[np.ndarray], path: str) -> List[np.ndarray]:
    out = []
    for a, k in zip(numbered, kept):
        alive = np.zeros(a.size, dtype=bool)
        vals = k.ravel()
        if vals.size and (not np.issubdtype(vals.dtype, np.integer) or vals.min() < 0 or vals.max() >= a.size):
            raise HandlerError(
                f"the pruning handler of '{path}' changes weight values while slicing; "
                "kerasprune cannot tell which entries belong to which channel"
            )
        alive[vals] = True
        out.append(~alive)
    return out


def slot_positions(record: LayerRecord, slot: str) -> List[Optional[Positions]]:
    """For each weight of ``record``'s layer, the slot position each entry depends on.

    Args:
        record: the analysis record of the layer.
        slot: one of the record's slots.

    Returns:
        One item per weight in ``layer.weights``: an int array of the weight's shape with
        the slot position of each entry, ``-1`` where the entry does not depend on the
        slot (or the same as an :class:`AxisPositions`); or None for a weight that does
        not depend on the slot at all.
    """
    stated = record.handler.weight_positions(record.layer, slot, len(record.slots[slot]))
    if stated is not None:
        return [p if p is None or isinstance(p, AxisPositions) else np.asarray(p, dtype=np.int64) for p in stated]
    return derive_positions(record, slot)


def derive_positions(record: LayerRecord, slot: str) -> List[Optional[np.ndarray]]:
    """:func:`slot_positions` derived from the handler's ``slice_weights`` alone (the
    handler's own ``weight_positions`` is not asked)."""
    layer, handler = record.layer, record.handler
    layout = record.slots[slot]
    n = len(layout)
    shapes = [tuple(int(d) for d in w.shape) for w in layer.weights]
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
                raise HandlerError(
                    f"the pruning handler of '{record.path}' cannot slice slot {slot!r}"
                )
    return [p.reshape(s) if (p >= 0).any() else None for p, s in zip(pos, shapes)]
