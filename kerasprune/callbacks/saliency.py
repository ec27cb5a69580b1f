"""``SaliencyAccumulator``: per-channel gradient saliency added up inside ``model.fit``.

The compiled training step already computes the gradient of the loss with respect to
every trainable weight; this callback reuses them instead of running a second forward
and backward pass. At ``on_train_begin`` it wraps the ``apply`` method of the model's
optimizer (the method that ``apply_gradients`` and every Keras train step end in) with
a function that, given ``(grads, variables)``:

1. reduces the gradients and current values of each producer's filters (the weight
   entries a layer creates for the group's channels: a conv's ``kernel[..., c]``, a
   Dense unit's incoming column) to one number per channel with TensorFlow ops
   (``tf.math.unsorted_segment_sum`` over precomputed channel ids, or a reshape for the
   common whole-kernel case);
2. adds the step's saliency into non-trainable float64 ``tf.Variable`` accumulators;
3. calls the original ``apply``.

Then it forces Keras to retrace its train function
(``model.make_train_function(force=True)``), so the hook becomes part of the compiled
step, with ``steps_per_execution > 1`` and ``jit_compile=True`` too. The weights the hook
reads are the ones the step's forward pass used (they are read before the update). At
``on_train_end`` the optimizer is restored and the train function rebuilt again.

Criteria, per step and per producer layer with ``N`` held channels, each filter having
``n`` weights ``w`` with gradients ``g``:

- ``gsfp`` (papers/004 Eq. 5): ``G_n = sum|g| / n``, ``W_n = sqrt(sum w^2 / n)``,
  ``S_n = (N*G_n / sum_j G_j) * (N*W_n / sum_j W_j)`` (a layer whose sums are zero
  contributes 0); summed over the steps of an epoch it is Eq. 6's cumulative saliency;
- ``taylor_weights``: ``|sum w*g|`` over the filter (first-order Taylor on weights);
- ``grad_l1``: ``G_n = sum|g| / n``.

A group produced by several layers (a residual group) gets per channel the mean of its
producers' values (as :func:`kerasprune.importance.combine_layers`). Each epoch's sums
are then normalized per group (:func:`kerasprune.importance.normalize`).

Under ``tf.distribute.MirroredStrategy`` each replica holds the gradient of its share of
the global batch; the hook all-reduces (sums) the gradients of the scored kernels first
(one extra all-reduce of those kernels per step, besides the optimizer's own), so every
replica computes the saliency of the global batch, and the accumulators are
``ON_READ`` variables read from the first replica.

Under mixed precision the hook sits on the ``LossScaleOptimizer``'s inner optimizer, so
it sees the unscaled gradients, and only of the steps that are applied (a step skipped
for non-finite gradients is not counted).

Limits (checked at ``on_train_begin``, never mid-epoch): functional or Sequential models
only, a compiled model with an optimizer, the default strategy or ``MirroredStrategy``,
and every scored producer's filters must be trainable.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from kerasprune.errors import KerasPruneError
from kerasprune.graph.analysis import ChannelGroup, PruningGraph, analyze
from kerasprune.importance.filters import ChannelWeights, combine_layers, filter_weights
from kerasprune.importance.gradients import tf_variable
from kerasprune.importance.normalize import check_method, normalize
from kerasprune.selection.select import excluded_groups

__all__ = ["SaliencyAccumulator", "CallbackError", "CRITERIA"]

CRITERIA = ("gsfp", "taylor_weights", "grad_l1")


class CallbackError(KerasPruneError, ValueError):
    """A kerasprune callback cannot work with the model, optimizer or settings it was given."""


def _accumulator(initial: tf.Tensor, name: str) -> tf.Variable:
    """A non-trainable variable that each replica adds its own steps into (read: the first
    replica's, every replica computing the same all-reduced saliency)."""
    return tf.Variable(
        initial,
        trainable=False,
        name=name,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )


class _Block:
    """One weight array's share of a producer's filters: where its entries are."""

    def __init__(self, var_index: int, flat: Optional[np.ndarray], channel: np.ndarray) -> None:
        self.var_index = var_index
        self.flat = None if flat is None else tf.constant(flat, tf.int64)
        self.channel = tf.constant(channel, tf.int32)


class _Producer:
    """The filters one layer creates for one group, and its accumulator."""

    def __init__(self, group: str, cw: ChannelWeights, blocks: List[_Block], name: str) -> None:
        counts = cw.counts
        self.group = group
        self.layer = cw.layer
        self.size = cw.size
        self.held = counts > 0
        inv = np.zeros(cw.size, np.float32)
        inv[self.held] = 1.0 / counts[self.held]
        self.inv = tf.constant(inv)
        self.held_f = tf.constant(self.held.astype(np.float32))
        self.n_held = float(self.held.sum())
        self.blocks = blocks
        self.acc = _accumulator(tf.zeros([cw.size], tf.float64), name)


class SaliencyAccumulator(keras.callbacks.Callback):
    """Accumulates a per-channel gradient saliency over every training batch of ``fit``.

    No second forward or backward pass: the gradients of the compiled train step are
    reused (see the module documentation for the mechanism).

    Args:
        criterion: ``gsfp`` (papers/004 Eq. 5/6), ``taylor_weights`` (``|sum w*g|`` per
            filter) or ``grad_l1`` (size-normalized L1 norm of the filter's gradient).
        normalization: per-group normalization of the epoch's sums: ``layer_mean``,
            ``l2`` or ``none`` (as :func:`kerasprune.importance.normalize`).
        reset_each_epoch: start every epoch from zero (default); False sums over all
            epochs of the ``fit`` call.
        exclude: groups to leave unscored, as ``fnmatch`` patterns of group names or of
            producing layer names (as :func:`kerasprune.select` takes them).
        log_prefix: prefix of the figures written into the epoch logs.
        tensorboard_dir: a TensorBoard log directory: every epoch writes the numbers of
            the epoch logs as ``metrics/<name>`` scalars and a histogram
            ``saliency/<group>`` of each group's normalized scores
            (:class:`~kerasprune.report.tensorboard.TensorBoardWriter`; step = epoch).

    Attributes:
        scores: group name -> normalized saliency per channel (float64) of the last
            epoch (or, with ``reset_each_epoch=False``, of every epoch so far).
        raw: the same before normalization.
        cumulative: group name -> normalized saliency summed over every epoch of the
            ``fit`` call.
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
        if criterion not in CRITERIA:
            raise CallbackError(
                f"unknown criterion {criterion!r} for SaliencyAccumulator; use one of "
                f"{', '.join(CRITERIA)} (the criteria computed from the weight gradients "
                "the train step already has)"
            )
        check_method(normalization)
        self.criterion = criterion
        self.normalization = normalization
        self.reset_each_epoch = bool(reset_each_epoch)
        self.exclude = tuple(exclude)
        self.log_prefix = log_prefix
        self.tensorboard_dir = tensorboard_dir
        self._tb = None
        self.graph: Optional[PruningGraph] = None
        self.scores: Dict[str, np.ndarray] = {}
        self.raw: Dict[str, np.ndarray] = {}
        self.cumulative: Dict[str, np.ndarray] = {}
        self.steps = 0
        self._producers: List[_Producer] = []
        self._groups: List[ChannelGroup] = []
        self._total: Dict[str, np.ndarray] = {}
        self._step_count: Optional[tf.Variable] = None
        self._patched: Optional[Tuple[object, object]] = None
        self._strategy: Optional[tf.distribute.Strategy] = None

    # -- set-up -------------------------------------------------------------------------

    def _check_model(self, model: keras.Model) -> PruningGraph:
        name = type(self).__name__
        if keras.backend.backend() != "tensorflow":
            raise CallbackError(f"{name} needs the TensorFlow backend")
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

    def _build_plans(self, model: keras.Model, graph: PruningGraph) -> None:
        scope = self._strategy.scope() if self._strategy is not None else contextlib.nullcontext()
        with scope:
            self._build_plans_in_scope(model, graph)

    def _build_plans_in_scope(self, model: keras.Model, graph: PruningGraph) -> None:
        skip = excluded_groups(graph, self.exclude)
        trainable = list(model.trainable_weights)
        index = {id(v): i for i, v in enumerate(trainable)}
        by_path = {getattr(v, "path", None): i for i, v in enumerate(trainable)}
        self._producers = []
        self._groups = []
        for group in graph.prunable:
            if group.name in skip:
                continue
            filters = filter_weights(graph, group)
            if not filters:
                raise CallbackError(
                    f"group {group.name!r} has no filter weights (a kernel its producer "
                    "creates) to take gradients of; leave it out with exclude="
                    f"[{group.name!r}]"
                )
            for cw in filters:
                blocks = []
                for e, v in zip(cw.entries, cw.variables):
                    i = index.get(id(v), by_path.get(getattr(v, "path", None)))
                    if i is None:
                        raise CallbackError(
                            f"the filters of layer '{cw.layer}' (group {group.name!r}) are not "
                            "trainable, so the train step computes no gradient for them; "
                            f"make the layer trainable or leave the group out with "
                            f"exclude=[{group.name!r}]"
                        )
                    whole = (
                        tuple(v.shape)[-1:] == (cw.size,)
                        and e.flat.size == int(np.prod(v.shape))
                        and np.array_equal(e.flat, np.arange(e.flat.size))
                        and np.array_equal(e.channel, e.flat % cw.size)
                    )
                    blocks.append(_Block(i, None if whole else e.flat.astype(np.int64), e.channel.astype(np.int32)))
                name = f"kp_saliency_{len(self._producers)}"
                self._producers.append(_Producer(group.name, cw, blocks, name))
            self._groups.append(group)
        if not self._producers:
            raise CallbackError(
                f"model '{model.name}' has no prunable channel group to score"
                + (f" once {list(self.exclude)} are excluded" if self.exclude else "")
            )
        self._trainable = trainable
        self._step_count = _accumulator(tf.constant(0, tf.int64), "kp_saliency_steps")

    def _step_saliency(self, grads: Sequence, variables: Sequence) -> None:
        """Add one step's saliency into the accumulators (traced into the train step)."""
        by_id = {id(v): g for g, v in zip(grads, variables)}
        replica = tf.distribute.get_replica_context() if self._strategy is not None else None
        if replica is not None and replica.num_replicas_in_sync > 1:
            # each replica holds the gradient of its share of the batch (Keras scales the
            # loss by 1/replicas): their sum is the step's gradient, as the optimizer's own
            # all-reduce computes it
            needed = sorted({b.var_index for p in self._producers for b in p.blocks})
            local = []
            for i in needed:
                g = by_id.get(id(self._trainable[i]))
                if isinstance(g, tf.IndexedSlices):
                    g = tf.convert_to_tensor(g)
                local.append(tf.zeros(self._trainable[i].shape, tf.float32) if g is None else tf.cast(g, tf.float32))
            summed = replica.all_reduce(tf.distribute.ReduceOp.SUM, local)
            for i, g in zip(needed, summed):
                by_id[id(self._trainable[i])] = g
        flat_g: Dict[int, tf.Tensor] = {}
        flat_w: Dict[int, tf.Tensor] = {}

        def flats(i: int) -> Tuple[tf.Tensor, tf.Tensor]:
            if i not in flat_g:
                var = self._trainable[i]
                g = by_id.get(id(var))
                w = tf.reshape(tf.cast(tf.convert_to_tensor(tf_variable(var)), tf.float32), [-1])
                if g is None:
                    g = tf.zeros_like(w)
                else:
                    if isinstance(g, tf.IndexedSlices):
                        g = tf.convert_to_tensor(g)
                    g = tf.reshape(tf.cast(g, tf.float32), [-1])
                flat_g[i], flat_w[i] = g, w
            return flat_g[i], flat_w[i]

        for p in self._producers:
            size = p.size

            def per_channel(values: tf.Tensor, block: _Block) -> tf.Tensor:
                if block.flat is None:
                    return tf.reduce_sum(tf.reshape(values, [-1, size]), axis=0)
                return tf.math.unsorted_segment_sum(tf.gather(values, block.flat), block.channel, size)

            if self.criterion == "taylor_weights":
                wg = tf.zeros([size], tf.float32)
                for b in p.blocks:
                    g, w = flats(b.var_index)
                    wg += per_channel(w * g, b)
                step = tf.abs(wg) * p.held_f
            else:
                g_sum = tf.zeros([size], tf.float32)
                w_sum = tf.zeros([size], tf.float32)
                for b in p.blocks:
                    g, w = flats(b.var_index)
                    g_sum += per_channel(tf.abs(g), b)
                    if self.criterion == "gsfp":
                        w_sum += per_channel(w * w, b)
                g_n = g_sum * p.inv
                if self.criterion == "grad_l1":
                    step = g_n * p.held_f
                else:
                    w_n = tf.sqrt(w_sum * p.inv)
                    g_f = tf.math.divide_no_nan(g_n * p.n_held, tf.reduce_sum(g_n))
                    w_f = tf.math.divide_no_nan(w_n * p.n_held, tf.reduce_sum(w_n))
                    step = g_f * w_f * p.held_f
            p.acc.assign_add(tf.cast(step, tf.float64))
        self._step_count.assign_add(1)

    def _install(self) -> None:
        optimizer = self.model.optimizer
        # a LossScaleOptimizer hands its inner optimizer the unscaled, finite gradients
        target = getattr(optimizer, "inner_optimizer", None) or optimizer
        original = target.apply
        if getattr(original, "_kerasprune_owner", None) is self:
            # left behind by a fit that raised before on_train_end: replace, not stack
            original = original._kerasprune_original
        hook = self._step_saliency

        def apply_with_saliency(grads, trainable_variables=None):
            variables = target._trainable_variables if trainable_variables is None else list(trainable_variables)
            grads = list(grads)
            hook(grads, variables)
            return original(grads, trainable_variables)

        apply_with_saliency._kerasprune_owner = self
        apply_with_saliency._kerasprune_original = original
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
        self._patched = None
        self.model.make_train_function(force=True)

    # -- reading ------------------------------------------------------------------------

    def _read(self) -> Dict[str, np.ndarray]:
        per_group: Dict[str, List[np.ndarray]] = {g.name: [] for g in self._groups}
        for p in self._producers:
            values = np.asarray(p.acc.read_value().numpy(), dtype=np.float64)
            per_group[p.group].append(np.where(p.held, values, np.nan))
        out = {}
        for name, parts in per_group.items():
            combined = combine_layers(parts)
            out[name] = np.nan_to_num(combined, nan=0.0)
        return out

    def _reset(self) -> None:
        for p in self._producers:
            p.acc.assign(tf.zeros_like(p.acc))
        self._step_count.assign(0)

    # -- callback hooks -----------------------------------------------------------------

    def on_train_begin(self, logs=None) -> None:
        """Check the model, build the accumulators, hook the optimizer, retrace the step."""
        self.graph = self._check_model(self.model)
        self._build_plans(self.model, self.graph)
        self._total = {g.name: np.zeros(g.size) for g in self._groups}
        self._previous = {g.name: np.zeros(g.size) for g in self._groups}
        self.scores, self.raw, self.cumulative, self.steps = {}, {}, {}, 0
        self._install()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        """Zero the accumulators (when resetting each epoch)."""
        if self.reset_each_epoch and self._producers:
            self._reset()
            self._previous = {g.name: np.zeros(g.size) for g in self._groups}

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
        """Read the epoch's sums and normalize them; summary figures into ``logs``."""
        if not self._producers:
            return
        current = self._read()
        for name, values in current.items():
            self._total[name] = self._total[name] + (values - self._previous[name])
        self._previous = current
        self.raw = current
        self.scores = normalize(current, self.normalization)
        self.cumulative = normalize(self._total, self.normalization)
        self.steps = int(self._step_count.read_value().numpy())
        if logs is not None:
            flat = np.concatenate([s for s in self.scores.values()]) if self.scores else np.zeros(1)
            logs[f"{self.log_prefix}_min"] = float(flat.min())
            logs[f"{self.log_prefix}_mean"] = float(flat.mean())
            logs[f"{self.log_prefix}_max"] = float(flat.max())
            logs[f"{self.log_prefix}_steps"] = float(self.steps)

    def on_train_end(self, logs=None) -> None:
        """Restore the optimizer and rebuild a plain train function."""
        self._uninstall()
