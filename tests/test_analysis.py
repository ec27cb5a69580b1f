"""Graph analysis: which channels are grouped, where they sit, and what is frozen."""

import warnings

import keras
import numpy as np
import pytest
from models import L, concat_flatten_net, randomize, residual_net

import kerasprune as kp
from kerasprune.surgery.keep import keep_masks


def members(group):
    return {(m.layer, m.slot) for m in group.members}


def test_conv_chain_groups_output_with_bn_and_next_conv_input():
    g = kp.analyze(residual_net())
    stem = g["stem+b1_conv2"]
    assert stem.size == 8 and stem.prunable
    assert {
        ("stem", "out"), ("stem_bn", "channels"), ("b1_conv1", "in"),
        ("b1_conv2", "out"), ("b2_conv1", "in"), ("b2_proj", "in"),
    } == members(stem)
    assert members(g["b1_conv1"]) == {("b1_conv1", "out"), ("b1_conv2", "in")}


def test_residual_add_couples_projection_and_last_conv_of_block():
    g = kp.analyze(residual_net())
    grp = g.group_of("b2_proj")
    assert grp is g.group_of("b2_conv2")
    assert set(grp.producers) == {"b2_proj", "b2_conv2"}
    assert ("head", "in") in members(grp)


def test_model_input_and_output_groups_are_frozen_with_reasons():
    g = kp.analyze(residual_net())
    assert not g["img"].prunable and "model input 'img'" in g["img"].reason
    assert not g["head"].prunable and "model output 'head'" in g["head"].reason
    assert {grp.name for grp in g.prunable} == {"stem+b1_conv2", "b1_conv1", "b2_conv1", "b2_proj+b2_conv2"}


def test_concatenate_maps_each_input_to_an_offset_slice():
    g = kp.analyze(concat_flatten_net())
    a = [m for m in g["a"].members if m.layer == "fc"][0]
    b = [m for m in g["b"].members if m.layer == "fc"][0]
    assert (a.offset, b.offset) == (0, 4)
    assert a.factor == b.factor == 9  # 3x3 positions after pooling, one row each


def test_flatten_then_dense_rows_follow_channels_last_order():
    model = concat_flatten_net()
    g = kp.analyze(model)
    keep = {"a": [0, 2, 3], "b": [1, 2]}
    fc_in = g.slot_masks(keep_masks(g, keep))["fc"]["in"]
    # independent expectation: pooled map 3x3x7 flattened as (h, w, c); channel c of the
    # concatenation is a[c] for c<4 and b[c-4] otherwise
    kept_cat = np.array([True, False, True, True, False, True, True])
    expected = np.broadcast_to(kept_cat, (3, 3, 7)).ravel()
    np.testing.assert_array_equal(fc_in, expected)


def test_depthwise_multiplier_repeats_each_channel_in_place():
    inp = keras.Input((5, 5, 3))
    x = L.Conv2D(4, 1, name="pw")(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=3, padding="same", name="dw")(x)
    out = L.Conv2D(2, 1, name="out")(x)
    g = kp.analyze(keras.Model(inp, out))
    grp = g["pw"]
    out_in = [m for m in grp.members if m.layer == "out"][0]
    assert out_in.factor == 3
    mask = g.slot_masks(keep_masks(g, {"pw": [1, 3]}))["out"]["in"]
    np.testing.assert_array_equal(mask, np.repeat([False, True, False, True], 3))


def test_grouped_convolution_constrains_blocks_of_its_input_and_output():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="c1")(inp)
    x = L.Conv2D(6, 3, groups=2, name="grouped")(x)
    out = L.GlobalAveragePooling2D()(x)
    out = L.Dense(2, name="head")(out)
    g = kp.analyze(keras.Model(inp, out))
    assert g["c1"].blocks == 2 and g["grouped"].blocks == 2
    assert g["c1"].prunable and g["grouped"].prunable


def test_shared_layer_couples_the_inputs_of_all_its_calls():
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    shared = L.Conv2D(5, 3, padding="same", name="shared")
    x = L.Add(name="sum")([shared(a), shared(b)])
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    g = kp.analyze(keras.Model(inp, out))
    assert g.group_of("a") is g.group_of("b")
    assert g["shared"].prunable


def test_nested_model_is_walked_through_with_paths():
    inner_in = keras.Input((6, 6, 4))
    y = L.Conv2D(5, 3, padding="same", name="conv")(inner_in)
    y = L.BatchNormalization(name="bn")(y)
    inner = keras.Model(inner_in, y, name="block")
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="stem")(inp)
    x = inner(x)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    g = kp.analyze(keras.Model(inp, out))
    assert ("block/conv", "in") in members(g["stem"])
    assert members(g["block/conv"]) == {("block/conv", "out"), ("block/bn", "channels"), ("head", "in")}


def test_sequential_model_is_analyzed_through_its_graph():
    model = keras.Sequential(
        [keras.Input((10,)), L.Dense(8, name="d1"), L.Dense(6, name="d2"), L.Dense(2, name="d3")]
    )
    g = kp.analyze(model)
    assert [grp.name for grp in g.prunable] == ["d1", "d2"]


def test_unknown_layer_freezes_its_channels_with_a_warning_naming_it():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c1")(inp)
    x = L.Lambda(lambda t: t * 2.0, name="doubler")(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    with pytest.warns(UserWarning, match="'doubler' of class Lambda"):
        g = kp.analyze(keras.Model(inp, out))
    assert not g["c1"].prunable
    assert "doubler" in g["c1"].reason and "Lambda" in g["c1"].reason
    assert g["c2"].prunable


class Scale(keras.layers.Layer):
    """A per-channel scale, as a user might write one."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def test_registered_handler_makes_a_custom_layer_prunable():
    class ScaleHandler(kp.PerChannelHandler):
        def param_axes(self, layer, rank):
            return [rank - 1]

    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c1")(inp)
    x = Scale(name="scale")(x)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    model = randomize(keras.Model(inp, out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not kp.analyze(model)["c1"].prunable
    try:
        kp.register_handler(Scale)(ScaleHandler)
        g = kp.analyze(model)
        assert ("scale", "channels") in members(g["c1"])
        thin = kp.rebuild(model, {"c1": [0, 3]}, graph=g)
        np.testing.assert_allclose(
            thin.get_layer("scale").get_weights()[0], model.get_layer("scale").get_weights()[0][[0, 3]]
        )
    finally:
        from kerasprune.graph import registry

        registry._REGISTRY.pop(Scale, None)


def test_subclass_overriding_call_does_not_inherit_the_parent_handler():
    class OddDense(keras.layers.Dense):
        def call(self, x):
            return super().call(x[..., ::-1])

    inp = keras.Input((6,))
    x = L.Dense(4, name="d1")(inp)
    x = OddDense(3, name="odd")(x)
    out = L.Dense(2, name="head")(x)
    with pytest.warns(UserWarning, match="OddDense"):
        g = kp.analyze(keras.Model(inp, out))
    assert not g["d1"].prunable


def test_softmax_across_channels_freezes_the_group():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, activation="softmax", name="attn")(inp)
    x = L.Conv2D(4, 1, name="c2")(x)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    g = kp.analyze(keras.Model(inp, out))
    assert not g["attn"].prunable and "softmax" in g["attn"].reason


def test_squeeze_excitation_gate_is_coupled_to_the_gated_channels():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="expand")(inp)
    s = L.GlobalAveragePooling2D(name="squeeze")(x)
    s = L.Dense(2, activation="relu", name="se_reduce")(s)
    s = L.Dense(8, activation="sigmoid", name="se_expand")(s)
    s = L.Reshape((1, 1, 8), name="se_reshape")(s)
    x = L.Multiply(name="excite")([x, s])
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    g = kp.analyze(keras.Model(inp, out))
    grp = g.group_of("expand")
    assert grp is g.group_of("se_expand")
    assert ("se_reshape", "channels") in members(grp)


def test_group_names_are_stable_across_analyses():
    model = residual_net()
    assert [grp.name for grp in kp.analyze(model)] == [grp.name for grp in kp.analyze(model)]


def test_summary_lists_every_group(capsys):
    g = kp.analyze(residual_net())
    g.summary()
    out = capsys.readouterr().out
    for grp in g:
        assert grp.name in out


def test_a_handler_that_raises_is_reported_with_the_layer_and_its_class():
    class Broken(keras.layers.Layer):
        def call(self, x):
            return x

    class BrokenHandler(kp.LayerHandler):
        def analyze(self, ctx):
            return [ctx.inputs[3]]  # an IndexError: a bug in the handler

    inp = keras.Input((6,))
    x = L.Dense(4, name="d1")(inp)
    out = L.Dense(2, name="head")(Broken(name="broken")(x))
    model = keras.Model(inp, out)
    from kerasprune.graph import registry

    kp.register_handler(Broken)(BrokenHandler)
    try:
        with pytest.raises(kp.HandlerError, match=r"BrokenHandler failed in analyze\(\) on layer 'broken' \(Broken\): IndexError"):
            kp.analyze(model)
    finally:
        registry._REGISTRY.pop(Broken, None)


def test_registering_a_second_handler_for_a_class_needs_replace():
    class Scaled(keras.layers.Layer):
        pass

    from kerasprune.graph import registry

    kp.register_handler(Scaled)(kp.PassThroughHandler)
    try:
        with pytest.raises(kp.RegistryError, match="already has the pruning handler PassThroughHandler"):
            kp.register_handler(Scaled)(kp.PerChannelHandler)
        kp.register_handler(Scaled, replace=True)(kp.PerChannelHandler)
        assert type(registry.handler_for(Scaled())) is kp.PerChannelHandler
    finally:
        registry._REGISTRY.pop(Scaled, None)


def test_pruning_a_model_with_nothing_prunable_is_an_error_that_says_why(tmp_path):
    inp = keras.Input((6,), name="inp")
    x = L.Dense(4, activation="softmax", name="attn")(inp)  # a softmax across its units
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    model.compile("sgd", "mse")
    with pytest.raises(kp.NothingPrunableError, match="all 3 of its channel groups are frozen") as err:
        kp.prune(model, 0.3)
    assert "softmax" in str(err.value) and "reaches model output 'head'" in str(err.value)
    pruner = kp.GradualPruner(tmp_path / "run", rounds=1)
    data = (np.zeros((4, 6), "float32"), np.zeros((4, 2), "float32"))
    with pytest.raises(kp.NothingPrunableError):
        pruner.run(model, data, data)
    assert not (tmp_path / "run").exists()  # refused before anything is written
