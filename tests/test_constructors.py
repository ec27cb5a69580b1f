"""A class states which constructor argument sets which sublayer width
(``kp.register_constructor``); the rebuilder uses that before probing, for composite
layers and for model subclasses alike."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from models import L, randomize
from reference import assert_close, cut_off

import kerasprune as kp
from kerasprune.graph import unregister_constructor


@keras.saving.register_keras_serializable(package="kptest_ctor")
class TwoDense(keras.layers.Layer):
    """``outer(inner(x))``, ``units`` wide inside; counts its instances."""

    instances = 0

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        TwoDense.instances += 1
        self.units = units
        self.inner = L.Dense(units, activation="relu", name="inner")
        self.outer = L.Dense(3, name="outer")

    def call(self, x):
        return self.outer(self.inner(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kptest_ctor")
class ScaledBlock(keras.layers.Layer):
    """Its width is ``int(8 * scale)``: a float, no integer argument to probe."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.inner = L.Dense(int(8 * scale), activation="relu", name="inner")
        self.outer = L.Dense(3, name="outer")

    def call(self, x):
        return self.outer(self.inner(x))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="kptest_ctor")
class Tower(keras.Model):
    """conv_a (``filters[0]``) -> conv_b and conv_c (both ``filters[1]``), built in
    the constructor."""

    def __init__(self, filters=(6, 4), **kwargs):
        inp = keras.Input((8, 8, 3), name="img")
        x = L.Conv2D(filters[0], 3, padding="same", activation="relu", name="conv_a")(inp)
        x = L.Conv2D(filters[1], 3, padding="same", activation="relu", name="conv_b")(x)
        x = L.Conv2D(filters[1], 3, padding="same", activation="relu", name="conv_c")(x)
        x = L.GlobalAveragePooling2D(name="pool")(x)
        super().__init__(inp, L.Dense(2, name="head")(x), **kwargs)
        self.filters = list(filters)

    def get_config(self):
        return {"filters": self.filters, "name": self.name, "trainable": self.trainable}


TOWER_WIDTHS = {"filters[0]": ("conv_a", "kernel", 3), "filters[1]": ("conv_b", "kernel", 3)}


@pytest.fixture(autouse=True)
def _no_mappings_left():
    yield
    for cls in (TwoDense, ScaledBlock, Tower):
        unregister_constructor(cls)


def _block_net(block: keras.layers.Layer) -> keras.Model:
    inp = keras.Input((4,), name="inp")
    x = L.Dense(5, name="stem")(inp)
    return randomize(keras.Model(inp, L.Dense(2, name="head")(block(x))))


def _quiet_rebuild(model, keep, graph=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thin = kp.rebuild(model, keep, graph=graph)
    return thin, [str(w.message) for w in caught if "kerasprune" in str(w.message)]


def _x(model, rng, n=3):
    return rng.normal(size=(n,) + tuple(model.input_shape[1:])).astype("float32")


def test_a_declarative_mapping_is_used_instead_of_probing(tmp_path, rng):
    kp.register_constructor(TwoDense, {"units": ("inner", "kernel", 1)})
    model = _block_net(TwoDense(6, name="block"))
    graph = kp.analyze(model)
    keep = {graph.group_of("block/inner").name: [0, 2, 5]}
    before = TwoDense.instances
    thin, warned = _quiet_rebuild(model, keep, graph)
    # the build that checks the mapped config, and the thin model's own: nothing probed
    assert TwoDense.instances - before == 2
    assert type(thin.get_layer("block")) is TwoDense and not warned
    assert thin.get_layer("block").units == 3
    x = _x(model, rng)
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    thin.save(tmp_path / "thin.keras")
    assert_close(keras.models.load_model(tmp_path / "thin.keras")(x), thin(x))


def test_without_a_mapping_the_same_block_is_probed():
    model = _block_net(TwoDense(6, name="block"))
    graph = kp.analyze(model)
    before = TwoDense.instances
    thin, warned = _quiet_rebuild(model, {graph.group_of("block/inner").name: [0, 2, 5]}, graph)
    assert type(thin.get_layer("block")) is TwoDense and not warned
    assert TwoDense.instances - before > 2


def test_a_function_maps_widths_no_integer_argument_sets(rng):
    model = _block_net(ScaledBlock(1.0, name="block"))
    graph = kp.analyze(model)
    keep = {graph.group_of("block/inner").name: [1, 3, 4, 6]}
    # no integer argument: probing finds nothing, the block becomes a functional model
    thin, warned = _quiet_rebuild(model, keep, graph)
    assert type(thin.get_layer("block")).__name__ == "Functional"
    assert len(warned) == 1 and "of layer 'inner' (kernel axis 1: 8 -> 4)" in warned[0]

    @kp.register_constructor(ScaledBlock)
    def scaled_config(layer, config, widths):
        return {**config, "scale": widths["inner"]["kernel"][1] / 8}

    thin, warned = _quiet_rebuild(model, keep, graph)
    assert type(thin.get_layer("block")) is ScaledBlock and not warned
    assert thin.get_layer("block").scale == 0.5
    x = _x(model, rng)
    assert_close(thin(x), cut_off(model, graph, keep)(x))


def test_a_function_that_returns_none_gives_the_functional_block_and_says_so():
    kp.register_constructor(ScaledBlock)(lambda layer, config, widths: None)
    model = _block_net(ScaledBlock(1.0, name="block"))
    graph = kp.analyze(model)
    thin, warned = _quiet_rebuild(model, {graph.group_of("block/inner").name: [0, 1]}, graph)
    assert type(thin.get_layer("block")).__name__ == "Functional"
    assert "the constructor mapping registered for ScaledBlock gives no config" in warned[0]


def test_a_model_subclass_uses_its_mapping_with_nested_arguments(tmp_path, rng):
    kp.register_constructor(Tower, TOWER_WIDTHS)
    model = randomize(Tower(name="tower"))
    graph = kp.analyze(model)
    keep = {"conv_a": [0, 2, 4], "conv_b": [1, 2], "conv_c": [0, 3]}
    thin, warned = _quiet_rebuild(model, keep, graph)
    assert type(thin) is Tower and not warned and thin.filters == [3, 2]
    x = _x(model, rng)
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    thin.save(tmp_path / "thin.keras")
    back = keras.models.load_model(tmp_path / "thin.keras")
    assert type(back) is Tower
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(thin(x)))


def test_a_mapping_that_builds_other_widths_gives_a_plain_model_naming_the_width(rng):
    kp.register_constructor(Tower, TOWER_WIDTHS)
    model = randomize(Tower(name="tower"))
    graph = kp.analyze(model)
    keep = {"conv_b": [1, 2], "conv_c": [0, 1, 3]}  # conv_c is filters[1] wide too
    thin, warned = _quiet_rebuild(model, keep, graph)
    assert type(thin).__name__ == "Functional" and len(warned) == 1
    assert (
        "Tower built by its registered constructor mapping with filters[1]=2 has other layers "
        "than the thin model: layer 'conv_c' gets kernel (3, 3, 2, 2), the thin model's is "
        "(3, 3, 2, 3)"
    ) in warned[0]
    x = _x(model, rng)
    assert_close(thin(x), cut_off(model, graph, keep)(x))


@pytest.mark.parametrize(
    "widths, error, match",
    [
        ([("units", "inner")], TypeError, "takes a dict"),
        ({}, kp.RegistryError, "widths is empty"),
        ({"units[": ("inner", "kernel", 1)}, kp.RegistryError, "is not a config entry"),
        ({"units": ("inner", "kernel")}, kp.RegistryError, r"expected \(sublayer path, weight name, axis\)"),
        ({"units": ("inner", "kernel", "1")}, kp.RegistryError, "expected"),
    ],
    ids=["not-a-dict", "empty", "bad-argument", "two-items", "axis-not-int"],
)
def test_a_badly_written_mapping_is_refused_when_registered(widths, error, match):
    with pytest.raises(error, match=match):
        kp.register_constructor(TwoDense, widths)
    assert TwoDense not in kp.graph.registered_constructors()


def test_registration_takes_layer_classes_and_does_not_silently_replace():
    with pytest.raises(TypeError, match="Keras layer or model class"):
        kp.register_constructor(object, {"units": ("inner", "kernel", 1)})
    with pytest.raises(TypeError, match="decorates a function"):
        kp.register_constructor(TwoDense)(42)
    kp.register_constructor(TwoDense, {"units": ("inner", "kernel", 1)})
    with pytest.raises(kp.RegistryError, match="TwoDense already has a constructor mapping"):
        kp.register_constructor(TwoDense, {"units": ("outer", "kernel", 0)})
    kp.register_constructor(TwoDense, {"units": ("outer", "kernel", 0)}, replace=True)
    assert kp.graph.constructor_for(TwoDense).widths == {"units": ("outer", "kernel", 0)}


@pytest.mark.parametrize(
    "widths, match",
    [
        ({"unit": ("inner", "kernel", 1)}, r"sets argument 'unit', which is not in TwoDense's config"),
        ({"units": ("inner2", "kernel", 1)}, r"from sublayer 'inner2'"),
        ({"units": ("inner", "kernal", 1)}, r"weight 'kernal' of sublayer 'inner', which has the weights kernel, bias"),
        ({"units": ("inner", "kernel", 2)}, r"axis 2 of weight 'kernel' of sublayer 'inner', which has the shape \(5, 3\)"),
    ],
    ids=["argument", "sublayer", "weight", "axis"],
)
def test_a_mapping_that_does_not_fit_the_layer_is_a_rebuild_error_naming_it(widths, match):
    kp.register_constructor(TwoDense, widths)
    model = _block_net(TwoDense(6, name="block"))
    graph = kp.analyze(model)
    with pytest.raises(kp.RebuildError, match=r"registered for TwoDense \(layer 'block'\)"):
        kp.rebuild(model, {graph.group_of("block/inner").name: [0, 2, 5]}, graph=graph)
    with pytest.raises(kp.RebuildError, match=match):
        kp.rebuild(model, {graph.group_of("block/inner").name: [0, 2, 5]}, graph=graph)


def test_a_mapping_function_that_raises_is_a_rebuild_error_with_its_cause():
    @kp.register_constructor(TwoDense)
    def broken(layer, config, widths):
        return {**config, "units": widths["inner"]["kernel"][1] // 0}

    model = _block_net(TwoDense(6, name="block"))
    graph = kp.analyze(model)
    with pytest.raises(kp.RebuildError, match=r"broken\(\) raised ZeroDivisionError"):
        kp.rebuild(model, {graph.group_of("block/inner").name: [0, 2, 5]}, graph=graph)
