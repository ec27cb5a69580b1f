"""One-shot pruning: score, select, rebuild.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import keras

from kerasprune.callbacks.strip import strip
from kerasprune.errors import OptionError
from kerasprune.graph.analysis import analyze
from kerasprune.importance import score
from kerasprune.selection import SelectionOptions, resolve_options, select
from kerasprune.surgery.fold import check_compensate, rebuild_compensated
from kerasprune.surgery.rebuild import rebuild

__all__ = ["prune"]


def prune(
    model: keras.Model,
    ratio: float,
    criterion: str = "aaws",
    normalization: str = "layer_mean",
    scope: Optional[str] = None,
    data: Any = None,
    *,
    unit: Optional[str] = None,
    loss: Any = None,
    min_channels: Optional[int] = None,
    max_ratio: Optional[float] = None,
    round_to: Optional[int] = None,
    exclude: Optional[Iterable[str]] = None,
    hierarchy: Optional[str] = None,
    method: Optional[str] = None,
    uniform: Optional[bool] = None,
    hidden_size: Optional[bool] = None,
    max_batches: Optional[int] = None,
    verbose: int = 0,
    options: Optional[SelectionOptions] = None,
    compensate: Optional[str] = None,
    fold_constants: bool = False,
) -> keras.Model:
    """Remove ``ratio`` of the model's neurons (or parameters, or FLOPs) in one shot.

    Scores every channel of every prunable group with ``criterion`` (normalized per group
    with ``normalization``), selects the lowest ``ratio`` within ``scope`` and returns the
    rebuilt, thinner model. ``model`` is not modified.

    Example:

    ```python
    thin = kp.prune(model, 0.3)                          # global, neurons, aaws
    thin = kp.prune(model, 0.5, scope="layerwise", round_to=8, exclude=["fc*"])
    opts = kp.SelectionOptions(scope="hierarchical", unit="flops", hierarchy="flops")
    thin = kp.prune(model, 0.5, "mean_gradient", "l2", data=train_ds, options=opts)
    ```

    Args:
        model: a functional or Sequential Keras 3 model.
        ratio: fraction of the ``unit`` to remove, in [0, 1).
        criterion: ``aaws``, ``l1``, ``l2``, ``bn_gamma`` (weights only); ``mean_response``,
            ``std_response``, ``apoz`` (need ``data``); ``mean_gradient``, ``taylor``,
            ``gsfp`` (need labelled ``data`` and a loss).
        normalization: ``layer_mean`` (Wang et al. (2017)), ``l2`` (Liu and Wu (2019)) or ``none``.
        scope: ``global``, ``layerwise`` or ``hierarchical`` (default ``global``).
        data: batches for data-driven criteria (a ``tf.data.Dataset`` or arrays).
        unit: what ``ratio`` counts: ``neurons`` (default), ``params`` or ``flops``.
        loss: the loss for gradient criteria (default: the model's compiled loss).
        min_channels, max_ratio, round_to, exclude, hierarchy, method, uniform,
            hidden_size: selection guards and options, see
            :class:`kerasprune.SelectionOptions`; excluded groups are not scored either. These and ``scope``, ``unit`` are shortcuts for the fields
            of ``options`` (None: not given).
        max_batches: at most this many batches of ``data`` are used for scoring.
        verbose: 1 shows a progress bar while data-driven criteria stream ``data``.
        options: every selection option in one :class:`kerasprune.SelectionOptions`; a
            shortcut given as well must agree with it.
        compensate: ``"mean"`` folds each removed channel's mean activation over
            ``data`` (every example and position, at most ``max_batches`` batches) into
            the biases of the next Dense and convolution layers, as the notebooks of Wang
            et al. (2017) do (``b += mean * w``); a layer without a bias (a convolution
            followed by BatchNormalization) is not compensated. ``None`` or ``"none"``
            (the default) folds nothing. See :mod:`kerasprune.surgery.fold`.
        fold_constants: also remove, once the selected channels are gone, every channel
            that carries exactly zero or a constant to the layers that read it, folding
            the constant into their biases (:func:`kerasprune.strip` with
            ``fold_constants=True``; the outputs do not change).

    Returns:
        The thinner model (compiled like ``model`` if it was compiled).

    Raises:
        SelectionError: an invalid selection option, or a shortcut that contradicts
            ``options``.
        ImportanceError: an unknown criterion, missing data, or an ``exclude`` pattern
            that matches no group or layer.
        OptionError: an unknown ``compensate``, or ``compensate="mean"`` without data.
    """
    compensate = check_compensate(compensate)
    if compensate == "mean" and data is None:
        raise OptionError("compensate='mean' folds the removed channels' mean activations over data; pass data=")
    opts = resolve_options(
        options, scope=scope, unit=unit, min_channels=min_channels, max_ratio=max_ratio,
        round_to=round_to, exclude=exclude, hierarchy=hierarchy, method=method,
        uniform=uniform, hidden_size=hidden_size,
    )
    graph = analyze(model)
    graph.require_prunable()
    scores = score(
        model, criterion, normalization=normalization, data=data, graph=graph, loss=loss,
        max_batches=max_batches, exclude=opts.exclude, verbose=verbose,
    )
    keep = select(graph, scores, ratio, model=model, options=opts)
    return thin_model(model, keep, graph, compensate=compensate if keep else "none", data=data,
                      max_batches=max_batches, fold_constants=fold_constants)


def thin_model(
    model: keras.Model, keep: Mapping[str, Iterable[int]], graph: Any, *, compensate: str = "none",
    data: Any = None, max_batches: Optional[int] = None, fold_constants: bool = False,
) -> keras.Model:
    """The thin model of one round: :func:`kerasprune.rebuild` of ``keep``, with the
    removed channels' means folded in (``compensate="mean"``, over ``data``), then the
    channels that carry zero or a constant stripped (``fold_constants``).

    Args:
        model: the analyzed model; not modified.
        keep: the keep-set.
        graph: ``analyze(model)``.
        compensate: a value :func:`~kerasprune.surgery.fold.check_compensate` returned.
        data, max_batches: the scoring data whose means are folded.
        fold_constants: strip with ``fold_constants=True`` afterwards.

    Returns:
        The thin model.
    """
    if compensate == "mean":
        thin = rebuild_compensated(model, keep, graph, data, max_batches=max_batches)
    else:
        thin = rebuild(model, keep, graph=graph)
    return strip(thin, fold_constants=True) if fold_constants else thin
