"""The criterion registry and the two entry points, :func:`score` and :func:`raw_scores`.

A criterion is a function that receives a :class:`ScoringContext` (the model, its graph,
the groups to score, the data) and returns one non-negative float per channel for every
group, keyed by group name. Low scores are pruned first. Built-in criteria register
themselves from :mod:`~kerasprune.importance.weights`,
:mod:`~kerasprune.importance.activations` and :mod:`~kerasprune.importance.gradients`;
users add their own with :func:`register_criterion`.

This is the only registry of criteria: a criterion that can also be added up inside
``model.fit`` (by :class:`~kerasprune.callbacks.SaliencyAccumulator`, from the gradients the
train step computes anyway) says so with an :class:`Accumulation` declaration, its
``accumulate`` field. The declaration names the *kind* of per-step quantity it is computed
from (:data:`WEIGHT_GRADIENTS`: the gradients of the filters' weights;
:data:`FEATURE_GRADIENTS`: the gradients of the feature maps) and holds the reduction that
turns one step's (or one batch's) tensors into per-channel sums. The same reduction is what
:func:`score` runs over batches of data, so each formula exists once. The declarations of
the two kinds are :class:`~kerasprune.importance.gradients.WeightGradients` and
:class:`~kerasprune.importance.gradients.FeatureGradients`; :func:`accumulable_criteria`
lists the criteria that have one.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Iterable, Iterator, List, Mapping, Optional

import keras
import numpy as np

from kerasprune.errors import ImportanceError
from kerasprune.graph.analysis import analyze
from kerasprune.graph.groups import ChannelGroup, PruningGraph, check_graph
from kerasprune.importance.filters import ChannelWeights, bn_scales, filter_weights, outgoing_weights
from kerasprune.importance.normalize import check_method, normalize
from kerasprune.importance.stream import Batch, count_batches, iter_batches

__all__ = [
    "Criterion",
    "Accumulation",
    "ScoringContext",
    "WEIGHT_GRADIENTS",
    "FEATURE_GRADIENTS",
    "register_criterion",
    "available_criteria",
    "accumulable_criteria",
    "get_criterion",
    "score",
    "raw_scores",
]

_NEEDS = ("weights", "data", "labels")

#: kind of an :class:`Accumulation` computed from the gradients of the filters' weights
WEIGHT_GRADIENTS = "weight_gradients"
#: kind of an :class:`Accumulation` computed from the gradients of the feature maps
FEATURE_GRADIENTS = "feature_gradients"


@dataclass(frozen=True)
class Accumulation:
    """How a criterion is added up over training steps (in ``fit``) or batches (in :func:`score`).

    A subclass fixes the ``kind`` of per-step quantity the reduction reads and the one-shot
    pass over data that computes the same thing without training
    (:class:`~kerasprune.importance.gradients.WeightGradients`,
    :class:`~kerasprune.importance.gradients.FeatureGradients`).

    Attributes:
        reduce: the per-step reduction: receives one step's view of its tensors (the
            subclass says which) and returns per-channel values, which are summed over
            the steps.
        kind: :data:`WEIGHT_GRADIENTS` or :data:`FEATURE_GRADIENTS` (a class attribute).
        needs: what the one-shot pass reads (``"labels"`` for both gradient kinds).
    """

    reduce: Callable[[Any], Any]
    kind: ClassVar[str] = ""
    needs: ClassVar[str] = "labels"

    def scores(self, ctx: "ScoringContext") -> Dict[str, np.ndarray]:
        """The one-shot scores: ``reduce`` run over the batches of ``ctx.data``, per group."""
        raise NotImplementedError


@dataclass(frozen=True)
class Criterion:
    """A registered importance criterion.

    Attributes:
        name: the name given to :func:`score`.
        fn: ``fn(ctx: ScoringContext) -> {group name: scores}``.
        needs: ``"weights"`` (weights only), ``"data"`` (inputs) or ``"labels"`` (inputs,
            labels and a loss).
        description: one line for :func:`available_criteria` listings and errors.
        accumulate: how the criterion is added up inside ``model.fit``
            (an :class:`Accumulation`), or None: it cannot be (weight criteria need no
            training, forward statistics have no tap).
    """

    name: str
    fn: Callable[["ScoringContext"], Mapping[str, np.ndarray]]
    needs: str = "weights"
    description: str = ""
    accumulate: Optional[Accumulation] = None

    @property
    def kind(self) -> Optional[str]:
        """The accumulation kind (``accumulate.kind``), or None when not accumulable."""
        return None if self.accumulate is None else self.accumulate.kind


_REGISTRY: Dict[str, Criterion] = {}


@dataclass
class ScoringContext:
    """What a criterion sees: the model, its graph, the groups to score and the data.

    Attributes:
        model: the model being scored.
        graph: its :class:`PruningGraph`.
        groups: the groups to score (the prunable groups, minus ``exclude``).
        criterion: the name of the criterion being computed.
        data: the scoring data as given (None for weight criteria).
        loss: the ``loss=`` argument (None: the model's compiled loss).
        batch_size: batch size used to cut numpy arrays.
        max_batches: at most this many batches are read.
        verbose: 0 silent, 1 a progress bar while streaming.
    """

    model: keras.Model
    graph: PruningGraph
    groups: List[ChannelGroup]
    criterion: str = ""
    data: Any = None
    loss: Any = None
    batch_size: int = 32
    max_batches: Optional[int] = None
    verbose: int = 0
    _cache: Dict[Any, Any] = field(default_factory=dict, repr=False)

    def batches(self) -> Iterator[Batch]:
        """The data as ``(x, y, sample_weight)`` batches, ``max_batches`` at most."""
        return iter_batches(self.data, self.batch_size, self.max_batches)

    def num_batches(self) -> Optional[int]:
        """How many batches :meth:`batches` yields (None when unknown)."""
        return count_batches(self.data, self.batch_size, self.max_batches)

    def filters(self, group: ChannelGroup) -> List[ChannelWeights]:
        """Per producer layer, the filter entries of the group (kernels, no biases)."""
        key = ("filters", group.name)
        if key not in self._cache:
            self._cache[key] = filter_weights(self.graph, group)
        return self._cache[key]

    def outgoing(self, group: ChannelGroup) -> List[ChannelWeights]:
        """Per consumer layer, the weight entries of rank >= 2 that read the group."""
        key = ("outgoing", group.name)
        if key not in self._cache:
            self._cache[key] = outgoing_weights(self.graph, group)
        return self._cache[key]

    def bn_scales(self, group: ChannelGroup) -> List[ChannelWeights]:
        """Per BatchNormalization layer of the group, its ``gamma`` entries."""
        key = ("bn", group.name)
        if key not in self._cache:
            self._cache[key] = bn_scales(self.graph, group)
        return self._cache[key]

    def progress(self) -> Optional[keras.utils.Progbar]:
        """A progress bar over the batches when ``verbose``, else None."""
        if not self.verbose:
            return None
        return keras.utils.Progbar(self.num_batches(), verbose=1, unit_name="batch")

    def fail(self, group: ChannelGroup, why: str, hint: str = "") -> ImportanceError:
        """An error naming the group that criterion ``self.criterion`` cannot score."""
        hint = hint or (
            f"leave it out with exclude=[{group.name!r}] or use a weight criterion such as 'aaws'"
        )
        return ImportanceError(
            f"criterion {self.criterion!r} cannot score group {group.name!r}: {why}; {hint}."
        )


def register_criterion(
    name: str,
    fn: Optional[Callable[[ScoringContext], Mapping[str, np.ndarray]]] = None,
    *,
    needs: Optional[str] = None,
    description: str = "",
    accumulate: Optional[Accumulation] = None,
    overwrite: bool = False,
) -> Callable:
    """Register an importance criterion under ``name``; usable as a decorator.

    The function receives a :class:`ScoringContext` and returns ``{group name: scores}``
    with one score per channel for every group of ``ctx.groups`` (low = pruned first)::

        @kp.importance.register_criterion("max_abs")
        def max_abs(ctx):
            out = {}
            for group in ctx.groups:
                per_layer = []
                for f in ctx.filters(group):
                    m = np.zeros(group.size)
                    np.maximum.at(m, f.channel, np.abs(f.values()))
                    per_layer.append(m)
                out[group.name] = kp.importance.combine_layers(per_layer)
            return out

    A criterion computed from gradients can also be added up inside ``model.fit`` by
    :class:`~kerasprune.callbacks.SaliencyAccumulator`: declare how with ``accumulate``
    (its one-shot function is then ``accumulate.scores``, the same reduction run over
    batches of data, unless ``fn`` is given)::

        from kerasprune.importance import WeightGradients

        kp.importance.register_criterion(
            "grad_rms", accumulate=WeightGradients(lambda f: keras.ops.sqrt(f.mean(lambda g, w: g * g)))
        )

    Args:
        name: the criterion's name.
        fn: the criterion function (omit to use as a decorator; with ``accumulate``, the
            call registers ``accumulate.scores`` at once, and decorating a function
            replaces it by that function).
        needs: ``"weights"``, ``"data"`` (inputs needed) or ``"labels"`` (inputs and
            labels needed); :func:`score` raises a clear error when they are missing.
            Default: ``accumulate.needs`` with ``accumulate``, else ``"weights"``.
        description: one line describing the criterion (default: the first line of the
            function's docstring, or of the reduction's).
        accumulate: an :class:`Accumulation` (a
            :class:`~kerasprune.importance.gradients.WeightGradients` or
            :class:`~kerasprune.importance.gradients.FeatureGradients`), or None: the
            criterion cannot be accumulated in ``fit``.
        overwrite: allow replacing an existing criterion of that name.

    Returns:
        ``fn`` (or the decorator).

    Raises:
        ImportanceError: a bad ``needs`` or ``accumulate``, a function that is not callable,
            or a name already registered (without ``overwrite``).
    """
    if accumulate is not None:
        if not isinstance(accumulate, Accumulation) or not accumulate.kind:
            raise ImportanceError(
                f"accumulate= of criterion {name!r} must be a declaration such as "
                f"kerasprune.importance.WeightGradients(reduce), got {accumulate!r}"
            )
        if not callable(accumulate.reduce):
            raise ImportanceError(f"the reduction of criterion {name!r} must be callable")
        if needs is not None and needs != accumulate.needs:
            raise ImportanceError(
                f"criterion {name!r} is accumulated from {accumulate.kind}, so it needs "
                f"{accumulate.needs!r}, not {needs!r}"
            )
        needs = accumulate.needs
    needs = "weights" if needs is None else needs
    if needs not in _NEEDS:
        raise ImportanceError(f"needs must be one of {', '.join(_NEEDS)}, got {needs!r}")
    registered: List[Callable] = []  # the function this call registered, if any

    def add(f, derived: bool = False):
        if not callable(f):
            raise ImportanceError(f"criterion {name!r} must be callable, got {type(f).__name__}")
        current = _REGISTRY.get(name)
        mine = bool(registered) and current is not None and current.fn is registered[0]
        if name in _REGISTRY and not (overwrite or mine):
            raise ImportanceError(f"a criterion named {name!r} is already registered (pass overwrite=True)")
        source = accumulate.reduce if derived else f
        doc = description or (getattr(source, "__doc__", None) or "").strip().split("\n")[0]
        _REGISTRY[name] = Criterion(
            name=name, fn=f, needs=needs, description=doc, accumulate=accumulate
        )
        registered[:] = [f]
        return f

    if fn is not None:
        return add(fn)
    if accumulate is not None:
        add(accumulate.scores, derived=True)
    return add


def available_criteria() -> List[str]:
    """The names of every registered criterion, in registration order."""
    return list(_REGISTRY)


def accumulable_criteria(kind: Optional[str] = None) -> List[str]:
    """The registered criteria that can be accumulated inside ``model.fit``.

    Args:
        kind: only those of this accumulation kind (:data:`WEIGHT_GRADIENTS` or
            :data:`FEATURE_GRADIENTS`); None: every kind.

    Returns:
        Their names, in registration order.
    """
    return [
        c.name
        for c in _REGISTRY.values()
        if c.accumulate is not None and (kind is None or c.accumulate.kind == kind)
    ]


def get_criterion(name: str) -> Criterion:
    """The registered criterion ``name``.

    Raises:
        ImportanceError: unknown name; the message lists the known ones and the closest.
    """
    crit = _REGISTRY.get(name) if isinstance(name, str) else None
    if crit is None:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ImportanceError(
            f"unknown importance criterion {name!r}.{hint} Known criteria: {', '.join(_REGISTRY)}."
        )
    return crit


def _groups_to_score(graph: PruningGraph, exclude: Iterable[str]) -> List[ChannelGroup]:
    skip = graph.matching(exclude, error=ImportanceError)
    return [g for g in graph.prunable if g.name not in skip]


def _check_result(crit: Criterion, groups: List[ChannelGroup], result: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    for g in groups:
        if g.name not in result:
            raise ImportanceError(f"criterion {crit.name!r} returned no scores for group {g.name!r}")
        s = np.asarray(result[g.name], dtype=np.float64).ravel()
        if s.shape != (g.size,):
            raise ImportanceError(
                f"criterion {crit.name!r} returned {s.size} scores for group {g.name!r} of {g.size} channels"
            )
        if not np.all(np.isfinite(s)):
            raise ImportanceError(
                f"criterion {crit.name!r} gave non-finite scores for group {g.name!r} "
                "(NaN or inf weights or activations?)"
            )
        out[g.name] = s
    return out


def raw_scores(
    model: keras.Model,
    criterion: str = "aaws",
    *,
    data: Any = None,
    graph: Optional[PruningGraph] = None,
    loss: Any = None,
    max_batches: Optional[int] = None,
    batch_size: int = 32,
    exclude: Iterable[str] = (),
    verbose: int = 0,
) -> Dict[str, np.ndarray]:
    """One unnormalized float64 score per channel for every prunable group.

    Same arguments as :func:`score`, without ``normalization``; equal to
    ``score(..., normalization="none")``.
    """
    crit = get_criterion(criterion)
    if crit.needs != "weights" and data is None:
        what = "inputs and labels" if crit.needs == "labels" else "input batches"
        raise ImportanceError(
            f"criterion {criterion!r} is computed from data: pass data= ({what}, e.g. a "
            "tf.data.Dataset of (x, y) batches or numpy arrays (x, y)); weight criteria "
            "such as 'aaws' need none"
        )
    check_graph(graph, model, "score")
    if graph is None:
        graph = analyze(model)
    groups = _groups_to_score(graph, exclude)
    if not groups:
        return {}
    ctx = ScoringContext(
        model=model,
        graph=graph,
        groups=groups,
        criterion=criterion,
        data=data,
        loss=loss,
        batch_size=int(batch_size),
        max_batches=max_batches,
        verbose=verbose,
    )
    return _check_result(crit, groups, crit.fn(ctx))


def score(
    model: keras.Model,
    criterion: str = "aaws",
    *,
    normalization: str = "layer_mean",
    data: Any = None,
    graph: Optional[PruningGraph] = None,
    loss: Any = None,
    max_batches: Optional[int] = None,
    batch_size: int = 32,
    exclude: Iterable[str] = (),
    verbose: int = 0,
) -> Dict[str, np.ndarray]:
    """Score every channel of every prunable group; low scores are pruned first.

    Criteria (see :func:`available_criteria`; all scores are >= 0):

    - from weights: ``aaws`` (mean |w| of the channel's filter), ``l1`` (sum |w|),
      ``l2`` (sqrt(sum w^2 / n), Xu et al. (2018), Eq. 3), ``bn_gamma`` (|gamma| of the group's
      BatchNormalization), ``aaws_out`` (mean |w| of the weights that *read* the
      channel), ``aaws_dense_out`` (``aaws``, except groups made by Dense layers, scored
      by their outgoing weights as in the original GGP notebooks);
    - from activations over ``data``: ``mean_response``, ``std_response``, ``apoz``
      (scored ``1 - APoZ``, so mostly-zero channels are pruned first);
    - from gradients over labelled ``data``: ``mean_gradient`` (Liu and Wu (2019)), ``taylor``
      (first-order Taylor, |mean of x * dL/dx|), ``gsfp`` (Xu et al. (2018), Eq. 5, summed over
      batches, Eq. 6), ``taylor_weights`` (|sum of w * dL/dw| per filter, summed over
      batches), ``grad_l1`` (mean |dL/dw| per filter, summed over batches). These are the
      accumulable criteria (:func:`accumulable_criteria`): the same per-step formulas are
      added up inside ``model.fit`` by :class:`~kerasprune.callbacks.SaliencyAccumulator`.

    A channel made by several layers (a residual group) gets the mean of its producers'
    scores; a channel observed at several feature maps gets the mean over those maps.

    Args:
        model: the model to score (functional, or a built Sequential).
        criterion: a registered criterion name.
        normalization: ``layer_mean`` (divide by the group's mean, Wang et al. (2017), Eq. 2),
            ``l2`` (divide by the group's Euclidean norm, Liu and Wu (2019), Eq. 4) or ``none``.
        data: scoring data for data-driven criteria: a ``tf.data.Dataset`` of ``(x, y)``
            or ``(x,)`` batches, or numpy arrays ``x`` / ``(x, y)``.
        graph: the model's :func:`~kerasprune.analyze` result (computed when None).
        loss: loss of the gradient criteria (a name, a ``keras.losses.Loss`` or a
            function of ``(y_true, y_pred)``); default: the model's compiled loss.
        max_batches: read at most this many batches of ``data``.
        batch_size: batch size used to cut numpy arrays.
        exclude: groups not to score, as ``fnmatch`` patterns of group names or of
            producing layer names (``["conv*"]``, ``["fc1"]``), exactly as
            :func:`kerasprune.select` takes them (:meth:`PruningGraph.matching`).
        verbose: 1 shows a progress bar while streaming data.

    Returns:
        group name -> float64 array of one score per channel, for every prunable group not
        excluded, in graph order, normalized per group.

    Raises:
        ImportanceError: unknown criterion or normalization (with the known names), data
            or a loss missing, a group the criterion cannot score (named in the message),
            or an ``exclude`` pattern that matches no group or layer (with close names).
    """
    check_method(normalization)
    raw = raw_scores(
        model,
        criterion,
        data=data,
        graph=graph,
        loss=loss,
        max_batches=max_batches,
        batch_size=batch_size,
        exclude=exclude,
        verbose=verbose,
    )
    return normalize(raw, normalization)
