"""Recurrent layers (units) and MultiHeadAttention (heads): exact thin models, saving, MACs.

The reference is the original model with the removed channels cut off where they are
created, zeroed by this file's own rules (independent of kerasprune's handlers):

* a recurrent unit ``j``: column ``j`` of every gate block of the kernel and of the
  recurrent kernel and entry ``j`` of every bias block. With zero pre-activations and a
  zero initial state the unit's hidden state stays exactly 0 (LSTM: ``c = f*0 + i*tanh(0)``,
  GRU: ``h = z*0 + (1-z)*tanh(0)``, SimpleRNN: ``tanh(0)``), so it feeds nothing on.
* an attention head ``h``: its rows ``[h]`` of the output projection kernel. Zeroing its
  query/key/value weights would not do (a softmax over zero scores is uniform, not 0);
  dropping the head's term of the output projection is exactly what removing it means.
* the output channel ``j`` of a MultiHeadAttention: column ``j`` of the output kernel and
  bias.
* Dense layers and the like: ``reference._zero_out``.
"""

import keras
import numpy as np
import pytest
from models import L, randomize
from reference import _zero_out, assert_close, random_keep

import kerasprune as kp
from kerasprune.graph.composite import iter_layers
from kerasprune.surgery.keep import keep_masks

# --------------------------------------------------------------------------- reference


def _zero_units(rnn_layer, removed):
    """Zero the removed units' gate columns and biases of one LSTM/GRU/SimpleRNN."""
    cell = rnn_layer.cell
    gates = {keras.layers.LSTMCell: 4, keras.layers.GRUCell: 3, keras.layers.SimpleRNNCell: 1}[
        type(cell)
    ]
    new = []
    for v in cell.weights:
        w = np.array(v.numpy())
        blocks = w.reshape(w.shape[:-1] + (gates, cell.units))
        blocks[..., removed] = 0
        new.append(blocks.reshape(w.shape))
    cell.set_weights(new)


def _zero_heads(mha, removed):
    w = [np.array(v.numpy()) for v in mha.output_dense.weights]
    w[0][removed] = 0  # kernel (heads, value_dim, out)
    mha.output_dense.set_weights(w)


def _zero_attention_out(mha, removed):
    w = [np.array(v.numpy()) for v in mha.output_dense.weights]
    w[0][..., removed] = 0
    if len(w) > 1:
        w[1][..., removed] = 0
    mha.output_dense.set_weights(w)


def cut_off(model, graph, keep):
    """A copy of ``model`` whose removed channels are zero where they are created."""
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    layers = dict(iter_layers(ref))
    for path, slots in graph.slot_masks(keep_masks(graph, keep)).items():
        layer = layers[path]
        for slot, mask in slots.items():
            removed = np.nonzero(~mask)[0]
            if isinstance(layer, keras.layers.Bidirectional) and slot in ("forward", "backward"):
                _zero_units(getattr(layer, f"{slot}_layer"), removed)
            elif isinstance(layer, keras.layers.Bidirectional) and slot == "out":
                units = layer.forward_layer.units  # forward units, then backward units
                _zero_units(layer.forward_layer, removed[removed < units])
                _zero_units(layer.backward_layer, removed[removed >= units] - units)
            elif isinstance(layer, keras.layers.RNN) and slot == "out":
                _zero_units(layer, removed)
            elif isinstance(layer, keras.layers.MultiHeadAttention):
                if slot == "heads":
                    _zero_heads(layer, removed)
                elif slot == "out":
                    _zero_attention_out(layer, removed)
            elif slot == "out":
                _zero_out(layer, removed)
    return ref


def _inputs(model, rng, batch=3):
    xs = [rng.normal(size=(batch,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    return xs[0] if len(xs) == 1 else xs


# --------------------------------------------------------------------------- models


def lstm_net():
    inp = keras.Input((6, 3), batch_size=3)  # a stateful layer needs a fixed batch
    x = L.Dense(5, name="emb")(inp)
    x = L.LSTM(6, stateful=True, unroll=True, name="rnn")(x)
    return keras.Model(inp, L.Dense(2, name="head")(x))


def gru_net(reset_after):
    def build():
        inp = keras.Input((6, 3))
        x = L.Dense(5, name="emb")(inp)
        x = L.GRU(6, reset_after=reset_after, return_sequences=True, name="rnn")(x)
        x = L.GlobalAveragePooling1D(name="gap")(x)
        return keras.Model(inp, L.Dense(2, name="head")(x))

    build.__name__ = f"gru_reset_after_{reset_after}"
    return build


def simple_rnn_net():
    inp = keras.Input((6, 3))
    x = L.Dense(5, name="emb")(inp)
    x = L.SimpleRNN(6, go_backwards=True, name="rnn")(x)
    return keras.Model(inp, L.Dense(2, name="head")(x))


def bidirectional_concat_net():
    inp = keras.Input((5, 3))
    x = L.Dense(4, name="emb")(inp)
    x = L.Bidirectional(L.LSTM(5, return_sequences=True), name="bi")(x)
    x = L.Dense(3, name="mix")(x)  # reads forward units, then backward units
    back = L.GRU(4, go_backwards=True, reset_after=False)
    x = L.Bidirectional(L.GRU(4), backward_layer=back, name="bi2")(x)
    return keras.Model(inp, L.Dense(2, name="head")(x))


def bidirectional_sum_net():
    inp = keras.Input((5, 3))
    x = L.Dense(4, name="emb")(inp)
    x = L.Bidirectional(L.SimpleRNN(5, return_sequences=True), merge_mode="sum", name="bi")(x)
    x = L.Bidirectional(L.LSTM(3), merge_mode="mul", name="bi2")(x)
    return keras.Model(inp, L.Dense(2, name="head")(x))


def stacked_net():
    inp = keras.Input((6, 3))
    x = L.Masking(0.0, name="mask")(inp)
    x = L.LSTM(5, return_sequences=True, name="r1")(x)
    x = L.GRU(4, return_sequences=True, name="r2")(x)
    x = L.SimpleRNN(4, return_sequences=True, name="r3")(x)
    x = L.RNN(L.LSTMCell(3), name="r4")(x)
    x = L.Dense(4, activation="relu", name="fc")(x)
    return keras.Model(inp, L.Dense(2, name="head")(x))


def self_attention_net():
    inp = keras.Input((5, 3))
    x = L.Dense(8, name="emb")(inp)
    y = L.MultiHeadAttention(4, 3, name="mha")(x, x)
    x = L.Add(name="res")([x, y])
    x = L.Dense(6, activation="relu", name="ff")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inp, L.Dense(2, name="head")(x))


def cross_attention_net():
    q_in = keras.Input((4, 3), name="q_in")
    kv_in = keras.Input((6, 2), name="kv_in")
    q = L.Dense(5, name="q_emb")(q_in)
    v = L.Dense(6, name="v_emb")(kv_in)
    k = L.Dense(7, name="k_emb")(kv_in)
    x = L.MultiHeadAttention(3, 2, value_dim=3, output_shape=6, use_gate=True, name="mha")(
        q, v, key=k
    )
    x = L.Dense(4, name="fc")(x)
    x = L.Flatten(name="flat")(x)
    return keras.Model([q_in, kv_in], L.Dense(2, name="head")(x))


FAMILIES = [
    lstm_net,
    gru_net(True),
    gru_net(False),
    simple_rnn_net,
    bidirectional_concat_net,
    bidirectional_sum_net,
    stacked_net,
    self_attention_net,
    cross_attention_net,
]

EXPECTED_PRUNABLE = {
    "lstm_net": {"emb", "rnn"},
    "gru_reset_after_True": {"emb", "rnn"},
    "gru_reset_after_False": {"emb", "rnn"},
    "simple_rnn_net": {"emb", "rnn"},
    "bidirectional_concat_net": {"emb", "bi", "mix", "bi2"},
    "bidirectional_sum_net": {"emb", "bi/forward+bi/backward", "bi2/forward+bi2/backward"},
    "stacked_net": {"r1", "r2", "r3", "r4", "fc"},
    "self_attention_net": {"emb+mha", "mha/heads", "ff"},
    "cross_attention_net": {"q_emb", "v_emb", "k_emb", "mha/heads", "mha", "fc"},
}


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("build", FAMILIES, ids=lambda f: f.__name__)
def test_family_rebuilds_exactly_and_round_trips(build, rng, tmp_path):
    model = randomize(build())
    g = kp.analyze(model)
    assert {grp.name for grp in g.prunable} == EXPECTED_PRUNABLE[build.__name__]
    keep = random_keep(g, rng, 0.5)
    thin = kp.rebuild(model, keep, graph=g)
    x = _inputs(model, rng)
    if build is stacked_net:
        x[:, -2:, :] = 0.0  # masked time steps
    out = thin(x, training=False)
    assert_close(out, cut_off(model, g, keep)(x, training=False))
    assert kp.count_params(thin).total < kp.count_params(model).total
    thin.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x, training=False), out, rtol=1e-6, atol=1e-7)
    for name, idx in keep.items():  # each group alone: a layer whose input alone shrinks
        alone = kp.rebuild(model, {name: idx}, graph=g)
        assert_close(alone(x, training=False), cut_off(model, g, {name: idx})(x, training=False))


def test_widths_in_the_rebuilt_configs():
    model = randomize(bidirectional_concat_net())
    g = kp.analyze(model)
    assert g["bi"].size == 10 and g["bi"].blocks == 2
    with pytest.raises(kp.KeepSetError):  # both directions keep the same count
        kp.rebuild(model, {"bi": [0, 4, 6]}, graph=g)
    keep = {"bi": [0, 4, 6, 7], "bi2": [1, 2, 3, 5, 6, 7]}  # bi: forward 0, 4; backward 1, 2
    thin = kp.rebuild(model, keep, graph=g)
    bi, bi2 = thin.get_layer("bi"), thin.get_layer("bi2")
    assert (bi.forward_layer.units, bi.backward_layer.units) == (2, 2)
    assert (bi2.forward_layer.units, bi2.backward_layer.units) == (3, 3)
    assert thin.get_layer("mix").kernel.shape == (4, 3)
    model = randomize(cross_attention_net())
    g = kp.analyze(model)
    thin = kp.rebuild(model, {"mha/heads": [0, 2], "mha": [1, 3, 5], "k_emb": [0, 6]}, graph=g)
    mha = thin.get_layer("mha")
    assert mha.num_heads == 2 and mha.key_dim == 2 and mha.value_dim == 3
    assert mha.key_dense.kernel.shape == (2, 2, 2)
    assert mha.output_dense.kernel.shape == (2, 3, 3)


def test_encoder_states_couple_the_decoder_units(rng, tmp_path):
    src = keras.Input((5, 3), name="src")
    tgt = keras.Input((4, 2), name="tgt")
    enc = L.Dense(4, name="enc_emb")(src)
    _, h, c = L.LSTM(6, return_state=True, name="encoder")(enc)
    dec = L.LSTM(6, return_sequences=True, name="decoder")(tgt, initial_state=[h, c])
    h2 = L.GRU(3, return_state=True, name="gru")(dec)[1]
    model = randomize(keras.Model([src, tgt], L.Dense(2, name="head")(h2)))
    g = kp.analyze(model)
    grp = g.group_of("encoder")
    assert grp is g.group_of("decoder") and grp.prunable
    assert {"encoder", "decoder"} <= set(grp.producers)
    keep = {grp.name: [0, 2, 3, 5], "gru": [1]}
    thin = kp.rebuild(model, keep, graph=g)
    assert thin.get_layer("decoder").units == 4 and thin.get_layer("gru").units == 1
    x = _inputs(model, rng)
    assert_close(thin(x), cut_off(model, g, keep)(x))


def test_bidirectional_states_and_separate_outputs(rng):
    inp = keras.Input((5, 3))
    x = L.Dense(4, name="emb")(inp)
    enc = L.Bidirectional(L.LSTM(5, return_state=True), merge_mode="ave", name="enc")(x)
    _, *states = enc  # forward h, c, then backward h, c
    dec = L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode="concat", name="dec")(
        x, initial_state=states
    )
    fwd, bwd = L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode=None, name="two")(dec)
    y = L.Concatenate(name="cat")([L.Dense(2, name="df")(fwd), L.Dense(2, name="db")(bwd)])
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(L.Flatten()(y))))
    g = kp.analyze(model)
    # the states tie the decoder's directions to the encoder's (averaged: unit by unit)
    pair = g.group_of("enc", "forward")
    assert pair is g.group_of("dec", "forward") is g.group_of("dec", "backward")
    assert pair.prunable and pair.size == 5 and pair.blocks == 1
    two = g.group_of("two")
    assert two.prunable and two.size == 6 and two.blocks == 2
    keep = {pair.name: [1, 3], "two": [0, 2, 4, 5], "emb": [0, 1, 3]}
    thin = kp.rebuild(model, keep, graph=g)
    assert thin.get_layer("dec").forward_layer.units == 2
    assert thin.get_layer("df").kernel.shape == (2, 2)
    assert thin.get_layer("db").kernel.shape == (2, 2)
    x = _inputs(model, rng)
    assert_close(thin(x), cut_off(model, g, keep)(x))


def test_state_from_a_model_input_freezes_the_units():
    seq = keras.Input((5, 3))
    h0 = keras.Input((4,), name="h0")
    x = L.GRU(4, name="rnn")(seq, initial_state=h0)
    model = keras.Model([seq, h0], L.Dense(2, name="head")(x))
    g = kp.analyze(model)
    grp = g.group_of("rnn")
    assert not grp.prunable and "model input 'h0'" in grp.reason


def test_softmax_units_and_unknown_cells_are_frozen():
    inp = keras.Input((5, 3))
    x = L.Dense(4, name="emb")(inp)
    x = L.SimpleRNN(4, activation="softmax", return_sequences=True, name="soft")(x)
    cells = L.StackedRNNCells([L.LSTMCell(3), L.LSTMCell(3)])
    x = L.RNN(cells, name="stacked")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    with pytest.warns(UserWarning, match="'stacked' of class RNN"):
        g = kp.analyze(model)
    assert "softmax" in g["soft"].reason
    assert "StackedRNNCells" in g["soft"].reason  # the stacked layer reads these units
    assert g["emb"].prunable


def test_attention_output_follows_an_untracked_query():
    q = keras.Input((4, 6), name="q")
    kv = keras.Input((5, 3), name="kv")
    v = L.Dense(4, name="v_emb")(kv)
    x = L.MultiHeadAttention(2, 3, name="mha")(q, v)
    model = keras.Model([q, kv], L.Dense(2, name="head")(x))
    g = kp.analyze(model)
    assert not g.group_of("mha", "out").prunable
    assert "model input 'q'" in g.group_of("mha", "out").reason
    assert g["mha/heads"].prunable and g["v_emb"].prunable


def test_returned_attention_scores_carry_the_heads():
    inp = keras.Input((5, 3))
    x = L.Dense(4, name="emb")(inp)
    y, scores = L.MultiHeadAttention(3, 2, name="mha")(x, x, return_attention_scores=True)
    model = keras.Model(inp, [L.Dense(2, name="head")(y), scores])
    g = kp.analyze(model)
    assert not g["mha/heads"].prunable and "reaches model output" in g["mha/heads"].reason
    assert g.group_of("emb").prunable


def test_attention_subclass_with_its_own_attention_freezes_the_heads():
    class TalkingHeads(keras.layers.MultiHeadAttention):
        def _compute_attention(self, *args, **kwargs):  # could mix heads
            return super()._compute_attention(*args, **kwargs)

    inp = keras.Input((5, 3))
    x = L.Dense(4, name="emb")(inp)
    x = TalkingHeads(2, 2, name="mha")(x, x)
    g = kp.analyze(keras.Model(inp, L.Dense(2, name="head")(x)))
    assert not g["mha/heads"].prunable and "_compute_attention" in g["mha/heads"].reason
    assert g.group_of("emb").prunable


def test_masked_model_computes_what_the_thin_model_computes(rng):
    model = randomize(stacked_net())
    graph = kp.analyze(model)
    keep = random_keep(graph, rng, 0.5)
    thin = kp.rebuild(model, keep, graph=graph)
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    assert kp.mask_weights(masked, keep, graph=kp.analyze(masked)) > 0
    x = _inputs(model, rng)
    assert_close(masked(x), thin(x))
    for build in (bidirectional_concat_net, cross_attention_net):
        model = randomize(build())
        graph = kp.analyze(model)
        total = kp.count_params(model).total
        for grp in graph.prunable:
            counts = np.zeros(grp.size, dtype=np.int64)
            for e in graph.entries(grp):
                counts += np.bincount(e.channel, minlength=grp.size)
            per = grp.size // grp.blocks
            drop = [b * per for b in range(grp.blocks)]  # channel 0 of every block
            keep = {grp.name: [c for c in range(grp.size) if c not in drop]}
            thin = kp.rebuild(model, keep, graph=graph)
            assert total - kp.count_params(thin).total == counts[drop].sum(), grp.name


def test_adam_moments_follow_the_units_and_heads(rng):
    inp = keras.Input((5, 3))
    x = L.Dense(4, name="emb")(inp)
    x = L.LSTM(3, return_sequences=True, name="rnn")(x)
    x = L.MultiHeadAttention(3, 2, output_shape=4, name="mha")(x, x)
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(L.Flatten()(x))))
    model.compile(optimizer="adam", loss="mse")
    x = _inputs(model, rng, 4)
    model.fit(x, rng.normal(size=(4, 2)).astype("float32"), epochs=1, verbose=0)
    g = kp.analyze(model)
    thin = kp.rebuild(model, {"rnn": [0, 2], "mha/heads": [1]}, graph=g)

    def moment(m, var):
        return np.asarray(m.optimizer._momentums[m.optimizer._get_variable_index(var)])

    old_rnn, new_rnn = model.get_layer("rnn").cell, thin.get_layer("rnn").cell
    cols = [b * 3 + j for b in range(4) for j in (0, 2)]  # gates i, f, c, o
    np.testing.assert_array_equal(
        moment(thin, new_rnn.kernel), moment(model, old_rnn.kernel)[:, cols]
    )
    np.testing.assert_array_equal(
        moment(thin, new_rnn.recurrent_kernel),
        moment(model, old_rnn.recurrent_kernel)[[0, 2]][:, cols],
    )
    old_q, new_q = model.get_layer("mha").query_dense, thin.get_layer("mha").query_dense
    np.testing.assert_array_equal(  # rows: the kept LSTM units; then the kept head
        moment(thin, new_q.kernel), moment(model, old_q.kernel)[[0, 2]][:, [1]]
    )


def test_macs_match_hand_formulas():
    T, C = 6, 3
    inp = keras.Input((T, C))
    a = L.LSTM(5, return_sequences=True, name="lstm")(inp)
    b = L.GRU(4, return_sequences=True, name="gru")(a)
    c = L.Bidirectional(L.SimpleRNN(3, return_sequences=True), name="bi")(b)
    d = L.MultiHeadAttention(2, 4, value_dim=3, name="mha")(c, c)
    model = keras.Model(inp, L.Dense(2, name="head")(d))
    macs = kp.count_flops(model).per_layer
    assert macs["lstm"] == T * (C * 4 * 5 + 5 * 4 * 5)
    assert macs["gru"] == T * (5 * 3 * 4 + 4 * 3 * 4)
    assert macs["bi"] == 2 * T * (4 * 3 + 3 * 3)
    E, H, kd, vd = 6, 2, 4, 3  # width of c, heads, key and value dims
    proj = T * E * H * kd * 2 + T * E * H * vd + T * H * vd * E
    assert macs["mha"] == proj + H * T * T * (kd + vd)
    # pruning shrinks every term
    g = kp.analyze(model)
    thin = kp.rebuild(model, {"lstm": [0, 1, 2], "mha/heads": [1]}, graph=g)
    thin_macs = kp.count_flops(thin).per_layer
    assert thin_macs["lstm"] == T * (C * 4 * 3 + 3 * 4 * 3)
    assert thin_macs["gru"] == T * (3 * 3 * 4 + 4 * 3 * 4)
    thin_proj = T * E * 1 * kd * 2 + T * E * 1 * vd + T * 1 * vd * E
    assert thin_macs["mha"] == thin_proj + 1 * T * T * (kd + vd)
