"""Channel layouts: which channel of which source sits at each position of an axis.

A *source* is a set of channels created by one layer (a convolution's filters, a Dense
layer's units, a model input, the output of a layer kerasprune cannot see through).
Every tensor in the graph gets a :class:`Layout` for its channel axis: two integer
arrays giving, for each position along that axis, the source it comes from and the
channel index inside that source. Concatenation, flattening and depthwise multipliers
are then plain numpy operations on these arrays, and coupling two tensors (a residual
``Add``) is a position-by-position comparison.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["Layout"]


class Layout:
    """Per-position (source, channel) map of one tensor axis.

    Attributes:
        src: int array, the source id at each position.
        idx: int array, the channel index inside that source at each position.
        axis: the tensor axis (counted with the batch axis as 0) these positions run along.
    """

    __slots__ = ("src", "idx", "axis")

    def __init__(self, src: np.ndarray, idx: np.ndarray, axis: int) -> None:
        self.src = src
        self.idx = idx
        self.axis = int(axis)

    @classmethod
    def of_source(cls, source_id: int, size: int, axis: int) -> "Layout":
        """The layout of a whole source laid out in order along ``axis``."""
        return cls(
            np.full(size, source_id, dtype=np.int64),
            np.arange(size, dtype=np.int64),
            axis,
        )

    @classmethod
    def concat(cls, parts: Sequence["Layout"], axis: int) -> "Layout":
        """Layouts laid end to end, as ``Concatenate`` does."""
        return cls(
            np.concatenate([p.src for p in parts]),
            np.concatenate([p.idx for p in parts]),
            axis,
        )

    def __len__(self) -> int:
        return int(self.src.shape[0])

    def moved(self, axis: int) -> "Layout":
        """The same positions along another tensor axis (the rank changed around it)."""
        return self if axis == self.axis else Layout(self.src, self.idx, axis)

    def repeated(self, times: int, axis: int) -> "Layout":
        """Each position repeated ``times`` times in place (``c*times + k``)."""
        return Layout(np.repeat(self.src, times), np.repeat(self.idx, times), axis)

    def spread(self, dims: Sequence[int], channel_dim: int, axis: int) -> "Layout":
        """The layout after flattening a block of ``dims`` whose ``channel_dim`` is this axis.

        Used by ``Flatten`` and flattening ``Reshape``: position ``p`` of the flat axis
        carries the channel that the unflattened element at ``unravel(p)`` carried.
        """
        shape = [1] * len(dims)
        shape[channel_dim] = len(self)
        pos = np.broadcast_to(np.arange(len(self)).reshape(shape), tuple(dims)).ravel()
        return Layout(self.src[pos], self.idx[pos], axis)

    def sources(self) -> np.ndarray:
        """The distinct source ids present, in order of first appearance."""
        uniq, first = np.unique(self.src, return_index=True)
        return uniq[np.argsort(first)]

    def same_positions(self, other: "Layout") -> bool:
        """True when both layouts map every position to the same (source, channel)."""
        return (
            len(self) == len(other)
            and np.array_equal(self.src, other.src)
            and np.array_equal(self.idx, other.idx)
        )

    def __repr__(self) -> str:
        return f"Layout(axis={self.axis}, size={len(self)}, sources={self.sources().tolist()})"
