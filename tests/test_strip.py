"""strip removes the channels that carry nothing (or a constant, folded into the next
biases), decided from the producer side; the masks of mask_weights are built once per
keep-set and zero exactly the entries of the removed channels."""

import json

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasprune as kp
from kerasprune.callbacks import dead_channels, strip
from kerasprune.costs.counting import count_params
from kerasprune.surgery.fold import fold_values, rebuild_folded, tensor_constants
from kerasprune.surgery.mask import weight_masks


def conv_bn(x, filters, name, kernel=3, use_bias=False):
    x = L.Conv2D(filters, kernel, padding="same", use_bias=use_bias, name=f"{name}_conv")(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def vgg():
    x = inp = keras.Input((12, 12, 3))
    x = conv_bn(x, 8, "b1", use_bias=True)
    x = L.MaxPooling2D()(x)
    x = conv_bn(x, 8, "b2")
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(12, activation="relu", name="fc")(x)
    return keras.Model(inp, L.Dense(3, name="out")(x))


def resnet():
    inp = keras.Input((10, 10, 3))
    x = conv_bn(inp, 8, "stem")
    for b in ("r1", "r2"):
        y = conv_bn(x, 6, f"{b}a")
        y = L.Conv2D(8, 3, padding="same", use_bias=False, name=f"{b}b_conv")(y)
        y = L.BatchNormalization(name=f"{b}b_bn")(y)
        x = L.ReLU(name=f"{b}_out")(L.Add(name=f"{b}_add")([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3, name="out")(x))


def densenet():
    inp = keras.Input((10, 10, 3))
    x = conv_bn(inp, 6, "stem")
    for b in ("d1", "d2"):
        y = conv_bn(x, 4, b)
        x = L.Concatenate(name=f"{b}_cat")([x, y])
    x = conv_bn(x, 8, "trans", kernel=1)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3, name="out")(x))


def squeeze_excite():
    inp = keras.Input((10, 10, 3))
    x = conv_bn(inp, 8, "c1")
    s = L.GlobalAveragePooling2D()(x)
    s = L.Dense(3, activation="relu", name="squeeze")(s)
    s = L.Dense(8, activation="sigmoid", name="excite")(s)
    s = L.Reshape((1, 1, 8))(s)
    x = L.Multiply(name="gate")([x, s])
    x = conv_bn(x, 6, "c2")
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3, name="out")(x))


def randomize(model, seed=0):
    """Random weights, BatchNormalization statistics included (positive variances)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = []
        for v in layer.weights:
            shape = tuple(v.shape)
            if "variance" in v.name:
                ws.append(rng.uniform(0.5, 2.0, size=shape))
            else:
                ws.append(rng.normal(size=shape) * 0.5)
        if ws:
            layer.set_weights([w.astype("float32") for w in ws])
    return model


def silence(model, bn, channels, beta=0.0):
    """Network slimming's end state: ``gamma`` 0 (and ``beta``) for these channels; their
    filters are left as they are."""
    layer = model.get_layer(bn)
    gamma, b, mean, var = layer.get_weights()
    gamma[channels] = 0.0
    b[channels] = beta
    layer.set_weights([gamma, b, mean, var])


# model, the BatchNormalization layers silenced (with channels), the groups expected dead
FOUR = {
    "vgg": (vgg, {"b1_bn": [1, 5], "b2_bn": [0, 3, 7]}, {"b1_conv": [1, 5], "b2_conv": [0, 3, 7]}),
    "resnet": (
        resnet,
        {"stem_bn": [2], "r1b_bn": [2], "r2b_bn": [2, 4], "r1a_bn": [0, 5]},
        {"stem_conv+r1b_conv+r2b_conv": [2], "r1a_conv": [0, 5]},
    ),
    "densenet": (densenet, {"stem_bn": [1], "d1_bn": [0, 3], "d2_bn": [2]},
                 {"stem_conv": [1], "d1_conv": [0, 3], "d2_conv": [2]}),
    "squeeze_excite": (squeeze_excite, {"c1_bn": [1, 6], "c2_bn": [4]},
                       {"c1_conv+excite": [1, 6], "c2_conv": [4]}),
}


@pytest.mark.parametrize("name", sorted(FOUR))
def test_strip_removes_channels_whose_batchnorm_gamma_and_beta_are_zero_with_equal_outputs(name, rng):
    build, silenced, expected = FOUR[name]
    model = randomize(build())
    for bn, chans in silenced.items():
        silence(model, bn, chans)
    found = {k: v.tolist() for k, v in dead_channels(model).items()}
    assert found == expected
    thin = strip(model)
    removed = sum(len(v) for v in expected.values())
    widths = {g.name: g.size for g in kp.analyze(thin).groups}
    for group, chans in expected.items():
        assert widths[group] == kp.analyze(model)[group].size - len(chans)
    assert removed and count_params(thin).total < count_params(model).total
    x = rng.normal(size=(4,) + tuple(model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(thin(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5, rtol=1e-5)


def test_a_residual_channel_is_dead_only_when_every_branch_sends_zero():
    model = randomize(resnet())
    silence(model, "stem_bn", [2])
    silence(model, "r1b_bn", [2])  # r2b_bn's channel 2 still adds its own value
    assert "stem_conv+r1b_conv+r2b_conv" not in dead_channels(model)


def test_sigmoid_of_a_zero_filter_is_a_constant_not_zero():
    inp = keras.Input((5,))
    h = L.Dense(4, activation="sigmoid", name="h")(inp)
    model = randomize(keras.Model(inp, L.Dense(2, name="out")(h)))
    k, b = model.get_layer("h").get_weights()
    k[:, 1], b[1] = 0.0, 0.0
    model.get_layer("h").set_weights([k, b])
    assert dead_channels(model) == {}
    assert count_params(strip(model)).total == count_params(model).total
    assert count_params(strip(model, fold_constants=True)).total == count_params(model).total - 5 - 1 - 2


def dense_chain():
    inp = keras.Input((5,))
    a = L.Dense(4, activation="tanh", name="a")(inp)
    b = L.Dense(4, activation="sigmoid", name="b")(inp)
    h = L.Add(name="add")([a, b])
    return keras.Model(inp, L.Dense(3, name="out")(h))


def test_constants_of_both_branches_of_an_add_fold_into_the_next_dense_bias_as_numpy_says(rng):
    model = randomize(dense_chain())
    ka, ba = model.get_layer("a").get_weights()
    kb, bb = model.get_layer("b").get_weights()
    ka[:, 2], ba[2] = 0.0, 0.8
    kb[:, 2], bb[2] = 0.0, -0.3
    model.get_layer("a").set_weights([ka, ba])
    model.get_layer("b").set_weights([kb, bb])
    w, bias = model.get_layer("out").get_weights()
    carried = np.tanh(0.8) + 1.0 / (1.0 + np.exp(0.3))  # numpy reference
    thin = strip(model, fold_constants=True)
    tw, tb = thin.get_layer("out").get_weights()
    np.testing.assert_allclose(tb, bias + carried * w[2], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(tw, np.delete(w, 2, axis=0))
    x = rng.normal(size=(6, 5)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(thin(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5)
    assert model.get_layer("out").get_weights()[1].tolist() == bias.tolist()  # untouched


def conv_chain(padding):
    inp = keras.Input((9, 9, 2))
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.Conv2D(4, 3, padding=padding, name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(2, name="out")(x))


def constant_filter(model, layer, j, value):
    k, b = model.get_layer(layer).get_weights()
    k[..., j], b[j] = 0.0, value
    model.get_layer(layer).set_weights([k, b])


def test_a_constant_folds_into_a_valid_convolution_as_its_window_sum(rng):
    model = randomize(conv_chain("valid"))
    constant_filter(model, "c1", 3, 0.6)  # relu(0.6) reaches c2 at every position
    k2, b2 = model.get_layer("c2").get_weights()
    thin = strip(model, fold_constants=True)
    tk, tb = thin.get_layer("c2").get_weights()
    np.testing.assert_allclose(tb, b2 + 0.6 * k2[:, :, 3, :].sum(axis=(0, 1)), rtol=1e-6, atol=1e-6)
    assert tk.shape == (3, 3, 4, 4)
    x = rng.normal(size=(3, 9, 9, 2)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(thin(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_a_constant_read_by_a_padded_convolution_is_kept_its_fold_wrong_only_at_the_borders(rng):
    model = randomize(conv_chain("same"))
    constant_filter(model, "c1", 3, 0.6)
    assert count_params(strip(model, fold_constants=True)).total == count_params(model).total
    graph = kp.analyze(model)
    group = graph.group_of("c1")
    keep = {group.name: [0, 1, 2, 4]}
    values = {("c2", "in"): np.array([np.nan] * 3 + [0.6, np.nan])}
    thin = rebuild_folded(model, keep, fold_values(graph, {group.name: [3]}, values), graph, exact=False)
    x = rng.normal(size=(2, 9, 9, 2)).astype("float32")
    feat = keras.Model(model.input, model.get_layer("c2").output)
    thin_feat = keras.Model(thin.input, thin.get_layer("c2").output)
    err = np.abs(keras.ops.convert_to_numpy(feat(x)) - keras.ops.convert_to_numpy(thin_feat(x)))
    assert err[:, 1:-1, 1:-1].max() < 1e-5  # inside, the window sees the constant
    k2 = model.get_layer("c2").get_weights()[0]
    # numpy: at the top-left corner the padding hides the first row and column of the window
    missed = 0.6 * (k2[0, :, 3, :].sum(axis=0) + k2[1:, 0, 3, :].sum(axis=0))
    np.testing.assert_allclose(err[:, 0, 0, :], np.broadcast_to(np.abs(missed), (2, 4)), atol=1e-5)


def test_zero_padding_turns_a_constant_into_a_varying_channel():
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 1, name="c1")(inp)
    x = L.ZeroPadding2D(1)(x)
    model = randomize(keras.Model(inp, L.Conv2D(2, 3, name="c2")(x)))
    constant_filter(model, "c1", 0, 0.5)
    constant_filter(model, "c1", 1, 0.0)
    states = tensor_constants(model)
    padded = model.get_layer("c2").input
    c1 = model.get_layer("c1").output
    np.testing.assert_array_equal(states[id(c1)][:2], [0.5, 0.0])
    assert np.isnan(states[id(padded)][0]) and states[id(padded)][1] == 0.0
    assert np.isnan(states[id(padded)][2])


def test_weight_masks_zero_exactly_the_entries_of_the_removed_channels(rng):
    model = randomize(squeeze_excite())
    graph = kp.analyze(model)
    keep = {"c1_conv+excite": [0, 2, 3, 5, 7], "c2_conv": [1, 2, 3]}
    masks = weight_masks(graph, keep)
    assert weight_masks(graph, keep) is masks  # built once per keep-set
    # numpy reference: every entry of every removed channel, one by one
    expected = {}
    for name, kept in keep.items():
        gone = np.setdiff1d(np.arange(graph[name].size), kept)
        for e in graph.entries(name):
            flat = e.flat[np.isin(e.channel, gone)]
            if flat.size:
                expected.setdefault((e.layer, e.weight), set()).update(flat.tolist())
    before = {layer.name: layer.get_weights() for layer in model.layers}
    zeroed = kp.mask_weights(model, keep, graph=graph)
    assert zeroed == sum(len(v) for v in expected.values())
    for layer in model.layers:
        for i, (old, new) in enumerate(zip(before[layer.name], layer.get_weights())):
            gone = np.zeros(old.size, dtype=bool)
            gone[list(expected.get((layer.name, i), ()))] = True
            np.testing.assert_array_equal(new.ravel()[gone], 0.0)
            np.testing.assert_array_equal(new.ravel()[~gone], old.ravel()[~gone])
    other = {"c2_conv": [0, 5]}
    assert weight_masks(graph, other) is not masks


def mlp():
    inp = keras.Input((6,))
    h = L.Dense(8, activation="relu", name="h")(inp)
    return keras.Model(inp, L.Dense(3, name="out")(h))


def test_prune_compensate_mean_folds_the_removed_units_mean_activation_as_numpy_says(rng):
    model = randomize(mlp())
    x = rng.normal(size=(40, 6)).astype("float32")
    k1, b1 = model.get_layer("h").get_weights()
    w2, b2 = model.get_layer("out").get_weights()
    thin = kp.prune(model, 0.5, "l1", data=x, compensate="mean")
    plain = kp.prune(model, 0.5, "l1")
    kept = [j for j in range(8) if any(np.array_equal(k1[:, j], c) for c in thin.get_layer("h").get_weights()[0].T)]
    gone = np.setdiff1d(np.arange(8), kept)
    assert len(kept) == 4
    act = np.maximum(x.astype(np.float64) @ k1 + b1, 0.0)  # numpy reference
    expected = b2 + act[:, gone].mean(axis=0) @ w2[gone]
    np.testing.assert_allclose(thin.get_layer("out").get_weights()[1], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(plain.get_layer("out").get_weights()[1], b2)
    # the outputs' mean over the scoring data is the original's (the output layer is linear)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(thin(x)).mean(axis=0), keras.ops.convert_to_numpy(model(x)).mean(axis=0), atol=1e-5)


def test_prune_compensate_mean_folds_into_a_convolution_over_its_window(rng):
    inp = keras.Input((7, 7, 2))
    x = L.Conv2D(6, 3, activation="relu", name="c1")(inp)
    x = L.Conv2D(3, 3, name="c2")(x)
    model = randomize(keras.Model(inp, L.GlobalAveragePooling2D()(x)))
    data = rng.normal(size=(10, 7, 7, 2)).astype("float32")
    thin = kp.prune(model, 0.5, "l2", scope="layerwise", data=data, compensate="mean")
    k1 = model.get_layer("c1").get_weights()[0]
    kept = [j for j in range(6) if any(np.array_equal(k1[..., j], thin.get_layer("c1").get_weights()[0][..., i])
                                       for i in range(3))]
    gone = np.setdiff1d(np.arange(6), kept)
    feat = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("c1").output)(data)).astype(np.float64)
    k2, b2 = model.get_layer("c2").get_weights()
    expected = b2 + feat[..., gone].mean(axis=(0, 1, 2)) @ k2[:, :, gone, :].sum(axis=(0, 1))
    np.testing.assert_allclose(thin.get_layer("c2").get_weights()[1], expected, rtol=1e-5, atol=1e-5)


def test_prune_compensate_needs_data_and_a_known_value():
    model = mlp()
    with pytest.raises(kp.OptionError):
        kp.prune(model, 0.5, "l1", compensate="mean")
    with pytest.raises(kp.OptionError):
        kp.prune(model, 0.5, "l1", data=np.zeros((2, 6), "float32"), compensate="median")


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return len(self.x) // self.size

    def __getitem__(self, i):
        s = slice(i * self.size, (i + 1) * self.size)
        return self.x[s], self.y[s]


def test_gradual_pruner_compensate_mean_folds_the_removed_units_into_the_next_bias(tmp_path, rng):
    from kerasprune.pruning import GradualPruner

    model = randomize(mlp())
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")
    pruner = GradualPruner(tmp_path / "run", rounds=1, ratio=0.25, criterion="l1", fine_tune_epochs=0,
                           compensate="mean", verbose=0)
    data = _Batches(x, y, 8)
    thin = pruner.run(model, data, data)
    k1, b1 = model.get_layer("h").get_weights()
    w2, b2 = model.get_layer("out").get_weights()
    kept = [j for j in range(8) if any(np.array_equal(k1[:, j], c) for c in thin.get_layer("h").get_weights()[0].T)]
    gone = np.setdiff1d(np.arange(8), kept)
    assert len(gone) == 2
    act = np.maximum(x.astype(np.float64) @ k1 + b1, 0.0)
    np.testing.assert_allclose(thin.get_layer("out").get_weights()[1], b2 + act[:, gone].mean(axis=0) @ w2[gone],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(kp.OptionError):
        GradualPruner(tmp_path / "other", rounds=1, compensate="median")


def test_prune_and_gradual_pruner_fold_constants_remove_the_constant_channels_left_after_a_round(tmp_path, rng):
    from kerasprune.pruning import GradualPruner

    inp = keras.Input((5,))
    h = L.Dense(6, activation="relu", name="h")(inp)
    a = L.Dense(4, activation="tanh", name="a")(h)
    b = L.Dense(4, activation="sigmoid", name="b")(h)
    model = randomize(keras.Model(inp, L.Dense(3, name="out")(L.Add(name="add")([a, b]))))
    constant_filter(model, "a", 1, 0.4)  # unit 1 of the group a+b carries
    constant_filter(model, "b", 1, -0.2)  # tanh(0.4) + sigmoid(-0.2) whatever the input
    x = rng.normal(size=(16, 5)).astype("float32")
    # the round prunes h; a and b are left to fold_constants
    opts = dict(criterion="l1", exclude=["a", "b"])
    plain = kp.prune(model, 0.34, **opts)
    folded = kp.prune(model, 0.34, fold_constants=True, **opts)
    assert plain.get_layer("h").units == folded.get_layer("h").units == 4
    assert (plain.get_layer("a").units, folded.get_layer("a").units) == (4, 3)  # the constant unit went
    np.testing.assert_allclose(keras.ops.convert_to_numpy(folded(x)), keras.ops.convert_to_numpy(plain(x)), atol=1e-5)
    model.compile(optimizer="sgd", loss="mse")
    data = _Batches(x, rng.normal(size=(16, 3)).astype("float32"), 8)
    pruner = GradualPruner(tmp_path / "run", rounds=1, ratio=0.34, fine_tune_epochs=0,
                           fold_constants=True, verbose=0, **opts)
    thin = pruner.run(model, data, data)
    assert (thin.get_layer("h").units, thin.get_layer("a").units) == (4, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(thin(x)), keras.ops.convert_to_numpy(plain(x)), atol=1e-5)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["fold_constants"] is True


def test_compensate_mean_after_flatten_replaces_each_removed_position_by_its_own_mean(rng):
    inp = keras.Input((6, 6, 2))
    c = L.Conv2D(4, 3, activation="relu", name="c")(inp)
    model = randomize(keras.Model(inp, L.Dense(3, name="d")(L.Flatten()(c))))
    x = rng.normal(size=(30, 6, 6, 2)).astype("float32")
    thin = kp.prune(model, 0.25, "l1", data=x, compensate="mean")
    k1 = model.get_layer("c").get_weights()[0]
    gone = [j for j in range(4) if not any(np.array_equal(k1[..., j], t)
                                           for t in np.moveaxis(thin.get_layer("c").get_weights()[0], -1, 0))]
    assert len(gone) == 1
    feat = keras.ops.convert_to_numpy(keras.Model(inp, c)(x)).astype(np.float64)
    feat[..., gone] = feat[..., gone].mean(axis=0)  # numpy: the mean of each position, not the channel's
    k, b = model.get_layer("d").get_weights()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(thin(x)), feat.reshape(30, -1) @ k + b, atol=1e-4)
