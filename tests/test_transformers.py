"""keras-hub causal language models pruned the way a user would: ``kp.prune`` with
``uniform=True``, by channels and by parameters, and ``GradualPruner`` with the model's
own loss.

Tiny configs (2 blocks, hidden 16, vocabulary 100) built from their constructors, random
weights, no preset. The uniform thin model is the same keras-hub class (its constructor
builds it), ``generate()`` runs on it, it equals the original with the removed FFN units
and heads cut off (``reference.cut_off``, independent of kerasprune's handlers), and it
survives a ``.keras`` round trip.
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict

import keras
import numpy as np
import pytest
from reference import assert_close, cut_off

import kerasprune as kp

keras_hub = pytest.importorskip("keras_hub")
M = keras_hub.models
VOCAB = 100
numpy = keras.ops.convert_to_numpy  # a torch output that requires grad has no __array__


def _gpt2():
    return M.GPT2CausalLM(
        backbone=M.GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16,
                                intermediate_dim=32, max_sequence_length=16),
        preprocessor=None,
    )


def _llama():
    return M.LlamaCausalLM(
        backbone=M.LlamaBackbone(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4,
                                 num_key_value_heads=2, hidden_dim=16, intermediate_dim=32),
        preprocessor=None,
    )


def _mistral():
    return M.MistralCausalLM(
        backbone=M.MistralBackbone(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4,
                                   num_key_value_heads=2, hidden_dim=16, intermediate_dim=32),
        preprocessor=None,
    )


def _gemma():
    return M.GemmaCausalLM(
        backbone=M.GemmaBackbone(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4,
                                 num_key_value_heads=2, hidden_dim=16, intermediate_dim=32,
                                 head_dim=4),
        preprocessor=None,
    )


LMS: Dict[str, Callable[[], keras.Model]] = {
    "GPT2": _gpt2, "Llama": _llama, "Mistral": _mistral, "Gemma": _gemma,
}


def lm_for(family: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    return LMS[family]()


def tokens(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"token_ids": rng.integers(1, VOCAB, (2, 8)).astype("int32"),
            "padding_mask": np.ones((2, 8), "int32")}


def quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("family", list(LMS))
def test_uniform_selection_rebuilds_a_causal_lm_as_its_class_equal_to_the_cut_off_original(
    family, tmp_path
):
    lm = lm_for(family)
    graph = quietly(kp.analyze, lm)
    keep = kp.select(graph, kp.score(lm, "l1", graph=graph), 0.3, uniform=True)
    assert keep, "nothing selected"
    # the same number removed from every block, per kind of group
    removed = sorted(graph[name].size - len(idx) for name, idx in keep.items())
    assert removed[0] > 0 and len(set(removed)) <= 2  # FFN units, heads
    thin = quietly(kp.rebuild, lm, keep, graph=graph)
    assert type(thin) is type(lm) and type(thin.backbone) is type(lm.backbone)
    x = tokens()
    reference = cut_off(lm, graph, keep)(x)
    assert_close(thin(x), reference)
    assert np.abs(numpy(lm(x)) - numpy(reference)).max() > 1e-4  # it did remove
    path = tmp_path / "thin.keras"
    thin.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(numpy(loaded(x)), numpy(thin(x)), rtol=1e-5, atol=1e-6)
    prompt = {"token_ids": np.array([[1, 5, 7, 0, 0, 0]]), "padding_mask": np.array([[1, 1, 1, 0, 0, 0]])}
    out = loaded.generate(prompt, max_length=6, stop_token_ids=None)
    assert out["token_ids"].shape == (1, 6) and (out["token_ids"][0, :3] == [1, 5, 7]).all()


@pytest.mark.parametrize("family", ["Llama", "Gemma"])
def test_prune_by_parameters_removes_that_fraction_of_a_causal_lms_parameters(family):
    lm = lm_for(family)
    thin = quietly(kp.prune, lm, 0.3, unit="params", uniform=True)
    before, after = kp.count_params(lm).total, kp.count_params(thin).total
    assert after == thin.count_params()  # counted like Keras counts them: nothing doubled
    assert abs((before - after) / before - 0.3) < 0.03
    assert type(thin) is type(lm)


@pytest.mark.parametrize("family", ["GPT2", "Gemma", "Llama"])
def test_non_uniform_causal_lm_is_a_plain_model_with_one_tied_embedding_equal_to_the_cut_off_original(
    family, tmp_path
):
    lm = lm_for(family)
    graph = quietly(kp.analyze, lm)
    keep = kp.select(graph, kp.score(lm, "l1", graph=graph), 0.3)
    with pytest.warns(UserWarning, match="plain functional"):
        thin = kp.rebuild(lm, keep, graph=graph)
    x = tokens()
    assert_close(thin(x), cut_off(lm, graph, keep)(x))
    embeddings = [layer for layer in thin.layers if type(layer).__name__ == "ReversibleEmbedding"]
    assert len(embeddings) == 1  # the logits still read the token embedding: tied, not copied
    assert thin.count_params() < lm.count_params()
    path = str(tmp_path / "thin.keras")
    thin.save(path)
    assert_close(keras.models.load_model(path)(x), thin(x))


def _padded(length: int, seed: int = 1) -> dict:
    x = {"token_ids": np.random.default_rng(seed).integers(1, VOCAB, (2, length)).astype("int32"),
         "padding_mask": np.ones((2, length), "int32")}
    x["padding_mask"][1, length - 3:] = 0
    return x


def test_gpt2_heads_go_with_a_core_keras_stand_in_that_holds_for_every_length(tmp_path):
    # TransformerDecoder sets key_dim = hidden_dim // num_heads: no config of it holds
    # fewer heads of the same width, and traced it builds its causal mask at one length.
    # A functional model of core Keras layers (MultiHeadAttention applying the causal
    # mask itself) stands in for the blocks that lose heads.
    lm = lm_for("GPT2")
    graph = quietly(kp.analyze, lm)
    heads = graph["gpt2_backbone/transformer_layer_0/self_attention/heads"]
    assert heads.prunable and heads.outside_class
    ffn = graph.group_of("gpt2_backbone/transformer_layer_1/feedforward_intermediate_dense")
    keep = {heads.name: [1], ffn.name: list(range(0, 32, 3))}
    with pytest.warns(UserWarning, match=r"1 block is rebuilt as its stand-in \(TransformerDecoder as "
                                         "a functional model of core Keras layers"):
        thin = kp.rebuild(lm, keep, graph=graph)
    blocks = {layer.name: layer for layer in thin.layers if "transformer_layer" in layer.name}
    assert type(blocks["transformer_layer_0"]).__name__ == "Functional"
    assert blocks["transformer_layer_0"].get_layer("self_attention").num_heads == 1
    assert type(blocks["transformer_layer_1"]) is keras_hub.layers.TransformerDecoder
    reference = cut_off(lm, graph, keep)
    for length in (8, 13):  # not only the length the block was traced at
        x = _padded(length)
        assert_close(thin(x), reference(x))
    path = str(tmp_path / "thin.keras")
    thin.save(path)
    assert_close(keras.models.load_model(path)(x), thin(x))
    # a uniform selection keeps every class: the heads stay
    keep = kp.select(graph, kp.score(lm, "l1", graph=graph), 0.3, uniform=True)
    assert keep and not any(name.endswith("/heads") for name in keep)


@pytest.mark.parametrize("normalize_first", [True, False])
def test_a_transformer_decoder_in_a_users_model_loses_heads_exactly_at_any_length(normalize_first, tmp_path):
    keras.utils.set_random_seed(2)
    x_in = keras.Input((None, 16))
    mask_in = keras.Input((None,), dtype="int32")
    y = keras_hub.layers.TransformerDecoder(32, 4, normalize_first=normalize_first)(
        x_in, decoder_padding_mask=mask_in)
    model = keras.Model([x_in, mask_in], keras.layers.Dense(3)(y))
    graph = quietly(kp.analyze, model)
    heads = [g for g in graph.prunable if g.name.endswith("/heads")]
    assert len(heads) == 1 and heads[0].size == 4
    keep = {heads[0].name: [0, 2]}
    thin = quietly(kp.rebuild, model, keep, graph=graph)
    reference = cut_off(model, graph, keep)
    rng = np.random.default_rng(0)
    for length in (5, 11):
        x = [rng.normal(size=(2, length, 16)).astype("float32"), np.ones((2, length), "int32")]
        x[1][0, -2:] = 0
        assert_close(thin(x), reference(x))
        assert np.abs(numpy(model(x)) - numpy(thin(x))).max() > 1e-4
    thin.save(tmp_path / "thin.keras")
    assert_close(keras.models.load_model(tmp_path / "thin.keras")(x), thin(x))


def test_gradual_pruner_runs_rounds_on_a_causal_lm_with_its_own_loss(tmp_path):
    import tensorflow as tf

    lm = lm_for("Mistral")
    lm.compile(optimizer=keras.optimizers.Adam(1e-3),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               weighted_metrics=["accuracy"])
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (16, 9)).astype("int32")
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones((16, 8), "int32")}
    data = tf.data.Dataset.from_tensor_slices((x, ids[:, 1:])).batch(8)
    pruner = kp.GradualPruner(tmp_path / "run", rounds=2, ratio=0.2, criterion="l1",
                              uniform=True, verbose=0)
    best = quietly(pruner.run, lm, data, data)
    assert type(best) is type(lm)
    widths = [row["params"] for row in pruner.history]
    assert len(widths) == 3 and widths[0] > widths[1] > widths[2]
    assert best.backbone.intermediate_dim < 32


def test_a_uniform_thin_causal_lm_keeps_its_preprocessor_and_generates_from_text(tmp_path):
    # a config carries no tokenizer vocabulary (an asset): the thin model built by the
    # class's constructor takes the original's preprocessor
    vocabulary = {"<|endoftext|>": 0, "Ġ": 1, "a": 2, "b": 3, "Ġa": 4, "Ġb": 5, "ab": 6}
    tokenizer = M.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ a", "Ġ b", "a b"])
    keras.utils.set_random_seed(0)
    lm = M.GPT2CausalLM(
        backbone=M.GPT2Backbone(vocabulary_size=7, num_layers=2, num_heads=2, hidden_dim=16,
                                intermediate_dim=32, max_sequence_length=16),
        preprocessor=M.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=8),
    )
    thin = quietly(kp.prune, lm, 0.3, uniform=True)
    assert type(thin) is M.GPT2CausalLM and thin.backbone.intermediate_dim < 32
    assert thin.preprocessor.tokenizer.get_vocabulary() == tokenizer.get_vocabulary()
    assert isinstance(thin.generate("a b", max_length=8), str)
    thin.save(tmp_path / "thin.keras")
    loaded = keras.models.load_model(tmp_path / "thin.keras")
    assert loaded.generate("a b", max_length=8) == thin.generate("a b", max_length=8)
