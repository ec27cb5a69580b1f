"""Which weight entries hold which channel: derived from the handlers' slicing."""

import keras
import numpy as np
import pytest
from models import concat_flatten_net, randomize, residual_net
from reference import assert_close, assert_positions_agree, random_keep

import kerasprune as kp

L = keras.layers


def grouped_depthwise_net():
    inp = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.Conv2D(8, 3, padding="same", groups=2, name="grouped")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = L.Conv2D(6, 1, name="pw")(x)
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = L.SeparableConv2D(5, 3, name="sep")(x)
    x = L.GlobalAveragePooling2D()(x)
    return randomize(keras.Model(inp, L.Dense(3, name="head")(x)))


BUILDERS = [residual_net, concat_flatten_net, grouped_depthwise_net]


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
def test_entries_of_a_channel_are_the_parameters_its_removal_deletes(build):
    model = build()
    graph = kp.analyze(model)
    total = kp.count_params(model).total
    for group in graph.prunable:
        per = group.size // group.blocks
        counts = np.zeros(group.size, dtype=np.int64)
        for e in graph.entries(group):
            counts += np.bincount(e.channel, minlength=group.size)
        # remove channel 0 of every block (blocks must stay equal)
        drop = [b * per for b in range(group.blocks)]
        keep = {group.name: [c for c in range(group.size) if c not in drop]}
        thin = kp.rebuild(model, keep, graph=graph)
        assert total - kp.count_params(thin).total == counts[drop].sum(), group.name


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__)
def test_masked_model_computes_what_the_thin_model_computes(build, rng):
    model = build()
    graph = kp.analyze(model)
    keep = random_keep(graph, rng, 0.5)
    thin = kp.rebuild(model, keep, graph=graph)
    before = [w.copy() for w in model.get_weights()]
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    zeroed = kp.mask_weights(masked, keep)
    assert zeroed > 0
    x = rng.normal(size=(2,) + tuple(model.input_shape[1:])).astype("float32")
    assert_close(masked(x), thin(x))
    # the masked copy keeps every shape; the original is untouched
    assert [w.shape for w in masked.get_weights()] == [w.shape for w in model.get_weights()]
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_producer_entries_are_the_filter_and_bias(rng):
    model = residual_net()
    graph = kp.analyze(model)
    group = graph.group_of("b1_conv1")
    produced = [e for e in graph.entries(group) if e.produced]
    kernel = next(e for e in produced if e.name == "kernel")
    k = model.get_layer("b1_conv1").kernel.numpy()
    for c in range(group.size):
        np.testing.assert_array_equal(np.sort(k.ravel()[kernel.flat[kernel.channel == c]]), np.sort(k[..., c].ravel()))
    assert {e.name for e in produced} == {"kernel", "bias"}
    consumers = [e for e in graph.entries(group) if not e.produced]
    assert [(e.layer, e.slot) for e in consumers] == [("b1_conv2", "in")]


def test_masking_a_frozen_group_is_refused():
    model = residual_net()
    graph = kp.analyze(model)
    frozen = graph.frozen[0]
    with pytest.raises(kp.FrozenGroupError):
        kp.mask_weights(model, {frozen.name: [0]}, graph=graph)


def stated_positions_net():
    """Every layer kind whose handler states its weight positions: convolutions of each
    rank, grouped, transposed, without bias; Dense on rank-2 and rank-3 inputs."""
    img = keras.Input((8, 8, 4), name="img")
    x = L.Conv2D(6, 3, padding="same", name="c2d")(img)
    x = L.Conv2D(6, 3, padding="same", groups=2, use_bias=False, name="grouped")(x)
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="tconv")(x)
    x = L.Conv2D(4, 1, name="pw")(x)
    x = L.GlobalAveragePooling2D()(x)
    seq = keras.Input((7, 3), name="seq")
    s = L.Conv1D(5, 3, name="c1d")(seq)
    s = L.Dense(6, use_bias=False, name="dense3d")(s)
    s = L.GlobalAveragePooling1D()(s)
    vol = keras.Input((4, 4, 4, 2), name="vol")
    v = L.Conv3D(3, 2, name="c3d")(vol)
    v = L.GlobalAveragePooling3D()(v)
    x = L.Concatenate()([x, s, v])
    x = L.Dense(7, activation="relu", name="fc")(x)
    return randomize(keras.Model([img, seq, vol], L.Dense(3, name="head")(x)))


def test_stated_weight_positions_equal_what_slicing_derives():
    from kerasprune.graph.entries import derive_positions

    model = stated_positions_net()
    graph = kp.analyze(model)
    checked = set()
    for rec in graph.records:
        for slot, layout in rec.slots.items():
            stated = rec.handler.weight_positions(rec.layer, slot, len(layout))
            if stated is None or (rec.path, slot) == ("grouped", "in"):
                continue  # a grouped input cannot be probed by slicing: it is only stated
            derived = derive_positions(rec, slot)
            assert len(derived) == len(rec.layer.weights)
            assert_positions_agree(stated, derived, f"{rec.path} {slot}")
            checked.add((rec.path, slot))
    expected = {(name, slot) for name in ("c2d", "grouped", "tconv", "pw", "c1d", "dense3d", "c3d", "fc", "head")
                for slot in ("in", "out")} - {("grouped", "in")}
    assert expected <= checked
