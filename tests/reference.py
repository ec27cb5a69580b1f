"""Independent references used by the tests.

``cut_off`` builds the *original* model with the removed channels cut off: each removed
channel is zeroed where it is created (the producer's filter and bias, a recurrent
unit's candidate gate, an attention head's values, the BatchNormalization's shift and
mean, the Normalization's mean, a per-channel Rescaling offset, the depthwise bias, the
filters of a removed group of a grouped convolution), so it carries exactly zero to every
consumer. Keras then runs the full-width graph itself. A key/value head of a grouped-query
attention layer is zeroed in its value projection (kernel columns and bias): every query
head sharing it then averages zero values, so all of them add nothing to the output. The zeroing rules below are this
file's own knowledge of the layer classes, not kerasprune's handlers.

A layer between producer and consumer that turns a zero channel into something else (a
softmax over time gives 1/T) needs ``cut_inputs=True``: the consumers' weights that read
a removed channel are zeroed too.
"""

from __future__ import annotations

import keras
import numpy as np

from kerasprune.graph.composite import iter_layers
from kerasprune.surgery.keep import keep_masks

# gate block of a recurrent cell that writes the candidate state: with its columns and
# biases zero, a unit's state (and so its output) stays exactly zero from a zero start
_CANDIDATE_BLOCK = {
    keras.layers.LSTMCell: 2,  # of i, f, c, o
    keras.layers.GRUCell: 2,  # of z, r, h
    keras.layers.SimpleRNNCell: 0,
}


def _zero_units(rnn_layer, removed: np.ndarray):
    """Silence units of an LSTM, GRU or SimpleRNN (or RNN around their cells)."""
    cell = rnn_layer.cell
    if type(cell) not in _CANDIDATE_BLOCK:
        raise NotImplementedError(f"reference cannot zero units of a {type(cell).__name__}")
    cols = _CANDIDATE_BLOCK[type(cell)] * cell.units + removed
    for var in (cell.kernel, cell.recurrent_kernel) + ((cell.bias,) if cell.use_bias else ()):
        w = np.array(var.numpy())
        w[..., cols] = 0
        var.assign(w)


def _zero_at(var, index):
    w = np.array(var.numpy())
    w[index] = 0
    var.assign(w)


# keras-hub's grouped-query attention layers (by class name: this file does not import
# keras-hub), and where each keeps its value and output projections
_HUB_GROUPED_ATTENTION = {  # class name -> (value projection, output projection)
    "LlamaAttention": ("_value_dense", "_output_dense"),
    "CachedMistralAttention": ("_value_dense", "_output_dense"),
    "CachedMixtralAttention": ("value_dense", "output_dense"),
    "QwenAttention": ("_value_dense", "_output_dense"),
    "QwenMoeAttention": ("value_dense", "_output_dense"),
    "Qwen3Attention": ("_value_dense", "_output_dense"),
    "Qwen3MoeAttention": ("_value_dense", "_output_dense"),
    "Phi3Attention": ("value_dense", "output_dense"),
    "CachedGemmaAttention": ("value_dense", "output_dense"),
    "CachedGemma3Attention": ("value_dense", "output_dense"),
}


def _zero_kv_heads(value_dense, removed: np.ndarray):
    """Zero key/value heads ``removed`` of a value ``EinsumDense`` whose output is
    ``(..., heads, head_dim)``: the heads' axis in the kernel is read off the equation
    (``"bkm,mvh->bkvh"``: axis 1; Gemma's ``"bsd,kdh->bskh"``: axis 0); the bias is
    ``(heads, head_dim)``."""
    operands, result = value_dense.equation.split("->")
    axis = operands.split(",")[1].index(result[-2])
    index = [slice(None)] * len(value_dense.kernel.shape)
    index[axis] = removed
    _zero_at(value_dense.kernel, tuple(index))
    if getattr(value_dense, "bias", None) is not None:
        _zero_at(value_dense.bias, removed)


def _grouped_projections(layer):
    """``(value, output)`` projections of a grouped-query attention layer, else None."""
    if isinstance(layer, keras.layers.GroupQueryAttention):
        return layer._value_dense, layer._output_dense
    attrs = _HUB_GROUPED_ATTENTION.get(type(layer).__name__)
    return None if attrs is None else tuple(getattr(layer, a) for a in attrs)


def _zero_produced(layer, slot: str, removed: np.ndarray):
    """Zero the channels ``layer`` creates in ``slot`` (``out``, MHA ``heads``,
    Bidirectional ``forward`` / ``backward``)."""
    L = keras.layers
    grouped = _grouped_projections(layer)
    if grouped is not None and slot in ("heads", "out"):
        value, output = grouped
        if slot == "heads":
            _zero_kv_heads(value, removed)
        else:  # output kernel (heads, head_dim, out), bias (out,)
            _zero_at(output.kernel, (Ellipsis, removed))
            if getattr(output, "bias", None) is not None:
                _zero_at(output.bias, removed)
    elif isinstance(layer, L.MultiHeadAttention):
        if slot == "heads":  # a head whose values are zero adds nothing to the output
            _zero_at(layer.value_dense.kernel, (slice(None), removed))
            if layer.value_dense.bias is not None:
                _zero_at(layer.value_dense.bias, removed)
        elif slot == "out":
            _zero_at(layer.output_dense.kernel, (Ellipsis, removed))
            if layer.output_dense.bias is not None:
                _zero_at(layer.output_dense.bias, (Ellipsis, removed))
        else:
            raise NotImplementedError(f"reference does not know MultiHeadAttention slot {slot!r}")
    elif isinstance(layer, L.Bidirectional):
        units = layer.forward_layer.cell.units
        if slot == "out":  # forward units, then backward units
            _zero_units(layer.forward_layer, removed[removed < units])
            _zero_units(layer.backward_layer, removed[removed >= units] - units)
        elif slot in ("forward", "backward"):
            _zero_units(layer.forward_layer if slot == "forward" else layer.backward_layer, removed)
        else:
            raise NotImplementedError(f"reference does not know Bidirectional slot {slot!r}")
    elif isinstance(layer, L.RNN):  # LSTM, GRU, SimpleRNN are RNNs around their cells
        _zero_units(layer, removed)
    elif slot == "out":
        _zero_out(layer, removed)
    else:
        raise NotImplementedError(f"reference cannot zero slot {slot!r} of {type(layer).__name__}")


def _zero_out(layer, removed: np.ndarray):
    w = {v.name: np.array(v.numpy()) for v in layer.weights}
    cls = type(layer)
    L = keras.layers
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        w["kernel"][..., removed, :] = 0
        if "bias" in w:
            w["bias"][removed] = 0
    elif isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        w["pointwise_kernel"][..., removed] = 0
        if "bias" in w:
            w["bias"][removed] = 0
    elif isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense)) and not isinstance(
        layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)
    ):
        w["kernel"][..., removed] = 0
        if "bias" in w:
            w["bias"][removed] = 0
    elif isinstance(layer, L.Embedding) or cls.__name__ == "PositionEmbedding":  # keras-hub's
        w["embeddings"][:, removed] = 0  # a tied reverse call reads these columns as zero
    elif isinstance(layer, L.EinsumDense):  # the output's last letter, in the kernel and bias
        operands, out_spec = layer.equation.replace(" ", "").split("->")
        kernel_spec = operands.split(",")[1]
        w["kernel"][(slice(None),) * kernel_spec.index(out_spec[-1]) + (removed,)] = 0
        if "bias" in w and out_spec[-1] in (layer.bias_axes or ""):
            w["bias"][..., removed] = 0  # the bias spans the output's letters to the last
    elif cls.__name__ == "ViTPatchingAndEmbedding":  # keras-hub's: patches + token + positions
        w["kernel"][..., removed] = 0
        for name in ("bias", "class_token"):
            if name in w:
                w[name][..., removed] = 0
        w["embeddings"][:, removed] = 0
    else:
        raise NotImplementedError(f"reference cannot zero outputs of {cls.__name__}")
    layer.set_weights([w[v.name] for v in layer.weights])


def _zero_channels(layer, removed: np.ndarray):
    w = {v.name: np.array(v.numpy()) for v in layer.weights}
    L = keras.layers
    if isinstance(layer, L.BatchNormalization):
        w["beta"][removed] = 0
        w["moving_mean"][removed] = 0
    elif isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        m = layer.depth_multiplier
        pos = (removed[:, None] * m + np.arange(m)[None, :]).ravel()
        if "bias" in w:
            w["bias"][pos] = 0
        key = "kernel" if "kernel" in w else "depthwise_kernel"
        w[key][..., removed, :] = 0
    elif isinstance(layer, L.Normalization):  # (x - mean) / std: 0 stays 0 where mean is 0
        if "mean" in w:  # adapted (finalize_state reads it into layer.mean)
            w["mean"][..., removed] = 0
        else:  # given in the config: layer.mean is the broadcast constant
            mean = np.array(layer.mean)
            mean[..., removed] = 0
            layer.mean = keras.ops.convert_to_tensor(mean)
            return
    elif isinstance(layer, L.Rescaling):  # x * scale + offset: a per-channel offset is zeroed
        offset = np.array(layer.offset, dtype="float32")
        if offset.ndim and offset.shape[-1] > 1:
            offset[..., removed] = 0
            layer.offset = offset
        elif offset.any():
            raise NotImplementedError("reference cannot zero one channel of a scalar offset")
        return
    elif isinstance(layer, (L.PReLU, L.Reshape, L.InputLayer)) or type(layer).__name__ == "LayerScale":
        return  # 0 stays 0 (LayerScale: x * gamma)
    else:
        raise NotImplementedError(f"reference cannot zero channels of {type(layer).__name__}")
    layer.set_weights([w[v.name] for v in layer.weights])


def _zero_groups(layer, removed: np.ndarray):
    """A grouped convolution that loses whole groups: group ``g`` computes filters
    ``g * per_group .. (g + 1) * per_group - 1`` (``per_group = filters / groups``)."""
    L = keras.layers
    if not isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)) or layer.groups < 2:
        raise NotImplementedError(f"reference cannot zero groups of {type(layer).__name__}")
    per = layer.filters // layer.groups
    filters = (removed[:, None] * per + np.arange(per)[None, :]).ravel()
    _zero_out(layer, filters)


_PRODUCED_SLOTS = ("out", "heads", "forward", "backward")


def _zero_inputs(layer, removed: np.ndarray):
    """Zero the weights of a consumer that read the removed input channels."""
    L = keras.layers
    if isinstance(layer, L.Dense):
        _zero_at(layer.kernel, removed)
    elif isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)) and layer.groups == 1:  # (*k, in, out)
        _zero_at(layer.kernel, (Ellipsis, removed, slice(None)))
    else:
        raise NotImplementedError(f"reference cannot zero the inputs of {type(layer).__name__}")


def _classes(model: keras.Model) -> list:
    return [type(layer) for _, layer in iter_layers(model)]


def cut_off(model: keras.Model, graph, keep, cut_inputs: bool = False) -> keras.Model:
    """A copy of ``model`` whose removed channels are zero wherever they are created
    (and, with ``cut_inputs``, wherever a consumer reads them)."""
    try:
        ref = keras.models.clone_model(model)
    except Exception:  # a layer's get_config fails (keras-hub's LlamaTransformerDecoder)
        ref = None
    if ref is None or _classes(ref) != _classes(model):  # a keras-hub Task clones into another graph
        ref = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert _classes(ref) == _classes(model)
    ref.set_weights(model.get_weights())
    # paired by position: a copy of a model whose class builds its graph in its
    # constructor gives the layers Keras named automatically new numbers
    layers = {path: twin for (path, _), (_, twin) in zip(iter_layers(model), iter_layers(ref))}
    masks = graph.slot_masks(keep_masks(graph, keep))
    for path, slots in masks.items():
        if path not in layers and isinstance(graph.record(path).layer, keras.layers.InputLayer):
            continue  # the input of a composite layer's traced call: not a layer of the model
        for slot, mask in slots.items():
            removed = np.nonzero(~mask)[0]
            if slot in _PRODUCED_SLOTS:
                _zero_produced(layers[path], slot, removed)
            elif slot == "channels":
                _zero_channels(layers[path], removed)
            elif slot == "groups":
                _zero_groups(layers[path], removed)
            elif slot == "in" and cut_inputs:
                _zero_inputs(layers[path], removed)
    for layer in layers.values():
        if hasattr(layer, "finalize_state"):  # an adapted Normalization reads its weights here
            layer.finalize_state()
    return ref


def assert_close(a, b, rtol: float = 1e-5):
    """Equal to within ``rtol`` relative to the largest magnitude of the reference."""
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        # keras.ops.convert_to_numpy: a PyTorch output that carries autograd history too
        x, y = (np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64) for t in (x, y))
        assert x.shape == y.shape, (x.shape, y.shape)
        scale = max(1.0, float(np.abs(y).max()))
        err = float(np.abs(x - y).max())
        assert err <= rtol * scale + 1e-6, f"max abs diff {err} (scale {scale})"


def random_keep(graph, rng, fraction: float = 0.5):
    """Random keep-set: about ``fraction`` of each prunable group, blocks kept equal."""
    keep = {}
    for g in graph.prunable:
        per = g.size // g.blocks
        n = max(1, int(round(per * fraction)))
        idx = []
        for b in range(g.blocks):
            idx.extend((b * per + np.sort(rng.choice(per, n, replace=False))).tolist())
        keep[g.name] = idx
    return keep


def assert_positions_agree(stated, derived, where: str = ""):
    """A handler's stated ``weight_positions`` answer (position arrays or
    ``AxisPositions``, per weight) equals the one derived from its slicing."""
    from kerasprune.graph.entries import AxisPositions

    assert len(stated) == len(derived), (where, len(stated), len(derived))
    for s, d in zip(stated, derived):
        if isinstance(s, AxisPositions):
            s = s.array()
        if d is None:  # the weight does not depend on the slot
            assert s is None or np.all(np.asarray(s) == -1), where
        else:
            np.testing.assert_array_equal(np.asarray(s), d, err_msg=where)


#: the keys of a history row that a resumed run must reproduce exactly
EXACT_ROW_KEYS = ("round", "ratio", "neurons", "params", "flops", "widths", "checkpoint", "meets_target")


def assert_same_row(mine: dict, theirs: dict) -> None:
    """Two history rows of the same round: equal widths and settings, metrics within float
    noise (a resumed run against one never killed)."""
    assert {k: mine[k] for k in EXACT_ROW_KEYS} == {k: theirs[k] for k in EXACT_ROW_KEYS}
    assert mine["metrics"].keys() == theirs["metrics"].keys()
    for name, value in mine["metrics"].items():
        assert np.isclose(value, theirs["metrics"][name], rtol=1e-5, atol=1e-6), (mine["round"], name)
