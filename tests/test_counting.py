"""Parameter and multiply-add counts against hand-computed formulas."""

import keras
from models import L, concat_flatten_net, residual_net

import kerasprune as kp


def test_params_match_keras_and_split_trainable():
    model = residual_net()
    counts = kp.count_params(model)
    assert counts.total == model.count_params()
    assert counts.non_trainable == 2 * 8  # BatchNormalization moving mean and variance
    assert counts.per_layer["stem"] == 3 * 3 * 3 * 8 + 8
    assert sum(counts.per_layer.values()) == counts.total


def test_conv_and_dense_macs_follow_the_spec_formulas():
    inp = keras.Input((10, 12, 3))
    x = L.Conv2D(8, (3, 5), strides=2, padding="same", name="conv")(inp)  # out 5x6
    x = L.Conv2D(6, 3, groups=2, name="grouped")(x)  # out 3x4, 4 in channels per group
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)  # 3x4x12
    x = L.SeparableConv2D(5, 3, padding="same", name="sep")(x)
    x = L.Conv2DTranspose(4, 2, strides=2, name="up")(x)  # in 3x4 positions
    x = L.Flatten()(x)
    out = L.Dense(7, name="fc")(x)
    flops = kp.count_flops(keras.Model(inp, out))
    expect = {
        "conv": 8 * 3 * (3 * 5) * (5 * 6),
        "grouped": 6 * (8 // 2) * 9 * (3 * 4),
        "dw": 9 * 6 * 2 * (3 * 4),
        "sep": (9 * 12 * 1 + 12 * 5) * (3 * 4),
        "up": 4 * 5 * 4 * (3 * 4),
        "fc": (6 * 8 * 4) * 7,
    }
    assert {k: v for k, v in flops.per_layer.items() if v} == expect
    assert flops.total == sum(expect.values())


def test_dense_on_a_sequence_counts_every_position():
    inp = keras.Input((9, 4))
    out = L.Dense(3, name="fc")(inp)
    assert kp.count_flops(keras.Model(inp, out)).per_layer["fc"] == 9 * 4 * 3


def test_shared_layer_counts_each_call():
    inp = keras.Input((5,))
    shared = L.Dense(5, name="shared")
    out = shared(shared(inp))
    assert kp.count_flops(keras.Model(inp, out)).total == 2 * 25
    assert kp.count_params(keras.Model(inp, out)).total == 30


def test_pruning_reduces_flops_as_the_widths_say():
    model = concat_flatten_net()
    thin = kp.rebuild(model, {"a": [0, 1], "fc": [0, 1, 2]})
    f = kp.count_flops(thin).per_layer
    assert f["a"] == 2 * 2 * 9 * 36
    assert f["fc"] == (9 * (2 + 3)) * 3
    assert f["head"] == 3 * 3


def test_tables_list_layers_and_total():
    model = residual_net()
    text = kp.count_flops(model).table()
    assert "stem" in text and text.strip().splitlines()[-1].startswith("total")
    assert "head" in kp.count_params(model).table()
