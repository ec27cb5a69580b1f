"""The rebuilder: exact thin models, the original untouched, configs and state carried."""

import copy
import warnings

import keras
import numpy as np
import pytest
from models import L, concat_flatten_net, randomize, residual_net
from reference import assert_close, cut_off, random_keep

import kerasprune as kp


def snapshot(model):
    return [w.copy() for w in model.get_weights()], copy.deepcopy(model.get_config())


def assert_unchanged(model, snap):
    weights, config = snap
    now = model.get_weights()
    assert len(now) == len(weights)
    for a, b in zip(now, weights):
        np.testing.assert_array_equal(a, b)
    assert model.get_config() == config


@pytest.mark.parametrize("build", [residual_net, concat_flatten_net])
@pytest.mark.parametrize("fraction", [0.25, 0.6])
def test_thin_model_equals_original_with_removed_channels_cut_off(build, fraction, rng):
    model = build()
    g = kp.analyze(model)
    keep = random_keep(g, rng, fraction)
    thin = kp.rebuild(model, keep, graph=g)
    x = rng.normal(size=(3,) + tuple(model.input_shape[1:])).astype("float32")
    assert_close(thin(x, training=False), cut_off(model, g, keep)(x, training=False))
    assert kp.count_params(thin).total < kp.count_params(model).total


def test_rebuild_keeps_names_classes_inputs_and_outputs(rng):
    model = residual_net()
    g = kp.analyze(model)
    thin = kp.rebuild(model, random_keep(g, rng, 0.5), graph=g)
    assert [(l.name, type(l)) for l in thin.layers] == [(l.name, type(l)) for l in model.layers]
    assert thin.input_shape == model.input_shape and thin.output_shape == model.output_shape
    assert thin.name == model.name and type(thin) is type(model)
    assert thin.get_layer("b1_conv1").filters == len(random_keep(g, np.random.default_rng(0), 0.5)["b1_conv1"])


def test_only_width_keys_of_the_config_change(rng):
    model = residual_net()
    thin = kp.rebuild(model, {"b1_conv1": [0, 2, 4]})
    for old, new in zip(model.layers, thin.layers):
        a, b = old.get_config(), new.get_config()
        if old.name == "b1_conv1":
            assert b.pop("filters") == 3 and a.pop("filters") == 6
        assert a == b, old.name


def test_empty_keep_set_gives_an_identical_copy(rng):
    model = residual_net()
    thin = kp.rebuild(model, {})
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(thin(x, training=False), model(x, training=False))
    assert thin is not model and thin.get_layer("stem") is not model.get_layer("stem")


def test_original_model_is_untouched_after_success_and_after_failure(rng):
    model = residual_net()
    snap = snapshot(model)
    g = kp.analyze(model)
    kp.rebuild(model, random_keep(g, rng, 0.5), graph=g)
    assert_unchanged(model, snap)
    with pytest.raises(kp.KeepSetError):
        kp.rebuild(model, {"b1_conv1": [0, 99]}, graph=g)
    assert_unchanged(model, snap)


def test_rebuilt_model_round_trips_through_keras_file_without_custom_objects(tmp_path, rng):
    model = concat_flatten_net()
    g = kp.analyze(model)
    thin = kp.rebuild(model, random_keep(g, rng, 0.5), graph=g)
    path = tmp_path / "thin.keras"
    thin.save(path)
    loaded = keras.models.load_model(path)
    x = rng.normal(size=(2, 6, 6, 2)).astype("float32")
    np.testing.assert_array_equal(loaded(x, training=False), thin(x, training=False))


def test_regularizers_initializers_constraints_and_trainable_flags_are_carried():
    inp = keras.Input((6,))
    x = L.Dense(
        8,
        kernel_regularizer=keras.regularizers.L2(0.01),
        bias_initializer=keras.initializers.Constant(0.5),
        kernel_constraint=keras.constraints.MaxNorm(2.0),
        name="d1",
    )(inp)
    x = L.BatchNormalization(name="bn")(x)
    out = L.Dense(2, name="head")(x)
    model = keras.Model(inp, out)
    model.get_layer("bn").trainable = False
    thin = kp.rebuild(model, {"d1": [1, 2, 5]})
    d1 = thin.get_layer("d1")
    assert isinstance(d1.kernel_regularizer, keras.regularizers.L2)
    assert d1.kernel_regularizer.l2 == pytest.approx(0.01)
    assert isinstance(d1.kernel_constraint, keras.constraints.MaxNorm)
    assert d1.bias_initializer.value == 0.5
    assert thin.get_layer("bn").trainable is False
    assert len(thin.losses) == 1  # the regularization loss is still there


def test_mixed_float16_policy_is_carried_and_outputs_match(rng):
    keras.config.set_dtype_policy("mixed_float16")
    model = residual_net()
    keras.config.set_dtype_policy("float32")
    g = kp.analyze(model)
    keep = random_keep(g, rng, 0.5)
    thin = kp.rebuild(model, keep, graph=g)
    assert thin.get_layer("stem").dtype_policy.name == "mixed_float16"
    assert thin.get_layer("stem").kernel.dtype == "float32"
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    ref = cut_off(model, g, keep)(x, training=False)
    out = thin(x, training=False)
    assert np.asarray(out).dtype == np.float16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32), atol=2e-2, rtol=2e-2)


def test_sequential_model_rebuilds_to_a_sequential(rng):
    model = randomize(
        keras.Sequential(
            [keras.Input((10,)), L.Dense(8, activation="relu", name="d1"), L.Dropout(0.1),
             L.Dense(6, activation="tanh", name="d2"), L.Dense(2, name="d3")],
            name="seq",
        )
    )
    g = kp.analyze(model)
    keep = {"d1": [0, 3, 7], "d2": [1, 2]}
    thin = kp.rebuild(model, keep, graph=g)
    assert isinstance(thin, keras.Sequential)
    x = rng.normal(size=(4, 10)).astype("float32")
    assert_close(thin(x), cut_off(model, g, keep)(x))


def test_nested_and_shared_layers_rebuild_exactly(rng):
    inner_in = keras.Input((6, 6, 4))
    y = L.Conv2D(5, 3, padding="same", name="conv")(inner_in)
    y = L.BatchNormalization(name="bn")(y)
    y = L.ReLU(name="relu")(y)
    inner = keras.Model(inner_in, y, name="block")
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    x = L.Add(name="sum")([inner(a), inner(b)])  # the nested model is shared too
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    model = randomize(keras.Model(inp, out))
    g = kp.analyze(model)
    keep = random_keep(g, rng, 0.5)
    assert set(keep) == {g.group_of("a").name, "block/conv"} and g.group_of("a") is g.group_of("b")
    thin = kp.rebuild(model, keep, graph=g)
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    assert_close(thin(x, training=False), cut_off(model, g, keep)(x, training=False))
    assert thin.get_layer("block").get_layer("conv").filters == len(keep["block/conv"])


def test_grouped_convolution_keeps_groups_aligned(rng):
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="c1")(inp)
    x = L.Conv2D(6, 3, groups=2, padding="same", name="grouped")(x)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    model = randomize(keras.Model(inp, out))
    g = kp.analyze(model)
    keep = {"c1": [0, 3, 5, 6], "grouped": [1, 4]}
    thin = kp.rebuild(model, keep, graph=g)
    assert thin.get_layer("grouped").groups == 2
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    assert_close(thin(x, training=False), cut_off(model, g, keep)(x, training=False))


def test_layer_normalization_is_sliced_like_a_hand_built_thin_model(rng):
    inp = keras.Input((5, 6))
    x = L.Dense(8, name="d1")(inp)
    x = L.LayerNormalization(name="ln")(x)
    out = L.Dense(2, name="head")(x)
    model = randomize(keras.Model(inp, out))
    g = kp.analyze(model)
    assert not [m for m in g["d1"].members if m.layer == "ln"][0].exact
    kept = [0, 2, 3, 7]
    thin = kp.rebuild(model, {"d1": kept}, graph=g)
    # independent reference: the thin architecture written by hand, weights sliced here
    ref_in = keras.Input((5, 6))
    r = L.Dense(4, name="d1")(ref_in)
    r = L.LayerNormalization(name="ln")(r)
    ref = keras.Model(ref_in, L.Dense(2, name="head")(r))
    k1, b1 = model.get_layer("d1").get_weights()
    gamma, beta = model.get_layer("ln").get_weights()
    k2, b2 = model.get_layer("head").get_weights()
    ref.get_layer("d1").set_weights([k1[:, kept], b1[kept]])
    ref.get_layer("ln").set_weights([gamma[kept], beta[kept]])
    ref.get_layer("head").set_weights([k2[kept], b2])
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    assert_close(thin(x), ref(x))


def test_optimizer_state_is_carried_and_sliced_like_the_weights(rng):
    model = residual_net()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(8, 5)).astype("float32")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    keep = {"b1_conv1": [0, 2, 5], "stem+b1_conv2": [1, 2, 3, 6]}
    thin = kp.rebuild(model, keep)
    opt_old, opt_new = model.optimizer, thin.optimizer
    assert opt_new is not opt_old and isinstance(opt_new, keras.optimizers.Adam)
    assert int(opt_new.iterations.numpy()) == int(opt_old.iterations.numpy()) == 2
    old = {v.name: v.numpy() for v in opt_old.variables}
    new = {v.name: v.numpy() for v in opt_new.variables}
    kin, kout = np.array(keep["stem+b1_conv2"]), np.array(keep["b1_conv1"])
    for slot in ("momentum", "velocity"):
        name = f"b1_conv1_kernel_{slot}"
        np.testing.assert_array_equal(new[name], old[name][:, :, kin][..., kout])
        name = f"stem_bn_gamma_{slot}"
        np.testing.assert_array_equal(new[name], old[name][kin])
        name = f"head_kernel_{slot}"
        np.testing.assert_array_equal(new[name], old[name])
    assert [m.name for m in thin.metrics] == [m.name for m in model.metrics]
    thin.fit(x, y, epochs=1, batch_size=4, verbose=0)  # fine-tuning continues
    assert int(opt_new.iterations.numpy()) == 4


def test_optimizer_can_be_left_fresh(rng):
    model = residual_net()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 5)), verbose=0)
    thin = kp.rebuild(model, {"b1_conv1": [0]}, carry_optimizer=False)
    assert int(thin.optimizer.iterations.numpy()) == 0
    assert getattr(kp.rebuild(model, {"b1_conv1": [0]}, compile=False), "optimizer", None) is None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "keep, match",
    [
        ({"b1_conv1": [0, 6]}, r"indices \[6\] outside 0..5"),
        ({"b1_conv1": [-1]}, r"outside"),
        ({"b1_conv1": [1, 1, 2]}, r"repeats indices \[1\]"),
        ({"b1_conv1": []}, r"at least one channel"),
        ({"b1_conv": [0]}, r"Did you mean: 'b1_conv1'"),
        ({"b1_conv1": [[0, 1]]}, r"1-D sequence"),
        ({"b1_conv1": [0.5]}, r"integer"),
    ],
)
def test_bad_keep_sets_get_clear_errors(keep, match):
    with pytest.raises(kp.KeepSetError, match=match):
        kp.rebuild(residual_net(), keep)


def test_boolean_mask_is_accepted_as_a_keep_set():
    model = residual_net()
    mask = np.array([True, False, True, False, False, True])
    thin = kp.rebuild(model, {"b1_conv1": mask})
    assert thin.get_layer("b1_conv1").filters == 3


def test_pruning_a_frozen_group_says_why():
    with pytest.raises(kp.FrozenGroupError, match="reaches model output 'head'"):
        kp.rebuild(residual_net(), {"head": [0, 1]})


def test_unequal_blocks_of_a_grouped_convolution_are_refused():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="c1")(inp)
    x = L.Conv2D(6, 3, groups=2, name="grouped")(x)
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    with pytest.raises(kp.KeepSetError, match=r"same number of channels in each block, got \[3, 1\]"):
        kp.rebuild(model, {"c1": [0, 1, 2, 4]})


def test_subclassed_model_is_refused_with_a_functional_recipe():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 4)))
    with pytest.raises(kp.UnsupportedModelError, match=r"(?s)subclassed keras.Model.*keras.Input"):
        kp.analyze(net)


def test_unbuilt_sequential_model_is_refused_with_how_to_build_it():
    with pytest.raises(kp.UnsupportedModelError, match=r"(?s)not built.*keras.Input"):
        kp.analyze(keras.Sequential([L.Dense(3)]))


def test_graph_of_another_model_is_refused():
    g = kp.analyze(residual_net())
    with pytest.raises(kp.KerasPruneError, match="another model"):
        kp.rebuild(residual_net(), {}, graph=g)


def _many_layer_kinds_net():
    """Layers whose initializers live in many places: plain attributes, recurrent cells
    behind properties, a wrapper, attention projections."""
    seq = keras.Input((5, 4), name="seq")
    s = L.LSTM(6, return_sequences=True, name="lstm")(seq)
    s = L.Bidirectional(L.GRU(3, return_sequences=True), name="bi")(s)
    s = L.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")(s, s)
    s = L.LayerNormalization(name="ln")(s)
    s = L.GlobalAveragePooling1D()(s)
    img = keras.Input((8, 8, 3), name="img")
    x = L.SeparableConv2D(5, 3, depthwise_initializer="ones", name="sep")(img)
    x = L.Conv2D(4, 3, kernel_initializer=keras.initializers.HeNormal(seed=3), name="conv")(x)
    x = L.BatchNormalization(gamma_initializer="ones", name="bn")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Concatenate()([s, x])
    out = L.Dense(2, bias_initializer=keras.initializers.Constant(0.25), name="head")(x)
    return randomize(keras.Model([seq, img], out))


@pytest.mark.parametrize("build", [residual_net, concat_flatten_net, _many_layer_kinds_net])
def test_skipping_random_initial_values_leaves_configs_and_weights_as_they_would_be(build, rng, monkeypatch):
    import importlib

    rebuild_module = importlib.import_module("kerasprune.surgery.rebuild")
    model = build()
    g = kp.analyze(model)
    keep = random_keep(g, rng, 0.5)
    fast = kp.rebuild(model, keep, graph=g)
    monkeypatch.setattr(rebuild_module, "_skip_random_init", lambda index, layers: {})
    plain = kp.rebuild(model, keep, graph=g)
    assert fast.get_config() == plain.get_config()
    for a, b in zip(fast.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the initializers are the original ones again, ready for a user's re-initialization
    conv = [l for l in fast.layers if isinstance(l, keras.layers.Conv2D)]
    for layer in conv:
        assert not isinstance(layer.kernel_initializer, keras.initializers.Zeros)


def _lambda_net(scale):
    inp = keras.Input((6,))
    x = keras.layers.Dense(10, activation="relu", name="d1")(inp)
    x = keras.layers.Lambda(lambda t: t * scale, name="lam")(x)  # closes over a live value
    x = keras.layers.Dense(9, activation="relu", name="d2")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="out")(x))


def test_lambda_layer_is_rebuilt_around_the_original_function_and_only_its_groups_freeze(rng):
    scale = np.float32(1.7)
    model = randomize(_lambda_net(scale))
    with pytest.warns(UserWarning, match="Lambda"):
        g = kp.analyze(model)
    assert [grp.name for grp in g.prunable] == ["d2"]
    keep = {"d2": [0, 2, 3, 7]}
    thin = kp.rebuild(model, keep, graph=g)
    assert thin.get_layer("lam").function is model.get_layer("lam").function
    x = rng.normal(size=(5, 6)).astype("float32")
    (w1, b1), (w2, b2), (w3, b3) = (model.get_layer(n).get_weights() for n in ("d1", "d2", "out"))
    k = np.array(keep["d2"])
    h = np.maximum(x @ w1 + b1, 0) * scale
    h = np.maximum(h @ w2[:, k] + b2[k], 0)
    assert_close(thin(x), h @ w3[k] + b3)


def test_thin_model_with_a_python_lambda_saves_and_loads_as_keras_allows(tmp_path, rng):
    model = randomize(_lambda_net(np.float32(0.5)), seed=1)
    with pytest.warns(UserWarning, match="Lambda"):
        thin = kp.prune(model, 0.3)
    path = str(tmp_path / "thin.keras")
    thin.save(path)
    with pytest.raises(ValueError, match="safe_mode=False"):  # Keras's own refusal, as for the original
        keras.models.load_model(path)
    back = keras.models.load_model(path, safe_mode=False)
    x = rng.normal(size=(4, 6)).astype("float32")
    assert_close(back(x), thin(x))


def _double(t):
    return t * 2.0


def test_saving_a_thin_model_with_a_python_lambda_to_a_run_warns_how_it_loads(tmp_path, rng):
    from kerasprune.runs import atomic_save_model

    with pytest.warns(UserWarning, match="Lambda"):
        thin = kp.prune(randomize(_lambda_net(np.float32(0.5)), seed=1), 0.3)
    with pytest.warns(UserWarning, match="'lam' with a Python lambda.*safe_mode=False"):
        atomic_save_model(thin, tmp_path / "thin.keras")
    back = keras.models.load_model(tmp_path / "thin.keras", safe_mode=False)
    x = rng.normal(size=(4, 6)).astype("float32")
    assert_close(back(x), thin(x))
    named = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(_double, name="double")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a named function: no warning
        atomic_save_model(named, tmp_path / "named.keras")
