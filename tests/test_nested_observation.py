"""Data-driven criteria on groups that live inside a nested model or a composite layer.

Such a group's channels are never a top-level tensor: kerasprune observes them by running
the model call by call (``FlatRunner``). The references here are independent of that:
activations computed by hand in numpy, or captured in a plain eager forward pass of the
original model (the input the reading layer receives), and feature-map gradients from a
``tf.GradientTape`` that watches that captured input.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List

import keras
import numpy as np
import pytest

import kerasprune as kp

try:  # the gradient references are tf.GradientTape: those tests need TensorFlow
    import tensorflow as tf
except ImportError:  # pragma: no cover
    tf = None

TOL = dict(rtol=2e-4, atol=1e-5)


def _group(graph: kp.PruningGraph, member: str) -> str:
    """The name of the group that ``member``'s output channels belong to."""
    for g in graph.groups:
        if any(m.layer == member and m.produced for m in g.members):
            return g.name
    raise AssertionError(f"no group is produced by {member}")


@contextlib.contextmanager
def _captured_input(layer: keras.layers.Layer, tape: Any = None) -> Iterator[List[Any]]:
    """While active, every eager call of ``layer`` appends its input to the yielded list
    (watched by ``tape`` when given, so gradients with respect to it can be taken)."""
    seen: List[Any] = []
    original = layer.call

    def call(inputs, *args, **kwargs):
        if tape is not None:
            tape.watch(inputs)
        seen.append(inputs)
        return original(inputs, *args, **kwargs)

    object.__setattr__(layer, "call", call)
    try:
        yield seen
    finally:
        object.__delattr__(layer, "call")


def _feature_references(model, reader, x, y, per_example_loss) -> Dict[str, np.ndarray]:
    """mean_gradient and taylor of the input of ``reader`` by brute-force autodiff."""
    with tf.GradientTape(persistent=True) as tape:
        with _captured_input(reader, tape) as seen:
            preds = model(x, training=False)
        loss = tf.reduce_sum(per_example_loss(y, preds))
    assert len(seen) == 1
    h = seen[0]
    g = tape.gradient(loss, h).numpy()
    h = h.numpy()
    axes = tuple(range(1, h.ndim - 1))
    mean_g = g.mean(axis=axes) if axes else g
    mean_hg = (h * g).mean(axis=axes) if axes else h * g
    return {"mean_gradient": np.abs(mean_g).mean(0), "taylor": np.abs(mean_hg).mean(0)}


def _response_references(h: np.ndarray) -> Dict[str, np.ndarray]:
    axes = tuple(range(1, h.ndim - 1))
    per_example = h.mean(axis=axes) if axes else h
    zeros = (h == 0).mean(axis=axes) if axes else (h == 0).astype(float)
    return {
        "mean_response": np.abs(per_example.mean(0)),
        "std_response": per_example.std(0),
        "apoz": 1.0 - zeros.mean(0),
    }


def _classification_loss(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def _dense(layer: keras.layers.Layer, a: np.ndarray) -> np.ndarray:
    w, b = (np.asarray(v, np.float64) for v in layer.get_weights())
    return a @ w + b


def _data(n: int = 24, features: int = 4, classes: int = 3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, n)
    return x, y


# ------------------------------------------------------------------ a nested functional model


def _nested_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    inner_in = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="inner_a")(inner_in)
    o = keras.layers.Dense(5, name="inner_b")(h)
    inner = keras.Model(inner_in, o, name="inner")
    x = keras.Input((4,))
    y = keras.layers.Dense(6, name="pre")(x)
    y = inner(y)
    out = keras.layers.Dense(3, name="head")(y)
    model = keras.Model(x, out, name="outer")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("criterion", ["mean_response", "std_response", "apoz"])
def test_responses_inside_a_nested_model_equal_numpy(criterion):
    model = _nested_model()
    x, y = _data()
    graph = kp.analyze(model)
    name = _group(graph, "inner/inner_a")
    inner = model.get_layer("inner")
    pre = _dense(model.get_layer("pre"), x.astype(np.float64))
    hidden = _relu(_dense(inner.get_layer("inner_a"), pre))
    scores = kp.score(model, criterion, data=(x, y), batch_size=8, normalization="none")
    np.testing.assert_allclose(scores[name], _response_references(hidden)[criterion], **TOL)


def test_a_top_level_tensor_read_only_inside_a_nested_model_is_observed():
    model = _nested_model()
    x, y = _data()
    name = _group(kp.analyze(model), "pre")
    pre = _dense(model.get_layer("pre"), x.astype(np.float64))
    scores = kp.score(model, "mean_response", data=(x, y), batch_size=8, normalization="none")
    np.testing.assert_allclose(scores[name], np.abs(pre.mean(0)), **TOL)


@pytest.mark.parametrize("criterion", ["mean_gradient", "taylor"])
def test_feature_gradients_inside_a_nested_model_equal_a_gradient_tape(criterion):
    if keras.backend.backend() != "tensorflow" or tf is None:
        pytest.skip("the reference is a tf.GradientTape")
    model = _nested_model()
    x, y = _data()
    name = _group(kp.analyze(model), "inner/inner_a")
    reader = model.get_layer("inner").get_layer("inner_b")
    ref = _feature_references(model, reader, x, y, _classification_loss)
    scores = kp.score(model, criterion, data=(x, y), batch_size=8, normalization="none")
    np.testing.assert_allclose(scores[name], ref[criterion], **TOL)


# ------------------------------------------------------------------ a composite residual block


class ResidualMLP(keras.layers.Layer):
    """``x + down(relu(up(x)))``: a composite layer (Dense sublayers, no handler)."""

    def __init__(self, width: int, hidden: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.up = keras.layers.Dense(hidden, activation="relu", name="up")
        self.down = keras.layers.Dense(width, name="down")

    def call(self, x):
        return x + self.down(self.up(x))


def _composite_model(sequence: bool = False) -> keras.Model:
    keras.utils.set_random_seed(2)
    x = keras.Input((None, 4) if sequence else (4,))
    y = keras.layers.Dense(6, name="stem")(x)
    y = ResidualMLP(6, 10, name="block")(y)
    if sequence:
        y = keras.layers.GlobalAveragePooling1D(name="pool")(y)
    out = keras.layers.Dense(3, name="head")(y)
    model = keras.Model(x, out, name="with_block")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("criterion", ["mean_response", "apoz"])
def test_responses_inside_a_composite_block_equal_numpy(criterion):
    model = _composite_model()
    x, y = _data()
    name = _group(kp.analyze(model), "block/up")
    block = model.get_layer("block")
    stem = _dense(model.get_layer("stem"), x.astype(np.float64))
    hidden = _relu(_dense(block.up, stem))
    scores = kp.score(model, criterion, data=(x, y), batch_size=8, normalization="none")
    np.testing.assert_allclose(scores[name], _response_references(hidden)[criterion], **TOL)


def test_responses_inside_a_composite_block_on_sequences_equal_numpy():
    model = _composite_model(sequence=True)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 5, 4)).astype("float32")
    y = rng.integers(0, 3, 16)
    name = _group(kp.analyze(model), "block/up")
    stem = _dense(model.get_layer("stem"), x.astype(np.float64))
    hidden = _relu(_dense(model.get_layer("block").up, stem))
    scores = kp.score(model, "mean_response", data=(x, y), batch_size=8, normalization="none")
    np.testing.assert_allclose(scores[name], _response_references(hidden)["mean_response"], **TOL)


@pytest.mark.parametrize("criterion", ["mean_gradient", "taylor"])
def test_feature_gradients_inside_a_composite_block_equal_a_gradient_tape(criterion):
    if keras.backend.backend() != "tensorflow" or tf is None:
        pytest.skip("the reference is a tf.GradientTape")
    model = _composite_model()
    x, y = _data()
    name = _group(kp.analyze(model), "block/up")
    ref = _feature_references(model, model.get_layer("block").down, x, y, _classification_loss)
    scores = kp.score(model, criterion, data=(x, y), batch_size=8, normalization="none")
    np.testing.assert_allclose(scores[name], ref[criterion], **TOL)


# ------------------------------------------------------------------ a keras-hub causal LM


def _llama():
    keras_hub = pytest.importorskip("keras_hub")
    kh = keras_hub.models
    keras.utils.set_random_seed(4)
    backbone = kh.LlamaBackbone(
        vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=32,
    )
    lm = kh.LlamaCausalLM(backbone=backbone, preprocessor=None)
    lm.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return lm


def _token_data(length: int, n: int = 16):
    ids = np.random.default_rng(5).integers(1, 100, (n, length + 1))
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones((n, length), "int32")}
    return x, ids[:, 1:]


def _sequence_loss(y, logits):
    per_token = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    return tf.reduce_mean(per_token, axis=1)


@pytest.mark.parametrize("length", [8, 12])
def test_llama_feedforward_responses_equal_the_captured_activations(length):
    """Length 12 is not the fixed length (8) the analysis traced the decoder blocks at."""
    lm = _llama()
    x, y = _token_data(length)
    name = _group(kp.analyze(lm), "llama_backbone/transformer_layer_1/feedforward_gate_dense")
    reader = lm.backbone.get_layer("transformer_layer_1")._feedforward_output_dense
    with _captured_input(reader) as seen:
        lm(x, training=False)
    hidden = np.asarray(keras.ops.convert_to_numpy(seen[0]), np.float64)
    for criterion in ("mean_response", "apoz"):
        # its heads (one leaf attention layer each, seen by no data criterion) left out
        scores = kp.score(lm, criterion, data=(x, y), batch_size=8, normalization="none",
                          exclude=["*/heads"])
        np.testing.assert_allclose(scores[name], _response_references(hidden)[criterion], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("length", [8, 12])
def test_llama_feedforward_gradients_equal_a_gradient_tape(length):
    if keras.backend.backend() != "tensorflow" or tf is None:
        pytest.skip("the reference is a tf.GradientTape")
    lm = _llama()
    x, y = _token_data(length)
    name = _group(kp.analyze(lm), "llama_backbone/transformer_layer_0/feedforward_gate_dense")
    reader = lm.backbone.get_layer("transformer_layer_0")._feedforward_output_dense
    ref = _feature_references(lm, reader, x, y, _sequence_loss)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    for criterion in ("mean_gradient", "taylor"):
        scores = kp.score(lm, criterion, data=data, normalization="none", exclude=["*/heads"])
        np.testing.assert_allclose(scores[name], ref[criterion], rtol=1e-3, atol=1e-6)


def test_a_feature_map_callback_refuses_a_group_inside_a_nested_model():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the saliency callbacks run on TensorFlow")
    from kerasprune.callbacks import SaliencyAccumulator

    model = _nested_model()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), model.loss)
    x, y = _data()
    acc = SaliencyAccumulator(criterion="mean_gradient", normalization="none")
    with pytest.raises(kp.errors.KerasPruneError, match="nested model or a composite layer"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[acc])


@pytest.mark.parametrize("criterion", ["mean_gradient", "taylor", "mean_response"])
def test_nested_and_composite_groups_score_as_in_the_same_network_written_flat(criterion):
    """On every backend: the network built again as one plain functional model with the
    same weights (its groups top-level, observed by the model's own graph)."""
    x, y = _data()
    for model, hidden in ((_nested_model(), "inner/inner_a"), (_composite_model(), "block/up")):
        inp = keras.Input((4,))
        if hidden == "inner/inner_a":
            inner = model.get_layer("inner")
            layers = [model.get_layer("pre"), inner.get_layer("inner_a"), inner.get_layer("inner_b")]
            clones = [keras.layers.Dense(6), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(5)]
            h = inp
            for clone in clones:
                h = clone(h)
            flat_out = h
        else:
            block = model.get_layer("block")
            layers = [model.get_layer("stem"), block.up, block.down]
            clones = [keras.layers.Dense(6), keras.layers.Dense(10, activation="relu"), keras.layers.Dense(6)]
            s = clones[0](inp)
            flat_out = keras.layers.Add()([s, clones[2](clones[1](s))])
        head = keras.layers.Dense(3)
        flat = keras.Model(inp, head(flat_out))
        for clone, layer in zip(clones + [head], layers + [model.get_layer("head")]):
            clone.set_weights(layer.get_weights())
        flat.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        name = _group(kp.analyze(model), hidden)
        flat_name = _group(kp.analyze(flat), clones[1].name)
        got = kp.score(model, criterion, data=(x, y), batch_size=8, normalization="none")[name]
        want = kp.score(flat, criterion, data=(x, y), batch_size=8, normalization="none")[flat_name]
        np.testing.assert_allclose(got, want, **TOL)


def test_a_nested_model_called_twice_is_observed_at_both_calls():
    """Each call of a shared nested model is a point of its own: the group gets the mean
    over them of the per-point statistic."""
    keras.utils.set_random_seed(6)
    inner_in = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="inner_a")(inner_in)
    inner = keras.Model(inner_in, keras.layers.Dense(5, name="inner_b")(h), name="inner")
    x = keras.Input((4,))
    a = inner(keras.layers.Dense(6, name="left")(x))
    b = inner(keras.layers.Dense(6, name="right")(x))
    out = keras.layers.Dense(3, name="head")(keras.layers.Concatenate()([a, b]))
    model = keras.Model(x, out)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xs, ys = _data()
    name = _group(kp.analyze(model, warn=False), "inner/inner_a")
    per_call = []
    for side in ("left", "right"):
        hidden = _relu(_dense(inner.get_layer("inner_a"), _dense(model.get_layer(side), xs.astype(np.float64))))
        per_call.append(_response_references(hidden)["mean_response"])
    scores = kp.score(model, "mean_response", data=(xs, ys), batch_size=8, normalization="none")
    np.testing.assert_allclose(scores[name], np.mean(per_call, axis=0), **TOL)
