"""Pictures of a pruning result: the pattern, the run's curve, the saliency per layer.

Every function draws on its own :class:`matplotlib.figure.Figure` rendered by the Agg
canvas (no ``pyplot`` state, no change of the session's backend, so they work the same
in a script, a test and a notebook), writes a PNG or SVG file chosen by the suffix of
``path``, and returns the data it plotted so that the figure can be checked or redrawn.

- :func:`plot_pattern`: for each prunable layer, in model order, the fraction of its
  neurons kept, labelled with the original and final width (Salama et al. (2019), Fig. 3);
- :func:`plot_run`: a gradual run's metric against parameters and against FLOPs, round
  by round, with the target line (Wang et al. (2017), Fig. 2);
- :func:`plot_saliency`: the distribution of the normalized scores of each group,
  before selection (Xu et al. (2018), Fig. 3), so the effect of ``layer_mean`` / ``l2``
  normalization is visible.

matplotlib is imported only when a function draws (``pip install kerasprune[plot]``).

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Salama et al. (2019), global normalized-L1 pruning: Abdullah Salama, Oleksiy Ostapenko,
  Tassilo Klein and Moin Nabi, "Pruning at a Glance: Global Neural Pruning for Model
  Compression", arXiv preprint, 2019; arXiv:1912.00200.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from kerasprune.errors import PlotError
from kerasprune.runs.history import read_history
from kerasprune.runs.target import parse_target

__all__ = [
    "PlotError",
    "RunPoint",
    "pattern_data",
    "plot_pattern",
    "plot_run",
    "plot_saliency",
]

FORMATS = (".png", ".svg")


@dataclass(frozen=True)
class RunPoint:
    """One round of a gradual run as :func:`plot_run` draws it."""

    round: int
    params: int
    flops: int
    value: float
    meets_target: Optional[bool]


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the installation
        raise PlotError(
            "plotting needs matplotlib: pip install 'kerasprune[plot]' (or matplotlib)"
        ) from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _check_path(path: Union[str, os.PathLike]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise PlotError(f"the plot file must end with .png or .svg, got {p.name!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _save(fig, path: Path) -> None:
    fig.savefig(path, format=path.suffix.lower().lstrip("."), dpi=120)


# ----------------------------------------------------------------------------- pattern


def pattern_data(before: Any, after: Any) -> List[Tuple[str, int, int]]:
    """``(layer, width before, width after)`` for every prunable layer, in model order.

    A prunable layer is one that produces the channels of a prunable group of
    ``before`` (a convolution's filters, a hidden Dense layer's units; the output layer
    and frozen groups are left out). A layer missing from ``after`` counts as width 0.

    Args:
        before: the model before pruning.
        after: the pruned model (from :func:`kerasprune.rebuild`, :func:`kerasprune.prune`,
            :func:`kerasprune.strip` or a run's checkpoint).
    """
    return _pattern(before, after)[0]


def _pattern(before: Any, after: Any) -> Tuple[List[Tuple[str, int, int]], int, int]:
    """The pattern data, and the neurons (channels of the prunable groups) before and after."""
    from kerasprune.graph.analysis import analyze
    from kerasprune.report.compare import layer_widths

    graph = analyze(before, warn=False)
    producers = {name for g in graph.prunable for name in g.producers}
    wb, wa = layer_widths(before), layer_widths(after)
    data = [(name, int(w), int(wa.get(name, 0))) for name, w in wb.items() if name in producers]
    neurons_before = sum(g.size for g in graph.prunable)
    # a group's producers share its width (a residual group's convolutions all keep the same count)
    neurons_after = sum(int(wa.get(g.producers[0], 0)) if g.producers else g.size for g in graph.prunable)
    return data, neurons_before, neurons_after


def plot_pattern(before: Any, after: Any, path: Union[str, os.PathLike], *, title: Optional[str] = None) -> List[Tuple[str, int, int]]:
    """Draw the fraction of neurons each prunable layer kept, with ``before -> after`` widths.

    One bar per prunable layer, in model order (the pattern of Salama et al. (2019), Fig. 3): the
    height is ``after / before``; the label above it reads ``before -> after``.

    Args:
        before: the model before pruning.
        after: the pruned model.
        path: a ``.png`` or ``.svg`` file to write.
        title: the figure's title (default: totals of neurons kept).

    Returns:
        The plotted data, ``[(layer, width before, width after), ...]`` (see
        :func:`pattern_data`).

    Raises:
        PlotError: a file type other than PNG or SVG, or no prunable layer.
    """
    p = _check_path(path)
    data, total_b, total_a = _pattern(before, after)
    if not data:
        raise PlotError("the model has no prunable layer to draw")
    names = [d[0] for d in data]
    kept = np.array([d[2] / d[1] if d[1] else 0.0 for d in data])
    fig = _figure(max(4.0, 0.55 * len(data) + 1.5), 3.8)
    ax = fig.add_subplot()
    x = np.arange(len(data))
    ax.bar(x, kept, color="#4C72B0", width=0.7)
    ax.bar(x, 1.0 - kept, bottom=kept, color="#DDDDDD", width=0.7)
    for i, (_, wb, wa) in enumerate(data):
        ax.text(i, min(kept[i], 1.0) + 0.02, f"{wb}\u2192{wa}", ha="center", va="bottom",
                fontsize=7, rotation=90 if len(data) > 8 else 0)
    ax.set_xticks(x, names, rotation=60 if len(data) > 4 else 0, ha="right" if len(data) > 4 else "center", fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("fraction of neurons kept")
    ax.set_title(title or f"neurons kept: {total_a} of {total_b} ({100.0 * total_a / max(1, total_b):.1f}%)")
    _save(fig, p)
    return data


# ----------------------------------------------------------------------------- run


def _history(rows_or_dir: Union[str, os.PathLike, Sequence[Mapping[str, Any]]]) -> List[Mapping[str, Any]]:
    if isinstance(rows_or_dir, (str, os.PathLike)):
        try:
            rows = read_history(rows_or_dir)
        except FileNotFoundError as exc:
            raise PlotError(f"no run history at {exc.filename}") from None
    else:
        rows = list(rows_or_dir)
    if not rows:
        raise PlotError("the run has no rounds to draw")
    return rows


def _target_threshold(target: Any, metric: str) -> Optional[float]:
    if target is None:
        return None
    if isinstance(target, (int, float)):
        return float(target)

    t = parse_target(target)
    if t.metric != metric:
        raise PlotError(f"the target is on {t.metric!r} but the plotted metric is {metric!r}")
    return t.threshold


def plot_run(
    history: Union[str, os.PathLike, Sequence[Mapping[str, Any]]],
    path: Union[str, os.PathLike],
    metric: str = "val_accuracy",
    target: Union[None, float, str, Any] = None,
) -> List[RunPoint]:
    """Draw a gradual run: ``metric`` against parameters and against FLOPs, round by round.

    Two panels side by side; every point is a round (numbered), the x axes run from the
    full model on the left to the thinnest on the right, and the target, when given, is
    a dashed horizontal line. Rounds that missed the target are drawn hollow.

    Args:
        history: the rows of ``GradualPruner.history`` (or of ``history.json``), or the
            run directory (or its ``history.json``).
        path: a ``.png`` or ``.svg`` file to write.
        metric: the metric of the rows' ``metrics`` to draw.
        target: a threshold (a number), a target string such as
            ``"val_accuracy>=0.99"``, or a :class:`~kerasprune.runs.target.Target`.

    Returns:
        The plotted points, one :class:`RunPoint` per round, in round order.

    Raises:
        PlotError: a file type other than PNG or SVG, no rounds, a metric no row has,
            or a target on another metric.
    """
    p = _check_path(path)
    rows = _history(history)
    missing = [r.get("round") for r in rows if metric not in r.get("metrics", {})]
    if missing:
        known = sorted(rows[0].get("metrics", {}))
        raise PlotError(f"metric {metric!r} is not in the history (rounds {missing}); measured: {known}")
    threshold = _target_threshold(target, metric)
    points = [
        RunPoint(int(r["round"]), int(r["params"]), int(r["flops"]), float(r["metrics"][metric]), r.get("meets_target"))
        for r in sorted(rows, key=lambda r: r["round"])
    ]
    fig = _figure(9.0, 3.8)
    for k, (key, label) in enumerate((("params", "parameters"), ("flops", "multiply-adds (FLOPs)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        xs = np.array([getattr(pt, key) for pt in points], dtype=float)
        ys = np.array([pt.value for pt in points])
        ax.plot(xs, ys, "-", color="#4C72B0", zorder=1)
        good = np.array([pt.meets_target is not False for pt in points])
        ax.scatter(xs[good], ys[good], color="#4C72B0", zorder=2, s=22)
        ax.scatter(xs[~good], ys[~good], facecolors="white", edgecolors="#C44E52", zorder=2, s=22)
        for pt, x, y in zip(points, xs, ys):
            ax.annotate(str(pt.round), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
        if threshold is not None:
            ax.axhline(threshold, color="#C44E52", linestyle="--", linewidth=1, label=f"target {threshold:g}")
            ax.legend(loc="lower left", fontsize=8)
        if xs.max() > 0 and xs.min() > 0 and xs.max() / xs.min() > 20:
            ax.set_xscale("log")
        else:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(5))
        from matplotlib.ticker import EngFormatter

        ax.xaxis.set_major_formatter(EngFormatter())
        ax.invert_xaxis()
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        first = xs[0] if xs[0] else 1.0
        ax.set_title(f"{label}: {100.0 * xs[-1] / first:.1f}% left after round {points[-1].round}", fontsize=9)
    _save(fig, p)
    return points


# ----------------------------------------------------------------------------- saliency


def plot_saliency(
    scores_by_group: Mapping[str, Any],
    path: Union[str, os.PathLike],
    *,
    title: Optional[str] = None,
    seed: int = 0,
) -> Dict[str, np.ndarray]:
    """Draw the distribution of the scores of each group: a box with every channel's point.

    Give it the scores before selection, e.g. ``kp.score(model, "aaws",
    normalization="layer_mean")``; with ``normalization="none"`` the same plot shows the
    scales that a global ranking without normalization would compare.

    Args:
        scores_by_group: group name -> one score per channel (as :func:`kerasprune.score`
            and ``SaliencyAccumulator.scores`` give them), in the order to draw.
        path: a ``.png`` or ``.svg`` file to write.
        title: the figure's title.
        seed: seed of the horizontal jitter of the points.

    Returns:
        The plotted scores, group name -> float64 array.

    Raises:
        PlotError: a file type other than PNG or SVG, or no scores.
    """
    p = _check_path(path)
    data = {str(k): np.asarray(v, dtype=np.float64).ravel() for k, v in scores_by_group.items()}
    data = {k: v for k, v in data.items() if v.size}
    if not data:
        raise PlotError("no scores to draw")
    names = list(data)
    fig = _figure(max(4.0, 0.6 * len(names) + 1.5), 3.8)
    ax = fig.add_subplot()
    ax.boxplot([data[n] for n in names], positions=np.arange(len(names)), widths=0.6,
               showfliers=False, medianprops={"color": "#C44E52"})
    rng = np.random.default_rng(seed)
    for i, n in enumerate(names):
        jitter = rng.uniform(-0.18, 0.18, size=data[n].size)
        ax.scatter(i + jitter, data[n], s=4, alpha=0.45, color="#4C72B0", zorder=3)
    labels = [n if len(n) <= 28 else n[:27] + "\u2026" for n in names]  # residual groups have long names
    ax.set_xticks(np.arange(len(names)), labels, rotation=60 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center", fontsize=8)
    ax.set_ylabel("normalized score")
    ax.set_title(title or "saliency per group (low = pruned first)")
    _save(fig, p)
    return data
