"""Keras operations as graph nodes: ``x + 3.0``, ``keras.ops.relu(x)``, ``x[:, 0]``, ...

Each family gets a small functional model whose groups through the operations are
prunable; the thin model must equal the original with the removed channels cut off and
survive a ``.keras`` round trip. Operations that turn a zero into something else
(``x + 3``, a sigmoid) break the plain cut-off reference (a channel zeroed where it is
created no longer carries zero to its readers), so those models are compared with a
reference that also zeroes the weights reading a removed channel.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops
from models import L, randomize
from reference import assert_close, cut_off, random_keep

import kerasprune as kp
from kerasprune.graph.composite import iter_layers
from kerasprune.graph.keras_graph import operation_name
from kerasprune.surgery.keep import keep_masks


def cut_off_reads(model: keras.Model, graph: kp.PruningGraph, keep) -> keras.Model:
    """``cut_off``, and the weights that read a removed channel zeroed too (kernel rows
    of convolutions and Dense layers, BatchNormalization's scale): whatever value a
    removed channel carries, nothing downstream sees it."""
    ref = cut_off(model, graph, keep)
    layers = dict(iter_layers(ref))
    for path, slots in graph.slot_masks(keep_masks(graph, keep)).items():
        layer = layers.get(path)
        if layer is None:  # an operation: no weights
            continue
        w = {v.name: np.array(v.numpy()) for v in layer.weights}
        for slot, mask in slots.items():
            removed = np.nonzero(~mask)[0]
            if slot == "in" and isinstance(layer, L.Dense):
                w["kernel"][removed] = 0
            elif slot == "in" and isinstance(layer, (L.Conv1D, L.Conv2D)):
                w["kernel"][..., removed, :] = 0
            elif slot == "channels" and isinstance(layer, L.BatchNormalization):
                w["gamma"][removed] = 0
        layer.set_weights([w[v.name] for v in layer.weights])
    return ref


def _head(x) -> keras.KerasTensor:
    """Conv2D 'c2' -> GlobalAveragePooling2D -> Dense 'head' on a 4-D tensor, Dense on 2-D."""
    if len(x.shape) == 4:
        x = L.GlobalAveragePooling2D(name="gap")(L.Conv2D(5, 1, name="c2")(x))
    return L.Dense(2, name="head")(x)


def _c1(inp, width: int = 6) -> keras.KerasTensor:
    return L.Conv2D(width, 3, padding="same", name="c1")(inp)


# -- the families ------------------------------------------------------------------------


def scalar_arithmetic():
    """Binary arithmetic with a Python number (either side) or a broadcast constant."""
    inp = keras.Input((6, 6, 3))
    x = _c1(inp)
    y = ((x + 3.0) * 2.0 - 1.0) / 4.0
    y = ops.maximum(ops.minimum(ops.power(y, 2.0), 4.0), 0.5)
    y = 1.0 - ops.true_divide(y, 2.0)
    y = ops.subtract(ops.divide(y, 3.0), 0.5) * np.ones((1, 1, 1), "float32")
    return keras.Model(inp, _head(y)), True, {
        "Add", "Multiply", "Subtract", "Divide", "Power", "Maximum", "Minimum", "TrueDivide"
    }


def unary_activations():
    """Element-wise functions of one tensor, summed (coupling a tensor with itself)."""
    inp = keras.Input((6, 6, 3))
    x = _c1(inp)
    terms = [
        ops.relu6(ops.relu(x)), ops.sigmoid(x), ops.hard_sigmoid(x), ops.hard_silu(x),
        ops.hard_swish(x), ops.gelu(x), ops.silu(x), ops.swish(x), ops.tanh(x),
        ops.square(ops.abs(x)), ops.sqrt(ops.abs(x) + 1.0), ops.exp(ops.negative(x * x)),
        ops.log(ops.abs(x) + 1.0), ops.clip(x, -1.0, 1.0),
        ops.cast(ops.cast(x, "float64"), "float32"), ops.softplus(x),
        ops.leaky_relu(x, 0.1), ops.elu(x),
    ]
    y = terms[0]
    for t in terms[1:]:
        y = y + t
    return keras.Model(inp, _head(y)), True, {
        "Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Gelu", "Silu", "Tanh",
        "Absolute", "Square", "Sqrt", "Exp", "Negative", "Log", "Clip", "Cast", "Softplus",
        "LeakyRelu", "Elu",
    }


def coupled_tensors():
    """Two tensors with channels meet (``a * b``...); a squeeze-and-excitation gate
    ``(1, 1, C)`` joins them; a spatial map ``(H, W, 1)`` broadcasts over the channels."""
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(6, 1, name="a")(inp)
    b = L.Conv2D(6, 3, padding="same", name="b")(inp)
    y = a * b + ops.maximum(a, b) - ops.minimum(a, b) / (ops.abs(b) + 1.0)
    gate = ops.sigmoid(L.Conv2D(6, 1, name="se")(ops.mean(y, axis=(1, 2), keepdims=True)))
    y = y * gate
    y = ops.multiply(y, ops.sigmoid(L.Conv2D(1, 1, name="sa")(y)))
    return keras.Model(inp, _head(y)), True, {"Multiply", "Maximum", "Minimum", "TrueDivide"}


def moved_axes():
    """Transpose, moveaxis, swapaxes, expand_dims, squeeze; reshape to a sequence, and
    flattening reshapes (channels last and channels first) whose new shape is edited."""
    inp = keras.Input((6, 6, 3))
    x = _c1(inp)
    t = ops.moveaxis(ops.transpose(x, (0, 3, 1, 2)), 1, -1)
    t = ops.squeeze(ops.expand_dims(ops.swapaxes(t, 1, 2), 1), axis=1)
    s = L.Dense(5, name="d1")(ops.reshape(t, (-1, 36, 6)))
    f = ops.reshape(s, (-1, 36 * 5))
    g = L.Dense(3, name="d2")(ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, 6 * 36)))
    y = ops.concatenate([f, g], axis=-1)
    return keras.Model(inp, _head(y)), False, {
        "Transpose", "Moveaxis", "Swapaxes", "ExpandDims", "Squeeze", "Reshape"
    }


def joins():
    """Concatenate on the channel axis (slices), on another axis (coupled), stack."""
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(3, 1, name="b")(inp)
    y = L.Conv2D(5, 1, name="c3")(ops.concatenate([a, b], axis=-1))
    p = L.Conv2D(5, 1, name="p")(inp)
    q = L.Conv2D(5, 3, padding="same", name="q")(inp)
    side = ops.concatenate([p, q], axis=1)  # (12, 6, 5)
    y = ops.mean(ops.stack([y, side[:, :6], side[:, 6:]], axis=1), axis=1)
    return keras.Model(inp, _head(y)), False, {"Concatenate", "Stack", "GetItem", "Mean"}


def reductions():
    """Mean, sum, max, min, std, var over the spatial axes, keepdims either way."""
    inp = keras.Input((6, 6, 3))
    x = ops.relu(_c1(inp))
    m1 = ops.mean(x, axis=(1, 2))
    m2 = ops.squeeze(ops.max(x, axis=(1, 2), keepdims=True), axis=(1, 2))
    m3 = ops.min(ops.sum(x, axis=1), axis=1)
    m4 = ops.std(x, axis=(1, 2)) + ops.var(x, axis=(1, 2))
    return keras.Model(inp, _head(m1 + m2 + m3 + m4)), False, {
        "Mean", "Max", "Min", "Sum", "Std", "Var"
    }


def contractions():
    """Attention over spatial positions: ``softmax(q @ k^T) @ v`` carries v's channels
    and couples the query and key units; einsum sums over the positions."""
    inp = keras.Input((6, 6, 3))
    v = ops.reshape(_c1(inp), (-1, 36, 6))
    q = L.Dense(4, name="q")(v)
    k = L.Dense(4, name="k")(v)
    w = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1))) * 0.5, axis=-1)
    z = ops.einsum("bnc->bc", ops.matmul(w, v))
    z = ops.einsum("...c,...c->...c", z, z)
    return keras.Model(inp, _head(z)), False, {"Matmul", "Einsum", "Softmax"}


def splits_and_slices():
    """Split, pad, ``x[...]``, ``slice``, pooling along the spatial axes; a sequence's
    first position (BERT's CLS pooling) and unstack."""
    inp = keras.Input((6, 6, 3))
    x = _c1(inp)
    top, bottom = ops.split(x, 2, axis=1)
    y = ops.pad(top + bottom, ((0, 0), (1, 1), (0, 0), (0, 0)))  # (5, 6, 6)
    y = y[:, 1:4, ::2, ...]  # (3, 3, 6)
    y = ops.slice(y, (0, 0, 1, 0), (-1, 3, 2, 6))  # the width 6 follows the kept channels
    y = ops.average_pool(ops.max_pool(y, 2, strides=1, padding="same"), 2, 1, "same")
    y = ops.mean(y, axis=(1, 2))
    seq = ops.reshape(x, (-1, 36, 6))
    first, second = ops.unstack(seq[:, :2], axis=1)
    y = y + seq[:, 0] + seq[:, 0, :] + first * second
    return keras.Model(inp, _head(y)), False, {
        "Split", "Pad", "GetItem", "Slice", "MaxPool", "AveragePool", "Unstack"
    }


def channel_splits():
    """Splits of the channel axis (CSPNet's cross stages): into equal sections the group
    is kept in equal blocks (``c1`` in 2, ``c3`` in 3), at indices the indices follow the
    kept channels (``c4``); a residual on one section couples its producer to that half."""
    inp = keras.Input((6, 6, 3))
    x = _c1(inp)
    a, b = ops.split(x, 2, axis=-1)
    y = L.Conv2D(3, 1, name="r")(a) + b  # 'r' runs on the second half of c1
    p, q, r = ops.array_split(L.Conv2D(6, 1, name="c3")(y), 3, axis=-1)
    u, v = ops.split(L.Conv2D(6, 1, name="c4")(x), [2], axis=-1)
    z = ops.concatenate([a, p, q, r, u, L.Conv2D(2, 1, name="c5")(v), y], axis=-1)
    return keras.Model(inp, _head(z)), False, {"Split", "ArraySplit"}


FAMILIES = [
    scalar_arithmetic, unary_activations, coupled_tensors, moved_axes, joins, reductions,
    contractions, splits_and_slices, channel_splits,
]


@pytest.mark.parametrize("build", FAMILIES, ids=lambda f: f.__name__)
def test_operations_pass_channels_and_rebuild_exactly_and_round_trip(build, tmp_path):
    model, zero_changes, classes = build()
    model = randomize(model)
    graph = kp.analyze(model)
    assert not graph.unsupported, graph.unsupported
    assert classes <= {type(r.layer).__name__ for r in graph.records}
    frozen = [g for g in graph.frozen if g.name not in ("input_layer", "head", "sa")]
    assert not frozen, [(g.name, g.reasons) for g in frozen]
    keep = random_keep(graph, np.random.default_rng(0), 0.5)
    thin = kp.rebuild(model, keep, graph=graph)
    x = np.random.default_rng(1).normal(size=(3, 6, 6, 3)).astype("float32")
    ref = (cut_off_reads if zero_changes else cut_off)(model, graph, keep)
    out = np.asarray(thin(x))
    assert_close(out, ref(x))
    assert np.abs(np.asarray(model(x)) - np.asarray(ref(x))).max() > 1e-4  # a real cut
    thin.save(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "m.keras")(x), out, rtol=1e-6)


def test_groups_follow_coupling_operations():
    model = coupled_tensors()[0]
    graph = kp.analyze(model)
    assert graph.group_of("a") is graph.group_of("b") is graph.group_of("se")
    assert graph.group_of("sa") is not graph.group_of("a")  # broadcast over the channels
    graph = kp.analyze(joins()[0])
    assert graph.group_of("a") is not graph.group_of("b")  # slices of the concatenation
    assert graph.group_of("c3") is graph.group_of("p") is graph.group_of("q")  # stacked
    graph = kp.analyze(contractions()[0])
    assert graph.group_of("q") is graph.group_of("k")  # contracted in q @ k^T


def test_reshape_and_slice_configs_follow_the_kept_width():
    model = randomize(moved_axes()[0])
    graph = kp.analyze(model)
    thin = kp.rebuild(model, {"c1": [0, 2, 5], "d1": [1, 3]}, graph=graph)
    shapes = sorted(
        tuple(e["config"]["newshape"])
        for e in thin.get_config()["layers"] if e["class_name"] == "Reshape"
    )
    assert shapes == [(-1, 36, 3), (-1, 72), (-1, 108)]  # d1: 2 * 36, c1: 3 * 36
    model = randomize(splits_and_slices()[0])
    graph = kp.analyze(model)
    thin = kp.rebuild(model, {"c1": [1, 4]}, graph=graph)
    (entry,) = [e for e in thin.get_config()["layers"] if e["class_name"] == "Slice"]
    assert list(entry["config"]["shape"]) == [-1, 3, 2, 2]


def test_channel_splits_keep_equal_sections_and_move_their_indices():
    model = randomize(channel_splits()[0])
    graph = kp.analyze(model)
    assert graph.group_of("c1").blocks == 2 and graph.group_of("c3").blocks == 3
    assert graph.group_of("r") is graph.group_of("c1")  # added to the second half
    assert graph.group_of("c4").blocks == 1
    with pytest.raises(kp.KeepSetError):
        kp.rebuild(model, {"c1": [0, 1, 2, 3]}, graph=graph)  # 3 of one half, 1 of the other
    keep = {"c1": [0, 2, 3, 5], "c3": [1, 3, 4], "c4": [1, 3, 5]}
    thin = kp.rebuild(model, keep, graph=graph)
    splits = {
        e["class_name"]: e["config"]["indices_or_sections"]
        for e in thin.get_config()["layers"] if "Split" in e["class_name"]
    }
    assert splits["ArraySplit"] == 3
    indices = [
        e["config"]["indices_or_sections"]
        for e in thin.get_config()["layers"]
        if e["class_name"] == "Split" and e["config"]["indices_or_sections"] != 2
    ]
    assert [list(i) for i in indices] == [[1]]  # c4 keeps 1 of its first 2 channels
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype("float32")
    assert_close(thin(x), cut_off(model, graph, keep)(x))


# -- what stays frozen -------------------------------------------------------------------

FROZEN = {
    "slice_of_the_channels": (lambda x: x[..., :3], "indexes or slices the channel axis"),
    "one_channel": (lambda x: x[:, :, :, 0:1] * x[:, :, :, 1:2], "indexes or slices"),
    "unequal_split_of_the_channels": (
        lambda x: ops.array_split(x, 4, axis=-1)[0], "splits the channel axis into unequal"
    ),
    "equal_split_of_a_concatenation": (
        lambda x: ops.split(ops.concatenate([x, x], axis=-1), 3, axis=-1)[0],
        "splits its channels into 3 blocks that do not line up",
    ),
    "mean_over_channels": (lambda x: ops.mean(x, axis=-1, keepdims=True), "reduces the channel"),
    "softmax_over_channels": (lambda x: ops.softmax(x, axis=-1), "acts along the channel axis"),
    "reshape_splitting_channels": (
        lambda x: ops.reshape(x, (-1, 6, 6, 2, 3))[..., 0], "splits or scatters"
    ),
    "constant_along_channels": (lambda x: x * np.arange(6, dtype="float32"), "a constant"),
    "matmul_with_a_constant": (
        lambda x: ops.matmul(x, np.ones((6, 4), "float32")), "untracked values"
    ),
    "pad_of_the_channels": (
        lambda x: ops.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1))), "pads the channel axis"
    ),
    "einsum_sum_over_channels": (
        lambda x: ops.expand_dims(ops.einsum("bhwc->bhw", x), -1), "sums over the channels"
    ),
}


@pytest.mark.parametrize("case", list(FROZEN))
def test_operations_that_mix_or_cut_the_channels_freeze_them_naming_the_operation(case):
    fn, reason = FROZEN[case]
    inp = keras.Input((6, 6, 3))
    model = keras.Model(inp, _head(fn(_c1(inp))))
    graph = kp.analyze(model)
    group = graph.group_of("c1")
    assert not group.prunable
    assert reason in group.reason and "operation '" in group.reason, group.reason
    assert "(keras.ops." in group.reason


def test_an_operation_without_a_handler_is_named_as_an_operation_in_warning_and_reason():
    inp = keras.Input((6, 6, 3))
    model = keras.Model(inp, _head(ops.tile(_c1(inp), (1, 1, 1, 2))))
    with pytest.warns(UserWarning) as seen:
        graph = kp.analyze(model)
    (msg,) = [str(w.message) for w in seen if "kerasprune" in str(w.message)]
    assert "operation keras.ops.tile ('tile') has no pruning handler" in msg
    assert "class" not in msg
    assert graph.group_of("c1").reason == (
        "passes through operation 'tile' (keras.ops.tile), which kerasprune cannot slice"
    )
    assert graph.unsupported == [("tile", "Tile")]


def test_operation_names_are_their_public_functions():
    from keras.src.ops import image, nn, numpy

    assert operation_name(numpy.Add()) == "keras.ops.add"
    assert operation_name(numpy.GetItem()) == "keras.ops.get_item"
    assert operation_name(nn.HardSilu()) == "keras.ops.hard_silu"
    assert operation_name(nn.Relu6()) == "keras.ops.relu6"
    assert operation_name(image.Resize((2, 2))) == "keras.ops.image.resize"

    class Mine(keras.Operation):
        def call(self, x):
            return x

    assert operation_name(Mine()) == f"{__name__}.Mine"


# -- MobileNetV3 -------------------------------------------------------------------------


def _mobilenet_v3(cls, **kwargs) -> keras.Model:
    return cls(
        weights=None, input_shape=(32, 32, 3), include_top=True, classes=10,
        minimalistic=False, classifier_activation=None, **kwargs,
    )


MOBILENETS = {
    # prunable share of the channels: 27% and 29% before operations had handlers
    "MobileNetV3Small": (lambda: _mobilenet_v3(keras.applications.MobileNetV3Small), 0.997),
    "MobileNetV3Large": (
        lambda: _mobilenet_v3(keras.applications.MobileNetV3Large, alpha=0.75), 0.998
    ),
}


@pytest.mark.filterwarnings("ignore:.*input_shape.*")
@pytest.mark.parametrize("name", list(MOBILENETS))
def test_mobilenet_v3_is_prunable_but_for_its_input_and_classifier(name, tmp_path):
    from test_applications import perturb_statistics

    build, share = MOBILENETS[name]
    model = perturb_statistics(build())
    graph = kp.analyze(model)
    assert not graph.unsupported
    frozen = {g.name: g.reasons for g in graph.frozen}
    assert len(frozen) == 2, frozen  # the input's channels and the logits
    assert all(
        all(r.startswith(("fed by model input", "reaches model output")) for r in reasons)
        for reasons in frozen.values()
    ), frozen
    channels = sum(g.size for g in graph.groups)
    assert sum(g.size for g in graph.prunable) / channels == pytest.approx(share, abs=5e-4)
    # the squeeze-and-excitation gates are keras.ops arithmetic: they couple their convs
    se = graph.group_of("expanded_conv_squeeze_excite_conv_1" if "Small" in name
                        else "expanded_conv_3_squeeze_excite_conv_1")
    assert se.prunable

    keep = random_keep(graph, np.random.default_rng(0), fraction=0.7)
    thin = kp.rebuild(model, keep, graph=graph)
    x = np.random.default_rng(7).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    out = np.asarray(thin(x, training=False))
    ref = np.asarray(cut_off(model, graph, keep)(x, training=False))
    assert np.abs(ref).max() > 1e-3
    assert_close(out, ref)
    assert np.abs(np.asarray(model(x, training=False)) - ref).max() > 1e-4
    thin.save(tmp_path / f"{name}.keras")
    loaded = keras.models.load_model(tmp_path / f"{name}.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), out)
