"""Attention heads of ``keras.layers.GroupQueryAttention`` and of keras-hub transformers.

A unit of a grouped-query layer's ``heads`` group is one key/value head with the query
heads sharing it. The reference (``reference.cut_off``) zeroes a removed unit's value
projection (kernel columns and bias): every query head sharing it then averages zero
values and adds nothing to the output, which is what removing the unit means.

The keras-hub part builds tiny backbones from their constructors (2 blocks, random
weights, no preset) and compares the thin model's outputs with the cut-off original's on
random token ids (padding mask all ones). The hidden-size group runs through keras-hub's
embeddings and norms and stays frozen here; only heads and FFN channels are removed.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Callable, Dict

import keras
import numpy as np
import pytest
from models import L, randomize
from reference import assert_close, cut_off, random_keep

import kerasprune as kp

# -- keras.layers.GroupQueryAttention --------------------------------------------------------


def gqa_net(with_key: bool) -> keras.Model:
    """A residual block: grouped-query attention (self-attention on ``x``, or attention
    on a memory with a key input of its own width and a gate), then a Dense FFN."""
    inp = keras.Input((6, 5), name="inp")
    x = L.Dense(8, name="emb")(inp)
    inputs = [inp]
    if with_key:
        mem_in = keras.Input((4, 3), name="mem")
        inputs.append(mem_in)
        value = L.Dense(8, name="value_in")(mem_in)  # as wide as the query: one group
        key = L.Dense(5, name="key_in")(mem_in)
        gqa = L.GroupQueryAttention(head_dim=3, num_query_heads=6, num_key_value_heads=3,
                                    use_gate=True, name="gqa")
        a = gqa(x, value, key)
    else:
        gqa = L.GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2, name="gqa")
        a = gqa(x, x)
    x = L.Add(name="res")([x, a])
    h = L.Dense(10, activation="relu", name="ffn_in")(x)
    x = L.Add(name="res2")([x, L.Dense(8, name="ffn_out")(h)])
    out = L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(x))
    return randomize(keras.Model(inputs, out))


def _inputs(model: keras.Model, rng) -> list:
    return [rng.normal(size=(3,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]


@pytest.mark.parametrize("with_key", [False, True], ids=["self", "key_input"])
def test_grouped_query_heads_are_one_group_of_key_value_heads(with_key):
    graph = kp.analyze(gqa_net(with_key))
    heads = graph["gqa/heads"]
    assert heads.prunable and heads.size == (3 if with_key else 2)  # num_key_value_heads
    assert graph.group_of("ffn_in").prunable
    # the output and the value are as wide as the query: one residual group with them
    assert graph.group_of("emb") is graph.group_of("ffn_out")
    if with_key:
        assert graph.group_of("value_in") is graph.group_of("emb")
        assert graph.group_of("key_in").prunable and graph.group_of("key_in") is not graph.group_of("emb")


@pytest.mark.parametrize("with_key", [False, True], ids=["self", "key_input"])
def test_random_keep_rebuilds_to_the_cut_off_original_and_round_trips(with_key, rng, tmp_path):
    model = gqa_net(with_key)
    graph = kp.analyze(model)
    keep = random_keep(graph, rng)
    thin = kp.rebuild(model, keep, graph=graph)
    gqa = thin.get_layer("gqa")
    units = len(keep["gqa/heads"])
    assert (gqa.num_key_value_heads, gqa.num_query_heads, gqa.head_dim) == (units, 2 * units, 3)
    xs = _inputs(model, rng)
    ref = cut_off(model, graph, keep)(xs)
    assert_close(thin(xs), ref)
    assert np.abs(np.asarray(model(xs)) - np.asarray(ref)).max() > 1e-4
    thin.save(tmp_path / "thin.keras")
    np.testing.assert_array_equal(
        np.asarray(keras.models.load_model(tmp_path / "thin.keras")(xs)), np.asarray(thin(xs))
    )


def test_one_unit_keeps_all_the_query_heads_sharing_its_key_value_head(rng):
    """Keeping key/value head 1 of 3 keeps query heads 2 and 3: the thin layer's query
    kernel is those columns of the original's."""
    model = gqa_net(with_key=True)
    graph = kp.analyze(model)
    thin = kp.rebuild(model, {"gqa/heads": [1]}, graph=graph)
    old, new = model.get_layer("gqa"), thin.get_layer("gqa")
    np.testing.assert_array_equal(new._query_dense.kernel.numpy(), old._query_dense.kernel.numpy()[:, 2:4])
    np.testing.assert_array_equal(new._gate_dense.bias.numpy(), old._gate_dense.bias.numpy()[2:4])
    np.testing.assert_array_equal(new._key_dense.kernel.numpy(), old._key_dense.kernel.numpy()[:, 1:2])
    np.testing.assert_array_equal(new._output_dense.kernel.numpy(), old._output_dense.kernel.numpy()[2:4])
    xs = _inputs(model, rng)
    assert_close(thin(xs), cut_off(model, graph, {"gqa/heads": [1]})(xs))


def test_returned_scores_carry_each_unit_on_its_query_heads():
    """Scores ``(B, num_query_heads, T, S)`` reaching the model output freeze the heads."""
    inp = keras.Input((5, 4))
    x = L.Dense(6, name="emb")(inp)
    y, scores = L.GroupQueryAttention(head_dim=2, num_query_heads=4, num_key_value_heads=2, name="gqa")(
        x, x, return_attention_scores=True
    )
    graph = kp.analyze(keras.Model(inp, [L.Dense(2, name="head")(y), scores]))
    assert not graph["gqa/heads"].prunable
    assert graph["gqa/heads"].reason.startswith("reaches model output")


def test_a_subclass_with_its_own_attention_freezes_the_units():
    class Mixing(L.GroupQueryAttention):
        def _compute_attention(self, *args, **kwargs):
            return super()._compute_attention(*args, **kwargs)

    inp = keras.Input((5, 4))
    x = L.Dense(6, name="emb")(inp)
    y = Mixing(head_dim=2, num_query_heads=4, num_key_value_heads=2, name="gqa")(x, x)
    graph = kp.analyze(keras.Model(inp, L.Dense(2, name="head")(y)))
    assert "overrides _compute_attention" in graph["gqa/heads"].reason


def test_grouped_query_macs_match_the_hand_formula():
    T, S, E, K, H, G, D = 6, 4, 8, 5, 6, 3, 3  # lengths, query/key widths, heads, head_dim
    model = gqa_net(with_key=True)
    macs = kp.count_flops(model).per_layer["gqa"]
    proj = T * E * H * D * 2 + S * K * G * D + S * E * G * D + T * H * D * E  # q, gate, k, v, out
    assert macs == proj + H * T * S * 2 * D
    thin = kp.rebuild(model, {"gqa/heads": [0]}, graph=kp.analyze(model))
    h, g = 2, 1
    thin_proj = T * E * h * D * 2 + S * K * g * D + S * E * g * D + T * h * D * E
    assert kp.count_flops(thin).per_layer["gqa"] == thin_proj + h * T * S * 2 * D


# -- keras-hub -------------------------------------------------------------------------------

COMMON = dict(vocabulary_size=100, num_layers=2)
GQA = dict(num_query_heads=4, num_key_value_heads=2, hidden_dim=32, intermediate_dim=48)
LENGTH = 8


def _hub():
    return pytest.importorskip("keras_hub").models


HUB: Dict[str, Callable[[], keras.Model]] = {
    "GPT2": lambda: _hub().GPT2Backbone(num_heads=2, hidden_dim=16, intermediate_dim=32,
                                        max_sequence_length=32, **COMMON),
    "Bert": lambda: _hub().BertBackbone(num_heads=2, hidden_dim=16, intermediate_dim=32,
                                        max_sequence_length=32, **COMMON),
    "Llama": lambda: _hub().LlamaBackbone(**GQA, **COMMON),
    "Mistral": lambda: _hub().MistralBackbone(**GQA, head_dim=8, **COMMON),
    # multi-query: one key/value head, so a single unit per block
    "Gemma": lambda: _hub().GemmaBackbone(head_dim=8, num_query_heads=2, num_key_value_heads=1,
                                          hidden_dim=16, intermediate_dim=32, **COMMON),
    "Gemma_gqa": lambda: _hub().GemmaBackbone(head_dim=8, num_query_heads=4, num_key_value_heads=2,
                                              hidden_dim=16, intermediate_dim=32, **COMMON),
    # query/key norms over head_dim, logit soft-capping, sliding windows
    "Gemma3": lambda: _hub().Gemma3Backbone(**GQA, head_dim=8, image_size=16, vision_encoder=None,
                                            use_sliding_window_attention=True, sliding_window_size=4,
                                            attention_logit_soft_cap=20.0, **COMMON),
    "Qwen2": lambda: _hub().QwenBackbone(**GQA, **COMMON),
    "Qwen3": lambda: _hub().Qwen3Backbone(**GQA, head_dim=8, **COMMON),
    "Phi3": lambda: _hub().Phi3Backbone(**GQA, **COMMON),
}

# family -> (prunable head units, prunable FFN channels), both blocks together. GPT-2's
# TransformerDecoder sets key_dim = hidden_dim // num_heads, and Qwen2's attention
# head_dim = hidden_dim // num_query_heads, but a functional model of the same layers
# stands in for their blocks (their heads go, outside their class). So do Llama's and
# Phi-3's attention, and a MistralTransformerDecoder with head_dim stated stands in for
# their blocks (kerasprune.graph.stand_ins). Gemma's FFN is two Dense-like EinsumDense gates of intermediate_dim // 2
# units.
COUNTS = {
    "GPT2": (4, 64), "Bert": (4, 64), "Llama": (4, 96), "Mistral": (4, 96), "Gemma": (2, 32),
    "Gemma_gqa": (4, 32), "Gemma3": (4, 96), "Qwen2": (4, 96), "Qwen3": (4, 96), "Phi3": (4, 96),
}

# family -> channels removed from (block 0, block 1) of the head and FFN groups: a
# non-uniform keep-set (the blocks differ), which makes the backbone a plain functional
# model whose decoder blocks are rebuilt as their own class
NON_UNIFORM = {"heads": (1, 0), "ffn": (5, 9)}

# family -> the RebuildError a non-uniform keep-set meets in surgery/ (None: rebuilt)
NON_UNIFORM_FAILS = {
    # Qwen3TransformerDecoder.get_config() leaves out head_dim, a required argument: the
    # block cannot be built from its config, and a graph of its sublayers would hold for
    # the traced length only
    "Qwen3": "fixed size",
}


def hub_model(family: str) -> keras.Model:
    return randomize(HUB[family](), scale=0.2)


def hub_inputs(model: keras.Model) -> dict:
    rng = np.random.default_rng(3)
    out = {}
    for name in model.input:
        if name == "token_ids":
            out[name] = rng.integers(0, 100, (2, LENGTH)).astype("int32")
        elif name == "padding_mask":
            out[name] = np.ones((2, LENGTH), "int32")
        else:  # segment ids
            out[name] = np.zeros((2, LENGTH), "int32")
    return out


def _kind(group) -> str:
    return "heads" if group.name.endswith("/heads") else "ffn"


def _block(group) -> int:
    return 0 if "_0/" in group.name else 1


def non_uniform_keep(graph: kp.PruningGraph, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    keep = {}
    for g in graph.prunable:
        n = g.size - NON_UNIFORM[_kind(g)][_block(g)]
        if g.size > 1 and n < g.size:
            keep[g.name] = np.sort(rng.choice(g.size, n, replace=False)).tolist()
    return keep


def rebuild_quietly(model, keep, graph):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kp.rebuild(model, keep, graph=graph)


def check_thin(model, graph, keep, thin, path) -> None:
    """The thin model equals the cut-off original, the removed channels mattered, and a
    ``.keras`` round trip gives the same outputs."""
    x = hub_inputs(model)
    out = thin(x)
    ref = cut_off(model, graph, keep)(x)
    assert_close(out, ref)
    numpy = keras.ops.convert_to_numpy
    diff = max(float(np.abs(numpy(a) - numpy(b)).max())
               for a, b in zip(keras.tree.flatten(model(x)), keras.tree.flatten(ref)))
    assert diff > 1e-4
    thin.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(keras.tree.flatten(loaded(x)), keras.tree.flatten(out)):
        np.testing.assert_array_equal(numpy(a), numpy(b))


def _counts(graph: kp.PruningGraph) -> tuple:
    return (sum(g.size for g in graph.prunable if _kind(g) == "heads"),
            sum(g.size for g in graph.prunable if _kind(g) == "ffn"))


@pytest.mark.parametrize("family", list(HUB))
def test_keras_hub_heads_and_ffn_rebuild_to_the_cut_off_original(family, tmp_path):
    model = hub_model(family)
    graph = kp.analyze(model)
    assert _counts(graph) == COUNTS[family]
    keep = non_uniform_keep(graph)
    fails = NON_UNIFORM_FAILS.get(family)
    if fails is not None:
        with pytest.raises(kp.RebuildError, match=fails):
            rebuild_quietly(model, keep, graph)
        keep = random_keep(graph, np.random.default_rng(0))  # the same in every block
        thin = rebuild_quietly(model, keep, graph)
        assert type(thin) is type(model)  # the backbone's own constructor builds it
    else:
        thin = rebuild_quietly(model, keep, graph)
    check_thin(model, graph, keep, thin, tmp_path / "thin.keras")


def _reasons(graph: kp.PruningGraph, suffix: str) -> list:
    return [g.reason for g in graph.groups if g.name.endswith(suffix)]


def test_llama_heads_go_through_its_mistral_stand_in_and_a_uniform_selection_keeps_them(tmp_path):
    model = hub_model("Llama")
    graph = kp.analyze(model)
    heads = [g for g in graph.groups if g.name.endswith("/heads")]
    assert len(heads) == 2 and all(g.prunable for g in heads)
    assert all("MistralTransformerDecoder stands in" in g.outside_class[0] for g in heads)
    lines = []
    graph.summary(print_fn=lines.append, show_frozen=False)
    assert sum(" yes* " in line for line in lines) == 2 and "stand-in" in lines[-1]
    keep = kp.select(graph, kp.score(model, "l1", graph=graph), 0.5, scope="layerwise", uniform=True)
    assert not any(name.endswith("/heads") for name in keep)  # the class stays LlamaBackbone
    assert type(rebuild_quietly(model, keep, graph)) is type(model)
    keep = {heads[0].name: [1]}  # one key/value unit (2 query heads) of block 0
    with pytest.warns(UserWarning, match="2 blocks are rebuilt as their stand-ins "
                                         r"\(LlamaTransformerDecoder as MistralTransformerDecoder\)"):
        thin = kp.rebuild(model, keep, graph=graph)
    blocks = [layer for layer in thin.layers if "transformer_layer" in layer.name]
    assert [type(b).__name__ for b in blocks] == ["MistralTransformerDecoder"] * 2
    assert [b.sliding_window for b in blocks] == [None, None]
    assert [(b.num_query_heads, b.num_key_value_heads) for b in blocks] == [(2, 1), (4, 2)]
    check_thin(model, graph, keep, thin, tmp_path / "thin.keras")


def test_phi3_heads_go_through_its_mistral_stand_in_paired_by_sublayer_names(tmp_path):
    model = hub_model("Phi3")
    graph = kp.analyze(model)
    heads = [g for g in graph.groups if g.name.endswith("/heads")]
    assert all("MistralTransformerDecoder stands in" in g.outside_class[0] for g in heads)
    ffn = graph.group_of("transformer_layer_1/feedforward_intermediate_dense")
    keep = {heads[0].name: [0], ffn.name: list(range(0, 48, 2))}
    with pytest.warns(UserWarning, match=r"1 block is rebuilt as its stand-in \(Phi3Decoder as "
                                         r"MistralTransformerDecoder\)"):
        thin = kp.rebuild(model, keep, graph=graph)
    blocks = [layer for layer in thin.layers if "transformer_layer" in layer.name]
    # block 0 lost heads (its class cannot hold them), block 1 only FFN units (it can)
    assert [type(b).__name__ for b in blocks] == ["MistralTransformerDecoder", "Phi3Decoder"]
    assert (blocks[0].num_query_heads, blocks[0].num_key_value_heads) == (2, 1)
    assert blocks[1].intermediate_dim == 24
    check_thin(model, graph, keep, thin, tmp_path / "thin.keras")


@pytest.mark.parametrize("config", [dict(dropout=0.1), dict(
    rope_scaling_type="su", rope_scaling_short_factor=[1.0] * 4, rope_scaling_long_factor=[2.0] * 4,
    max_sequence_length=64, pretraining_sequence_length=32)])
def test_phi3_with_what_mistral_lacks_keeps_its_heads(config):
    # Phi-3 drops out after its feed-forward block and scales its rotary embedding ("su");
    # Mistral does neither, so it does not stand in
    graph = kp.analyze(_hub().Phi3Backbone(**GQA, **COMMON, **config))
    reasons = _reasons(graph, "/heads")
    assert len(reasons) == 2
    assert all("sets head_dim to its input width // num_query_heads" in r for r in reasons)


def test_qwen2_heads_go_with_a_graph_stand_in_that_holds_for_every_length(tmp_path):
    model = hub_model("Qwen2")
    graph = kp.analyze(model)
    heads = [g for g in graph.groups if g.name.endswith("/heads")]
    assert all("functional model of keras-hub and core Keras layers stands in" in g.outside_class[0]
               for g in heads)
    keep = {heads[1].name: [0]}
    with pytest.warns(UserWarning, match="QwenTransformerDecoder as a functional model"):
        thin = kp.rebuild(model, keep, graph=graph)
    attention = thin.get_layer("transformer_layer_1").get_layer("self_attention")
    assert attention.get_layer("query").kernel.shape == (32, 2, 8)  # 2 query heads of 8
    assert attention.get_layer("key").kernel.shape == (32, 1, 8)
    reference = cut_off(model, graph, keep)
    rng = np.random.default_rng(4)
    for length in (5, 12):
        x = {"token_ids": rng.integers(0, 100, (2, length)).astype("int32"),
             "padding_mask": np.ones((2, length), "int32")}
        x["padding_mask"][0, -2:] = 0
        assert_close(thin(x), reference(x))
    check_thin(model, graph, keep, thin, tmp_path / "thin.keras")


def test_qwen2_with_a_sliding_window_keeps_its_heads():
    # with a sliding window no stand-in covers Qwen2's block: its attention derives the
    # head width, so its heads stay
    graph = kp.analyze(_hub().QwenBackbone(**GQA, **COMMON, use_sliding_window_attention=True))
    reasons = _reasons(graph, "/heads")
    assert len(reasons) == 2
    assert all("sets head_dim to its input width // num_query_heads" in r for r in reasons)


def test_gpt2_decoder_blocks_are_walked_into_and_their_heads_have_a_graph_stand_in():
    """GPT-2's TransformerDecoder calls CachedMultiHeadAttention with ``cache=None``,
    which MultiHeadAttention.compute_output_spec does not take: the trace passes it."""
    graph = kp.analyze(HUB["GPT2"]())
    heads = graph["transformer_layer_0/self_attention/heads"]  # its width: hidden // heads
    assert heads.prunable and "functional model of core Keras layers stands in" in heads.outside_class[0]
    assert graph.group_of("transformer_layer_1/feedforward_intermediate_dense").prunable
    assert not any("cannot be traced" in r for g in graph.groups for r in g.reasons)


def test_keras_hub_attention_called_by_keyword_reads_its_hidden_states():
    """``LlamaAttention(hidden_states=x, attention_mask=m, cache=None, ...)`` style calls
    inside the blocks: the mask is no channel tensor, the hidden states are the query."""
    graph = kp.analyze(HUB["Mistral"]())
    path = "transformer_layer_0/self_attention"
    assert set(graph.record(path).slots) == {"heads", "query", "key", "value", "out"}
    hidden = graph.group_of("transformer_layer_0/feedforward_output_dense")
    assert graph.group_of(path, "query") is hidden and graph.group_of(path) is hidden
    assert graph.record(path).produced == {"heads", "out"}



def _hub_layer(module: str, name: str):
    pytest.importorskip("keras_hub")
    return getattr(importlib.import_module(f"keras_hub.src.models.{module}"), name)


def test_keras_hub_attention_in_a_functional_model_rebuilds_exactly_and_round_trips(rng, tmp_path):
    """A CachedMistralAttention on its own: the edited config keeps head_dim (derived
    from hidden // num_query_heads when built) explicit."""
    cls = _hub_layer("mistral.mistral_attention", "CachedMistralAttention")
    inp = keras.Input((5, 6), name="inp")
    x = L.Dense(16, name="emb")(inp)
    y = cls(num_query_heads=4, num_key_value_heads=2, name="att")(x)
    model = randomize(keras.Model(inp, L.Dense(3, name="head")(L.Add(name="res")([x, y]))))
    graph = kp.analyze(model)
    keep = {"att/heads": [1]}
    thin = kp.rebuild(model, keep, graph=graph)
    config = thin.get_layer("att").get_config()
    assert (config["num_query_heads"], config["num_key_value_heads"], config["head_dim"]) == (2, 1, 4)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    ref = cut_off(model, graph, keep)(x)
    assert_close(thin(x), ref)
    assert np.abs(np.asarray(model(x)) - np.asarray(ref)).max() > 1e-4
    thin.save(tmp_path / "thin.keras")
    np.testing.assert_array_equal(np.asarray(keras.models.load_model(tmp_path / "thin.keras")(x)), np.asarray(thin(x)))


def test_keras_hub_attention_given_a_key_value_cache_keeps_its_heads():
    cls = _hub_layer("mistral.mistral_attention", "CachedMistralAttention")
    inp, cache = keras.Input((1, 6)), keras.Input((2, 5, 2, 4), name="cache")
    x = L.Dense(16, name="emb")(inp)
    y, new_cache = cls(num_query_heads=4, num_key_value_heads=2, head_dim=4, name="att")(
        x, cache=cache, cache_update_index=2
    )
    graph = kp.analyze(keras.Model([inp, cache], [L.Dense(3, name="head")(y), new_cache]))
    assert "is given a key/value cache" in graph["att/heads"].reason
    assert graph.group_of("emb").prunable  # the hidden states are still the query


def test_gemma_attention_scaling_scores_by_its_width_keeps_heads_and_width():
    """``query_head_dim_normalize=False``: scores scaled by 1/sqrt(hidden // heads)."""
    cls = _hub_layer("gemma.gemma_attention", "CachedGemmaAttention")
    inp, mask = keras.Input((5, 6)), keras.Input((5, 5), dtype="int32", name="mask")
    x = L.Dense(16, name="emb")(inp)
    y = cls(head_dim=4, num_query_heads=4, num_key_value_heads=2, query_head_dim_normalize=False,
            name="att")(x, attention_mask=mask)
    graph = kp.analyze(keras.Model([inp, mask], L.Dense(3, name="head")(y)))
    assert "query_head_dim_normalize=False" in graph["att/heads"].reason
    assert "query_head_dim_normalize=False" in graph.group_of("emb").reason


def test_every_listed_keras_hub_attention_class_is_found_and_a_missing_one_is_skipped():
    pytest.importorskip("keras_hub")
    hub_attention = importlib.import_module("kerasprune.graph.handlers.hub_attention")
    found = {cls.__name__ for cls in hub_attention.registered_families()}
    assert found == {name for _, name, _ in hub_attention.FAMILIES} | {"CachedMultiHeadAttention"}
    assert hub_attention._find("keras_hub.src.models.no_such_model", "NoSuchAttention") is None
