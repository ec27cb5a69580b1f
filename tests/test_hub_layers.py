"""keras-hub's embedding and normalization layers: the hidden size (the residual stream)
of keras-hub transformers is prunable.

Tiny models are built from the layers themselves (random weights) and from the
constructors of keras-hub backbones and tasks (no preset is downloaded):

* ``ReversibleEmbedding``, tied (the logits read the table's columns, sliced once for
  both calls) and untied with ``logit_soft_cap``; ``PositionEmbedding``;
  ``TokenAndPositionEmbedding`` (walked inside as a composite layer);
  ``ViTPatchingAndEmbedding``; ``EinsumDense`` (Gemma's feed-forward): exact, so the
  thin model equals the original with the removed channels cut off, and every weight
  equals a numpy slice of the original's;
* the RMS normalizations of the decoder families and Keras's own: not exact, so the
  thin layer's output is checked against a numpy RMS over the kept channels;
* whole models: BERT with a Dense head (the hidden size prunable and rebuilt), a backbone
  (its output freezes the hidden size, by design), ViT, and the decoder families, whose
  hidden size no embedding, normalization or tied logits freeze (their attention layers
  have handlers of their own, elsewhere).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Dict, List

import keras
import numpy as np
import pytest
from keras import layers as L
from models import randomize
from reference import assert_close, cut_off

import kerasprune as kp
from kerasprune.errors import RebuildError
from kerasprune.graph.composite import iter_layers

keras_hub = pytest.importorskip("keras_hub")
M = keras_hub.models

VOCAB, WIDTH, SEQ = 20, 8, 6
KEEP = [0, 2, 3, 6]  # of WIDTH channels: the first and last kept, others removed


def token_ids(rng, n: int = 2, vocab: int = VOCAB, seq: int = SEQ) -> np.ndarray:
    return rng.integers(0, vocab, size=(n, seq)).astype("int32")


def group_with(graph: kp.PruningGraph, layer: str, slot: str = "out") -> kp.ChannelGroup:
    """The group with a member on ``layer``'s ``slot``."""
    found = [g for g in graph if any(m.layer == layer and m.slot == slot for m in g.members)]
    assert len(found) == 1, (layer, slot, [g.name for g in graph])
    return found[0]


def weights(model: keras.Model) -> Dict[str, Dict[str, np.ndarray]]:
    """path -> weight name -> array, for every layer (nested ones too)."""
    return {
        path: {v.name: np.asarray(v.numpy()) for v in layer.weights}
        for path, layer in iter_layers(model)
    }


def round_trip(model: keras.Model, x, tmp_path) -> None:
    model.save(tmp_path / "thin.keras")
    loaded = keras.models.load_model(tmp_path / "thin.keras")
    assert_close(loaded(x, training=False), model(x, training=False), rtol=1e-6)


# -- ReversibleEmbedding -------------------------------------------------------------


def tied_lm(tie_weights: bool = True) -> keras.Model:
    """A one-block language model: token embedding, a residual MLP, and logits from the
    embedding called in reverse (``tie_weights=False``: its own reverse table, and a
    soft cap on the logits)."""
    tokens = keras.Input((SEQ,), dtype="int32", name="tokens")
    emb = keras_hub.layers.ReversibleEmbedding(
        VOCAB, WIDTH, tie_weights=tie_weights, logit_soft_cap=None if tie_weights else 3.0, name="emb"
    )
    x = emb(tokens)
    h = L.Dense(12, activation="relu", name="up")(x)
    x = L.Add(name="res")([x, L.Dense(WIDTH, name="down")(h)])
    return randomize(keras.Model(tokens, emb(x, reverse=True)), seed=3)


@pytest.mark.parametrize("tie_weights", [True, False], ids=["tied", "untied"])
def test_reverse_embedding_reads_the_embedding_channels_and_freezes_the_vocabulary(tie_weights):
    graph = kp.analyze(tied_lm(tie_weights))
    hidden = group_with(graph, "emb")
    assert hidden.prunable and hidden.size == WIDTH
    assert {(m.layer, m.slot) for m in hidden.members} == {("emb", "out"), ("up", "in"), ("down", "out")}
    assert all(m.exact for m in hidden.members)
    vocab = [g for g in graph.frozen if g.size == VOCAB]
    assert len(vocab) == 1 and "reverse=True" in vocab[0].reason
    assert not graph.unsupported


@pytest.mark.parametrize("tie_weights", [True, False], ids=["tied", "untied"])
def test_reverse_embedding_rebuild_slices_its_tables_once_and_equals_cut_off(tie_weights, rng, tmp_path):
    model = tied_lm(tie_weights)
    graph = kp.analyze(model)
    keep = {group_with(graph, "emb").name: KEEP}
    thin = kp.rebuild(model, keep, graph=graph)
    old, new = weights(model), weights(thin)
    np.testing.assert_array_equal(new["emb"]["embeddings"], old["emb"]["embeddings"][:, KEEP])
    if tie_weights:  # one table for both calls
        assert list(new["emb"]) == ["embeddings"]
    else:
        np.testing.assert_array_equal(new["emb"]["reverse_embeddings"], old["emb"]["reverse_embeddings"][KEEP])
        assert thin.get_layer("emb").logit_soft_cap == 3.0
    np.testing.assert_array_equal(new["up"]["kernel"], old["up"]["kernel"][KEEP])
    np.testing.assert_array_equal(new["down"]["kernel"], old["down"]["kernel"][:, KEEP])
    np.testing.assert_array_equal(new["down"]["bias"], old["down"]["bias"][KEEP])
    x = token_ids(rng)
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    round_trip(thin, x, tmp_path)


# -- PositionEmbedding, TokenAndPositionEmbedding ------------------------------------------


def positions_model() -> keras.Model:
    """Token embedding + learned positions (added by the model), a Dense block, a head."""
    tokens = keras.Input((SEQ,), dtype="int32", name="tokens")
    x = L.Embedding(VOCAB, WIDTH, name="tok")(tokens)
    x = L.Add(name="sum")([x, keras_hub.layers.PositionEmbedding(10, name="pos")(x)])
    x = L.Dense(5, activation="relu", name="mid")(x)
    return randomize(keras.Model(tokens, L.Dense(3, name="head")(x)), seed=4)


def test_position_embedding_columns_are_coupled_to_its_input_and_equal_cut_off(rng, tmp_path):
    model = positions_model()
    graph = kp.analyze(model)
    hidden = group_with(graph, "pos")
    assert hidden.prunable and hidden is group_with(graph, "tok")
    assert all(m.exact for m in hidden.members)
    keep = {hidden.name: KEEP}
    thin = kp.rebuild(model, keep, graph=graph)
    old, new = weights(model), weights(thin)
    np.testing.assert_array_equal(new["pos"]["embeddings"], old["pos"]["embeddings"][:, KEEP])
    np.testing.assert_array_equal(new["tok"]["embeddings"], old["tok"]["embeddings"][:, KEEP])
    np.testing.assert_array_equal(new["mid"]["kernel"], old["mid"]["kernel"][KEEP])
    x = token_ids(rng)
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    round_trip(thin, x, tmp_path)


def test_position_embedding_of_a_model_input_is_frozen_with_it():
    inp = keras.Input((SEQ, WIDTH), name="features")
    pos = keras_hub.layers.PositionEmbedding(SEQ, name="pos")(inp)
    graph = kp.analyze(keras.Model(inp, L.Dense(3, name="head")(L.Add()([inp, pos]))))
    group = group_with(graph, "pos")
    assert not group.prunable and "fed by model input 'features'" in group.reasons


def test_token_and_position_embedding_is_walked_inside_and_keeps_its_class(rng, tmp_path):
    tokens = keras.Input((SEQ,), dtype="int32", name="tokens")
    x = keras_hub.layers.TokenAndPositionEmbedding(VOCAB, 10, WIDTH, name="tpe")(tokens)
    x = L.Dense(5, activation="relu", name="mid")(x)
    model = randomize(keras.Model(tokens, L.Dense(3, name="head")(x)), seed=5)
    graph = kp.analyze(model)
    assert not graph.unsupported
    hidden = group_with(graph, "tpe/token_embedding")
    assert hidden.prunable and hidden is group_with(graph, "tpe/position_embedding")
    keep = {hidden.name: KEEP}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to a functional graph of its sublayers
        thin = kp.rebuild(model, keep, graph=graph)
    layer = thin.get_layer("tpe")
    assert type(layer) is keras_hub.layers.TokenAndPositionEmbedding and layer.embedding_dim == len(KEEP)
    old, new = weights(model), weights(thin)
    for path in ("tpe/token_embedding", "tpe/position_embedding"):
        np.testing.assert_array_equal(new[path]["embeddings"], old[path]["embeddings"][:, KEEP])
    x = token_ids(rng)
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    round_trip(thin, x, tmp_path)


# -- EinsumDense -----------------------------------------------------------------------------


def test_einsum_dense_rows_and_units_are_sliced_like_numpy_and_equal_cut_off(rng, tmp_path):
    """Gemma's feed-forward einsums: ``btd,df->btf`` (with a bias) and ``...f,fd->...d``."""
    inp = keras.Input((5, 4), name="x")
    x = L.Dense(WIDTH, name="before")(inp)
    x = L.EinsumDense("btd,df->btf", output_shape=(None, 7), bias_axes="f", activation="relu", name="gate")(x)
    x = L.EinsumDense("...f,fd->...d", output_shape=6, name="proj")(x)
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(x)), seed=6)
    graph = kp.analyze(model)
    hidden, inner = group_with(graph, "before"), group_with(graph, "gate")
    assert hidden is group_with(graph, "gate", "in") and inner is group_with(graph, "proj", "in")
    assert hidden.prunable and inner.prunable and group_with(graph, "proj").prunable
    keep = {hidden.name: KEEP, inner.name: [1, 2, 5]}
    thin = kp.rebuild(model, keep, graph=graph)
    old, new = weights(model), weights(thin)
    np.testing.assert_array_equal(new["gate"]["kernel"], old["gate"]["kernel"][KEEP][:, [1, 2, 5]])
    np.testing.assert_array_equal(new["gate"]["bias"], old["gate"]["bias"][[1, 2, 5]])
    np.testing.assert_array_equal(new["proj"]["kernel"], old["proj"]["kernel"][[1, 2, 5]])
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    assert_close(thin(x), cut_off(model, graph, keep)(x))
    round_trip(thin, x, tmp_path)


def test_einsum_dense_that_does_not_contract_the_channels_freezes_them():
    inp = keras.Input((5, 4), name="x")
    x = L.Dense(WIDTH, name="before")(inp)
    x = L.EinsumDense("btd,tk->bkd", output_shape=(3, WIDTH), name="mix")(x)  # mixes the time steps
    graph = kp.analyze(keras.Model(inp, L.Dense(2, name="head")(x)))
    assert "does not contract its input's last axis" in group_with(graph, "before").reason


# -- ViTPatchingAndEmbedding -------------------------------------------------------------


def vit_patches():
    from keras_hub.src.models.vit.vit_layers import ViTPatchingAndEmbedding

    images = keras.Input((8, 8, 3), name="images")
    x = ViTPatchingAndEmbedding((8, 8), (4, 4), WIDTH, name="patches")(images)
    x = L.Dense(5, activation="relu", name="mid")(x)
    return randomize(keras.Model(images, L.Dense(3, name="head")(x)), seed=8)


def test_vit_patch_embedding_slices_its_filters_class_token_and_positions_exactly(rng):
    model = vit_patches()
    graph = kp.analyze(model)
    hidden = group_with(graph, "patches")
    assert hidden.prunable and all(m.exact for m in hidden.members)
    assert not group_with(graph, "patches", "in").prunable  # the image's channels
    keep = {hidden.name: KEEP}
    thin = kp.rebuild(model, keep, graph=graph)
    old, new = weights(model), weights(thin)["patches"]
    patches = old["patches"]
    np.testing.assert_array_equal(new["kernel"], patches["kernel"][..., KEEP])
    np.testing.assert_array_equal(new["bias"], patches["bias"][KEEP])
    np.testing.assert_array_equal(new["class_token"], patches["class_token"][..., KEEP])
    np.testing.assert_array_equal(new["embeddings"], patches["embeddings"][:, KEEP])
    np.testing.assert_array_equal(weights(thin)["mid"]["kernel"], old["mid"]["kernel"][KEEP])
    # keras-hub's layer cannot be cloned (see the round-trip test): cut off by hand
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    embedded = np.array(model.get_layer("patches")(x))
    embedded[..., [c for c in range(WIDTH) if c not in KEEP]] = 0
    want = model.get_layer("head")(model.get_layer("mid")(embedded))
    assert_close(thin(x), want)


@pytest.mark.xfail(
    strict=True,
    raises=TypeError,
    reason="keras-hub's ViTPatchingAndEmbedding.get_config() writes num_patches and "
    "num_positions, which its constructor refuses: no functional model holding it loads, "
    "pruned or not",
)
def test_vit_patch_embedding_model_survives_a_keras_file_round_trip(rng, tmp_path):
    model = vit_patches()
    graph = kp.analyze(model)
    thin = kp.rebuild(model, {group_with(graph, "patches").name: KEEP}, graph=graph)
    round_trip(thin, rng.normal(size=(2, 8, 8, 3)).astype("float32"), tmp_path)


# -- RMS normalizations --------------------------------------------------------------------

# (module, class, constructor arguments, how the scale applies after x / rms(x)): this
# file's own reading of each class's call
RMS_NORMS = [
    ("keras.layers", "RMSNormalization", {}, "scale"),
    ("keras_hub.src.models.llama.llama_layernorm", "LlamaLayerNorm", {}, "scale"),
    ("keras_hub.src.models.mistral.mistral_layer_norm", "MistralLayerNormalization", {}, "scale"),
    ("keras_hub.src.models.mixtral.mixtral_layer_norm", "MixtralLayerNormalization", {}, "scale"),
    ("keras_hub.src.models.qwen.qwen_layernorm", "QwenLayerNorm", {}, "scale"),
    ("keras_hub.src.models.qwen_moe.qwen_moe_layernorm", "QwenMoeLayerNorm", {}, "scale"),
    ("keras_hub.src.models.qwen3.qwen3_layernorm", "Qwen3LayerNorm", {}, "scale"),
    ("keras_hub.src.models.qwen3_moe.qwen3_moe_layernorm", "Qwen3MoeLayerNorm", {}, "scale"),
    ("keras_hub.src.models.qwen3_5.qwen3_5_layers", "Qwen3_5LayerNorm", {}, "one_plus"),
    ("keras_hub.src.models.qwen3_5.qwen3_5_layers", "Qwen3_5RMSNormGated", {}, "scale"),
    ("keras_hub.src.models.phi3.phi3_layernorm", "Phi3LayerNorm", {}, "scale"),
    ("keras_hub.src.models.gemma.rms_normalization", "RMSNormalization", {}, "one_plus"),
    ("keras_hub.src.models.gemma3.gemma3_layers", "RMSNormalization", {}, "one_plus"),
    ("keras_hub.src.models.gemma3n.rms_normalization", "Gemma3nRMSNorm", {"dim": WIDTH}, "scale"),
    ("keras_hub.src.models.gemma4.gemma4_layers", "RMSNormalization", {}, "scale"),
    ("keras_hub.src.models.gemma4.gemma4_layers", "Gemma4FrozenNorm", {}, "scale"),
    ("keras_hub.src.models.gemma4.gemma4_layers", "Gemma4VNorm", {}, "none"),
    ("keras_hub.src.models.t5.t5_layer_norm", "T5LayerNorm", {}, "scale"),
    ("keras_hub.src.models.gpt_oss.gpt_oss_layer_norm", "GptOssLayerNormalization", {}, "scale"),
    ("keras_hub.src.models.roformer_v2.roformer_v2_attention", "RoformerNorm", {}, "scale"),
    ("keras_hub.src.models.edrec.edrec_layers", "EdRecRMSNormalization", {}, "one_plus"),
    ("keras_hub.src.models.mobilenetv5.mobilenetv5_layers", "RmsNorm2d", {"dim": WIDTH}, "scale"),
]


def _norm_id(entry) -> str:
    module, name = entry[0], entry[1]
    return f"{module.rsplit('.', 1)[-1]}.{name}"


def _class(module: str, name: str) -> type:
    cls = getattr(importlib.import_module(module), name, None)
    if cls is None:  # pragma: no cover  (another keras-hub version)
        pytest.skip(f"{module} has no {name}")
    return cls


def rms_reference(x: np.ndarray, scale: List[np.ndarray], how: str, epsilon: float) -> np.ndarray:
    """``x / sqrt(mean(x**2) + epsilon)`` over the last axis, times the scale."""
    x = x.astype(np.float64)
    normed = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + epsilon)
    if how == "none":
        return normed
    s = scale[0].astype(np.float64)
    return normed * (1 + s if how == "one_plus" else s)


@pytest.mark.parametrize("entry", RMS_NORMS, ids=_norm_id)
def test_rms_norm_scale_is_sliced_and_normalizes_over_the_kept_channels(entry, rng, tmp_path):
    module, name, kwargs, how = entry
    inp = keras.Input((5, 4), name="x")
    x = L.Dense(WIDTH, name="before")(inp)
    x = _class(module, name)(name="norm", **kwargs)(x)
    model = randomize(keras.Model(inp, L.Dense(3, name="after")(x)), seed=9)
    graph = kp.analyze(model)
    hidden = group_with(graph, "before")
    assert hidden.prunable and hidden is group_with(graph, "after", "in")
    assert [m.exact for m in hidden.members if m.layer == "norm"] == [False]
    thin = kp.rebuild(model, {hidden.name: KEEP}, graph=graph)
    old, new = weights(model), weights(thin)
    scale = [w[..., KEEP] for w in old["norm"].values()]
    for got, want in zip(new["norm"].values(), scale):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(new["after"]["kernel"], old["after"]["kernel"][KEEP])
    norm = thin.get_layer("norm")
    z = rng.normal(size=(2, 5, len(KEEP))).astype("float32")
    epsilon = getattr(norm, "epsilon", None) or norm.eps
    assert_close(norm(z), rms_reference(z, scale, how, float(epsilon)))
    round_trip(thin, rng.normal(size=(2, 5, 4)).astype("float32"), tmp_path)


def test_keras_hub_rms_normalization_is_prunable_but_its_constructor_refuses_its_config():
    """keras_hub.layers.RMSNormalization (Flux) takes ``input_dim`` alone: not even
    ``name``, so no model holding it can be rebuilt from its config, pruned or not."""
    inp = keras.Input((5, 4), name="x")
    x = keras_hub.layers.RMSNormalization(WIDTH)(L.Dense(WIDTH, name="before")(inp))
    model = keras.Model(inp, L.Dense(3, name="after")(x))
    graph = kp.analyze(model)
    hidden = group_with(graph, "before")
    assert hidden.prunable
    with pytest.raises(RebuildError, match="RMSNormalization"):
        kp.rebuild(model, {hidden.name: KEEP}, graph=graph)


# -- keras-hub models ------------------------------------------------------------------------

TINY = dict(vocabulary_size=100, num_layers=2, hidden_dim=16, intermediate_dim=32)


def bert() -> keras.Model:
    return M.BertBackbone(num_heads=2, max_sequence_length=16, **TINY)


def with_head(backbone: keras.Model) -> keras.Model:
    """The backbone's sequence output through a Dense head, in a functional model."""
    out = backbone.output
    out = out["sequence_output"] if isinstance(out, dict) else out
    return keras.Model(backbone.input, L.Dense(3, name="head")(out))


def bert_inputs(rng) -> dict:
    ids = token_ids(rng, vocab=100, seq=8)
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}


def test_backbone_hidden_size_is_frozen_by_its_output_only():
    graph = kp.analyze(bert())
    hidden = group_with(graph, "token_embedding")
    assert hidden.size == 16
    assert hidden.reasons and all(r.startswith("reaches model output") for r in hidden.reasons)


def test_bert_hidden_size_with_a_head_is_one_prunable_group_that_rebuilds(rng, tmp_path):
    model = randomize(with_head(bert()), seed=10)
    graph = kp.analyze(model)
    assert not graph.unsupported
    hidden = group_with(graph, "token_embedding")
    assert hidden.prunable and hidden.size == 16
    for layer in ("position_embedding", "segment_embedding", "embeddings_layer_norm"):
        assert any(m.layer == layer for m in hidden.members), layer
    keep = [0, 1, 4, 5, 9, 12, 13, 15]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the encoders become functional graphs of their sublayers
        thin = kp.rebuild(model, {hidden.name: keep}, graph=graph)
    old, new = weights(model), weights(thin)
    for path in ("token_embedding", "position_embedding", "segment_embedding"):
        np.testing.assert_array_equal(new[path]["embeddings"], old[path]["embeddings"][:, keep])
    np.testing.assert_array_equal(new["embeddings_layer_norm"]["gamma"], old["embeddings_layer_norm"]["gamma"][keep])
    dense = "transformer_layer_0/feedforward_intermediate_dense"
    np.testing.assert_array_equal(new[dense]["kernel"], old[dense]["kernel"][keep])
    np.testing.assert_array_equal(new["head"]["kernel"], old["head"]["kernel"][keep])
    x = bert_inputs(rng)
    assert np.asarray(thin(x)).shape == np.asarray(model(x)).shape
    round_trip(thin, x, tmp_path)


def test_vit_hidden_size_with_a_head_is_one_prunable_group():
    backbone = M.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    graph = kp.analyze(with_head(backbone))
    assert not graph.unsupported
    hidden = group_with(graph, "vit_patching_and_embedding")
    assert hidden.prunable and hidden.size == 16


DECODERS = {
    "Llama": lambda: M.LlamaBackbone(num_query_heads=4, num_key_value_heads=2, **TINY),
    "Mistral": lambda: M.MistralBackbone(num_query_heads=4, num_key_value_heads=2, **TINY),
    "Qwen2": lambda: M.QwenBackbone(num_query_heads=4, num_key_value_heads=2, **TINY),
    "Phi3": lambda: M.Phi3Backbone(num_query_heads=4, num_key_value_heads=2, **TINY),
    "Gemma": lambda: M.GemmaBackbone(num_query_heads=2, num_key_value_heads=1, head_dim=8, **TINY),
}

# the classes of this change's handlers: none of them may freeze a decoder's hidden size
OWN = ("ReversibleEmbedding", "LayerNorm", "Normalization", "EinsumDense", "reaches model output")


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_decoder_hidden_size_is_frozen_by_no_embedding_norm_or_feed_forward(family):
    graph = kp.analyze(with_head(DECODERS[family]()), warn=False)
    hidden = group_with(graph, "token_embedding")
    assert hidden.size == 16
    norms = [m for m in hidden.members if m.slot == "channels" and not m.exact]
    assert len(norms) == 5  # two per decoder block and the final one
    assert not any(word in r for r in hidden.reasons for word in OWN), hidden.reasons
    unsupported = {cls for _, cls in graph.unsupported}
    assert all("Attention" in cls for cls in unsupported), unsupported


def test_causal_lm_logits_tie_the_hidden_size_to_the_token_embedding(rng):
    backbone = M.LlamaBackbone(num_query_heads=4, num_key_value_heads=2, **TINY)
    graph = kp.analyze(M.LlamaCausalLM(backbone=backbone, preprocessor=None), warn=False)
    hidden = group_with(graph, "llama_backbone/token_embedding")
    assert any(m.layer == "llama_backbone/sequence_output_layernorm" for m in hidden.members)
    assert not any(word in r for r in hidden.reasons for word in OWN), hidden.reasons
    vocab = [g for g in graph.frozen if g.size == 100]
    assert len(vocab) == 1 and "reverse=True" in vocab[0].reason


def test_vit_with_a_head_prunes_uniformly_as_its_class_and_names_the_unserializable_mlp_otherwise():
    # the uniform keep-set goes through ViTBackbone's own constructor (mlp_dim); a
    # non-uniform one would need keras-hub's ViT MLP serialized, which has no get_config
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32,
    )
    inp = keras.Input((16, 16, 3))
    model = keras.Model(inp, keras.layers.Dense(5, name="head")(backbone(inp)[:, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thin = kp.prune(model, 0.3, uniform=True)
        assert type(thin.get_layer(backbone.name)) is keras_hub.models.ViTBackbone
        assert kp.count_params(thin).total < kp.count_params(model).total
        graph = kp.analyze(model)
        ffn = [g for g in graph.prunable if g.exact and g.size == 32]  # the MLP units
        assert len(ffn) == 2
        keep = {ffn[0].name: np.arange(20), ffn[1].name: np.arange(24)}  # not uniform
        with pytest.raises(kp.RebuildError, match=r"ViTEncoderBlock.*cannot be serialized.*MLP"):
            kp.rebuild(model, keep, graph=graph)
