"""Checking a keep-set against a graph and turning it into per-group boolean masks."""

from __future__ import annotations

from typing import Dict, Iterable, Mapping

import numpy as np

from kerasprune.errors import FrozenGroupError, KeepSetError
from kerasprune.graph.groups import ChannelGroup, PruningGraph

__all__ = ["keep_masks"]


def _as_indices(group: ChannelGroup, values: Iterable[int]) -> np.ndarray:
    try:
        arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    except TypeError:
        raise KeepSetError(
            f"keep[{group.name!r}] must be a sequence of channel indices, got {values!r}"
        ) from None
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        if arr.dtype == bool and arr.shape == (group.size,):
            return np.nonzero(arr)[0]
        raise KeepSetError(
            f"keep[{group.name!r}] must be a 1-D sequence of integer channel indices "
            f"(or a boolean mask of length {group.size}), got array of shape {arr.shape} "
            f"and dtype {arr.dtype}"
        )
    return arr.astype(np.int64)


def keep_masks(graph: PruningGraph, keep: Mapping[str, Iterable[int]]) -> Dict[str, np.ndarray]:
    """Validate ``keep`` and return group name -> boolean mask of kept channels.

    Groups absent from ``keep`` keep all their channels; groups that keep every channel
    are left out of the result.

    Raises:
        KeepSetError: unknown group name, indices out of range or repeated, an emptied
            group, or blocks of a grouped layer left unequal.
        FrozenGroupError: a frozen group asked to lose channels.
    """
    if not isinstance(keep, Mapping):
        raise KeepSetError(
            f"keep must map group names to channel indices, got {type(keep).__name__}"
        )
    out: Dict[int, np.ndarray] = {}
    for name, values in keep.items():
        if name not in graph:
            raise KeepSetError(graph.unknown_group_message(name))
        group = graph[name]
        idx = _as_indices(group, values)
        bad = idx[(idx < 0) | (idx >= group.size)]
        if bad.size:
            raise KeepSetError(
                f"keep[{name!r}] has indices {bad[:5].tolist()} outside 0..{group.size - 1} "
                f"(group {name!r} has {group.size} channels)"
            )
        uniq, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            raise KeepSetError(
                f"keep[{name!r}] repeats indices {uniq[counts > 1][:5].tolist()}; each "
                "kept channel must be listed once"
            )
        if idx.size == 0:
            raise KeepSetError(
                f"keep[{name!r}] is empty: a group must keep at least one channel (removing "
                f"all {group.size} would cut the model in two)"
            )
        if idx.size == group.size:
            continue
        if not group.prunable:
            raise FrozenGroupError(
                f"group {name!r} cannot be pruned: {group.reason}"
            )
        mask = np.zeros(group.size, dtype=bool)
        mask[idx] = True
        if group.blocks > 1:
            per_block = mask.reshape(group.blocks, -1).sum(axis=1)
            if (per_block != per_block[0]).any():
                raise KeepSetError(
                    f"group {name!r} is split into {group.blocks} blocks of "
                    f"{group.size // group.blocks} channels (grouped convolution or "
                    "GroupNormalization); keep the same number of channels in each block, "
                    f"got {per_block.tolist()}"
                )
        out[name] = mask
    return out
