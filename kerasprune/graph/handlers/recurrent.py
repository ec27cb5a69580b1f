"""Recurrent layers: LSTM, GRU, SimpleRNN (and ``RNN`` around their cells), Bidirectional.

The units of a recurrent layer are produced channels (slot ``"out"``): the hidden state,
which is the layer's output (``(B, T, units)`` with ``return_sequences``, ``(B, units)``
without) and every state it returns (``h`` and, for an LSTM, ``c``). The weights live in
the layer's cell:

* ``kernel`` ``(in, k*units)``: rows read the input channels (slot ``"in"``); columns are
  ``k`` gate blocks of ``units`` each (LSTM ``k=4``: i, f, c, o; GRU ``k=3``: z, r, h;
  SimpleRNN ``k=1``).
* ``recurrent_kernel`` ``(units, k*units)``: columns are gate blocks like the kernel's;
  rows read the previous hidden state, so they are sliced with the units too. The rows
  are a separate slot (``"recurrent"``, bound to the same units, like the input weights
  of a next layer), so that each weight entry depends on one unit per slot: a unit's
  own (produced) weights are its gate columns and biases, its recurrent-kernel row is
  how the layer reads it back.
* ``bias`` ``(k*units,)``, or ``(2, k*units)`` for a GRU with ``reset_after=True``.

Removing unit ``j`` removes column ``j`` of every gate block, row ``j`` of the recurrent
kernel and entry ``j`` of every bias block; the other units compute exactly what they
computed before, so the thin layer equals the original with unit ``j`` cut off.

An ``initial_state`` tensor carries the same units as the layer: it is coupled to the
layer's unit group (an encoder's states feeding a decoder join the two groups).
Masks, ``go_backwards``, ``unroll``, ``stateful`` and dropout do not mix units and are
fine; a stateful layer starts the rebuilt model with fresh (zero) states.

``Bidirectional`` wraps two such layers, which must keep the same number of units (Keras
derives all its output shapes from the forward layer). With ``merge_mode="concat"`` (or
``None``) the forward units then the backward units form one group of ``2*units``
channels in two equal blocks: each direction keeps the same count, chosen on its own.
With ``"sum"``, ``"ave"`` or ``"mul"`` unit ``j`` of both directions meet element-wise
and are one channel of a ``units``-sized group (likewise when an ``initial_state`` is
given).

Multiply-adds: per time step, the input matmul (``in * k*units``) and the recurrent
matmul (``units * k*units``); gate non-linearities and element-wise products are not
counted. Unknown sequence lengths count as 1.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
from keras import layers

from kerasprune.errors import HandlerError
from kerasprune.graph.handler import LayerHandler
from kerasprune.graph.handlers._common import call_arg, input_index, mixes_channels, prod
from kerasprune.graph.layout import Layout
from kerasprune.graph.registry import handler_for, register_handler

__all__ = ["RecurrentHandler", "BidirectionalHandler", "gate_blocks"]

# cell class -> number of gate blocks in its kernels
_GATES = {
    layers.LSTMCell: 4,
    layers.GRUCell: 3,
    layers.SimpleRNNCell: 1,
}


def gate_blocks(rnn_layer: object) -> Optional[int]:
    """Number of gate blocks of ``rnn_layer``'s cell (4, 3, 1), or None if not supported.

    Only the plain Keras cells are known; a subclass of a cell may compute anything.
    """
    cell = getattr(rnn_layer, "cell", None)
    return _GATES.get(type(cell))


def _unit_columns(mask: np.ndarray, gates: int) -> np.ndarray:
    """Kernel columns of the kept units in every gate block (block-major order)."""
    units = mask.shape[0]
    kept = np.nonzero(mask)[0]
    return np.concatenate([g * units + kept for g in range(gates)])


def _slice_cell(
    rnn_layer, variables: Sequence, arrays: Sequence[np.ndarray], kin, kout, krec
) -> List[np.ndarray]:
    """Slice one recurrent layer's cell weights.

    ``kin``: kept input channels (kernel rows); ``kout``: kept units (gate columns of
    both kernels, bias entries); ``krec``: kept units as read back by the recurrent
    kernel (its rows). Within one layer ``kout`` and ``krec`` are always equal; they are
    separate slots only so that every weight entry depends on one position per slot.
    """
    gates = gate_blocks(rnn_layer)
    cols = None if kout is None else _unit_columns(kout, gates)
    names = {id(v): v.name for v in rnn_layer.cell.weights}
    out = []
    for var, w in zip(variables, arrays):
        name = names.get(id(var))
        if name == "kernel":
            if kin is not None:
                w = w[kin]
            if cols is not None:
                w = w[:, cols]
        elif name == "recurrent_kernel":
            if krec is not None:
                w = w[krec]
            if cols is not None:
                w = w[:, cols]
        elif name == "bias":
            if cols is not None:
                w = w[..., cols]
        out.append(w)
    return out


def _recurrent_rows(rnn_layer, offset: int = 0) -> np.ndarray:
    """Slot positions of the recurrent kernel's entries as read-back units (its rows).

    Entry ``(r, g*units + r)`` (unit ``r``'s own gate column) is left to the unit's
    produced weights (-1 here), so that no entry counts twice for the same channel.
    """
    units = rnn_layer.cell.units
    shape = tuple(int(d) for d in rnn_layer.cell.recurrent_kernel.shape)
    rows = np.broadcast_to(np.arange(units)[:, None], shape)
    own = (np.arange(shape[1])[None, :] % units) == rows
    return np.where(own, -1, rows + offset)


def _rows_of(rnn_layer, variables, offset: int = 0) -> list:
    """``weight_positions`` answer: the recurrent kernel's rows, nothing else."""
    target = id(rnn_layer.cell.recurrent_kernel)
    return [_recurrent_rows(rnn_layer, offset) if id(v) == target else None for v in variables]


def _set_units(config: dict, n: int) -> None:
    """Write ``units`` into a recurrent layer's config (flat, or nested in its ``cell``)."""
    if "units" in config:
        config["units"] = n
    else:
        config["cell"]["config"]["units"] = n
        config["cell"].pop("build_config", None)


def _step_macs(rnn_layer, steps: int) -> int:
    cell = rnn_layer.cell
    return steps * (prod(cell.kernel.shape) + prod(cell.recurrent_kernel.shape))


def _sequence_steps(node) -> int:
    seq = call_arg(node, 0, "sequences")
    steps = tuple(getattr(seq, "shape", node.input_tensors[0].shape))[1]
    return 1 if steps is None else int(steps)


def _mixing_reason(ctx, rnn_layer) -> Optional[str]:
    cell = rnn_layer.cell
    for attr in ("activation", "recurrent_activation"):
        if mixes_channels(getattr(cell, attr, None)):
            return f"layer '{ctx.path}' applies a softmax across its units ({attr})"
    return None


def _state_tensors(node) -> Tuple[bool, list]:
    """Whether ``initial_state`` was given, and its elements flattened."""
    state = call_arg(node, 1, "initial_state")
    if state is None:
        return False, []
    return True, list(keras.tree.flatten(state))


class _RecurrentBase(LayerHandler):
    """Shared pieces: the sequence input, initial states, masks."""

    def _sequence_input(self, ctx) -> Tuple[Optional[int], Optional[Layout]]:
        seq = call_arg(ctx.node, 0, "sequences")
        i = input_index(ctx, seq)
        if i is None:
            return None, None
        return i, ctx.channel_input(i, len(ctx.input_shapes[i]) - 1)

    def _couple_state(self, ctx, state, units: Layout, what: str) -> None:
        """Couple one initial-state element with the units it initializes."""
        what = f"{what} " if what else ""
        reason = f"the {what}initial state of '{ctx.path}' is not a tracked tensor"
        i = input_index(ctx, state)
        layout = None if i is None else ctx.inputs[i]
        if layout is None:
            ctx.freeze(units, reason)
            return
        if layout.axis != len(ctx.input_shapes[i]) - 1:
            reason = f"the {what}initial state of '{ctx.path}' carries channels on another axis"
            ctx.freeze(units, reason)
            ctx.freeze(layout, reason)
            return
        ctx.unify([units.moved(1), layout], f"initial state of '{ctx.path}'")

    def _freeze_others(self, ctx, used: set) -> None:
        """Tensors other than the sequence and the states (explicit masks): not channels."""
        used_ids = {id(ctx.input_tensors[i]) for i in used if i is not None}
        for kt, layout in zip(ctx.input_tensors, ctx.inputs):
            if id(kt) not in used_ids and layout is not None:
                ctx.freeze(layout, f"used as a mask by '{ctx.path}'")

    def _checked(self, ctx, outs: List[Layout]) -> List[Optional[Layout]]:
        """The output layouts, if they fit the output shapes Keras reports; else frozen."""
        for lay, shape in zip(outs, ctx.output_shapes):
            if shape[lay.axis] != len(lay):
                reason = (
                    f"layer '{ctx.path}' reports an output width ({shape[lay.axis]}) that "
                    f"does not match its units ({len(lay)})"
                )
                for l in outs:
                    ctx.freeze(l, reason)
                return ctx.opaque_outputs(reason)
        return outs

    def _fallback(self, ctx, why: str, unsupported: bool = False):
        if unsupported:
            ctx.warn_unsupported()
        for layout in ctx.inputs:
            ctx.freeze(layout, why)
        return ctx.opaque_outputs(why)


@register_handler(layers.LSTM, layers.GRU, layers.SimpleRNN, layers.RNN)
class RecurrentHandler(_RecurrentBase):
    """LSTM, GRU, SimpleRNN, and ``RNN`` around an LSTMCell, GRUCell or SimpleRNNCell.

    Slots: ``"in"`` (kernel rows), ``"out"`` (the units: gate columns and biases) and
    ``"recurrent"`` (the same units, recurrent-kernel rows). Other cells (stacked cells,
    ConvLSTM cells, custom cells) freeze the channels through the layer.
    """

    def analyze(self, ctx):
        layer = ctx.layer
        gates = gate_blocks(layer)
        if gates is None:
            cell = type(getattr(layer, "cell", None)).__name__
            return self._fallback(
                ctx, f"layer '{ctx.path}' runs a {cell}, which kerasprune cannot slice", True
            )
        n_states = len(layer.state_size)
        expected = 1 + (n_states if layer.return_state else 0)
        if len(ctx.output_shapes) != expected:
            return self._fallback(
                ctx, f"layer '{ctx.path}' returns outputs kerasprune cannot match"
            )
        i, inp = self._sequence_input(ctx)
        ctx.bind("in", inp)
        used = {i}
        out = ctx.produce("out", layer.cell.units, len(ctx.output_shapes[0]) - 1)
        ctx.bind("recurrent", out)
        reason = _mixing_reason(ctx, layer)
        if reason:
            ctx.freeze(out, reason)
        given, states = _state_tensors(ctx.node)
        if given and len(states) != n_states:
            ctx.freeze(out, f"the initial state of '{ctx.path}' has an unexpected structure")
        for s in states:
            j = input_index(ctx, s)
            used.add(j)
            self._couple_state(ctx, s, out, "")
        self._freeze_others(ctx, used)
        return self._checked(ctx, [out] + [out.moved(1)] * (expected - 1))

    def edit_config(self, layer, config, masks):
        if isinstance(config.get("cell"), dict):  # RNN(cell): the cell is built by the call
            config["cell"].pop("build_config", None)
        if masks.get("out") is not None:
            _set_units(config, int(masks["out"].sum()))

    def slice_weights(self, layer, weights, masks):
        return _slice_cell(
            layer, layer.weights, weights, masks.get("in"), masks.get("out"), masks.get("recurrent")
        )

    def weight_positions(self, layer, slot, size):
        if slot != "recurrent":
            return None
        return _rows_of(layer, layer.weights)

    def macs(self, layer, node):
        return _step_macs(layer, _sequence_steps(node))


@register_handler(layers.Bidirectional)
class BidirectionalHandler(_RecurrentBase):
    """A forward and a backward recurrent layer reading the same input.

    Keras derives every output shape of the wrapper from the forward layer, so both
    directions must keep the same number of units. Two ways of saying so:

    * ``merge_mode="concat"`` or ``None`` (no initial state given): slot ``"out"`` holds
      the forward units then the backward units (``2*units`` channels, the concatenated
      output's order) as one group split into 2 blocks; each direction keeps the same
      count, chosen independently. Slot ``"recurrent"``: the same channels, as read back
      by the recurrent kernels (their rows).
    * ``"sum"``, ``"ave"``, ``"mul"``, or an ``initial_state`` given: slots ``"forward"``
      and ``"backward"`` (and ``"forward_recurrent"``, ``"backward_recurrent"``) are
      coupled unit by unit, one group of ``units`` channels: unit ``j`` of both
      directions goes together (their outputs meet element-wise, or each state is
      coupled to the units it initializes).

    Slot ``"in"``: the rows of both kernels. The config's nested ``layer`` and
    ``backward_layer`` get their ``units`` edited; their nested build configs are dropped
    so the rebuilt wrapper is built by the graph call at the new widths.
    """

    def _directions(self, layer):
        fwd, bwd = layer.forward_layer, layer.backward_layer
        for d in (fwd, bwd):
            if not isinstance(handler_for(d), RecurrentHandler) or gate_blocks(d) is None:
                return None
        return fwd, bwd

    def analyze(self, ctx):
        layer = ctx.layer
        dirs = self._directions(layer)
        if dirs is None:
            return self._fallback(
                ctx, f"layer '{ctx.path}' wraps a recurrent layer kerasprune cannot slice", True
            )
        fwd, bwd = dirs
        mode = layer.merge_mode
        n_f, n_b = len(fwd.state_size), len(bwd.state_size)
        expected = (2 if mode is None else 1) + ((n_f + n_b) if layer.return_state else 0)
        units = fwd.cell.units
        if len(ctx.output_shapes) != expected or bwd.cell.units != units:
            return self._fallback(
                ctx, f"layer '{ctx.path}' returns outputs kerasprune cannot match"
            )
        i, inp = self._sequence_input(ctx)
        ctx.bind("in", inp)
        used = {i}
        axis = len(ctx.output_shapes[0]) - 1
        given, states = _state_tensors(ctx.node)
        if mode in ("concat", None) and not given:
            both = ctx.produce("out", 2 * units, axis)
            ctx.bind("recurrent", both)
            ctx.require_blocks(both, 2)
            f = Layout(both.src[:units], both.idx[:units], axis)
            b = Layout(both.src[units:], both.idx[units:], axis)
            merged = [both] if mode == "concat" else [f, b]
        else:
            f = ctx.produce("forward", units, axis)
            b = ctx.produce("backward", units, axis)
            ctx.bind("forward_recurrent", f)
            ctx.bind("backward_recurrent", b)
            how = f"{mode} of both directions" if mode else "outputs of both directions"
            ctx.unify([f, b], f"'{ctx.path}' ({how})")
            if mode == "concat":
                merged = [Layout.concat([f, b], axis)]
            else:
                merged = [f, b] if mode is None else [f]
        for d, lay in ((fwd, f), (bwd, b)):
            reason = _mixing_reason(ctx, d)
            if reason:
                ctx.freeze(lay, reason)
        if given:
            half = len(states) // 2
            if half != n_f or len(states) - half != n_b:
                reason = f"the initial state of '{ctx.path}' has an unexpected structure"
                ctx.freeze(f, reason)
                ctx.freeze(b, reason)
            for k, s in enumerate(states):
                used.add(input_index(ctx, s))
                fw = k < half
                self._couple_state(ctx, s, f if fw else b, "forward" if fw else "backward")
        self._freeze_others(ctx, used)
        outs = list(merged)
        if layer.return_state:
            outs += [f.moved(1)] * n_f + [b.moved(1)] * n_b
        return self._checked(ctx, outs)

    @staticmethod
    def _direction_masks(masks, slot: str) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(forward, backward) masks of a slot, from a joint ``2*units`` mask or per direction."""
        joint = masks.get("out" if slot == "units" else "recurrent")
        if joint is not None:
            half = joint.shape[0] // 2
            return joint[:half], joint[half:]
        suffix = "" if slot == "units" else "_recurrent"
        return masks.get("forward" + suffix), masks.get("backward" + suffix)

    def edit_config(self, layer, config, masks):
        for key in ("layer", "backward_layer"):
            if isinstance(config.get(key), dict):
                config[key].pop("build_config", None)
        kf, kb = self._direction_masks(masks, "units")
        if kf is not None:
            _set_units(config["layer"]["config"], int(kf.sum()))
        if kb is not None:
            bwd = config.get("backward_layer")
            if bwd is None:  # pragma: no cover - Keras 3 always writes it
                raise HandlerError("Bidirectional config without 'backward_layer'")
            _set_units(bwd["config"], int(kb.sum()))

    def slice_weights(self, layer, weights, masks):
        variables = list(layer.weights)
        kin = masks.get("in")
        units = self._direction_masks(masks, "units")
        rec = self._direction_masks(masks, "recurrent")
        mapped: Dict[int, np.ndarray] = {}
        for k, d in enumerate((layer.forward_layer, layer.backward_layer)):
            ids = {id(v) for v in d.weights}
            pos = [p for p, v in enumerate(variables) if id(v) in ids]
            sliced = _slice_cell(
                d, [variables[p] for p in pos], [weights[p] for p in pos], kin, units[k], rec[k]
            )
            mapped.update(zip(pos, sliced))
        return [mapped.get(p, w) for p, w in enumerate(weights)]

    def weight_positions(self, layer, slot, size):
        fwd, bwd = layer.forward_layer, layer.backward_layer
        if slot == "recurrent":
            f = _rows_of(fwd, layer.weights)
            b = _rows_of(bwd, layer.weights, fwd.cell.units)
            return [x if x is not None else y for x, y in zip(f, b)]
        if slot in ("forward_recurrent", "backward_recurrent"):
            return _rows_of(fwd if slot.startswith("forward") else bwd, layer.weights)
        return None

    def macs(self, layer, node):
        steps = _sequence_steps(node)
        return _step_macs(layer.forward_layer, steps) + _step_macs(layer.backward_layer, steps)
