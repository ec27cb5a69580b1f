"""``SoftFilterPruning``: the globally soft filter pruning of Xu et al. (2018) in ``model.fit``.

At each epoch end the callback ranks the channels by the saliency its
:class:`~kerasprune.callbacks.SaliencyAccumulator` added up over the epoch's training
steps, chooses the lowest ones with :func:`kerasprune.select` (same scopes and guards:
``min_channels`` keeps every group alive) and zeroes them with
:func:`kerasprune.surgery.mask.mask_weights`: the filters and biases, their
BatchNormalization entries and the next layers' matching input weights, every member of
a residual group together. Shapes do not change; the next epoch trains every channel, and
the next selection may choose different ones (a masked filter "comes back").

Note on coming back: a channel whose filter *and* outgoing weights are both zero is a
stationary point of plain gradient descent (its output is zero, so the outgoing weights
get no gradient, and its outgoing weights are zero, so the filter gets none). Masked
channels move again through the optimizer's state (momentum, Adam moments) or weight
decay; with plain SGD they stay at zero until unmasked channels are chosen instead, which
does not restore them either. :func:`kerasprune.strip` removes the channels that are still
zero at the end.

References:

- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Union

import numpy as np

from kerasprune.callbacks.saliency import CallbackError, SaliencyAccumulator
from kerasprune.selection.options import SelectionOptions, resolve_options
from kerasprune.selection.select import select
from kerasprune.surgery.mask import mask_weights

__all__ = ["SoftFilterPruning"]

Ratio = Union[float, Callable[[int], float]]


class SoftFilterPruning(SaliencyAccumulator):
    """Mask the least salient channels at every epoch end; masked channels keep training.

    Example:

    ```python
    soft = kp.callbacks.SoftFilterPruning(ratio=0.5, criterion="gsfp", min_channels=2)
    model.fit(train_ds, epochs=30, callbacks=[soft])
    thin = kp.strip(model)
    ```

    Args:
        ratio: fraction of the scored ``unit`` to mask at each epoch end, in [0, 1); or a
            function ``epoch -> ratio`` (epochs count from 0), for a ramp.
        criterion: saliency accumulated over the epoch: any accumulable criterion of the
            registry (``gsfp``, ``taylor_weights``, ``grad_l1``, ``mean_gradient``,
            ``taylor``, or one registered with ``accumulate=``; see
            :class:`SaliencyAccumulator`).
        scope: ``global`` (as in Xu et al. (2018)), ``layerwise`` or ``hierarchical``.
        normalization: per-group normalization before the ranking (``layer_mean``, ``l2``
            or ``none``). Without it a global ranking can empty whole layers (Xu et al. (2018)).
        min_channels: no group keeps fewer channels.
        max_ratio: no group loses more than this fraction of its channels.
        round_to: every masked group keeps a multiple of this many channels.
        exclude: groups left alone (``fnmatch`` patterns of group or layer names, as
            :func:`kerasprune.select` takes them); they are not scored either.
        unit: ``neurons`` (fraction of channels), ``params`` or ``flops``.
        schedule: optional ``(epoch, ratio) -> ratio`` applied on top of ``ratio`` (for
            example a ramp ``lambda e, r: r * min(1, (e + 1) / 5)``).
        reset_each_epoch: accumulate each epoch from zero (Xu et al. (2018), Eq. 6) or over the
            whole ``fit`` call.
        tensorboard_dir: a TensorBoard log directory: every epoch writes, after masking,
            the epoch logs as ``metrics/<name>``, the ``params``, ``flops`` and
            ``neurons`` the model would have with its masked channels removed, the
            ``width/<layer>`` of every prunable layer, and ``saliency/<group>``
            histograms (step = epoch).
        options: every selection option in one :class:`kerasprune.SelectionOptions`
            (``scope``, ``unit``, ``min_channels``, ``max_ratio``, ``round_to`` and
            ``exclude`` above are its shortcuts, None where not given; a shortcut given
            as well must agree with it).

    Attributes:
        options: the :class:`kerasprune.SelectionOptions` every epoch selects with.
        keep: group name -> kept channel indices of the last selection (groups that lost
            channels only).
        history: per epoch, ``{"epoch", "ratio", "masked", "zeroed"}``.
        scores, raw, cumulative, steps, graph: as :class:`SaliencyAccumulator`.

    Epoch logs get ``soft_ratio`` and ``soft_masked`` (channels masked) besides the
    saliency figures.

    Raises:
        CallbackError: a ratio outside [0, 1) or a schedule that is not a function.
        SelectionError: an invalid selection option, or a shortcut that contradicts
            ``options``.
    """

    def __init__(
        self,
        ratio: Ratio,
        criterion: str = "gsfp",
        scope: Optional[str] = None,
        normalization: str = "layer_mean",
        min_channels: Optional[int] = None,
        max_ratio: Optional[float] = None,
        round_to: Optional[int] = None,
        exclude: Optional[Iterable[str]] = None,
        unit: Optional[str] = None,
        schedule: Optional[Callable[[int, float], float]] = None,
        reset_each_epoch: bool = True,
        tensorboard_dir: Optional[str] = None,
        *,
        options: Optional[SelectionOptions] = None,
    ) -> None:
        opts = resolve_options(
            options, scope=scope, unit=unit, min_channels=min_channels, max_ratio=max_ratio,
            round_to=round_to, exclude=exclude,
        )
        super().__init__(
            criterion=criterion,
            normalization=normalization,
            reset_each_epoch=reset_each_epoch,
            exclude=opts.exclude,
            tensorboard_dir=tensorboard_dir,
        )
        if not callable(ratio):
            self._check_ratio(ratio)
        if schedule is not None and not callable(schedule):
            raise CallbackError(
                f"schedule must be a function (epoch, ratio) -> ratio, got {schedule!r}"
            )
        self.options = opts
        self.ratio = ratio
        self.schedule = schedule
        self.keep: Dict[str, np.ndarray] = {}
        self.history: list = []
        self._meter = None  # RemovalMeter of the graph, for the TensorBoard sizes
        self._totals = (0, 0)

    @staticmethod
    def _check_ratio(ratio: float) -> float:
        try:
            value = float(ratio)
        except (TypeError, ValueError):
            raise CallbackError(
                f"ratio must be a number in [0, 1) or a function of the epoch, got {ratio!r}"
            ) from None
        if not 0.0 <= value < 1.0:
            raise CallbackError(f"ratio must be in [0, 1), got {value}")
        return value

    def ratio_at(self, epoch: int) -> float:
        """The ratio used at the end of ``epoch`` (``ratio``, then ``schedule``).

        Args:
            epoch: the epoch, counted from 0.

        Returns:
            The fraction of the unit masked at that epoch's end.

        Raises:
            CallbackError: the ratio (or the schedule's) is not in [0, 1).
        """
        ratio = self.ratio(epoch) if callable(self.ratio) else self.ratio
        if self.schedule is not None:
            ratio = self.schedule(epoch, float(ratio))
        return self._check_ratio(ratio)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        """Accumulate as the parent does, then select and mask the lowest channels."""
        self._accumulate_epoch(epoch, logs)
        ratio = self.ratio_at(epoch)
        keep = select(self.graph, self.scores, ratio, model=self.model, options=self.options)
        zeroed = mask_weights(self.model, keep, graph=self.graph) if keep else 0
        masked = int(sum(self.graph[name].size - len(k) for name, k in keep.items()))
        self.keep = {name: np.asarray(k) for name, k in keep.items()}
        self.history.append(
            {"epoch": int(epoch), "ratio": ratio, "masked": masked, "zeroed": zeroed}
        )
        if logs is not None:
            logs["soft_ratio"] = ratio
            logs["soft_masked"] = float(masked)
        if self.tensorboard_dir is not None:
            self._write_tensorboard(epoch, logs, self._effective_size())

    def _effective_size(self) -> Dict[str, float]:
        """Parameters, FLOPs, neurons and widths once the masked channels are removed."""
        from kerasprune.costs.channels import RemovalMeter
        from kerasprune.costs.counting import count_flops, count_params

        if self._meter is None or self._meter.graph is not self.graph:
            self._meter = RemovalMeter(self.graph, self.model)
            self._totals = (count_params(self.model).total, count_flops(self.model).total)
        removed = self._meter(self.keep) if self.keep else {"params": 0.0, "flops": 0.0}
        out = {
            "params": float(self._totals[0] - removed["params"]),
            "flops": float(self._totals[1] - removed["flops"]),
        }
        neurons = 0
        for group in self.graph.prunable:
            width = len(self.keep[group.name]) if group.name in self.keep else group.size
            neurons += width
            for layer in group.producers:
                out[f"width/{layer}"] = float(width)
        out["neurons"] = float(neurons)
        return out
