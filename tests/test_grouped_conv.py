"""Grouped convolutions in both modes: groups kept aligned, or whole groups removed
(``groups`` shrinks), the default for one input channel per group (ConvNeXt's depthwise
``Conv2D(groups=C)``)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from models import L, randomize
from reference import assert_close, assert_positions_agree, cut_off, random_keep

import kerasprune as kp
from kerasprune.graph.entries import derive_positions


def convnext_style_net() -> keras.Model:
    """Two ConvNeXt-style blocks on a residual stream: a depthwise ``Conv2D(groups=C)``
    (the second with two filters per group), BatchNormalization, an inverted bottleneck
    of Dense layers, the residual Add."""
    inp = keras.Input((8, 8, 3), name="img")
    s = L.Conv2D(6, 1, name="stem")(inp)
    x = L.Conv2D(6, 3, groups=6, padding="same", name="dw1")(s)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Dense(12, activation="gelu", name="up1")(x)
    s = L.Add(name="add1")([s, L.Dense(6, name="down1")(x)])
    x = L.Conv2D(12, 3, groups=6, padding="same", name="dw2")(s)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.Dense(10, activation="relu", name="up2")(x)
    s = L.Add(name="add2")([s, L.Dense(6, name="down2")(x)])
    out = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(s))
    return randomize(keras.Model(inp, out, name="convnext_style"))


def grouped_net() -> keras.Model:
    """Convolutions with several input channels per group: 8 -> 4 groups of 2 -> 8, and
    8 -> 2 groups of 4 -> 6."""
    inp = keras.Input((6, 6, 3), name="img")
    x = L.Conv2D(8, 1, activation="relu", name="c1")(inp)
    x = L.Conv2D(8, 3, groups=4, padding="same", name="g1")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(6, 3, groups=2, padding="same", name="g2")(x)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="gap")(x))
    return randomize(keras.Model(inp, out, name="grouped"))


def check(model, graph, keep, tmp_path, rng):
    thin = kp.rebuild(model, keep, graph=graph)
    x = rng.normal(size=(2,) + tuple(model.input_shape[1:])).astype("float32")
    out = np.asarray(thin(x, training=False))
    assert_close(out, cut_off(model, graph, keep)(x, training=False))
    assert np.abs(np.asarray(model(x, training=False)) - out).max() > 1e-4
    thin.save(tmp_path / "thin.keras")
    loaded = keras.models.load_model(tmp_path / "thin.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), out)
    return thin


def test_removing_a_channel_of_a_depthwise_grouped_conv_removes_its_group(tmp_path, rng):
    model = convnext_style_net()
    graph = kp.analyze(model)
    stream = graph.group_of("stem")
    # the depthwise convolutions pass the stream's channels on: one group, no blocks
    assert graph.group_of("dw1", "groups") is stream and graph.group_of("dw2", "groups") is stream
    assert stream.blocks == 1 and all(g.blocks == 1 for g in graph.groups)
    assert {m.slot for m in stream.members if m.layer.startswith("dw")} == {"groups"}
    factor = {m.layer: m.factor for m in stream.members}
    assert factor["up1"] == 1 and factor["up2"] == 2  # dw2 repeats each channel twice
    keep = random_keep(graph, rng, 0.5)
    keep[stream.name] = [1, 2, 5]
    thin = check(model, graph, keep, tmp_path, rng)
    assert (thin.get_layer("dw1").groups, thin.get_layer("dw1").filters) == (3, 3)
    assert (thin.get_layer("dw2").groups, thin.get_layer("dw2").filters) == (3, 6)


def test_aligned_mode_keeps_the_depthwise_groups_and_refuses_to_remove_a_channel():
    model = convnext_style_net()
    graph = kp.analyze(model, grouped_conv="aligned")
    stream = graph.group_of("stem")
    assert stream.blocks == 6 and graph.group_of("dw1").blocks == 6
    with pytest.raises(kp.KeepSetError, match="split into 6 blocks of 1 channels"):
        kp.rebuild(model, {stream.name: [0, 1, 2]}, graph=graph)


def test_whole_groups_mode_with_several_input_channels_per_group(tmp_path, rng):
    model = grouped_net()
    graph = kp.analyze(model, grouped_conv="groups")
    # each of g2's 2 groups reads 2 of g1's 4 groups, which read 2 of c1's filters each:
    # one group of 2 channels, made by g2
    group = graph.group_of("g2", "groups")
    assert group.name == "g2/groups" and group.size == 2 and group.blocks == 1
    assert graph.group_of("c1") is group and graph.group_of("g1", "groups") is group
    factors = {(m.layer, m.slot): m.factor for m in group.members}
    assert factors == {
        ("c1", "out"): 4, ("g1", "groups"): 2, ("bn", "channels"): 4, ("g2", "groups"): 1,
        ("head", "in"): 3,  # g2's 3 filters per group
    }
    keep = {group.name: [1]}
    thin = check(model, graph, keep, tmp_path, rng)
    assert (thin.get_layer("g2").groups, thin.get_layer("g2").filters) == (1, 3)
    assert (thin.get_layer("g1").groups, thin.get_layer("g1").filters) == (2, 4)
    assert thin.get_layer("c1").filters == 4
    np.testing.assert_array_equal(
        thin.get_layer("g2").kernel.numpy(), model.get_layer("g2").kernel.numpy()[..., 3:]
    )


def test_whole_groups_on_the_first_grouped_conv_only(tmp_path, rng):
    model = grouped_net()
    graph = kp.analyze(model, grouped_conv={"g1": "groups"})  # g2 stays aligned
    g1 = graph.group_of("g1", "groups")
    assert g1.size == 4 and graph.group_of("c1") is g1
    assert graph.group_of("g1", "groups") is not graph.group_of("g2")
    assert graph.group_of("g2").blocks == 2
    keep = {g1.name: [0, 3], graph.group_of("g2").name: [0, 2, 4, 5]}
    thin = check(model, graph, keep, tmp_path, rng)
    assert (thin.get_layer("g1").groups, thin.get_layer("g1").filters) == (2, 4)
    assert (thin.get_layer("g2").groups, thin.get_layer("g2").filters) == (2, 4)


def test_aligned_mode_is_the_default_with_several_input_channels_per_group(tmp_path, rng):
    model = grouped_net()
    graph = kp.analyze(model)
    assert graph.group_of("c1").blocks == 4 and graph.group_of("g1").blocks == 4
    keep = random_keep(graph, rng, 0.5)
    thin = check(model, graph, keep, tmp_path, rng)
    assert thin.get_layer("g1").groups == 4 and thin.get_layer("g2").groups == 2


@pytest.mark.parametrize("mode", ["auto", "groups", "aligned"])
@pytest.mark.parametrize("build", [convnext_style_net, grouped_net])
def test_entries_weight_positions_and_masking_agree_with_the_rebuild(build, mode, rng):
    model = build()
    graph = kp.analyze(model, grouped_conv=mode)
    for rec in graph.records:
        for slot in rec.slots:
            if slot != "groups":
                continue
            stated = rec.handler.weight_positions(rec.layer, slot, len(rec.slots[slot]))
            assert_positions_agree(stated, derive_positions(rec, slot), f"{rec.path} {slot}")
    total = kp.count_params(model).total
    for group in graph.prunable:
        counts = np.zeros(group.size, dtype=np.int64)
        for e in graph.entries(group):
            counts += np.bincount(e.channel, minlength=group.size)
        per = group.size // group.blocks
        drop = [b * per for b in range(group.blocks)]
        keep = {group.name: [c for c in range(group.size) if c not in drop]}
        if per == 1:
            continue  # blocks of one channel: nothing can go
        thin = kp.rebuild(model, keep, graph=graph)
        assert total - kp.count_params(thin).total == counts[drop].sum(), group.name
    keep = random_keep(graph, rng, 0.5)
    thin = kp.rebuild(model, keep, graph=graph)
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    kp.mask_weights(masked, keep, graph=kp.analyze(masked, grouped_conv=mode))
    x = rng.normal(size=(2,) + tuple(model.input_shape[1:])).astype("float32")
    assert_close(masked(x, training=False), thin(x, training=False))


def test_a_bad_grouped_conv_option_is_refused():
    with pytest.raises(kp.OptionError, match="must be one of 'auto', 'aligned', 'groups'"):
        kp.analyze(grouped_net(), grouped_conv="whole")
    with pytest.raises(kp.OptionError, match="grouped_conv"):
        kp.analyze(grouped_net(), grouped_conv={"g1": "remove"})


def _perturbed_convnext() -> keras.Model:
    model = keras.applications.ConvNeXtTiny(
        weights=None, input_shape=(32, 32, 3), include_top=True, classes=10
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer).__name__ == "LayerScale":  # 1e-6 at init: the blocks would not show
            for v in layer.weights:
                v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
        elif getattr(layer, "bias", None) is not None and isinstance(layer, (L.Conv2D, L.Dense)):
            layer.bias.assign(rng.normal(0.0, 0.1, tuple(layer.bias.shape)).astype("float32"))
    return model


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_convnext_tiny_depthwise_convs_join_their_input_and_prune_exactly(rng):
    model = _perturbed_convnext()
    graph = kp.analyze(model, warn=False)
    depthwise = [lay for lay in model.layers if isinstance(lay, L.Conv2D) and lay.groups > 1]
    assert len(depthwise) == 18
    for lay in depthwise:  # groups == channels: each conv passes its input's channels on
        rec = graph.record(lay.name)
        assert set(rec.slots) == {"groups"}
        assert len(rec.slots["groups"]) == lay.groups == lay.filters
    assert all(g.blocks == 1 for g in graph.groups)  # no "blocks of 1 channel" left
    # groups through normalization over channels (not exact) keep all their channels
    exact = [g for g in graph.prunable if all(m.exact for m in g.members)]
    assert len(exact) >= 18  # the inverted bottlenecks' hidden units at least
    keep = {k: v for k, v in random_keep(graph, rng, 0.7).items() if graph[k] in exact}
    thin = kp.rebuild(model, keep, graph=graph)
    x = rng.uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    out = np.asarray(thin(x, training=False))
    ref = np.asarray(cut_off(model, graph, keep)(x, training=False))
    assert_close(out, ref)
    assert np.abs(np.asarray(model(x, training=False)) - ref).max() > 1e-4
    assert kp.count_params(thin).total < 0.8 * kp.count_params(model).total
