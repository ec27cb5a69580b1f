"""Models whose class builds a functional graph in its constructor (a user's
``class Net(keras.Model)`` calling ``super().__init__(inputs, outputs)``, keras-hub
Backbones): the same class where the keep-set is a change of constructor arguments, a
plain functional model with a warning otherwise, and a RebuildError (never a bare
KeyError) when the rebuild fails."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from models import L, randomize
from reference import assert_close, cut_off, random_keep

import kerasprune as kp
from kerasprune.graph.handlers import PerChannelHandler

PLAIN = "rebuilt as a plain functional keras.Model"


@keras.saving.register_keras_serializable(package="kerasprune_tests")
class WidthNet(keras.Model):
    """A residual block whose widths all follow ``filters`` (the stem, the block's two
    convolutions, the 1x1 expansion to ``2 * filters``) and a ``hidden`` Dense layer.
    Some layers are named automatically (the BatchNormalization, ReLU, Add, pooling)."""

    def __init__(self, filters: int = 6, hidden: int = 5, classes: int = 3, **kwargs):
        inp = keras.Input((8, 8, 3), name="img")
        x = L.Conv2D(filters, 3, padding="same", name="stem")(inp)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        y = L.Conv2D(filters, 3, padding="same", activation="relu", name="conv_a")(x)
        y = L.Conv2D(filters, 3, padding="same", name="conv_b")(y)
        x = L.Add()([x, y])
        x = L.Conv2D(2 * filters, 1, activation="relu", name="expand")(x)
        x = L.GlobalAveragePooling2D()(x)
        x = L.Dense(hidden, activation="tanh", name="fc")(x)
        super().__init__(inp, L.Dense(classes, name="head")(x), **kwargs)
        self.filters, self.hidden, self.classes = filters, hidden, classes

    def get_config(self):
        return {"filters": self.filters, "hidden": self.hidden, "classes": self.classes,
                "name": self.name, "trainable": self.trainable}


def width_net(**kwargs) -> WidthNet:
    return randomize(WidthNet(name="width_net", **kwargs))


def every_other(n: int) -> list:
    return list(range(0, n, 2))


def rebuild_and_warnings(model, keep, graph, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thin = kp.rebuild(model, keep, graph=graph, **kwargs)
    return thin, [str(w.message) for w in caught if "kerasprune" in str(w.message)]


def check_thin(model, graph, keep, thin, tmp_path, rng):
    """Equal to the cut-off original, and unchanged by a .keras round trip."""
    x = rng.normal(size=(3,) + tuple(model.input_shape[1:])).astype("float32")
    out = thin(x, training=False)
    assert_close(out, cut_off(model, graph, keep)(x, training=False))
    assert np.abs(np.asarray(model(x, training=False)) - np.asarray(out)).max() > 1e-4
    thin.save(tmp_path / "thin.keras")
    loaded = keras.models.load_model(tmp_path / "thin.keras")
    assert type(loaded) is type(thin)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(out))
    return loaded


def test_analysis_sees_the_graph_of_a_functionally_built_subclass():
    graph = kp.analyze(width_net())
    assert [g.name for g in graph.prunable] == ["stem+conv_b", "conv_a", "expand", "fc"]


def test_uniform_keep_set_rebuilds_the_same_class_with_changed_arguments(tmp_path, rng):
    model = width_net()
    graph = kp.analyze(model)
    # filters 6 -> 3 changes the stem group and the expansion (12 -> 6); hidden 5 -> 2
    keep = {"stem+conv_b": [0, 2, 5], "conv_a": [1, 3, 4], "expand": every_other(12), "fc": [1, 4]}
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin) is WidthNet and not warned
    assert (thin.filters, thin.hidden, thin.classes) == (3, 2, 3)
    assert thin.get_layer("expand").filters == 6 and thin.name == "width_net"
    loaded = check_thin(model, graph, keep, thin, tmp_path, rng)
    assert loaded.get_config()["filters"] == 3


def test_one_argument_changed_alone_is_uniform_too(tmp_path, rng):
    model = width_net()
    graph = kp.analyze(model)
    thin, warned = rebuild_and_warnings(model, {"fc": [0, 2, 3]}, graph)
    assert type(thin) is WidthNet and not warned and (thin.filters, thin.hidden) == (6, 3)
    check_thin(model, graph, {"fc": [0, 2, 3]}, thin, tmp_path, rng)


@pytest.mark.parametrize(
    "keep",
    [
        {"stem+conv_b": [0, 2, 5]},  # the expansion keeps 12 where filters=3 would give 6
        {"conv_a": [0, 1]},  # conv_a alone: no argument sets its width without the others
    ],
    ids=["stem-without-expansion", "one-block-conv"],
)
def test_non_uniform_keep_set_gives_a_plain_functional_model_and_a_warning(keep, tmp_path, rng):
    model = width_net()
    graph = kp.analyze(model)
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin).__name__ == "Functional"
    assert len(warned) == 1 and "'width_net' (WidthNet)" in warned[0] and PLAIN in warned[0]
    assert "no change of WidthNet's integer arguments gives exactly the new widths" in warned[0]
    assert [lay.name for lay in thin.layers] == [lay.name for lay in model.layers]
    assert thin.name == model.name
    check_thin(model, graph, keep, thin, tmp_path, rng)


def test_random_keep_set_on_the_subclass_equals_the_cut_off_original(tmp_path, rng):
    model = width_net()
    graph = kp.analyze(model)
    keep = random_keep(graph, rng, 0.5)
    thin, warned = rebuild_and_warnings(model, keep, graph)
    check_thin(model, graph, keep, thin, tmp_path, rng)


def test_same_class_rebuild_carries_the_optimizer_state_of_renamed_layers(rng):
    model = width_net()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    model.fit(x, rng.normal(size=(4, 3)).astype("float32"), epochs=1, batch_size=2, verbose=0)
    keep = {"stem+conv_b": [0, 2, 5], "conv_a": [1, 3, 4], "expand": every_other(12)}
    thin, warned = rebuild_and_warnings(model, keep, kp.analyze(model))
    assert type(thin) is WidthNet and not warned  # no "optimizer variables restarted"
    old_bn = next(lay for lay in model.layers if isinstance(lay, L.BatchNormalization))
    new_bn = next(lay for lay in thin.layers if isinstance(lay, L.BatchNormalization))
    assert old_bn.name != new_bn.name  # a new automatic name
    old = {v.name: v.numpy() for v in model.optimizer.variables}
    new = {v.name: v.numpy() for v in thin.optimizer.variables}
    for slot in ("momentum", "velocity"):
        np.testing.assert_array_equal(
            new[f"{new_bn.name}_gamma_{slot}"], old[f"{old_bn.name}_gamma_{slot}"][[0, 2, 5]]
        )
    assert int(thin.optimizer.iterations.numpy()) == 2


def nested_net() -> keras.Model:
    """A functional model with a WidthNet inside it."""
    inner = WidthNet(name="inner")
    inp = keras.Input((8, 8, 3), name="x")
    x = L.Conv2D(3, 1, name="pre")(inp)
    return randomize(keras.Model(inp, L.Dense(2, name="out")(inner(x)), name="outer"))


@pytest.mark.parametrize("uniform", [True, False])
def test_a_nested_subclass_keeps_its_class_where_the_change_is_uniform(uniform, tmp_path, rng):
    model = nested_net()
    graph = kp.analyze(model)
    keep = {"inner/stem+inner/conv_b": [1, 2, 3], "inner/conv_a": [0, 4, 5],
            "inner/expand": every_other(12)}
    if not uniform:
        keep["pre"] = [0, 2]  # WidthNet's input width is no argument of it
    thin, warned = rebuild_and_warnings(model, keep, graph)
    inner = thin.get_layer("inner")
    assert isinstance(inner, WidthNet) is uniform
    assert bool(warned) is not uniform
    if uniform:
        assert inner.filters == 3
    else:
        assert "'inner' (WidthNet)" in warned[0]
    assert inner.get_layer("expand").filters == 6
    check_thin(model, graph, keep, thin, tmp_path, rng)


@keras.saving.register_keras_serializable(package="kerasprune_tests")
class TiedNet(keras.Model):
    """Residual stages whose shortcut is the identity where the stage is as wide as its
    input, else a 1x1 projection. With ``widths=(6, 6)`` stage 0 projects the stem's 4
    channels and stage 1 adds its input as it is: both widths are one residual group, and
    either changed alone builds another projection (other layers)."""

    def __init__(self, widths=(6, 6), stem: int = 4, **kwargs):
        inp = keras.Input((8, 8, 3), name="img")
        x = L.Conv2D(stem, 3, padding="same", name="stem")(inp)
        for i, width in enumerate(widths):
            y = L.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}")(x)
            s = x if x.shape[-1] == width else L.Conv2D(width, 1, name=f"proj{i}")(x)
            x = L.Add(name=f"add{i}")([s, y])
        x = L.GlobalAveragePooling2D(name="pool")(x)
        super().__init__(inp, L.Dense(2, name="head")(x), **kwargs)
        self.widths, self.stem = list(widths), stem

    def get_config(self):
        return {"widths": self.widths, "stem": self.stem, "name": self.name,
                "trainable": self.trainable}


def test_two_arguments_that_must_stay_equal_are_changed_together(tmp_path, rng):
    model = randomize(TiedNet(name="tied"))
    graph = kp.analyze(model)
    residual = graph.group_of("conv1")
    assert {m.layer for m in residual.members} >= {"proj0", "conv0", "conv1"}
    keep = {residual.name: [0, 1, 3, 5], "stem": [0, 2, 3]}
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin) is TiedNet and not warned, warned
    assert (thin.widths, thin.stem) == ([4, 4], 3)
    assert [lay.name for lay in thin.layers] == [lay.name for lay in model.layers]  # no proj1
    check_thin(model, graph, keep, thin, tmp_path, rng)


@keras.saving.register_keras_serializable(package="kerasprune_tests")
class NamelessConfig(WidthNet):
    """A WidthNet whose get_config leaves out its name (as keras-hub's VGGBackbone's does)."""

    def get_config(self):
        return {"filters": self.filters, "hidden": self.hidden, "classes": self.classes}


def test_a_subclass_whose_config_has_no_name_keeps_its_name(tmp_path, rng):
    """Rebuilt by its constructor from a config without a name, the model would get a
    new automatic one; nested, its parent's graph would then lose it (a RebuildError
    "layer 'inner/stem' is missing"). The name is passed to the constructor."""
    keep = {"stem+conv_b": [0, 2, 5], "conv_a": [1, 3, 4], "expand": every_other(12)}
    model = randomize(NamelessConfig(name="nameless"))
    thin, warned = rebuild_and_warnings(model, keep, kp.analyze(model))
    assert type(thin) is NamelessConfig and not warned and thin.name == "nameless"
    inp = keras.Input((8, 8, 3), name="x")
    outer = randomize(keras.Model(inp, L.Dense(2, name="out")(NamelessConfig(name="inner")(inp))))
    graph = kp.analyze(outer)
    keep = {"inner/stem+inner/conv_b": [1, 2, 3], "inner/conv_a": [0, 4, 5],
            "inner/expand": every_other(12)}
    thin, warned = rebuild_and_warnings(outer, keep, graph)
    inner = thin.get_layer("inner")
    assert type(inner) is NamelessConfig and not warned and inner.filters == 3
    check_thin(outer, graph, keep, thin, tmp_path, rng)


class HoldsAnObject(keras.Model):
    """Built functionally around an argument Keras cannot serialize: its config cannot
    build it again."""

    def __init__(self, thing: object, **kwargs):
        inp = keras.Input((6,))
        x = L.Dense(5, activation="relu", name="d1")(inp)
        super().__init__(inp, L.Dense(2, name="head")(x), **kwargs)
        self.thing = thing


def test_a_subclass_its_config_cannot_build_becomes_functional(tmp_path, rng):
    model = randomize(HoldsAnObject(object()))
    graph = kp.analyze(model)
    thin, warned = rebuild_and_warnings(model, {"d1": [0, 2, 3]}, graph)
    assert type(thin).__name__ == "Functional" and len(warned) == 1
    assert "HoldsAnObject.from_config(its own get_config()) fails" in warned[0]
    check_thin(model, graph, {"d1": [0, 2, 3]}, thin, tmp_path, rng)


class Scale(keras.layers.Layer):
    """A per-channel scale, for a handler that breaks while editing the config."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones", name="gamma")

    def call(self, x):
        return x * self.gamma


class _BrokenConfigHandler(PerChannelHandler):
    def param_axes(self, layer, rank):
        return [rank - 1]

    def edit_config(self, layer, config, masks):
        config["units"] = config["units"] - 1  # Scale's config has no "units": KeyError


def test_a_failing_rebuild_is_a_rebuild_error_naming_the_layer_and_its_class(monkeypatch):
    from kerasprune.graph import registry

    monkeypatch.setitem(registry._REGISTRY, Scale, _BrokenConfigHandler())
    inp = keras.Input((6,))
    x = Scale(name="scale")(L.Dense(4, name="d")(inp))
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    with pytest.raises(kp.RebuildError, match=r"layer 'scale' \(Scale\).*KeyError"):
        kp.rebuild(model, {"d": [0, 1]})


def tiny_resnet_backbone():
    keras_hub = pytest.importorskip("keras_hub")
    return keras_hub.models.ResNetBackbone(  # random weights, no preset download
        input_conv_filters=[8],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 4],  # the first stack must have 64
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck_block",
        image_shape=(16, 16, 3),
    )


def test_keras_hub_resnet_backbone_keeps_its_class_or_becomes_functional(tmp_path, rng):
    keras_hub = pytest.importorskip("keras_hub")
    model = randomize(tiny_resnet_backbone())
    graph = kp.analyze(model)
    # the stem's filters are the input_conv_filters argument: the same class
    keep = {"conv1_conv": [0, 3, 5, 6]}
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin) is keras_hub.models.ResNetBackbone and not warned
    assert thin.get_config()["input_conv_filters"] == [4]
    (tmp_path / "same").mkdir()
    check_thin(model, graph, keep, thin, tmp_path / "same", rng)
    # the first stack's bottleneck width has no argument of its own (it must be 64)
    keep = random_keep(graph, rng, 0.5)
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert not isinstance(thin, keras_hub.models.ResNetBackbone)
    assert len(warned) == 1 and "(ResNetBackbone)" in warned[0] and PLAIN in warned[0]
    (tmp_path / "plain").mkdir()
    check_thin(model, graph, keep, thin, tmp_path / "plain", rng)


@pytest.mark.filterwarnings("ignore:`compile\\(\\)` was not called:UserWarning")  # loading a Task
def test_keras_hub_task_keeps_its_class_and_its_backbone_class(tmp_path, rng):
    keras_hub = pytest.importorskip("keras_hub")
    model = randomize(
        keras_hub.models.ImageClassifier(
            backbone=tiny_resnet_backbone(), num_classes=3, preprocessor=None
        )
    )
    graph = kp.analyze(model, warn=False)
    keep = {"res_net_backbone/conv1_conv": [1, 2, 4, 7]}
    thin, warned = rebuild_and_warnings(model, keep, graph)
    assert type(thin) is keras_hub.models.ImageClassifier and not warned
    assert type(thin.backbone) is keras_hub.models.ResNetBackbone
    assert thin.backbone.get_config()["input_conv_filters"] == [4]
    check_thin(model, graph, keep, thin, tmp_path, rng)
    # a keep-set no argument gives: the task and its backbone both become plain models
    thin, warned = rebuild_and_warnings(model, random_keep(graph, rng, 0.5), graph)
    assert type(thin).__name__ == "Functional"
    assert type(thin.get_layer("res_net_backbone")).__name__ == "Functional"
    assert ["(ImageClassifier)" in warned[0], "(ResNetBackbone)" in warned[1]] == [True, True]
