"""One-shot pruning to a measured speed-up instead of a FLOPs count.

A FLOPs cut is only a promise: on a CPU, the per-operation cost of the executor, the
element-wise layers (which shrink with the width, not its square) and convolution
kernels that run less efficiently at small or odd widths make a thin model less faster
than its multiply-adds say (``bench/latency_profile.py`` measures each part). When the
speed-up is what matters, :func:`prune_for_speedup` asks for it directly: it scores the
channels once, then searches, by bisection on the fraction of FLOPs removed, for the
smallest cut whose rebuilt model is measured at least ``speedup`` times faster than the
original on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Tuple

import keras

from kerasprune.costs.counting import count_flops
from kerasprune.costs.latency import LatencyMeter
from kerasprune.errors import OptionError, SelectionError, SpeedupNotReachedError
from kerasprune.graph.analysis import analyze
from kerasprune.importance import score
from kerasprune.selection import SelectionOptions, resolve_options, select
from kerasprune.surgery.rebuild import rebuild

__all__ = ["prune_for_speedup", "SpeedupResult", "SpeedupNotReachedError"]


@dataclass
class SpeedupResult:
    """What :func:`prune_for_speedup` found.

    Attributes:
        model: the thin model (rebuilt from the smallest FLOPs cut that met the target).
        ratio: its fraction of FLOPs removed (as asked of :func:`kerasprune.select`).
        speedup: its measured speed-up over the original.
        flops_cut: original multiply-adds / thin multiply-adds.
        trials: every ``(ratio, measured speed-up)`` tried, in order.
    """

    model: keras.Model
    ratio: float
    speedup: float
    flops_cut: float
    trials: List[Tuple[float, float]] = field(default_factory=list)

    @property
    def efficiency(self) -> float:
        """Measured speed-up / FLOPs cut (1.0: exactly as much faster as the FLOPs say)."""
        return self.speedup / self.flops_cut


def prune_for_speedup(
    model: keras.Model,
    speedup: float,
    criterion: str = "aaws",
    normalization: str = "layer_mean",
    scope: Optional[str] = None,
    data: Any = None,
    *,
    batch_size: int = 1,
    max_ratio_flops: float = 0.95,
    tolerance: float = 0.01,
    loss: Any = None,
    min_channels: Optional[int] = None,
    max_ratio: Optional[float] = None,
    round_to: Optional[int] = None,
    exclude: Optional[Iterable[str]] = None,
    samples: int = 5,
    measure: Optional[Callable[[keras.Model, keras.Model], float]] = None,
    verbose: int = 0,
    options: Optional[SelectionOptions] = None,
) -> SpeedupResult:
    """Remove the fewest FLOPs that make ``model`` at least ``speedup`` times faster here.

    Scores the channels once with ``criterion``; then, for a fraction ``r`` of the FLOPs,
    selects globally (``unit="flops"``) and rebuilds, and measures the thin model against
    the original (:class:`~kerasprune.costs.latency.LatencyMeter`: compiled calls at
    ``batch_size``, interleaved, medians of ``samples``). ``r`` is found by bisection
    between 0 and ``max_ratio_flops`` until the bracket is narrower than ``tolerance``.
    The measurements are of this machine and this runtime (the running Keras
    backend: TensorFlow, JAX or PyTorch, each with its own compiled call); a
    speed-up found on a noisy machine is noisy too. ``model`` is not modified.

    Example:

    ```python
    found = kp.prune_for_speedup(model, 2.0, batch_size=32, round_to=8)
    print(found.ratio, found.speedup, found.flops_cut, found.efficiency)
    ```

    Args:
        model: a functional or Sequential Keras 3 model.
        speedup: the speed-up wanted, > 1.
        criterion, normalization, scope, data, loss, min_channels, max_ratio, round_to,
            exclude: as in :func:`kerasprune.prune` (the selection options are shortcuts
            for the fields of ``options``; None: not given).
        batch_size: the batch the latency is measured at.
        max_ratio_flops: the largest fraction of FLOPs the search may remove.
        tolerance: stop when the bracket of ratios is narrower than this.
        samples: interleaved timing samples per measurement.
        measure: ``(original, thin) -> speed-up``, instead of timing on this machine
            (for another runtime, a device, or a model of its latency).
        verbose: 1 prints one line per trial.
        options: every selection option in one :class:`kerasprune.SelectionOptions`; its
            ``unit`` becomes ``"flops"`` (the search is over a fraction of the FLOPs), so
            it may be ``"neurons"`` (the default) or ``"flops"``, not ``"params"``.

    Returns:
        A :class:`SpeedupResult` (the thin model, its ratio, measured speed-up, FLOPs cut
        and every trial).

    Raises:
        SpeedupNotReachedError: the model is not ``speedup`` times faster even with
            ``max_ratio_flops`` of its FLOPs removed (the error gives what was reached).
        OptionError: ``speedup`` <= 1, ``max_ratio_flops`` or ``tolerance`` out of range.
        SelectionError: an invalid selection option, a shortcut that contradicts
            ``options``, or ``options.unit="params"``.
    """
    if not speedup > 1.0:
        raise OptionError(f"speedup must be greater than 1, got {speedup}")
    if not 0.0 < max_ratio_flops < 1.0:
        raise OptionError(f"max_ratio_flops must be in (0, 1), got {max_ratio_flops}")
    if not tolerance > 0.0:
        raise OptionError(f"tolerance must be positive, got {tolerance}")
    opts = resolve_options(
        options, scope=scope, min_channels=min_channels, max_ratio=max_ratio, round_to=round_to,
        exclude=exclude,
    )
    if opts.unit == "params":
        raise SelectionError(
            "prune_for_speedup searches a fraction of the FLOPs: its options' unit is 'flops' "
            "(or the default 'neurons', replaced by 'flops'), not 'params'"
        )
    opts = opts.replace(unit="flops")
    if measure is None:
        measure = LatencyMeter(batch_size=batch_size, samples=samples).speedup
    graph = analyze(model)
    graph.require_prunable()
    scores = score(model, criterion, normalization=normalization, data=data, graph=graph, loss=loss,
                   exclude=opts.exclude)
    trials: List[Tuple[float, float]] = []

    def attempt(ratio: float) -> Tuple[keras.Model, float]:
        keep = select(graph, scores, ratio, model=model, options=opts)
        thin = rebuild(model, keep, graph=graph)
        measured = float(measure(model, thin))
        trials.append((ratio, measured))
        if verbose:
            print(f"prune_for_speedup: {ratio:.1%} of FLOPs removed -> {measured:.2f}x (want {speedup:.2f}x)")
        return thin, measured

    best_model, best = attempt(max_ratio_flops)
    if best < speedup:
        raise SpeedupNotReachedError(
            f"with {max_ratio_flops:.0%} of its FLOPs removed the model is measured {best:.2f}x faster, "
            f"short of {speedup:.2f}x: its time is not dominated by multiply-adds here (see "
            "bench/latency_profile.py); allow a larger max_ratio_flops or ask for less"
        )
    lo, hi, best_ratio = 0.0, max_ratio_flops, max_ratio_flops
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        thin, measured = attempt(mid)
        if measured >= speedup:
            hi, best_model, best, best_ratio = mid, thin, measured, mid
        else:
            lo = mid
    flops_cut = count_flops(model).total / max(count_flops(best_model).total, 1)
    return SpeedupResult(best_model, best_ratio, best, flops_cut, trials)
