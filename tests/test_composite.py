"""Composite layers (a layer whose call uses sublayers) are walked inside and rebuilt."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from keras import layers as L
from models import randomize
from reference import assert_close, cut_off, random_keep

import kerasprune as kp
from kerasprune.graph.composite import is_composite, iter_layers


@keras.saving.register_keras_serializable(package="kptest")
class ResidualBlock(keras.layers.Layer):
    """conv -> BN -> relu -> conv, plus the input: a user's residual block."""

    def __init__(self, filters: int, inner: int, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.inner = filters, inner
        self.conv_a = L.Conv2D(inner, 3, padding="same", name="conv_a")
        self.bn = L.BatchNormalization(name="bn")
        self.act = L.Activation("relu", name="act")
        self.conv_b = L.Conv2D(filters, 3, padding="same", name="conv_b")
        self.add = L.Add(name="add")

    def call(self, x, training=None):
        y = self.act(self.bn(self.conv_a(x), training=training))
        return self.add([x, self.conv_b(y)])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "inner": self.inner}


@keras.saving.register_keras_serializable(package="kptest")
class Stage(keras.layers.Layer):
    """Two residual blocks: a composite layer made of composite layers."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.first = ResidualBlock(filters, 6, name="first")
        self.second = ResidualBlock(filters, 5, name="second")

    def call(self, x):
        return self.second(self.first(x))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="kptest")
class BackendCall(keras.layers.Layer):
    """A call that uses a TensorFlow function directly works in Keras (it is run on
    backend tensors) but cannot be traced on symbolic Keras tensors."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(4, name="dense")

    def call(self, x):
        import tensorflow as tf

        return tf.math.cumsum(self.dense(x), axis=-1)


@keras.saving.register_keras_serializable(package="kptest")
class GatedBlock(keras.layers.Layer):
    """A block that takes a tensor as a keyword argument (as transformer blocks take
    their padding masks): ``dense(x) * gate``."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = L.Dense(units, activation="relu", name="inner")
        self.outer = L.Dense(units, name="outer")
        self.mul = L.Multiply(name="mul")

    def call(self, x, gate=None, scale=1.0):
        return self.mul([self.outer(self.inner(x)), gate]) * scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kptest")
class PositionalBlock(keras.layers.Layer):
    """A call that needs the concrete sequence length (as keras-hub's causal masks do):
    ``outer(mid(inner(x + positions)))`` with ``positions = arange(length)``; ``units``
    sets the width of both ``inner`` and ``mid``."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = L.Dense(units, activation="relu", name="inner")
        self.mid = L.Dense(units, activation="relu", name="mid")
        self.outer = L.Dense(3, name="outer")

    def call(self, x):
        positions = keras.ops.arange(keras.ops.shape(x)[1], dtype="float32")
        return self.outer(self.mid(self.inner(x + positions[None, :, None])))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kptest")
class TwinBlock(keras.layers.Layer):
    """``inner`` sets two convolutions that are separate channel groups: a keep-set
    that thins them differently is no change of the block's arguments."""

    def __init__(self, filters: int, inner: int, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.inner = filters, inner
        self.conv_a = L.Conv2D(inner, 3, padding="same", activation="relu", name="conv_a")
        self.conv_b = L.Conv2D(inner, 3, padding="same", activation="relu", name="conv_b")
        self.conv_c = L.Conv2D(filters, 3, padding="same", name="conv_c")

    def call(self, x):
        return x + self.conv_c(self.conv_b(self.conv_a(x)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "inner": self.inner}


@keras.saving.register_keras_serializable(package="kptest")
class WidthBlock(keras.layers.Layer):
    """``x + conv2(bn(conv1(x)))``: ``width`` must equal the input's channels (the
    residual), ``hidden`` is the block's own."""

    def __init__(self, width: int, hidden: int, **kwargs):
        super().__init__(**kwargs)
        self.width, self.hidden = width, hidden
        self.conv1 = L.Conv2D(hidden, 3, padding="same", activation="relu", name="conv1")
        self.bn = L.BatchNormalization(name="bn")
        self.conv2 = L.Conv2D(width, 3, padding="same", name="conv2")

    def call(self, x, training=None):
        return x + self.conv2(self.bn(self.conv1(x), training=training))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "hidden": self.hidden}


@keras.saving.register_keras_serializable(package="kptest")
class FeedForwardBlock(keras.layers.Layer):
    """A transformer block's second half, ``x + ffn(norm(x))``: only ``hidden`` is an
    argument; the output projection is as wide as the input (made in ``build``)."""

    def __init__(self, hidden: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden
        self.norm = L.BatchNormalization(name="norm")
        self.ffn_in = L.Dense(hidden, activation="relu", name="ffn_in")

    def build(self, input_shape):
        self.ffn_out = L.Dense(input_shape[-1], name="ffn_out")

    def call(self, x, training=None):
        return x + self.ffn_out(self.ffn_in(self.norm(x, training=training)))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden}


@keras.saving.register_keras_serializable(package="kptest")
class GroupedHeads(keras.layers.Layer):
    """Grouped-query attention's projections, reduced to their widths: queries
    ``num_query_heads * 2`` wide, keys ``num_key_value_heads * 2``, and the class
    refuses query heads that are no multiple of the key-value heads (as GQA layers do)."""

    def __init__(self, num_query_heads: int, num_key_value_heads: int, **kwargs):
        if num_query_heads % num_key_value_heads:
            raise ValueError("num_query_heads must be a multiple of num_key_value_heads")
        super().__init__(**kwargs)
        self.num_query_heads, self.num_key_value_heads = num_query_heads, num_key_value_heads
        self.query = L.Dense(2 * num_query_heads, name="query")
        self.key = L.Dense(2 * num_key_value_heads, name="key")
        self.concat = L.Concatenate(name="concat")
        self.out = L.Dense(3, name="out")

    def call(self, x):
        return self.out(self.concat([self.query(x), self.key(x)]))

    def get_config(self):
        return {
            **super().get_config(),
            "num_query_heads": self.num_query_heads,
            "num_key_value_heads": self.num_key_value_heads,
        }


def _net(block: keras.layers.Layer, channels: int = 4) -> keras.Model:
    inp = keras.Input((8, 8, 3), name="inp")
    x = L.Conv2D(channels, 1, name="stem")(inp)
    x = block(x)
    x = L.Conv2D(5, 1, name="after")(x)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="pool")(x))
    return randomize(keras.Model(inp, out))


def _x(model, n=3, seed=0):
    shape = (n,) + tuple(model.input_shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_a_composite_layer_is_recognized_and_its_sublayers_get_paths():
    model = _net(ResidualBlock(4, 6, name="block"))
    assert is_composite(model.get_layer("block"))
    paths = [p for p, _ in iter_layers(model)]
    assert {"block", "block/conv_a", "block/bn", "block/conv_b"} <= set(paths)


def test_groups_inside_a_composite_layer_are_prunable():
    model = _net(ResidualBlock(4, 6, name="block"))
    graph = kp.analyze(model)
    inner = graph.group_of("block/conv_a")
    assert inner.prunable and inner.size == 6
    assert {(m.layer, m.slot) for m in inner.members} >= {
        ("block/conv_a", "out"), ("block/bn", "channels"), ("block/conv_b", "in")
    }
    residual = graph.group_of("stem")
    assert residual.prunable  # the stem, the block's second conv and its add, together
    assert ("block/conv_b", "out") in {(m.layer, m.slot) for m in residual.members}


def _twin_keep(graph) -> dict:
    """conv_a and conv_b, both ``inner`` wide, thinned differently; the residual too."""
    return {
        graph.group_of("block/conv_a").name: [0, 2, 5],
        graph.group_of("block/conv_b").name: [1, 2, 3, 4],
        graph.group_of("stem").name: [0, 3],
    }


def test_rebuilt_composite_equals_the_cut_off_original(rng):
    model = _net(TwinBlock(4, 6, name="block"))
    graph = kp.analyze(model)
    keep = _twin_keep(graph)
    with pytest.warns(UserWarning, match="composite layer 'block'") as caught:
        thin = kp.rebuild(model, keep, graph=graph)
    # the warning names the first sublayer width no argument sets
    message = next(str(w.message) for w in caught if "composite layer 'block'" in str(w.message))
    assert (
        "no change of TwinBlock's integer arguments gives exactly the new widths of layer "
        "'conv_a' (kernel axis 3: 6 -> 3)"
    ) in message
    x = _x(model)
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    assert thin.get_layer("block").get_layer("conv_a").filters == 3


def test_thin_composite_saves_and_loads_without_its_class(tmp_path, rng):
    model = _net(TwinBlock(4, 6, name="block"))
    graph = kp.analyze(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thin = kp.rebuild(model, _twin_keep(graph), graph=graph)
    assert type(thin.get_layer("block")).__name__ == "Functional"
    thin.save(tmp_path / "thin.keras")
    with keras.saving.custom_object_scope({}):
        back = keras.models.load_model(tmp_path / "thin.keras")
    x = _x(model)
    assert_close(back(x), thin(x))


def test_a_composite_without_changed_sublayers_keeps_its_class():
    model = _net(ResidualBlock(4, 6, name="block"))
    graph = kp.analyze(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "rebuilt as a functional model" warning
        thin = kp.rebuild(model, {"after": [0, 2, 4]}, graph=graph)
    assert type(thin.get_layer("block")) is ResidualBlock
    x = _x(model)
    assert_close(thin(x), cut_off(model, graph, {"after": [0, 2, 4]})(x))


def test_composites_inside_composites_are_walked_and_rebuilt(rng):
    model = _net(Stage(4, name="stage"))
    graph = kp.analyze(model)
    assert graph.group_of("stage/first/conv_a").prunable
    assert graph.group_of("stage/second/conv_a").prunable
    keep = random_keep(graph, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thin = kp.rebuild(model, keep, graph=graph)
    x = _x(model)
    assert_close(thin(x), cut_off(model, graph, keep)(x))


def test_multiply_adds_inside_a_composite_are_counted():
    model = _net(ResidualBlock(4, 6, name="block"))
    macs = kp.count_flops(model).per_layer
    # conv_a: 8*8 positions * 3*3 kernel * 4 in * 6 out; conv_b: 6 in, 4 out
    assert macs["block/conv_a"] == 64 * 9 * 4 * 6
    assert macs["block/conv_b"] == 64 * 9 * 6 * 4
    params = kp.count_params(model)
    assert params.total == sum(params.per_layer.values())  # no layer counted twice


def test_a_composite_whose_call_cannot_be_traced_is_frozen_with_the_reason():
    inp = keras.Input((6,), name="inp")
    x = L.Dense(4, name="before")(inp)
    x = BackendCall(name="odd")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    with pytest.warns(UserWarning, match="odd"):
        graph = kp.analyze(model)
    group = graph.group_of("before")
    assert not group.prunable and "cannot be traced" in group.reason


def test_analysis_leaves_the_model_working_and_unchanged(rng):
    model = _net(ResidualBlock(4, 6, name="block"))
    x = _x(model)
    before = np.asarray(model(x))
    config = model.get_config()
    kp.analyze(model)
    kp.analyze(model)
    np.testing.assert_array_equal(np.asarray(model(x)), before)
    assert model.get_config() == config


def test_a_composite_called_with_a_tensor_keyword_argument_is_walked_and_rebuilt(tmp_path, rng):
    inp = keras.Input((5, 3), name="inp")
    gate_in = keras.Input((5, 1), name="gate")
    x = L.Dense(4, name="stem")(inp)
    x = GatedBlock(4, name="block")(x, gate=gate_in, scale=0.5)
    model = randomize(keras.Model([inp, gate_in], L.Dense(2, name="head")(x)))
    graph = kp.analyze(model)
    assert graph.group_of("block/inner").prunable  # the block's own hidden units
    keep = random_keep(graph, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thin = kp.rebuild(model, keep, graph=graph)
    xs = [rng.normal(size=(3, 5, 3)).astype("float32"), rng.uniform(size=(3, 5, 1)).astype("float32")]
    assert_close(thin(xs), cut_off(model, graph, keep)(xs))
    thin.save(tmp_path / "thin.keras")
    assert_close(keras.models.load_model(tmp_path / "thin.keras")(xs), thin(xs))


def test_a_call_that_needs_a_concrete_length_is_walked_and_rebuilt_only_as_its_class(rng):
    inp = keras.Input((None, 3), name="inp")
    x = L.Dense(3, name="stem")(inp)
    x = PositionalBlock(5, name="block")(x)
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(x)))
    graph = kp.analyze(model)
    inner, mid = graph.group_of("block/inner"), graph.group_of("block/mid")
    assert inner.prunable and mid.prunable and inner.size == 5
    # inner alone thinner: no value of `units` builds that, and a graph of the block
    # would hold for the traced length only
    with pytest.raises(kp.RebuildError, match="fixed size") as caught:
        kp.rebuild(model, {inner.name: [0, 2, 4]}, graph=graph)
    assert "the new widths of layer 'inner' (kernel axis 1: 5 -> 3)" in str(caught.value)
    # both thinner alike: `units=3` builds it, the thin model takes any length
    keep = {inner.name: [0, 2, 4], mid.name: [1, 2, 3]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "functional model instead" warning
        thin = kp.rebuild(model, keep, graph=graph)
    assert type(thin.get_layer("block")) is PositionalBlock
    assert thin.get_layer("block").units == 3
    for length in (4, 9):
        x = rng.normal(size=(2, length, 3)).astype("float32")
        assert_close(thin(x), cut_off(model, graph, keep)(x))


def test_a_composite_whose_widths_follow_its_arguments_keeps_its_class(tmp_path, rng):
    inp = keras.Input((5, 3), name="inp")
    gate_in = keras.Input((5, 1), name="gate")
    x = L.Dense(4, name="stem")(inp)
    x = GatedBlock(4, name="block")(x, gate=gate_in)
    model = randomize(keras.Model([inp, gate_in], L.Dense(2, name="head")(x)))
    graph = kp.analyze(model)
    inner, outer = graph.group_of("block/inner"), graph.group_of("block/outer")
    keep = {inner.name: [1, 3], outer.name: [0, 2]}  # `units` sets both: 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        thin = kp.rebuild(model, keep, graph=graph)
    assert type(thin.get_layer("block")) is GatedBlock and thin.get_layer("block").units == 2
    xs = [rng.normal(size=(3, 5, 3)).astype("float32"), rng.uniform(size=(3, 5, 1)).astype("float32")]
    assert_close(thin(xs), cut_off(model, graph, keep)(xs))
    thin.save(tmp_path / "thin.keras")
    assert_close(keras.models.load_model(tmp_path / "thin.keras")(xs), thin(xs))


def _rebuild_without_warnings(model, keep, graph):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "functional model instead" warning
        return kp.rebuild(model, keep, graph=graph)


def _check_round_trip(thin, x, tmp_path):
    thin.save(tmp_path / "thin.keras")
    back = keras.models.load_model(tmp_path / "thin.keras")
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(thin(x)), rtol=1e-6, atol=1e-6)
    return back


def test_residual_blocks_whose_width_is_their_input_width_keep_their_class(tmp_path, rng):
    """Probed on the original input, ``width`` alone breaks the residual sum; probed
    with the input following it, it builds, and sets the residual group's width."""
    inp = keras.Input((8, 8, 3), name="inp")
    x = L.Conv2D(6, 1, name="stem")(inp)
    x = WidthBlock(6, 5, name="a")(x)
    x = WidthBlock(6, 4, name="b")(x)
    x = L.Conv2D(5, 1, name="after")(x)
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="pool")(x))))
    graph = kp.analyze(model)
    residual = graph.group_of("stem")
    assert {"a/conv2", "b/conv2"} <= {m.layer for m in residual.members}
    keep = {  # non-uniform across the two blocks: hidden 5 -> 2 and 4 -> 3
        residual.name: [0, 2, 3, 5],
        graph.group_of("a/conv1").name: [1, 4],
        graph.group_of("b/conv1").name: [0, 1, 3],
    }
    thin = _rebuild_without_warnings(model, keep, graph)
    a, b = thin.get_layer("a"), thin.get_layer("b")
    assert type(a) is WidthBlock and type(b) is WidthBlock
    assert (a.width, a.hidden, b.width, b.hidden) == (4, 2, 4, 3)
    x = _x(model)
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    back = _check_round_trip(thin, x, tmp_path)
    assert type(back.get_layer("b")) is WidthBlock


def test_a_residual_block_of_two_arguments_keeps_its_class_under_any_keep_set(rng):
    """ResidualBlock(filters, inner): ``filters`` follows the input, ``inner`` its own
    group, so a random keep-set is a change of its arguments too."""
    model = _net(ResidualBlock(4, 6, name="block"))
    graph = kp.analyze(model)
    keep = random_keep(graph, rng)
    thin = _rebuild_without_warnings(model, keep, graph)
    block = thin.get_layer("block")
    assert type(block) is ResidualBlock
    assert (block.filters, block.inner) == (
        len(keep[graph.group_of("stem").name]), len(keep[graph.group_of("block/conv_a").name])
    )
    x = _x(model)
    assert_close(thin(x), cut_off(model, graph, keep)(x))


def test_transformer_style_blocks_keep_their_class_with_a_thinner_residual(tmp_path, rng):
    """``x + ffn(norm(x))``: the residual width is no argument (the block reads it from
    its input); the original config called on the thin input builds it, ``hidden`` sets
    the rest, per block."""
    inp = keras.Input((5, 3), name="inp")
    x = L.Dense(6, name="stem")(inp)
    x = FeedForwardBlock(8, name="f1")(x)
    x = FeedForwardBlock(8, name="f2")(x)
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(x)))
    graph = kp.analyze(model)
    residual = graph.group_of("stem")
    assert residual.prunable and {"f1/ffn_out", "f2/ffn_out"} <= {m.layer for m in residual.members}
    keep = {
        residual.name: [1, 2, 5],
        graph.group_of("f1/ffn_in").name: [0, 2, 3, 6, 7],
        graph.group_of("f2/ffn_in").name: [4, 5],
    }
    thin = _rebuild_without_warnings(model, keep, graph)
    f1, f2 = thin.get_layer("f1"), thin.get_layer("f2")
    assert type(f1) is FeedForwardBlock and (f1.hidden, f2.hidden) == (5, 2)
    assert f2.ffn_out.units == 3
    x = rng.normal(size=(3, 5, 3)).astype("float32")
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    _check_round_trip(thin, x, tmp_path)


def test_two_arguments_that_must_change_together_are_solved_together(tmp_path, rng):
    """GroupedHeads(4, 4) -> (2, 2): 2 query heads with 4 key-value heads is refused,
    2 key-value heads alone leave the queries unexplained; probed together they build."""
    inp = keras.Input((5, 3), name="inp")
    x = L.Dense(4, name="stem")(inp)
    x = GroupedHeads(4, 4, name="heads")(x)
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(x)))
    graph = kp.analyze(model)
    keep = {graph.group_of("heads/query").name: [0, 1, 4, 7], graph.group_of("heads/key").name: [2, 3, 5, 6]}
    thin = _rebuild_without_warnings(model, keep, graph)
    heads = thin.get_layer("heads")
    assert type(heads) is GroupedHeads
    assert (heads.num_query_heads, heads.num_key_value_heads) == (2, 2)
    x = rng.normal(size=(3, 5, 3)).astype("float32")
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    _check_round_trip(thin, x, tmp_path)
    # 3 query heads for 2 key-value heads: refused by the class, so a functional block
    keep[graph.group_of("heads/query").name] = [0, 1, 4, 5, 6, 7]
    with pytest.warns(UserWarning, match="composite layer 'heads'"):
        kp.rebuild(model, keep, graph=graph)


@keras.saving.register_keras_serializable(package="kptest")
class CausalBlock(keras.layers.Layer):
    """A user's self-attention block that builds its causal mask from the input's length
    and sets its head width from ``hidden // heads`` (no config holds fewer heads)."""

    def __init__(self, hidden: int, heads: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.heads = hidden, heads
        self.attention = L.MultiHeadAttention(heads, hidden // heads, name="attention")
        self.norm = L.LayerNormalization(name="norm")

    def build(self, shape):
        self.attention.build(shape, shape)
        self.norm.build(shape)

    def call(self, x):
        length = keras.ops.shape(x)[1]
        mask = keras.ops.tril(keras.ops.ones((length, length), "bool"))
        return self.norm(x + self.attention(x, x, attention_mask=mask[None]))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "heads": self.heads}


def _causal_block_graph(block, kept, x):
    attention = L.MultiHeadAttention.from_config(block.attention.get_config())
    norm = L.LayerNormalization.from_config(block.norm.get_config())
    return norm(x + attention(x, x, use_causal_mask=True))


def test_a_users_graph_stand_in_frees_the_heads_of_a_block_its_class_cannot_thin(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, 16))
    model = keras.Model(inp, L.Dense(3, name="head")(CausalBlock(16, 4, name="block")(inp)))
    heads = kp.analyze(model)["block/attention/heads"]
    assert not heads.prunable and "no config of it builds fewer heads" in heads.reason
    kp.graph.register_graph_stand_in(CausalBlock, _causal_block_graph)  # a test-only class
    graph = kp.analyze(model)
    heads = graph["block/attention/heads"]
    assert heads.prunable and "a functional model of core Keras layers stands in" in heads.outside_class[0]
    keep = {heads.name: [0, 3]}
    with pytest.warns(UserWarning, match=r"1 block is rebuilt as its stand-in \(CausalBlock as"):
        thin = kp.rebuild(model, keep, graph=graph)
    assert thin.get_layer("block").get_layer("attention").num_heads == 2
    reference = cut_off(model, graph, keep)
    rng = np.random.default_rng(0)
    for length in (5, 9):  # the block was traced at one length; its stand-in holds for any
        x = rng.normal(size=(2, length, 16)).astype("float32")
        assert_close(thin(x), reference(x))
        assert np.abs(keras.ops.convert_to_numpy(model(x) - thin(x))).max() > 1e-3
    _check_round_trip(thin, x, tmp_path)
