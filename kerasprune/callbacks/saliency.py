"""``SaliencyAccumulator``: per-channel gradient saliency added up inside ``model.fit``.

The compiled training step already computes the gradients this callback needs; it
reuses them instead of running a second forward and backward pass. At
``on_train_begin`` it wraps the ``apply`` method of the model's optimizer (the method
that ``apply_gradients`` and every Keras train step end in, on every backend: on JAX
``optimizer.stateless_apply`` calls it in a stateless scope) with a function that hands
the step's ``(grads, variables)`` to a saliency *source*, which adds the step into
non-trainable accumulators, and then calls the original ``apply``. Then it forces Keras
to retrace its train function (``model.make_train_function(force=True)``), so the hook
becomes part of the compiled step, with ``steps_per_execution > 1`` and
``jit_compile=True`` too. At ``on_train_end`` the optimizer (and the model) are restored
and the train function rebuilt again.

Backends: TensorFlow, JAX and PyTorch. On TensorFlow the accumulators are float64
``tf.Variable`` s written with TensorFlow ops; on JAX and PyTorch they are variables of
the optimizer (float64; float32 on JAX without ``jax_enable_x64``) written with
``keras.ops``, because Keras runs the JAX train step statelessly and keeps only the new
values of the variables it passes through it
(:class:`~kerasprune.callbacks.base.Accumulators`); they are taken out of the optimizer
again at ``on_train_end``. ``tf.distribute`` strategies are TensorFlow's own; on JAX
under ``keras.distribution`` the jitted step computes the global batch's gradients, but
that case is not tested yet.

Criteria: every criterion of the registry (:mod:`kerasprune.importance`) that declares
how it is accumulated (its ``accumulate``, :func:`kerasprune.importance.accumulable_criteria`);
the declaration's kind chooses the source (:data:`SOURCES`):

- from the gradients of the filters' weights
  (:class:`~kerasprune.importance.gradients.WeightGradients`: ``gsfp`` of Xu et al. (2018),
  ``taylor_weights``, ``grad_l1``): :mod:`~kerasprune.callbacks.weight_saliency`. The
  weights the hook reads are the ones the step's forward pass used (they are read before
  the update). Summed over the steps of the epoch.
- from the gradients of the feature maps
  (:class:`~kerasprune.importance.gradients.FeatureGradients`: ``mean_gradient`` of Liu and
  Wu (2019), ``taylor``): :mod:`~kerasprune.callbacks.feature_saliency`. The feature maps
  are tapped by an identity with a custom gradient inside the step's own backward pass.
  Averaged over the examples of the epoch.

The per-step formulas are the criteria's own reductions, which :func:`kerasprune.score`
runs over batches of data.

Each epoch's values are then normalized per group (:func:`kerasprune.importance.normalize`).

Under ``tf.distribute.MirroredStrategy`` each replica's share is all-reduced inside the
step, so every replica accumulates the saliency of the global batch; the accumulators
are ``ON_READ`` variables read from the first replica.

Under mixed precision the hook sits on the ``LossScaleOptimizer``'s inner optimizer, so
it sees the unscaled gradients, and only of the steps that are applied (a step skipped
for non-finite gradients is not counted).

Limits (checked at ``on_train_begin``, never mid-epoch): functional or Sequential models
only, a compiled model with an optimizer, the default strategy or ``MirroredStrategy``;
every scored producer's filters must be trainable (weight criteria); every observed
feature map must come from an operation called once, after some trainable weight
(feature-map criteria).

References:

- Liu and Wu (2019), mean gradient and hierarchical global pruning: Congcong Liu and
  Huaming Wu, "Channel pruning based on mean gradient for accelerating Convolutional
  Neural Networks", Signal Processing 156, 84-91, 2019; doi:10.1016/j.sigpro.2018.10.019.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterable, List, Optional, Type

import keras
import numpy as np

from kerasprune.backend import current, lazy_tensorflow, require_backend
from kerasprune.callbacks.base import (
    CALLBACK_BACKENDS,
    Accumulators,
    CallbackError,
    SaliencySource,
    release_from,
)
from kerasprune.callbacks.feature_saliency import FeatureMapSaliency
from kerasprune.callbacks.weight_saliency import WeightGradientSaliency
from kerasprune.errors import KerasPruneError
from kerasprune.graph.analysis import analyze
from kerasprune.graph.groups import ChannelGroup, PruningGraph
from kerasprune.importance.base import (
    FEATURE_GRADIENTS,
    WEIGHT_GRADIENTS,
    Criterion,
    accumulable_criteria,
    available_criteria,
    get_criterion,
)
from kerasprune.importance.normalize import check_method, normalize

# imported at the first use, on the TensorFlow backend only
tf = lazy_tensorflow("the kerasprune callbacks")

__all__ = ["SaliencyAccumulator", "CallbackError", "SOURCES", "accumulable_criterion"]

#: accumulation kind -> the saliency source that adds up one training step of it
SOURCES: Dict[str, Type[SaliencySource]] = {
    WEIGHT_GRADIENTS: WeightGradientSaliency,
    FEATURE_GRADIENTS: FeatureMapSaliency,
}


def accumulable_criterion(name: str, who: str = "SaliencyAccumulator") -> Criterion:
    """The registered criterion ``name``, if it can be accumulated inside ``fit``.

    Args:
        name: a criterion name.
        who: the caller, for the error message.

    Raises:
        CallbackError: ``name`` is not registered, declares no accumulation, or one of a
            kind no saliency source handles; the message lists the criteria that can.
    """
    crit = get_criterion(name) if isinstance(name, str) and name in available_criteria() else None
    if crit is None or crit.accumulate is None or crit.accumulate.kind not in SOURCES:
        usable = [c for c in accumulable_criteria() if get_criterion(c).accumulate.kind in SOURCES]
        why = "is not a registered criterion" if crit is None else "cannot be accumulated in fit"
        raise CallbackError(
            f"criterion {name!r} {why}, so {who} cannot use it; use one of "
            f"{', '.join(usable)} (the criteria computed from the gradients the train step "
            "already has; register your own with "
            "kerasprune.importance.register_criterion(..., accumulate=...))"
        )
    return crit


class SaliencyAccumulator(keras.callbacks.Callback):
    """Accumulates a per-channel gradient saliency over every training batch of ``fit``.

    No second forward or backward pass: the gradients of the compiled train step are
    reused (see the module documentation for the mechanism).

    Args:
        criterion: a criterion of the registry that declares an accumulation
            (:func:`kerasprune.importance.accumulable_criteria`). Built in: from the
            weights' gradients, summed over the epoch's steps: ``gsfp`` (Xu et al. (2018),
            Eq. 5/6), ``taylor_weights`` (``|sum w*g|`` per filter) or ``grad_l1``
            (size-normalized L1 norm of the filter's gradient); from the feature maps'
            gradients, averaged over the epoch's examples: ``mean_gradient`` (Liu and Wu
            (2019)) or ``taylor`` (``|mean x*dL/dx|``).
        normalization: per-group normalization of the epoch's values: ``layer_mean``,
            ``l2`` or ``none`` (as :func:`kerasprune.importance.normalize`).
        reset_each_epoch: start every epoch from zero (default); False accumulates over
            all epochs of the ``fit`` call.
        exclude: groups to leave unscored, as ``fnmatch`` patterns of group names or of
            producing layer names, exactly as :func:`kerasprune.select` and
            :func:`kerasprune.score` take them (:meth:`kerasprune.PruningGraph.matching`);
            a pattern that matches nothing fails ``on_train_begin``.
        log_prefix: prefix of the figures written into the epoch logs.
        tensorboard_dir: a TensorBoard log directory: every epoch writes the numbers of
            the epoch logs as ``metrics/<name>`` scalars and a histogram
            ``saliency/<group>`` of each group's normalized scores
            (:class:`~kerasprune.report.tensorboard.TensorBoardWriter`; step = epoch).

    Attributes:
        scores: group name -> normalized saliency per channel (float64) of the last
            epoch (or, with ``reset_each_epoch=False``, of every epoch so far).
        raw: the same before normalization.
        cumulative: group name -> normalized saliency over every epoch of the ``fit``
            call (summed over them; for feature-map criteria, the mean over all their
            examples).
        steps: training steps counted in the last epoch (all so far when not resetting).
        graph: the model's :func:`~kerasprune.analyze` result.

    Epoch logs get ``{prefix}_min``, ``{prefix}_mean``, ``{prefix}_max`` (over every
    channel's normalized score) and ``{prefix}_steps``.
    """

    def __init__(
        self,
        criterion: str = "gsfp",
        normalization: str = "layer_mean",
        reset_each_epoch: bool = True,
        exclude: Iterable[str] = (),
        log_prefix: str = "saliency",
        tensorboard_dir: Optional[str] = None,
    ) -> None:
        super().__init__()
        self._criterion = accumulable_criterion(criterion, type(self).__name__)
        check_method(normalization)
        self.criterion = criterion
        self.normalization = normalization
        self.reset_each_epoch = bool(reset_each_epoch)
        self.exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
        self.log_prefix = log_prefix
        self.tensorboard_dir = tensorboard_dir
        self._tb = None
        self.graph: Optional[PruningGraph] = None
        self.scores: Dict[str, np.ndarray] = {}
        self.raw: Dict[str, np.ndarray] = {}
        self.cumulative: Dict[str, np.ndarray] = {}
        self.steps = 0
        self._source: Optional[SaliencySource] = None
        self._groups: List[ChannelGroup] = []
        self._step_count = None
        self._store: Optional[Accumulators] = None
        self._patched: Optional[tuple] = None
        self._strategy = None

    # -- set-up -------------------------------------------------------------------------

    def _check_model(self, model: keras.Model) -> PruningGraph:
        name = type(self).__name__
        require_backend(name, *CALLBACK_BACKENDS)
        try:
            graph = analyze(model, warn=False)
        except KerasPruneError as err:
            raise CallbackError(f"{name} cannot handle model '{model.name}': {err}") from err
        if getattr(model, "optimizer", None) is None:
            raise CallbackError(
                f"{name} needs a compiled model with an optimizer: call model.compile(...) "
                "before fit"
            )
        self._strategy = None
        if current() != "tensorflow":
            return graph
        strategy = getattr(model, "_distribute_strategy", None) or tf.distribute.get_strategy()
        if strategy is not tf.distribute.get_strategy() or tf.distribute.has_strategy():
            if not isinstance(strategy, tf.distribute.MirroredStrategy):
                raise CallbackError(
                    f"{name} supports the default strategy and tf.distribute.MirroredStrategy "
                    f"only, not {type(strategy).__name__}: with other strategies it could not "
                    "be sure to add up the gradients of every replica."
                )
            self._strategy = strategy
        return graph

    def _build_source(self, model: keras.Model, graph: PruningGraph) -> None:
        scope = self._strategy.scope() if self._strategy is not None else contextlib.nullcontext()
        skip = graph.matching(self.exclude, error=CallbackError)
        self._groups = [g for g in graph.prunable if g.name not in skip]
        if not self._groups:
            raise CallbackError(
                f"model '{model.name}' has no prunable channel group to score"
                + (f" once {list(self.exclude)} are excluded" if self.exclude else "")
            )
        # the registry's criterion of that name now (it may have been re-registered)
        self._criterion = accumulable_criterion(self.criterion, type(self).__name__)
        source = SOURCES[self._criterion.accumulate.kind]
        optimizer = model.optimizer
        target = getattr(optimizer, "inner_optimizer", None) or optimizer
        # accumulators left in the optimizer by a fit of this callback that raised before
        # on_train_end
        release_from(target, self)
        if current() != "tensorflow" and not optimizer.built:
            # the accumulators are optimizer variables: the optimizer's own come first
            optimizer.build(model.trainable_variables)
        self._store = Accumulators(target, owner=self)
        with scope:
            mirrored = self._strategy is not None
            self._source = source(self._criterion, model, graph, self._groups, mirrored, self._store)
            self._step_count = self._store.zeros((), "kp_saliency_steps", integer=True)

    def _install(self) -> None:
        optimizer = self.model.optimizer
        # a LossScaleOptimizer hands its inner optimizer the unscaled, finite gradients
        inner = getattr(optimizer, "inner_optimizer", None)
        target = inner or optimizer
        original = target.apply
        if getattr(original, "_kerasprune_owner", None) is self:
            # left behind by a fit that raised before on_train_end: replace, not stack
            original = original._kerasprune_original
        source, count = self._source, self._step_count

        def apply_with_saliency(grads, trainable_variables=None):
            variables = target._trainable_variables if trainable_variables is None else list(trainable_variables)
            grads = list(grads)
            # the scale this step's loss was multiplied by (updated only after this apply)
            scale = optimizer.dynamic_scale if inner is not None else None
            source.step(grads, variables, scale)
            count.assign_add(1)
            return original(grads, trainable_variables)

        apply_with_saliency._kerasprune_owner = self
        apply_with_saliency._kerasprune_original = original
        source.install()
        object.__setattr__(target, "apply", apply_with_saliency)
        self._patched = (target, original)
        self.model.make_train_function(force=True)

    def _uninstall(self) -> None:
        if self._patched is None:
            return
        target, _ = self._patched
        try:
            object.__delattr__(target, "apply")
        except AttributeError:  # pragma: no cover - already gone
            pass
        self._source.uninstall()
        self._patched = None
        if self._store is not None:
            self._store.release()
        self.model.make_train_function(force=True)

    # -- callback hooks -----------------------------------------------------------------

    def on_train_begin(self, logs=None) -> None:
        """Check the model, build the accumulators, hook the optimizer, retrace the step."""
        self.graph = self._check_model(self.model)
        self._build_source(self.model, self.graph)
        zeros = {g.name: np.zeros(g.size) for g in self._groups}
        self._total, self._total_count = dict(zeros), 0.0
        self._previous, self._previous_count = dict(zeros), 0.0
        self.scores, self.raw, self.cumulative, self.steps = {}, {}, {}, 0
        self._install()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        """Zero the accumulators (when resetting each epoch)."""
        if self.reset_each_epoch and self._source is not None:
            self._source.reset()
            self._store.reset(self._step_count)
            self._previous = {g.name: np.zeros(g.size) for g in self._groups}
            self._previous_count = 0.0

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        """Read the epoch's sums, normalize them, and write summary figures into ``logs``."""
        self._accumulate_epoch(epoch, logs)
        self._write_tensorboard(epoch, logs)

    def _write_tensorboard(self, epoch: int, logs=None, extra: Optional[Dict[str, float]] = None) -> None:
        """Write the epoch's logs, ``extra`` scalars and saliency histograms (with ``tensorboard_dir``)."""
        if self.tensorboard_dir is None:
            return
        if self._tb is None:
            from kerasprune.report.tensorboard import TensorBoardWriter

            self._tb = TensorBoardWriter(self.tensorboard_dir)
        values: Dict[str, float] = {}
        for key, value in (logs or {}).items():
            try:
                values[f"metrics/{key}"] = float(value)
            except (TypeError, ValueError):
                continue
        values.update(extra or {})
        self._tb.scalars(values, epoch)
        if self.scores:
            self._tb.histograms(self.scores, epoch)
        self._tb.flush()

    def _accumulate_epoch(self, epoch: int, logs=None) -> None:
        """Read the epoch's values and normalize them; summary figures into ``logs``."""
        if self._source is None:
            return
        current, count = self._source.read()
        for name, values in current.items():
            self._total[name] = self._total[name] + (values - self._previous[name])
        self._previous = current
        if count is None:  # sums over the steps
            self.raw, total = dict(current), dict(self._total)
        else:  # means over the examples seen
            self._total_count += count - self._previous_count
            self._previous_count = count
            self.raw = {k: v / max(count, 1.0) for k, v in current.items()}
            total = {k: v / max(self._total_count, 1.0) for k, v in self._total.items()}
        self.scores = normalize(self.raw, self.normalization)
        self.cumulative = normalize(total, self.normalization)
        self.steps = int(self._store.read(self._step_count))
        if logs is not None:
            flat = np.concatenate([s for s in self.scores.values()]) if self.scores else np.zeros(1)
            logs[f"{self.log_prefix}_min"] = float(flat.min())
            logs[f"{self.log_prefix}_mean"] = float(flat.mean())
            logs[f"{self.log_prefix}_max"] = float(flat.max())
            logs[f"{self.log_prefix}_steps"] = float(self.steps)

    def on_train_end(self, logs=None) -> None:
        """Restore the optimizer and rebuild a plain train function."""
        self._uninstall()
