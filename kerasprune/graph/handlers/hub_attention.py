"""Handlers for keras-hub's attention layers.

Imported by the registry the first time a keras-hub layer is looked up (so importing
kerasprune never imports keras-hub).

* ``CachedMultiHeadAttention`` (GPT-2's, BART's and the other ``TransformerDecoder``
  blocks): a ``MultiHeadAttention`` with ``cache`` and ``cache_update_index`` call
  arguments, returning ``(output, cache)`` when given a cache. Handled like
  MultiHeadAttention (whole heads); a call given a cache keeps its heads (the cache holds
  them, computed outside the call).
* The grouped-query attention layers of the decoder families (Llama, Mistral, Mixtral,
  Qwen2, Qwen2-MoE, Qwen3, Qwen3-MoE, Phi-3, Gemma, Gemma3): self-attention on one
  ``hidden_states`` (Gemma: ``x``) tensor, its ``EinsumDense`` projections held as
  :class:`~kerasprune.graph.handlers.attention.GroupedHeads` says, by
  :class:`~kerasprune.graph.handlers.attention.GroupedQueryAttentionHandler`: a unit is
  a key/value head with the query heads sharing it. The attention mask (``(B, T, S)``,
  from the padding and causal masks) is not a channel tensor. Rotary embeddings, sliding
  windows and Gemma's logit soft-capping act over positions or within a head, and
  ``head_dim`` never changes, so removing a unit removes exactly its terms of the output
  projection.

The families differ in data only (:data:`FAMILIES`): attribute names, the kernel layout
(Gemma's are ``(heads, hidden, head_dim)``), per-head query/key norms (Qwen3, Gemma3,
over ``head_dim``), the name of the input argument, and whether the class has a
``head_dim`` argument. Llama, Mixtral, Qwen2, Qwen2-MoE and Phi-3 attention have none:
they set ``head_dim = hidden_dim // num_query_heads`` when built, so no config of theirs
builds fewer heads (or another hidden width) with the same ``head_dim``. Where another
class computes exactly what such a block computes and can be thinner, it stands in for
the block outside its class (:mod:`kerasprune.graph.stand_ins`); the heads of the others
stay (frozen with that reason):

* Llama's decoder block: a ``MistralTransformerDecoder`` without a sliding window
  (:func:`llama_as_mistral`; not with a Llama 3 rotary scaling);
* Phi-3's decoder block: a ``MistralTransformerDecoder``, its sublayers paired by name
  (:func:`phi3_as_mistral`; not with the ``"su"`` rotary scaling or dropout);
* GPT-2's ``TransformerDecoder`` (``key_dim = hidden_dim // num_heads``, self-attention
  only): a functional model of core Keras layers around a ``MultiHeadAttention`` that
  applies the causal mask (:func:`transformer_decoder_graph`), for any sequence length;
* Qwen2's decoder block without a sliding window: a functional model of its own layers
  with the attention rebuilt thin around ``keras.ops.dot_product_attention`` under the
  causal mask (:func:`qwen_decoder_graph`), for any sequence length;
* Mixtral, Qwen2-MoE, and Qwen2 with a sliding window: no stand-in, their heads stay.

Each class is looked up by module path; a keras-hub version without it is skipped.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Dict, List, Optional, Tuple

import keras
import keras_hub  # noqa: F401  (this module is imported only when keras-hub is in use)
import numpy as np

from kerasprune.graph.handlers._common import call_arg
from kerasprune.graph.handlers.attention import (
    GroupedHeads,
    MultiHeadAttentionHandler,
    register_grouped_attention,
)
from kerasprune.graph.registry import register_handler
from kerasprune.graph.stand_ins import register_graph_stand_in, register_stand_in

__all__ = [
    "CachedMultiHeadAttentionHandler", "FAMILIES", "registered_families", "llama_as_mistral",
    "phi3_as_mistral", "transformer_decoder_graph", "qwen_decoder_graph",
]

_MODELS = "keras_hub.src.models"

# projections named without a leading underscore
_PUBLIC = dict(query="query_dense", key="key_dense", value="value_dense", output="output_dense")
_GEMMA = dict(_PUBLIC, heads_axis=0, inputs=("x",), scale_unless="query_head_dim_normalize")
_QWEN3_NORMS = ("_query_dense_layer_norm", "_key_dense_layer_norm")

_COMMON = dict(gate=None, inputs=("hidden_states",), cache="cache")

#: (module, class name, how it holds its heads) of each grouped-query attention layer
FAMILIES: List[Tuple[str, str, GroupedHeads]] = [
    (f"{_MODELS}.llama.llama_attention", "LlamaAttention",
     GroupedHeads(**_COMMON, head_dim_key=None)),
    (f"{_MODELS}.mistral.mistral_attention", "CachedMistralAttention",
     GroupedHeads(**_COMMON)),
    (f"{_MODELS}.mixtral.mixtral_attention", "CachedMixtralAttention",
     GroupedHeads(**{**_COMMON, **_PUBLIC}, head_dim_key=None)),
    (f"{_MODELS}.qwen.qwen_attention", "QwenAttention",
     GroupedHeads(**_COMMON, head_dim_key=None)),
    (f"{_MODELS}.qwen_moe.qwen_moe_attention", "QwenMoeAttention",
     GroupedHeads(**{**_COMMON, **_PUBLIC, "output": "_output_dense"}, head_dim_key=None)),
    (f"{_MODELS}.qwen3.qwen3_attention", "Qwen3Attention",
     GroupedHeads(**_COMMON, head_norms=_QWEN3_NORMS)),
    (f"{_MODELS}.qwen3_moe.qwen3_moe_attention", "Qwen3MoeAttention",
     GroupedHeads(**_COMMON, head_norms=_QWEN3_NORMS)),
    (f"{_MODELS}.phi3.phi3_attention", "Phi3Attention",
     GroupedHeads(**{**_COMMON, **_PUBLIC}, head_dim_key=None)),
    (f"{_MODELS}.gemma.gemma_attention", "CachedGemmaAttention",
     GroupedHeads(**{**_COMMON, **_GEMMA})),
    (f"{_MODELS}.gemma3.gemma3_attention", "CachedGemma3Attention",
     GroupedHeads(**{**_COMMON, **_GEMMA}, head_norms=("query_norm", "key_norm"))),
]


def _find(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def registered_families() -> List[type]:
    """The keras-hub attention classes found in this keras-hub and handled here."""
    return list(_FOUND)


_FOUND: List[type] = []
for _module, _name, _spec in FAMILIES:
    _cls = _find(_module, _name)
    if isinstance(_cls, type):
        register_grouped_attention(_cls, _spec)
        _FOUND.append(_cls)


_CACHED_MHA = _find("keras_hub.src.layers.modeling.cached_multi_head_attention",
                    "CachedMultiHeadAttention")


class CachedMultiHeadAttentionHandler(MultiHeadAttentionHandler):
    """keras-hub's CachedMultiHeadAttention: MultiHeadAttention's heads, and a call
    argument ``cache`` (``(query, value, key, attention_mask, cache, ...)``)."""

    def cache_argument(self, node):
        return call_arg(node, 4, "cache")


if isinstance(_CACHED_MHA, type):
    register_handler(_CACHED_MHA)(CachedMultiHeadAttentionHandler)
    _FOUND.append(_CACHED_MHA)


# ---------------------------------------------------------------- stand-ins (stand_ins.py)

_LLAMA_DECODER = _find(f"{_MODELS}.llama.llama_decoder", "LlamaTransformerDecoder")
_MISTRAL_DECODER = _find(f"{_MODELS}.mistral.mistral_transformer_decoder", "MistralTransformerDecoder")

# Llama 3's rotary frequency adjustment, which Mistral's rotary embedding does not have
_LLAMA3_ROPE = ("rope_frequency_adjustment_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                "rope_pretraining_sequence_length")


def llama_as_mistral(layer) -> Optional[Dict[str, Any]]:
    """The ``MistralTransformerDecoder`` config computing what the
    ``LlamaTransformerDecoder`` ``layer`` computes (no sliding window, the head width
    stated), or None for a Llama 3 rotary scaling. Read from the layer's attributes:
    keras-hub 0.32's ``LlamaTransformerDecoder.get_config`` raises AttributeError."""
    if any(getattr(layer, k, None) is not None for k in _LLAMA3_ROPE):
        return None
    attention = layer._self_attention_layer
    head_dim = int(attention._query_dense.kernel.shape[-1])
    return {
        "name": layer.name,
        "trainable": layer.trainable,
        "dtype": keras.saving.serialize_keras_object(layer.dtype_policy),
        "intermediate_dim": int(layer.intermediate_dim),
        "num_query_heads": int(layer.num_query_heads),
        "num_key_value_heads": int(layer.num_key_value_heads),
        "rope_max_wavelength": layer.rope_max_wavelength,
        "rope_scaling_factor": layer.rope_position_scaling_factor,
        "activation": keras.activations.serialize(layer.activation),
        "layer_norm_epsilon": layer.layer_norm_epsilon,
        "kernel_initializer": keras.initializers.serialize(layer.kernel_initializer),
        "sliding_window": None,
        "dropout": layer.dropout,
        "head_dim": head_dim,
    }


_PHI3_DECODER = _find(f"{_MODELS}.phi3.phi3_decoder", "Phi3Decoder")

#: Phi3Decoder's sublayers -> the MistralTransformerDecoder's holding the same weights
PHI3_AS_MISTRAL_NAMES = {
    "pre_attention_layernorm": "self_attention_layernorm",
    "attention": "self_attention",
    "post_attention_layernorm": "feedforward_layernorm",
    "attention_dropout": "self_attention_dropout",
}


def phi3_as_mistral(layer) -> Optional[Dict[str, Any]]:
    """The ``MistralTransformerDecoder`` config computing what the ``Phi3Decoder``
    ``layer`` computes, or None where it does not: a rotary scaling (``"su"``), which
    Mistral's rotary embedding lacks, or dropout, which Phi-3 also applies after its
    feed-forward block and Mistral does not. Otherwise the two are the same: RMS
    normalization before the attention and before the SwiGLU feed-forward, grouped-query
    attention with the same rotary embedding and score scale, no biases."""
    if layer.rope_scaling_type is not None or layer.dropout:
        return None
    attention = layer.attention
    return {
        "name": layer.name,
        "trainable": layer.trainable,
        "dtype": keras.saving.serialize_keras_object(layer.dtype_policy),
        "intermediate_dim": int(layer.intermediate_dim),
        "num_query_heads": int(layer.num_query_heads),
        "num_key_value_heads": int(layer.num_key_value_heads),
        "rope_max_wavelength": layer.rope_max_wavelength,
        "rope_scaling_factor": 1.0,
        "activation": keras.activations.serialize(layer.activation),
        "layer_norm_epsilon": layer.layer_norm_epsilon,
        "kernel_initializer": keras.initializers.serialize(layer.kernel_initializer),
        "sliding_window": None,
        "dropout": 0,
        "head_dim": int(attention.query_dense.kernel.shape[-1]),
    }


if isinstance(_MISTRAL_DECODER, type):
    if isinstance(_LLAMA_DECODER, type):
        register_stand_in(_LLAMA_DECODER, _MISTRAL_DECODER, llama_as_mistral, head_dim="head_dim")
    if isinstance(_PHI3_DECODER, type):
        register_stand_in(_PHI3_DECODER, _MISTRAL_DECODER, phi3_as_mistral, head_dim="head_dim",
                          names=PHI3_AS_MISTRAL_NAMES)


_TRANSFORMER_DECODER = _find("keras_hub.src.layers.modeling.transformer_decoder", "TransformerDecoder")


def _fresh(sublayer, cls: Optional[type] = None):
    """A new, unbuilt layer with ``sublayer``'s config (and name), of class ``cls``."""
    return (cls or type(sublayer)).from_config(sublayer.get_config())


def _self_attention_only(layer) -> bool:
    return getattr(layer, "_cross_attention_layer", None) is None


def transformer_decoder_graph(
    layer, kept, decoder_sequence, encoder_sequence=None, decoder_padding_mask=None,
    decoder_attention_mask=None, encoder_padding_mask=None, encoder_attention_mask=None,
    self_attention_cache=None, self_attention_cache_update_index=None, cross_attention_cache=None,
    cross_attention_cache_update_index=None, use_causal_mask=True, training=None,
):
    """What a self-attention ``TransformerDecoder`` (GPT-2's, OPT's) call computes, with
    core Keras layers, for any sequence length (a graph stand-in: see
    :class:`~kerasprune.graph.stand_ins.GraphStandIn`).

    The block's ``CachedMultiHeadAttention`` becomes a ``keras.layers.MultiHeadAttention``
    of the same config: without a cache it computes the same, and it applies the causal
    mask itself (``use_causal_mask``), from the length it is called at, where the block
    builds it from ``ops.shape``. The padding mask enters as the block merges it (its
    keys' axis, ``(B, 1, S)``). Normalization first or after, as the block's
    ``normalize_first`` says. None for a call with a cache, an encoder sequence or an
    attention mask of its own. Its widths are edited afterwards (``kept`` is unused).
    """
    given = (encoder_sequence, decoder_attention_mask, encoder_padding_mask, encoder_attention_mask,
             self_attention_cache, self_attention_cache_update_index, cross_attention_cache,
             cross_attention_cache_update_index)
    if any(x is not None for x in given) or not _self_attention_only(layer):
        return None
    if getattr(decoder_sequence, "_keras_mask", None) is not None:
        return None  # the block would take it for the padding mask
    attention = _fresh(layer._self_attention_layer, keras.layers.MultiHeadAttention)
    attention_norm, attention_dropout = (_fresh(layer._self_attention_layer_norm),
                                         _fresh(layer._self_attention_dropout))
    ffn_norm, ffn_dropout = _fresh(layer._feedforward_layer_norm), _fresh(layer._feedforward_dropout)
    up, down = _fresh(layer._feedforward_intermediate_dense), _fresh(layer._feedforward_output_dense)
    mask = None
    if decoder_padding_mask is not None:
        mask = keras.ops.expand_dims(decoder_padding_mask, axis=1)
    first = layer.normalize_first
    x = residual = decoder_sequence
    if first:
        x = attention_norm(x)
    x = attention(x, x, attention_mask=mask, use_causal_mask=bool(use_causal_mask), training=training)
    x = attention_dropout(x, training=training) + residual
    if not first:
        x = attention_norm(x)
    residual = x
    if first:
        x = ffn_norm(x)
    x = ffn_dropout(down(up(x)), training=training) + residual
    if not first:
        x = ffn_norm(x)
    return x


if isinstance(_TRANSFORMER_DECODER, type):
    register_graph_stand_in(_TRANSFORMER_DECODER, transformer_decoder_graph, _self_attention_only)


_QWEN_DECODER = _find(f"{_MODELS}.qwen.qwen_decoder", "QwenTransformerDecoder")


def _qwen_attention_graph(attention, masks, padding: bool) -> keras.Model:
    """A functional model computing what ``QwenAttention`` ``attention`` computes
    without a cache (biased query/key/value projections, rotary embedding on queries and
    keys, grouped-query attention under the causal mask, output projection), with the
    key/value heads ``masks`` keeps (and the query heads that share them); the same
    weights in the same order."""
    groups = attention.num_query_heads // attention.num_key_value_heads
    units = attention.num_key_value_heads
    if masks is not None and masks.get("heads") is not None:
        units = int(np.count_nonzero(masks["heads"]))
    head_dim = int(attention._query_dense.kernel.shape[-1])
    hidden = int(attention._query_dense.kernel.shape[0])

    def projection(dense, heads):
        config = dense.get_config()
        config["output_shape"] = (None, heads, head_dim)
        return type(dense).from_config(config)

    query = projection(attention._query_dense, units * groups)
    key, value = projection(attention._key_dense, units), projection(attention._value_dense, units)
    output = _fresh(attention._output_dense)
    rotary = _fresh(attention.rotary_embedding_layer)
    dropout = _fresh(attention._dropout_layer)
    states = keras.Input((None, hidden), dtype=attention.compute_dtype)
    inputs = [states]
    mask = None
    if padding:
        inputs.append(keras.Input((None,), dtype="int32"))
        mask = keras.ops.cast(keras.ops.expand_dims(keras.ops.expand_dims(inputs[1], 1), 1), "bool")
    q = rotary(query(states))
    k = rotary(key(states))
    v = value(states)
    k, v = (keras.ops.repeat(t, groups, axis=2) for t in (k, v))
    attended = keras.ops.dot_product_attention(q, k, v, mask=mask, scale=1.0 / math.sqrt(head_dim),
                                               is_causal=True)
    return keras.Model(inputs, output(dropout(attended)), name=attention.name)


def qwen_decoder_graph(
    layer, kept, decoder_sequence, decoder_padding_mask=None, decoder_attention_mask=None,
    self_attention_cache=None, self_attention_cache_update_index=None, training=None,
):
    """What a ``QwenTransformerDecoder`` (Qwen2) call computes, for any sequence length
    (a graph stand-in: see :class:`~kerasprune.graph.stand_ins.GraphStandIn`): RMS
    normalization, the attention as :func:`_qwen_attention_graph` builds it with the
    heads ``kept["self_attention"]`` keeps (``keras.ops.dot_product_attention`` applies
    the causal mask at the length it is called at), SwiGLU feed-forward, residuals.
    None for a call with a cache or an attention mask of its own, or a block with a
    sliding window."""
    if any(x is not None for x in (decoder_attention_mask, self_attention_cache,
                                   self_attention_cache_update_index)):
        return None
    if not _no_sliding_window(layer) or getattr(decoder_sequence, "_keras_mask", None) is not None:
        return None
    masks = kept.get("self_attention")
    if masks is not None and any(masks.get(k) is not None for k in masks if k != "heads"):
        return None  # only whole heads: its widths stay
    attention = _qwen_attention_graph(layer._self_attention_layer, masks, decoder_padding_mask is not None)
    attention_norm, attention_dropout = (_fresh(layer._self_attention_layernorm),
                                         _fresh(layer._self_attention_dropout))
    ffn_norm = _fresh(layer._feedforward_layernorm)
    gate, up = _fresh(layer._feedforward_gate_dense), _fresh(layer._feedforward_intermediate_dense)
    down = _fresh(layer._feedforward_output_dense)
    activation = keras.layers.Activation(keras.activations.serialize(layer.activation), dtype="float32")
    x = attention_norm(decoder_sequence)
    x = attention([x, decoder_padding_mask] if decoder_padding_mask is not None else x)
    x = attention_dropout(x, training=training) + decoder_sequence
    h = ffn_norm(x)
    gated = keras.ops.cast(activation(keras.ops.cast(gate(h), "float32")), layer.compute_dtype)
    return down(keras.ops.multiply(up(h), gated)) + x


def _no_sliding_window(layer) -> bool:
    return not layer.use_sliding_window_attention


if isinstance(_QWEN_DECODER, type):
    register_graph_stand_in(_QWEN_DECODER, qwen_decoder_graph, _no_sliding_window, thin=("self_attention",),
                            what="a functional model of keras-hub and core Keras layers")
