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
from kerasprune.selection.select import check_options, select
from kerasprune.surgery.mask import mask_weights

__all__ = ["SoftFilterPruning"]

Rate = Union[float, Callable[[int], float]]


class SoftFilterPruning(SaliencyAccumulator):
    """Mask the least salient channels at every epoch end; masked channels keep training.

    Args:
        rate: fraction of the scored ``unit`` to mask at each epoch end, in [0, 1); or a
            function ``epoch -> rate`` (epochs count from 0), for a ramp.
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
        exclude: groups left alone (``fnmatch`` patterns of group or layer names).
        unit: ``neurons`` (fraction of channels), ``params`` or ``flops``.
        schedule: optional ``(epoch, rate) -> rate`` applied on top of ``rate`` (for
            example a ramp ``lambda e, r: r * min(1, (e + 1) / 5)``).
        reset_each_epoch: accumulate each epoch from zero (Xu et al. (2018), Eq. 6) or over the
            whole ``fit`` call.
        tensorboard_dir: a TensorBoard log directory: every epoch writes, after masking,
            the epoch logs as ``metrics/<name>``, the ``params``, ``flops`` and
            ``neurons`` the model would have with its masked channels removed, the
            ``width/<layer>`` of every prunable layer, and ``saliency/<group>``
            histograms (step = epoch).

    Attributes:
        keep: group name -> kept channel indices of the last selection (groups that lost
            channels only).
        history: per epoch, ``{"epoch", "rate", "masked", "zeroed"}``.
        scores, raw, cumulative, steps, graph: as :class:`SaliencyAccumulator`.

    Epoch logs get ``soft_rate`` and ``soft_masked`` (channels masked) besides the
    saliency figures.
    """

    def __init__(
        self,
        rate: Rate,
        criterion: str = "gsfp",
        scope: str = "global",
        normalization: str = "layer_mean",
        min_channels: int = 1,
        max_ratio: float = 1.0,
        round_to: int = 1,
        exclude: Iterable[str] = (),
        unit: str = "neurons",
        schedule: Optional[Callable[[int, float], float]] = None,
        reset_each_epoch: bool = True,
        tensorboard_dir: Optional[str] = None,
    ) -> None:
        super().__init__(
            criterion=criterion,
            normalization=normalization,
            reset_each_epoch=reset_each_epoch,
            exclude=exclude,
            tensorboard_dir=tensorboard_dir,
        )
        if not callable(rate):
            self._check_rate(rate)
        if schedule is not None and not callable(schedule):
            raise CallbackError(f"schedule must be a function (epoch, rate) -> rate, got {schedule!r}")
        check_options(
            None, scope=scope, unit=unit, min_channels=min_channels,
            max_ratio=max_ratio, round_to=round_to,
        )
        self.rate = rate
        self.scope = scope
        self.min_channels = int(min_channels)
        self.max_ratio = float(max_ratio)
        self.round_to = int(round_to)
        self.unit = unit
        self.schedule = schedule
        self.keep: Dict[str, np.ndarray] = {}
        self.history: list = []
        self._meter = None  # RemovalMeter of the graph, for the TensorBoard sizes
        self._totals = (0, 0)

    @staticmethod
    def _check_rate(rate: float) -> float:
        try:
            value = float(rate)
        except (TypeError, ValueError):
            raise CallbackError(f"rate must be a number in [0, 1) or a function of the epoch, got {rate!r}") from None
        if not 0.0 <= value < 1.0:
            raise CallbackError(f"rate must be in [0, 1), got {value}")
        return value

    def rate_at(self, epoch: int) -> float:
        """The rate used at the end of ``epoch`` (``rate``, then ``schedule``)."""
        rate = self.rate(epoch) if callable(self.rate) else self.rate
        if self.schedule is not None:
            rate = self.schedule(epoch, float(rate))
        return self._check_rate(rate)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        """Accumulate as the parent does, then select and mask the lowest channels."""
        self._accumulate_epoch(epoch, logs)
        rate = self.rate_at(epoch)
        keep = select(
            self.graph, self.scores, rate, scope=self.scope, unit=self.unit,
            model=self.model, min_channels=self.min_channels, max_ratio=self.max_ratio,
            round_to=self.round_to,
        )
        zeroed = mask_weights(self.model, keep, graph=self.graph) if keep else 0
        masked = int(sum(self.graph[name].size - len(k) for name, k in keep.items()))
        self.keep = {name: np.asarray(k) for name, k in keep.items()}
        self.history.append({"epoch": int(epoch), "rate": rate, "masked": masked, "zeroed": zeroed})
        if logs is not None:
            logs["soft_rate"] = rate
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
