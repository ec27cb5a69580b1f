"""One prunable group as the selection sees it: an ordered list of removal steps.

A group loses channels lowest score first. A group split into ``blocks`` equal blocks
(a grouped convolution) must keep the same number of channels in every block, so one
*step* removes the lowest remaining channel of every block at once; otherwise a step
is one channel. A step has a score (the mean of its channels' scores), a cost in the
selection's unit and a position; a group's steps are taken in order, so whatever
the scope, the channels removed from a group are always its lowest-scoring ones.

Guards turn into a number of steps a group may take (``limit``) and a set of widths it
may end at (``round_to``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from kerasprune.graph.groups import ChannelGroup

__all__ = ["Candidate"]


@dataclass
class Candidate:
    """A prunable group, its scores and costs, as removal steps.

    Attributes:
        group: the channel group.
        position: the group's index in graph order (tie-break between groups).
        scores: one score per channel.
        costs: one cost per channel, in the selection's unit.
        spatial: feature-map size of the group (its hierarchical level).
        level_flops: MACs of the group's producing layers (hierarchical FLOPs shares).
        min_keep: fewest channels the group may keep.
        round_to: the kept width must be a multiple of this (or the group untouched).
    """

    group: ChannelGroup
    position: int
    scores: np.ndarray
    costs: np.ndarray
    spatial: int = 1
    level_flops: float = 0.0
    min_keep: int = 1
    round_to: int = 1

    def __post_init__(self) -> None:
        blocks = max(1, int(self.group.blocks))
        n = self.group.size
        if n % blocks:
            blocks = 1
        self.blocks = blocks
        width = n // blocks
        # within each block, channels lowest score first (ties: lower index first)
        per_block = []
        for b in range(blocks):
            idx = np.arange(b * width, (b + 1) * width)
            per_block.append(idx[np.lexsort((idx, self.scores[idx]))])
        #: steps x blocks: the channels removed by each step
        self.order = np.stack(per_block, axis=1) if width else np.zeros((0, blocks), np.int64)
        # non-decreasing (each block's k-th lowest), so a ranking by score takes a
        # group's steps in order
        self.step_scores = self.scores[self.order].mean(axis=1) if width else np.zeros(0)
        self.step_costs = self.costs[self.order].sum(axis=1) if width else np.zeros(0)
        self.multiple = self.round_to * blocks // math.gcd(self.round_to, blocks)
        floor_keep = -(-max(self.min_keep, 0) // blocks) * blocks
        # the fewest channels the guards allow, on the round_to grid
        lowest = -(-max(floor_keep, 1) // self.multiple) * self.multiple
        self.limit = max(0, (n - lowest) // blocks) if lowest < n else 0

    @property
    def name(self) -> str:
        """The group's name."""
        return self.group.name

    @property
    def size(self) -> int:
        """The group's number of channels."""
        return self.group.size

    def cost(self, steps: int) -> float:
        """Total cost of taking the first ``steps`` steps."""
        return float(self.step_costs[:steps].sum())

    def snap(self, steps: int) -> int:
        """The step count nearest ``steps`` whose kept width obeys ``round_to``.

        Ties go to the smaller removal. Never more than :attr:`limit`.
        """
        steps = int(min(max(steps, 0), self.limit))
        if steps == 0 or self.multiple == self.blocks:
            return steps
        n = self.size
        kept = n - steps * self.blocks
        down = (kept // self.multiple) * self.multiple
        up = down + self.multiple
        options = [k for k in (down, up) if k < n and (n - k) // self.blocks <= self.limit]
        if not options:
            return 0
        best = min(options, key=lambda k: (abs(k - kept), -k))
        # keeping all n (no removal) is also on the grid: prefer it when nearer
        if abs(n - kept) < abs(best - kept):
            return 0
        return (n - best) // self.blocks

    def removed(self, steps: int) -> np.ndarray:
        """The channels removed by the first ``steps`` steps, sorted."""
        return np.sort(self.order[:steps].ravel())

    def keep(self, steps: int) -> np.ndarray:
        """The channels kept after the first ``steps`` steps, sorted."""
        mask = np.ones(self.size, dtype=bool)
        mask[self.order[:steps].ravel()] = False
        return np.nonzero(mask)[0]

    def below(self, threshold: float, limit: Optional[int] = None) -> int:
        """How many leading steps score strictly below ``threshold``."""
        n = self.limit if limit is None else min(limit, self.limit)
        return int(np.searchsorted(self.step_scores[:n], threshold, side="left"))
