"""Each handled layer family: the thin model equals the cut-off original."""

import keras
import numpy as np
import pytest
from models import L, randomize
from reference import assert_close, cut_off, random_keep

import kerasprune as kp


def conv1d_family():
    inp = keras.Input((12, 3))
    x = L.Conv1D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = L.SeparableConv1D(5, 3, padding="same", name="sep")(x)
    x = L.MaxPooling1D(name="pool")(x)
    x = L.UpSampling1D(name="up")(x)
    x = L.Cropping1D((1, 1), name="crop")(x)
    x = L.GlobalAveragePooling1D(keepdims=True, name="gap")(x)
    x = L.Flatten(name="flat")(x)
    return keras.Model(inp, L.Dense(2, name="head")(x))


def transpose_family():
    inp = keras.Input((5, 5, 2))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(x)
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = L.Conv2D(3, 3, name="c2")(x)
    return keras.Model(inp, L.Dense(2, name="head")(L.GlobalMaxPooling2D(name="gmp")(x)))


def conv3d_family():
    inp = keras.Input((4, 4, 4, 2))
    x = L.Conv3D(5, 2, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv3DTranspose(3, 2, strides=1, name="t1")(x)
    x = L.AveragePooling3D(2, name="pool")(x)
    return keras.Model(inp, L.Dense(2, name="head")(L.Flatten()(x)))


def sequence_family():
    inp = keras.Input((7,), dtype="int32")
    x = L.Embedding(20, 8, name="emb")(inp)
    x = L.Dense(6, activation="relu", name="d1")(x)  # Dense on rank 3
    x = L.PReLU(name="prelu")(x)  # per-position and per-channel slopes
    x = L.Conv1D(5, 3, name="c1")(x)
    x = L.GroupNormalization(groups=-1, name="inorm")(x)
    x = L.Dense(4, name="d2")(x)
    return keras.Model(inp, L.Dense(2, name="head")(L.GlobalAveragePooling1D()(x)))


FAMILIES = [conv1d_family, transpose_family, conv3d_family, sequence_family]


@pytest.mark.parametrize("build", FAMILIES, ids=lambda f: f.__name__)
def test_family_rebuilds_exactly_and_round_trips(build, rng, tmp_path):
    model = randomize(build())
    g = kp.analyze(model)
    assert len(g.prunable) >= 2
    keep = random_keep(g, rng, 0.5)
    thin = kp.rebuild(model, keep, graph=g)
    shape = (3,) + tuple(model.input_shape[1:])
    if model.inputs[0].dtype.startswith("int"):
        x = rng.integers(0, 20, size=shape).astype("int32")
    else:
        x = rng.normal(size=shape).astype("float32")
    if build is sequence_family:  # instance normalization: only the pre-norm part is exact
        ref = cut_off(model, g, {k: v for k, v in keep.items() if k != "c1"})
        thin_partial = kp.rebuild(model, {k: v for k, v in keep.items() if k != "c1"}, graph=g)
        assert_close(thin_partial(x, training=False), ref(x, training=False))
        # groups=-1 is stored as the built width; one group per channel follows the width
        assert thin.get_layer("inorm").groups == len(keep["c1"])
    else:
        assert_close(thin(x, training=False), cut_off(model, g, keep)(x, training=False))
    thin.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x, training=False), thin(x, training=False), rtol=1e-6)


def test_instance_normalization_with_explicit_groups_follows_the_width():
    inp = keras.Input((6, 4))
    x = L.Conv1D(5, 1, name="c1")(inp)
    x = L.GroupNormalization(groups=5, name="inorm")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    g = kp.analyze(model)
    assert g["c1"].blocks == 1
    thin = kp.rebuild(model, {"c1": [0, 2, 4]}, graph=g)
    assert thin.get_layer("inorm").groups == 3


def test_group_normalization_keeps_its_groups_aligned():
    inp = keras.Input((6, 4))
    x = L.Conv1D(8, 1, name="c1")(inp)
    x = L.GroupNormalization(groups=2, name="gn")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    g = kp.analyze(model)
    assert g["c1"].blocks == 2
    thin = kp.rebuild(model, {"c1": [0, 1, 4, 6]}, graph=g)
    assert thin.get_layer("gn").groups == 2 and thin.get_layer("c1").filters == 4
    with pytest.raises(kp.KeepSetError, match="each block"):
        kp.rebuild(model, {"c1": [0, 1, 2, 6]}, graph=g)


def test_reshape_to_sequence_and_back_passes_channels():
    inp = keras.Input((4, 4, 3))
    x = L.Conv2D(6, 1, name="c1")(inp)
    x = L.Reshape((16, 6), name="to_seq")(x)
    x = L.Dense(5, name="d1")(x)
    x = L.Reshape((80,), name="flat")(x)
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(x)))
    g = kp.analyze(model)
    keep = {"c1": [1, 2, 5], "d1": [0, 4]}
    thin = kp.rebuild(model, keep, graph=g)
    assert thin.get_layer("to_seq").target_shape == (16, 3)
    assert thin.get_layer("flat").target_shape == (32,)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    assert_close(thin(x), cut_off(model, g, keep)(x))


def test_reshape_that_moves_channels_freezes_them():
    inp = keras.Input((4, 6))
    x = L.Dense(6, name="d1")(inp)
    x = L.Reshape((6, 4), name="swap")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    g = kp.analyze(model)
    assert not g["d1"].prunable and "moves the channels" in g["d1"].reason
