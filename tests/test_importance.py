"""Importance criteria against independent references.

Weight criteria are checked with numpy on the kernels, response criteria with numpy on
feature maps from an explicit ``keras.Model(inputs, layer.output)``, gradient criteria with
a per-example ``tf.GradientTape`` loop over a hand-split model, and GSFP with Eq. 5 of
papers/004 computed by hand from the gradient of each batch's loss.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from models import concat_flatten_net, randomize, residual_net

import kerasprune as kp
from kerasprune.importance import (
    ImportanceError,
    available_criteria,
    normalize,
    raw_scores,
    register_criterion,
    score,
)

L = keras.layers
RTOL = 1e-5


def close(a, b, rtol=RTOL, atol=1e-7):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- models


def chain_net() -> keras.Model:
    """A Sequential CNN: the gradient references split it layer by layer."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(4, 3, activation="relu", name="c1"),
            L.BatchNormalization(name="bn"),
            L.MaxPooling2D(name="pool"),
            L.Conv2D(5, 2, activation="relu", name="c2"),
            L.Flatten(name="flat"),
            L.Dense(6, activation="relu", name="fc"),
            L.Dense(3, activation="softmax", name="head"),
        ],
        name="chain",
    )
    randomize(model, seed=3, scale=0.5)
    model.compile(loss="sparse_categorical_crossentropy")
    return model


def mlp() -> keras.Model:
    inp = keras.Input((6,))
    x = L.Dense(5, activation="relu", name="fc1")(inp)
    x = L.Dense(4, activation="tanh", name="fc2")(x)
    return randomize(keras.Model(inp, L.Dense(3, name="head")(x)), seed=5)


def grouped_net() -> keras.Model:
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.Conv2D(6, 3, padding="same", groups=2, name="grouped")(x)
    x = L.GlobalAveragePooling2D()(x)
    return randomize(keras.Model(inp, L.Dense(2, name="head")(x)), seed=7)


def kernel(model, name):
    return np.asarray(model.get_layer(name).kernel.numpy(), np.float64)


def images(model, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + tuple(model.input_shape[1:])).astype("float32")


# ----------------------------------------------------------------------------- weights


def filter_stat(k, stat):
    w = k.reshape(-1, k.shape[-1])  # one column per output channel
    return {
        "aaws": np.abs(w).mean(0),
        "l1": np.abs(w).sum(0),
        "l2": np.sqrt((w * w).mean(0)),
    }[stat]


@pytest.mark.parametrize("criterion", ["aaws", "l1", "l2"])
def test_weight_criteria_on_filters_residual_and_dense(criterion):
    model = residual_net()
    s = raw_scores(model, criterion)
    assert list(s) == [g.name for g in kp.analyze(model).prunable]
    close(s["b1_conv1"], filter_stat(kernel(model, "b1_conv1"), criterion))
    close(s["b2_conv1"], filter_stat(kernel(model, "b2_conv1"), criterion))
    # residual groups: the mean of the producers' scores
    close(s["b2_proj+b2_conv2"], (filter_stat(kernel(model, "b2_proj"), criterion) + filter_stat(kernel(model, "b2_conv2"), criterion)) / 2)
    close(s["stem+b1_conv2"], (filter_stat(kernel(model, "stem"), criterion) + filter_stat(kernel(model, "b1_conv2"), criterion)) / 2)
    m = mlp()
    s = raw_scores(m, criterion)
    close(s["fc1"], filter_stat(kernel(m, "fc1"), criterion))  # incoming column
    close(s["fc2"], filter_stat(kernel(m, "fc2"), criterion))


def test_weight_criteria_on_grouped_and_concat():
    model = grouped_net()
    s = raw_scores(model, "aaws")
    k = kernel(model, "grouped")
    assert k.shape == (3, 3, 4, 6)  # each filter sees c_in / groups channels
    close(s["grouped"], np.abs(k).mean(axis=(0, 1, 2)))
    close(s["c1"], np.abs(kernel(model, "c1")).mean(axis=(0, 1, 2)))
    model = concat_flatten_net()
    s = raw_scores(model, "l2")
    close(s["a"], np.sqrt((kernel(model, "a") ** 2).mean(axis=(0, 1, 2))))
    close(s["b"], np.sqrt((kernel(model, "b") ** 2).mean(axis=(0, 1, 2))))


def test_outgoing_weights_for_dense_and_after_flatten():
    m = mlp()
    out = raw_scores(m, "aaws_out")
    close(out["fc1"], np.abs(kernel(m, "fc2")).mean(axis=1))  # fc2's input rows
    close(out["fc2"], np.abs(kernel(m, "head")).mean(axis=1))
    notebook = raw_scores(m, "aaws_dense_out")  # Dense groups: outgoing rows
    close(notebook["fc1"], out["fc1"])
    model = concat_flatten_net()
    out = raw_scores(model, "aaws_out")
    rows = np.abs(kernel(model, "fc"))  # flatten of (3, 3, 7): channel = row % 7
    close(out["a"], [rows[np.arange(rows.shape[0]) % 7 == c].mean() for c in range(4)])
    close(out["b"], [rows[np.arange(rows.shape[0]) % 7 == 4 + c].mean() for c in range(3)])
    notebook = raw_scores(model, "aaws_dense_out")  # conv groups keep their filters
    close(notebook["a"], np.abs(kernel(model, "a")).mean(axis=(0, 1, 2)))
    close(notebook["fc"], np.abs(kernel(model, "head")).mean(axis=1))


def test_bn_gamma_and_its_error():
    model = chain_net()
    s = raw_scores(model, "bn_gamma", exclude=["c2", "fc"])
    assert list(s) == ["c1"]
    close(s["c1"], np.abs(model.get_layer("bn").gamma.numpy()))
    with pytest.raises(ImportanceError, match=r"'c2'.*BatchNormalization.*exclude=\['c2'\]"):
        raw_scores(model, "bn_gamma")
    res = residual_net()
    s = raw_scores(res, "bn_gamma", exclude=["b1_conv1", "b2_conv1", "b2_proj+b2_conv2"])
    close(s["stem+b1_conv2"], np.abs(res.get_layer("stem_bn").gamma.numpy()))


# ----------------------------------------------------------------------------- responses


def feature(model, layer, x):
    return np.asarray(keras.Model(model.inputs[0], model.get_layer(layer).output)(x), np.float64)


def response_refs(f):
    """mean_response, std_response, apoz references of one feature map (batch, ..., C)."""
    r = f.reshape(f.shape[0], -1, f.shape[-1]).mean(axis=1)  # per-example spatial mean
    zeros = (f == 0).reshape(-1, f.shape[-1]).mean(axis=0)
    return {"mean_response": np.abs(r.mean(0)), "std_response": r.std(0), "apoz": 1.0 - zeros}


@pytest.mark.parametrize("criterion", ["mean_response", "std_response", "apoz"])
def test_response_criteria(criterion):
    model = residual_net()
    x = images(model, 12)
    s = raw_scores(model, criterion, data=x)
    close(s["b1_conv1"], response_refs(feature(model, "b1_conv1", x))[criterion], rtol=1e-4)
    close(s["b2_conv1"], response_refs(feature(model, "b2_conv1", x))[criterion], rtol=1e-4)
    close(s["b2_proj+b2_conv2"], response_refs(feature(model, "gap", x))[criterion], rtol=1e-4)
    # a residual group is read at two feature maps: the mean over them
    two = [response_refs(feature(model, n, x))[criterion] for n in ("stem_relu", "b1_add")]
    close(s["stem+b1_conv2"], (two[0] + two[1]) / 2, rtol=1e-4)
    # a concatenation read through Flatten: one channel = all H*W positions of its slice
    model = concat_flatten_net()
    x = images(model, 9)
    s = raw_scores(model, criterion, data=x)
    ref = response_refs(feature(model, "pool", x))[criterion]
    close(s["a"], ref[:4], rtol=1e-4)
    close(s["b"], ref[4:], rtol=1e-4)


def test_response_is_read_where_the_next_conv_reads_it():
    model = chain_net()  # c1 -> bn -> pool -> c2: c1 is observed after BN and pooling
    x = images(model, 10)
    s = raw_scores(model, "mean_response", data=x)
    close(s["c1"], response_refs(feature(model, "pool", x))["mean_response"], rtol=1e-4)
    close(s["fc"], response_refs(feature(model, "fc", x))["mean_response"], rtol=1e-4)


def test_streaming_equals_one_big_batch():
    model = residual_net()
    x = images(model, 23)
    whole = raw_scores(model, "std_response", data=x, batch_size=23)
    many = raw_scores(model, "std_response", data=(x,), batch_size=5)  # 5 batches, last of 3
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(23, "int32"))).batch(4)
    from_ds = raw_scores(model, "std_response", data=ds)
    for name in whole:
        close(many[name], whole[name], rtol=1e-5)
        close(from_ds[name], whole[name], rtol=1e-5)
    first = raw_scores(model, "mean_response", data=x, batch_size=5, max_batches=2)
    ref = raw_scores(model, "mean_response", data=x[:10], batch_size=10)
    for name in ref:
        close(first[name], ref[name], rtol=1e-5)


# ----------------------------------------------------------------------------- gradients


def per_example_reference(model, split, x, y, loss_fn, taylor=False):
    """One example at a time: run the layers by hand, watch the split, |spatial mean|."""
    vals = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            h = tf.constant(x[i : i + 1])
            for layer in model.layers:
                h = layer(h, training=False)
                if layer.name == split:
                    tape.watch(h)
                    at = h
            loss = tf.reduce_sum(loss_fn(y[i : i + 1], h))
        g = tape.gradient(loss, at).numpy().astype(np.float64)
        a = at.numpy().astype(np.float64)
        q = a * g if taylor else g
        vals.append(np.abs(q.reshape(-1, q.shape[-1]).mean(axis=0)))
    return np.mean(vals, axis=0)


@pytest.mark.parametrize("criterion", ["mean_gradient", "taylor"])
def test_feature_map_gradients_per_example(criterion):
    model = chain_net()
    x = images(model, 10)
    y = np.random.default_rng(1).integers(0, 3, size=10)
    s = raw_scores(model, criterion, data=(x, y), batch_size=4)
    taylor = criterion == "taylor"
    loss_fn = keras.losses.sparse_categorical_crossentropy
    close(s["c1"], per_example_reference(model, "pool", x, y, loss_fn, taylor), rtol=1e-4, atol=1e-8)
    close(s["c2"], per_example_reference(model, "c2", x, y, loss_fn, taylor), rtol=1e-4, atol=1e-8)
    close(s["fc"], per_example_reference(model, "fc", x, y, loss_fn, taylor), rtol=1e-4, atol=1e-8)
    # frozen layers still pass gradients back to the feature maps
    for layer in model.layers:
        layer.trainable = False
    frozen = raw_scores(model, criterion, data=(x, y), batch_size=10)
    for name in s:
        close(frozen[name], s[name], rtol=1e-4, atol=1e-8)


def test_mean_gradient_of_a_residual_group_with_an_explicit_loss():
    model = residual_net()  # not compiled: the loss comes from loss=
    x = images(model, 6)
    y = np.random.default_rng(2).normal(size=(6, 5)).astype("float32")
    s = raw_scores(model, "mean_gradient", data=(x, y), loss=keras.losses.MeanSquaredError(), batch_size=4)
    lay = model.get_layer

    def after_b1(z):
        y2 = lay("b2_conv2")(lay("b2_conv1")(z))
        return lay("head")(lay("gap")(lay("b2_add")([lay("b2_proj")(z), y2])))

    def after_stem(a):
        return after_b1(lay("b1_add")([a, lay("b1_conv2")(lay("b1_conv1")(a))]))

    stem_out = keras.Model(model.inputs[0], lay("stem_relu").output)
    mg_stem, mg_add = [], []
    for i in range(len(x)):
        a = stem_out(x[i : i + 1])
        z = lay("b1_add")([a, lay("b1_conv2")(lay("b1_conv1")(a))])
        for at, tail, acc in ((a, after_stem, mg_stem), (z, after_b1, mg_add)):
            with tf.GradientTape() as tape:
                tape.watch(at)
                loss = tf.reduce_sum(keras.losses.mean_squared_error(y[i : i + 1], tail(at)))
            g = tape.gradient(loss, at).numpy().astype(np.float64)
            acc.append(np.abs(g.mean(axis=(0, 1, 2))))
    ref = (np.mean(mg_stem, axis=0) + np.mean(mg_add, axis=0)) / 2
    close(s["stem+b1_conv2"], ref, rtol=1e-4, atol=1e-8)


def gsfp_reference(model, producers, x, y, loss_obj, batch_size, axis=None):
    """Eq. 5 per batch from the gradient of the batch loss w.r.t. the kernels, summed (Eq. 6).

    ``axis``: layer name -> the kernel axis of its output channels (default: the last).
    """
    axis = axis or {}
    total = {name: 0.0 for name in producers}
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        kernels = [model.get_layer(n).kernel for n in producers]
        with tf.GradientTape() as tape:
            loss = loss_obj(yb, model(xb, training=False))
        grads = tape.gradient(loss, kernels)
        for name, k, g in zip(producers, kernels, grads):
            ax = axis.get(name, -1)
            k = np.moveaxis(np.asarray(k.numpy(), np.float64), ax, -1)
            k = k.reshape(-1, k.shape[-1])
            g = np.moveaxis(np.asarray(g.numpy(), np.float64), ax, -1).reshape(-1, k.shape[-1])
            G = np.abs(g).sum(0) / g.shape[0]
            W = np.sqrt((k * k).sum(0) / k.shape[0])
            N = k.shape[1]
            total[name] = total[name] + (N * G / G.sum()) * (N * W / W.sum())
    return total


def test_gsfp_matches_eq5_by_hand():
    model = chain_net()
    x = images(model, 11)
    y = np.random.default_rng(4).integers(0, 3, size=11)
    s = raw_scores(model, "gsfp", data=(x, y), batch_size=4)  # 3 batches, last of 3
    ref = gsfp_reference(model, ["c1", "c2", "fc"], x, y, keras.losses.SparseCategoricalCrossentropy(), 4)
    for name in ("c1", "c2", "fc"):
        close(s[name], ref[name], rtol=1e-4)
    model = residual_net()
    x = images(model, 6)
    y = np.random.default_rng(5).normal(size=(6, 5)).astype("float32")
    s = raw_scores(model, "gsfp", data=(x, y), loss="mse", batch_size=3)
    ref = gsfp_reference(model, ["b2_proj", "b2_conv2", "b1_conv1"], x, y, keras.losses.MeanSquaredError(), 3)
    close(s["b2_proj+b2_conv2"], (ref["b2_proj"] + ref["b2_conv2"]) / 2, rtol=1e-4)
    close(s["b1_conv1"], ref["b1_conv1"], rtol=1e-4)
    # a transposed convolution holds its output channels on the kernel's axis -2
    inp = keras.Input((5, 5, 2))
    h = L.Conv2DTranspose(4, 3, activation="relu", name="up")(inp)
    h = L.Conv2D(3, 3, name="c")(h)
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h))), seed=9)
    x = images(model, 5)
    y = np.random.default_rng(6).normal(size=(5, 2)).astype("float32")
    s = raw_scores(model, "gsfp", data=(x, y), loss="mse", batch_size=2)
    ref = gsfp_reference(model, ["up", "c"], x, y, keras.losses.MeanSquaredError(), 2, axis={"up": -2})
    close(s["up"], ref["up"], rtol=1e-4)
    close(s["c"], ref["c"], rtol=1e-4)
    close(raw_scores(model, "aaws")["up"], np.abs(kernel(model, "up")).mean(axis=(0, 1, 3)))


# ----------------------------------------------------------------------------- normalization


def test_normalizations_follow_the_formulas():
    model = residual_net()
    raw = raw_scores(model, "aaws")
    for name, s in score(model, "aaws", normalization="layer_mean").items():
        close(s, raw[name] / raw[name].mean())
    for name, s in score(model, "aaws", normalization="l2").items():
        close(s, raw[name] / np.sqrt((raw[name] ** 2).sum()))
    for name, s in score(model, "aaws", normalization="none").items():
        close(s, raw[name])
        assert s.dtype == np.float64
    zero = {"dead": np.zeros(4), "live": np.array([1.0, 3.0])}
    for method in ("layer_mean", "l2", "none"):
        out = normalize(zero, method)
        assert np.array_equal(out["dead"], np.zeros(4))
    close(normalize(zero, "layer_mean")["live"], [0.5, 1.5])


def test_a_dead_layer_scores_zero_not_nan():
    model = mlp()
    w = model.get_layer("fc1").get_weights()
    model.get_layer("fc1").set_weights([np.zeros_like(w[0]), np.zeros_like(w[1])])
    s = score(model, "aaws")
    assert np.array_equal(s["fc1"], np.zeros(5))
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    y = np.zeros(8, "int32")
    s = score(model, "gsfp", data=(x, y), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.all(np.isfinite(s["fc1"])) and np.array_equal(s["fc1"], np.zeros(5))


# ----------------------------------------------------------------------------- API, errors


def test_registry_and_custom_criterion():
    names = available_criteria()
    for c in ("aaws", "l1", "l2", "bn_gamma", "aaws_out", "mean_response", "std_response", "apoz",
              "mean_gradient", "taylor", "gsfp"):
        assert c in names

    def max_abs(ctx):
        out = {}
        for group in ctx.groups:
            per = []
            for f in ctx.filters(group):
                m = np.zeros(group.size)
                np.maximum.at(m, f.channel, np.abs(f.values()))
                per.append(m)
            out[group.name] = kp.importance.combine_layers(per)
        return out

    register_criterion("test_max_abs", max_abs, overwrite=True)
    model = mlp()
    s = raw_scores(model, "test_max_abs")
    close(s["fc1"], np.abs(kernel(model, "fc1")).max(axis=0))
    with pytest.raises(ImportanceError, match="already registered"):
        register_criterion("test_max_abs", max_abs)


def test_clear_errors():
    model = chain_net()
    with pytest.raises(ImportanceError, match=r"'aws'.*Did you mean 'aaws'.*Known criteria"):
        score(model, "aws")
    with pytest.raises(ImportanceError, match=r"Did you mean 'layer_mean'"):
        score(model, normalization="layer_means")
    with pytest.raises(ImportanceError, match="pass data="):
        score(model, "mean_response")
    x = images(model, 4)
    with pytest.raises(ImportanceError, match="needs labels"):
        score(model, "taylor", data=x)
    with pytest.raises(ImportanceError, match="needs a loss"):
        score(mlp(), "mean_gradient", data=(np.zeros((4, 6), "float32"), np.zeros(4)))
    with pytest.raises(ImportanceError, match="no channel group named"):
        score(model, exclude=["c3"])
    with pytest.raises(kp.GraphMismatchError, match="another model"):
        score(model, graph=kp.analyze(mlp()))
    assert issubclass(ImportanceError, ValueError) and issubclass(ImportanceError, kp.KerasPruneError)


def test_progress_bar_when_verbose(capsys):
    model = chain_net()
    x = images(model, 8)
    score(model, "apoz", data=x, batch_size=4, verbose=1)
    assert "2/2" in capsys.readouterr().out


# ----------------------------------------------------------------------------- accumulable criteria


def weight_gradient_reference(model, producers, x, y, loss_obj, batch_size, per_filter):
    """``per_filter(w, g)`` (columns = output channels) per batch from the gradient of the
    batch's loss with respect to the kernels, summed over the batches."""
    total = {name: 0.0 for name in producers}
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        kernels = [model.get_layer(n).kernel for n in producers]
        with tf.GradientTape() as tape:
            loss = loss_obj(yb, model(xb, training=False))
        grads = tape.gradient(loss, kernels)
        for name, k, g in zip(producers, kernels, grads):
            k = np.asarray(k.numpy(), np.float64)
            w = k.reshape(-1, k.shape[-1])
            g = np.asarray(g.numpy(), np.float64).reshape(w.shape)
            total[name] = total[name] + per_filter(w, g)
    return total


WEIGHT_GRADIENT_REFS = {
    "grad_l1": lambda w, g: np.abs(g).sum(0) / g.shape[0],
    "taylor_weights": lambda w, g: np.abs((w * g).sum(0)),
}


def close_to_scale(a, b, rtol=1e-4):
    """|a - b| within ``rtol`` of b's largest entry (|sum w*g| cancels: float32 rounding)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.max(np.abs(a - b)) <= rtol * max(float(np.max(np.abs(b))), 1e-12), (a, b)


@pytest.mark.parametrize("criterion", ["grad_l1", "taylor_weights"])
def test_accumulable_weight_criteria_are_one_shot_criteria_too(criterion):
    per_filter = WEIGHT_GRADIENT_REFS[criterion]
    model = chain_net()
    x = images(model, 11)
    y = np.random.default_rng(4).integers(0, 3, size=11)
    s = raw_scores(model, criterion, data=(x, y), batch_size=4)  # 3 batches, last of 3
    loss = keras.losses.SparseCategoricalCrossentropy()
    ref = weight_gradient_reference(model, ["c1", "c2", "fc"], x, y, loss, 4, per_filter)
    for name in ("c1", "c2", "fc"):
        assert s[name].max() > 0
        close_to_scale(s[name], ref[name])
    # a residual group: the mean of its producers' values
    model = residual_net()
    x = images(model, 6)
    y = np.random.default_rng(5).normal(size=(6, 5)).astype("float32")
    s = kp.score(model, criterion, data=(x, y), loss="mse", batch_size=3, normalization="none")
    producers = ["b2_proj", "b2_conv2", "b1_conv1"]
    mse = keras.losses.MeanSquaredError()
    ref = weight_gradient_reference(model, producers, x, y, mse, 3, per_filter)
    close_to_scale(s["b2_proj+b2_conv2"], (ref["b2_proj"] + ref["b2_conv2"]) / 2)
    close_to_scale(s["b1_conv1"], ref["b1_conv1"])
    with pytest.raises(ImportanceError, match="pass data="):
        kp.score(model, criterion)


def test_one_registry_says_which_criteria_accumulate_and_from_what():
    from kerasprune.importance import (
        FEATURE_GRADIENTS,
        WEIGHT_GRADIENTS,
        accumulable_criteria,
        get_criterion,
    )

    assert accumulable_criteria(WEIGHT_GRADIENTS)[:3] == ["gsfp", "taylor_weights", "grad_l1"]
    assert accumulable_criteria(FEATURE_GRADIENTS)[:2] == ["mean_gradient", "taylor"]
    built_in = {"gsfp", "taylor_weights", "grad_l1", "mean_gradient", "taylor"}
    assert set(accumulable_criteria()) >= built_in
    names = available_criteria()
    assert set(accumulable_criteria()) <= set(names)
    for name in ("aaws", "l2", "bn_gamma", "mean_response", "apoz"):
        assert get_criterion(name).accumulate is None and get_criterion(name).kind is None
        assert name not in accumulable_criteria()
    for name in accumulable_criteria():
        assert get_criterion(name).needs == "labels"
    assert get_criterion("grad_l1").kind == WEIGHT_GRADIENTS
    assert get_criterion("taylor").kind == FEATURE_GRADIENTS


def test_a_user_criterion_declared_accumulable_is_scored_by_its_reduction():
    from kerasprune.importance import (
        FeatureGradients,
        WeightGradients,
        accumulable_criteria,
        get_criterion,
    )

    rms = WeightGradients(lambda f: tf.sqrt(f.mean(lambda g, w: g * g)))
    register_criterion("test_grad_rms", accumulate=rms, description="rms of dL/dw", overwrite=True)
    crit = get_criterion("test_grad_rms")
    assert crit.accumulate is rms and crit.needs == "labels" and crit.description == "rms of dL/dw"
    assert "test_grad_rms" in accumulable_criteria()
    model = chain_net()
    x = images(model, 8)
    y = np.random.default_rng(3).integers(0, 3, size=8)
    s = raw_scores(model, "test_grad_rms", data=(x, y), batch_size=4)
    loss = keras.losses.SparseCategoricalCrossentropy()
    by_hand = lambda w, g: np.sqrt((g * g).mean(0))  # noqa: E731
    ref = weight_gradient_reference(model, ["c1", "fc"], x, y, loss, 4, by_hand)
    close(s["c1"], ref["c1"], rtol=1e-4)
    close(s["fc"], ref["fc"], rtol=1e-4)
    with pytest.raises(ImportanceError, match="already registered"):
        register_criterion("test_grad_rms", accumulate=rms)

    # the decorator form: the decorated function is the one-shot criterion
    @register_criterion("test_grad_rms_twice", accumulate=rms, overwrite=True)
    def twice(ctx):
        """Twice the rms."""
        return {k: 2 * v for k, v in rms.scores(ctx).items()}

    assert get_criterion("test_grad_rms_twice").fn is twice
    assert get_criterion("test_grad_rms_twice").description == "Twice the rms."
    close(raw_scores(model, "test_grad_rms_twice", data=(x, y), batch_size=4)["c1"], 2 * s["c1"])

    # a feature-map reduction that is not linear in the gradient
    squared = FeatureGradients(lambda m: tf.square(m.channels(m.g)))
    register_criterion("test_mean_gradient_squared", accumulate=squared, overwrite=True)
    s = raw_scores(model, "test_mean_gradient_squared", data=(x, y), batch_size=4)
    mg = per_example_reference(model, "c2", x, y, keras.losses.sparse_categorical_crossentropy)
    assert s["c2"].shape == mg.shape and np.all(s["c2"] > 0)
    with pytest.raises(ImportanceError, match="accumulate="):
        register_criterion("test_bad", lambda ctx: {}, accumulate=lambda f: f)
    with pytest.raises(ImportanceError, match="needs 'labels'"):
        register_criterion("test_bad", accumulate=rms, needs="weights")


def test_one_relative_norm_for_numpy_and_tensors():
    from kerasprune.importance import relative_norm

    v = np.array([1.0, 3.0, 0.0, 4.0])
    held = np.array([True, True, False, True])
    close(relative_norm(v, held), [3 * 1 / 8, 3 * 3 / 8, 0.0, 3 * 4 / 8])
    close(relative_norm(v), v / v.mean())
    close(normalize({"g": v}, "layer_mean")["g"], relative_norm(v))
    t = relative_norm(tf.constant(v, tf.float32), tf.constant(held))
    assert isinstance(t, tf.Tensor)
    close(t.numpy(), relative_norm(v, held), rtol=1e-6)
    close(relative_norm(np.zeros(3)), np.zeros(3))  # a dead layer: 0, not NaN
    assert np.array_equal(relative_norm(tf.zeros([3])).numpy(), np.zeros(3))
