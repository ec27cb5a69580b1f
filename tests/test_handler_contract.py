"""The contract of every registered layer handler, checked class by class.

The parametrization comes from the handler registry itself: every layer class in
``registered_handlers()`` needs a tiny model in ``MINIMAL_MODELS`` (or a reason in
``EXEMPT``), or its tests fail and say so. For each class:

* the channels reaching the layer under test are prunable: some prunable group has a
  member on it, or, for a layer without weights or slots (Dropout, Add, ...), a prunable
  group is produced before it and read after it;
* the thin model (every prunable group loses channels) computes what the cut-off
  original computes (``reference.cut_off``; shapes only for ``exact = False`` handlers);
* the thin model survives a ``.keras`` round trip;
* every weight position a handler states equals the one derived from its slicing.

The layer under test is named ``under_test``. The cut-off reference lets a removed
channel carry zero through the layers without channel slots, so their models use
activations that map 0 to 0 (relu, tanh); where a layer turns zero into something else
(``CUT_INPUTS``) the reference also zeroes the consumer's weights that read the channel.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras.src.applications.convnext import LayerScale
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
from models import L, randomize
from reference import assert_close, assert_positions_agree, cut_off

import kerasprune as kp
from kerasprune.graph.composite import iter_layers
from kerasprune.graph.entries import AxisPositions, derive_positions
from kerasprune.graph.registry import registered_handlers

# the Masking model's Conv1D drops the mask, and says so
pytestmark = pytest.mark.filterwarnings("ignore:Layer 'after' .* does not support masking:UserWarning")

UT = "under_test"


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """conftest's fresh Keras state without its forced garbage collection, which costs
    about 0.3 s a test here (over 300 tests)."""
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


VOCAB = 10  # Embedding input_dim; integer inputs are drawn below it

_PRODUCER = {1: L.Dense, 2: L.Conv1D, 3: L.Conv2D, 4: L.Conv3D}
_POOL = {2: L.GlobalAveragePooling1D, 3: L.GlobalAveragePooling2D, 4: L.GlobalAveragePooling3D}


def _dense_or_conv(rank: int, width: int, name: str):
    """A layer producing ``width`` channels on inputs of ``rank`` (batch excluded)."""
    cls = _PRODUCER[rank]
    return cls(width, name=name) if rank == 1 else cls(width, 1, name=name)


def _tail(x):
    """Consumer ``after`` (so the channels before it do not reach the output), pooling,
    and a Dense head."""
    rank = len(x.shape) - 1
    x = _dense_or_conv(rank, 4, "after")(x)
    if rank > 1:
        x = _POOL[rank](name="pool")(x)
    return L.Dense(2, name="head")(x)


def sandwich(layer, shape=(6, 6, 3), width: int = 6) -> keras.Model:
    """Input -> producer ``before`` (``width`` channels) -> ``layer`` -> ``after`` -> head."""
    inp = keras.Input(shape, name="inp")
    x = _dense_or_conv(len(shape), width, "before")(inp)
    return keras.Model(inp, _tail(layer(x)))


def merge(cls, **kwargs) -> keras.Model:
    """Two producers, ``a`` and ``b``, joined by the merge under test."""
    inp = keras.Input((5, 5, 2), name="inp")
    a = L.Conv2D(6, 3, padding="same", activation="relu", name="a")(inp)
    b = L.Conv2D(6, 1, activation="tanh", name="b")(inp)
    return keras.Model(inp, _tail(cls(name=UT, **kwargs)([a, b])))


def concatenate() -> keras.Model:
    inp = keras.Input((5, 5, 2), name="inp")
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inp)
    b = L.Conv2D(3, 1, name="b")(inp)
    return keras.Model(inp, _tail(L.Concatenate(name=UT)([a, b])))


def embedding() -> keras.Model:
    inp = keras.Input((7,), dtype="int32", name="tokens")
    return keras.Model(inp, _tail(L.Embedding(VOCAB, 6, name=UT)(inp)))


def nested_input_layer() -> keras.Model:
    """The InputLayer of a nested model: its batch shape follows the pruned width."""
    inner_in = keras.Input((5, 5, 6), name=UT)
    inner = keras.Model(inner_in, L.Conv2D(4, 1, activation="relu", name="inner_conv")(inner_in), name="inner")
    inp = keras.Input((5, 5, 2), name="inp")
    x = L.Conv2D(6, 3, padding="same", name="before")(inp)
    return keras.Model(inp, _tail(inner(x)))


def attention() -> keras.Model:
    """Self-attention: the output width follows the query, so ``out`` joins ``before``."""
    inp = keras.Input((5, 3), name="inp")
    x = L.Dense(6, name="before")(inp)
    y = L.MultiHeadAttention(num_heads=4, key_dim=2, name=UT)(x, x)
    return keras.Model(inp, _tail(y))


SEQ = (6, 3)
VOL = (4, 4, 4, 2)


def _seq(layer):
    return sandwich(layer, SEQ)


def _vol(layer):
    return sandwich(layer, VOL, width=4)


# layer class -> a tiny model with the class under test (named UT) between a producer
# and a consumer, so that its channels are prunable
MINIMAL_MODELS = {
    # convolutions and Dense
    L.Conv1D: lambda: _seq(L.Conv1D(6, 3, padding="same", activation="relu", name=UT)),
    L.Conv2D: lambda: sandwich(L.Conv2D(6, 3, padding="same", groups=2, name=UT)),
    L.Conv3D: lambda: _vol(L.Conv3D(4, 2, padding="same", name=UT)),
    L.Conv1DTranspose: lambda: _seq(L.Conv1DTranspose(4, 3, strides=2, padding="same", name=UT)),
    L.Conv2DTranspose: lambda: sandwich(L.Conv2DTranspose(4, 3, strides=2, name=UT)),
    L.Conv3DTranspose: lambda: _vol(L.Conv3DTranspose(3, 2, name=UT)),
    L.DepthwiseConv1D: lambda: _seq(L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name=UT)),
    L.DepthwiseConv2D: lambda: sandwich(L.DepthwiseConv2D(3, depth_multiplier=2, name=UT)),
    L.SeparableConv1D: lambda: _seq(L.SeparableConv1D(5, 3, depth_multiplier=2, name=UT)),
    L.SeparableConv2D: lambda: sandwich(L.SeparableConv2D(5, 3, padding="same", name=UT)),
    L.Dense: lambda: sandwich(L.Dense(5, activation="relu", name=UT), (4,)),
    L.Embedding: embedding,
    # merges
    L.Add: lambda: merge(L.Add),
    L.Subtract: lambda: merge(L.Subtract),
    L.Multiply: lambda: merge(L.Multiply),
    L.Average: lambda: merge(L.Average),
    L.Maximum: lambda: merge(L.Maximum),
    L.Minimum: lambda: merge(L.Minimum),
    L.Concatenate: concatenate,
    # per-channel parameters
    L.BatchNormalization: lambda: sandwich(L.BatchNormalization(name=UT)),
    L.LayerNormalization: lambda: sandwich(L.LayerNormalization(name=UT)),
    L.GroupNormalization: lambda: sandwich(L.GroupNormalization(groups=2, name=UT)),
    L.Normalization: lambda: sandwich(
        L.Normalization(mean=np.linspace(-1, 1, 6), variance=np.linspace(0.5, 2, 6), name=UT)
    ),  # the adapted form: see the last test
    L.PReLU: lambda: sandwich(L.PReLU(name=UT)),  # one slope per position and channel
    # pass-through
    L.Activation: lambda: sandwich(L.Activation("tanh", name=UT)),
    L.ReLU: lambda: sandwich(L.ReLU(name=UT)),
    L.LeakyReLU: lambda: sandwich(L.LeakyReLU(name=UT)),
    L.ELU: lambda: sandwich(L.ELU(name=UT)),
    L.Softmax: lambda: _seq(L.Softmax(axis=1, name=UT)),  # over time: channels pass (see CUT_INPUTS)
    L.Dropout: lambda: sandwich(L.Dropout(0.5, name=UT)),
    L.SpatialDropout1D: lambda: _seq(L.SpatialDropout1D(0.5, name=UT)),
    L.SpatialDropout2D: lambda: sandwich(L.SpatialDropout2D(0.5, name=UT)),
    L.SpatialDropout3D: lambda: _vol(L.SpatialDropout3D(0.5, name=UT)),
    L.GaussianDropout: lambda: sandwich(L.GaussianDropout(0.3, name=UT)),
    L.GaussianNoise: lambda: sandwich(L.GaussianNoise(0.3, name=UT)),
    L.AlphaDropout: lambda: sandwich(L.AlphaDropout(0.3, name=UT)),
    L.ActivityRegularization: lambda: sandwich(L.ActivityRegularization(l1=0.1, name=UT)),
    L.Identity: lambda: sandwich(L.Identity(name=UT)),
    # the Conv1D after it drops the mask: a mask read downstream is computed by NotEqual
    # and Any ops, which freeze the channels (see the xfail test at the end)
    L.Masking: lambda: _seq(L.Masking(0.0, name=UT)),
    L.MaxPooling1D: lambda: _seq(L.MaxPooling1D(2, name=UT)),
    L.MaxPooling2D: lambda: sandwich(L.MaxPooling2D(2, name=UT)),
    L.MaxPooling3D: lambda: _vol(L.MaxPooling3D(2, name=UT)),
    L.AveragePooling1D: lambda: _seq(L.AveragePooling1D(2, name=UT)),
    L.AveragePooling2D: lambda: sandwich(L.AveragePooling2D(2, name=UT)),
    L.AveragePooling3D: lambda: _vol(L.AveragePooling3D(2, name=UT)),
    L.ZeroPadding1D: lambda: _seq(L.ZeroPadding1D(1, name=UT)),
    L.ZeroPadding2D: lambda: sandwich(L.ZeroPadding2D(1, name=UT)),
    L.ZeroPadding3D: lambda: _vol(L.ZeroPadding3D(1, name=UT)),
    L.Cropping1D: lambda: _seq(L.Cropping1D(1, name=UT)),
    L.Cropping2D: lambda: sandwich(L.Cropping2D(1, name=UT)),
    L.Cropping3D: lambda: _vol(L.Cropping3D(1, name=UT)),
    L.UpSampling1D: lambda: _seq(L.UpSampling1D(name=UT)),
    L.UpSampling2D: lambda: sandwich(L.UpSampling2D(name=UT)),
    L.UpSampling3D: lambda: _vol(L.UpSampling3D(name=UT)),
    L.Rescaling: lambda: sandwich(L.Rescaling(np.arange(1.0, 7.0), offset=np.linspace(-1, 1, 6), name=UT)),
    L.Resizing: lambda: sandwich(L.Resizing(4, 5, name=UT)),
    L.CenterCrop: lambda: sandwich(L.CenterCrop(4, 4, name=UT)),
    L.RandomFlip: lambda: sandwich(L.RandomFlip(seed=1, name=UT)),
    L.RandomRotation: lambda: sandwich(L.RandomRotation(0.2, seed=1, name=UT)),
    L.RandomZoom: lambda: sandwich(L.RandomZoom(0.2, seed=1, name=UT)),
    L.RandomTranslation: lambda: sandwich(L.RandomTranslation(0.2, 0.2, seed=1, name=UT)),
    L.RandomContrast: lambda: sandwich(L.RandomContrast(0.5, seed=1, name=UT)),
    L.RandomCrop: lambda: sandwich(L.RandomCrop(4, 4, seed=1, name=UT)),
    L.GlobalAveragePooling1D: lambda: _seq(L.GlobalAveragePooling1D(name=UT)),
    L.GlobalAveragePooling2D: lambda: sandwich(L.GlobalAveragePooling2D(name=UT)),
    L.GlobalAveragePooling3D: lambda: _vol(L.GlobalAveragePooling3D(name=UT)),
    L.GlobalMaxPooling1D: lambda: _seq(L.GlobalMaxPooling1D(name=UT)),
    L.GlobalMaxPooling2D: lambda: sandwich(L.GlobalMaxPooling2D(keepdims=True, name=UT)),
    L.GlobalMaxPooling3D: lambda: _vol(L.GlobalMaxPooling3D(name=UT)),
    # shape changes
    L.RepeatVector: lambda: sandwich(L.RepeatVector(3, name=UT), (4,)),
    L.Flatten: lambda: sandwich(L.Flatten(name=UT), (3, 3, 2)),
    L.Reshape: lambda: sandwich(L.Reshape((36, 6), name=UT)),
    L.InputLayer: nested_input_layer,
    # attention and recurrent layers
    L.MultiHeadAttention: attention,
    L.LSTM: lambda: _seq(L.LSTM(4, name=UT)),
    L.GRU: lambda: _seq(L.GRU(4, return_sequences=True, name=UT)),
    L.SimpleRNN: lambda: _seq(L.SimpleRNN(4, return_sequences=True, name=UT)),
    L.RNN: lambda: _seq(L.RNN(L.LSTMCell(3), return_sequences=True, name=UT)),
    L.Bidirectional: lambda: _seq(L.Bidirectional(L.GRU(3, return_sequences=True), name=UT)),
    # keras.applications' own layers
    LayerScale: lambda: sandwich(LayerScale(0.5, 6, name=UT)),
    CustomScaleLayer: lambda: merge(CustomScaleLayer, scale=0.2),
}

# layer class -> why it has no minimal model of its own
EXEMPT: dict = {}

# classes whose minimal model turns a removed (zero) channel into something non-zero
# before the consumer reads it: the reference zeroes the consumer's weights too
CUT_INPUTS = {L.Softmax: "a softmax over time gives a zero channel 1/T at every step"}

# (predicate on (record, slot), reason): stated weight positions that slicing cannot derive
STATED_ONLY = [
    (
        lambda rec, slot: slot == "in"
        and isinstance(rec.layer, (L.Conv1D, L.Conv2D, L.Conv3D))
        and int(getattr(rec.layer, "groups", 1) or 1) > 1,
        "a grouped convolution's input is sliced in equal blocks only, so it cannot be "
        "probed one position at a time",
    ),
]


def _name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


REGISTERED = sorted(registered_handlers(), key=_name)
UNDER_CONTRACT = [cls for cls in REGISTERED if cls not in EXEMPT]


contract = pytest.mark.parametrize("cls", UNDER_CONTRACT, ids=lambda cls: cls.__name__)


def build(cls) -> keras.Model:
    if cls not in MINIMAL_MODELS:
        handler = type(registered_handlers()[cls]).__name__
        pytest.fail(
            f"{_name(cls)} is registered (handler {handler}) but has no minimal model: add "
            f"one for it to MINIMAL_MODELS in tests/test_handler_contract.py (a producer, the "
            f"layer named {UT!r}, a consumer), or, if it cannot appear alone, a one-line "
            "reason to EXEMPT",
            pytrace=False,
        )
    return randomize(MINIMAL_MODELS[cls](), seed=7)


def layer_under_test(model):
    """(path, layer) of the layer named UT, nested models included."""
    found = [(p, lay) for p, lay in iter_layers(model) if lay.name == UT]
    assert len(found) == 1, [p for p, _ in found]
    return found[0]


def sample(model, rng, n: int = 2):
    xs = []
    for t in model.inputs:
        shape = (n,) + tuple(t.shape[1:])
        if "int" in str(t.dtype):
            xs.append(rng.integers(0, VOCAB, size=shape).astype(str(t.dtype)))
        else:
            xs.append(rng.normal(size=shape).astype("float32"))
    return xs[0] if len(xs) == 1 else xs


def odd_channels(graph) -> dict:
    """Keep positions 1, 3, 5, ... and the last of every prunable group (the first
    channel goes, and the pattern reads differently backwards); with blocks, that many
    in each block, rotated by the block's number so that no two blocks keep the same
    positions."""
    keep = {}
    for g in graph.prunable:
        per = g.size // g.blocks
        kept = sorted(set(range(1, per, 2)) | {per - 1})
        keep[g.name] = [b * per + j for b in range(g.blocks) for j in sorted((i + b) % per for i in kept)]
    return keep


_PRUNED: dict = {}


def pruned(cls):
    """(model, graph, keep, thin, x) for ``cls``, built once per class."""
    if cls not in _PRUNED:
        model = build(cls)
        graph = kp.analyze(model)
        keep = odd_channels(graph)
        thin = kp.rebuild(model, keep, graph=graph)
        x = sample(model, np.random.default_rng(3))
        _PRUNED[cls] = (model, graph, keep, thin, x)
    return _PRUNED[cls]


def _ancestors(layer) -> set:
    seen, stack = set(), [layer]
    while stack:
        for node in stack.pop()._inbound_nodes:
            for parent in node.parent_nodes:
                if parent.operation.name not in seen:
                    seen.add(parent.operation.name)
                    stack.append(parent.operation)
    return seen


def _shapes(layer):
    out = keras.tree.map_structure(lambda t: tuple(t.shape), layer.output)
    return out, [tuple(w.shape) for w in layer.weights]


def test_contract_tables_name_registered_classes_only():
    registered = set(REGISTERED)
    stale = [_name(c) for c in list(MINIMAL_MODELS) + list(EXEMPT) if c not in registered]
    assert not stale, f"no handler is registered for {stale}: remove them from the tables"
    both = [_name(c) for c in EXEMPT if c in MINIMAL_MODELS]
    assert not both, f"{both} are both exempt and under contract"


@contract
def test_channels_through_the_layer_are_prunable(cls):
    model = build(cls)
    graph = kp.analyze(model)
    path, layer = layer_under_test(model)
    assert type(layer) is cls
    rec = next(r for r in graph.records if r.path == path)
    assert rec.handler is registered_handlers()[cls]
    frozen = [(g.name, g.reason) for g in graph.frozen]
    if layer.weights or rec.slots:
        on_layer = [g for g in graph.prunable if any(m.layer == path for m in g.members)]
        assert on_layer, f"no prunable group has a member on {path!r}; frozen: {frozen}"
    else:  # nothing of its own to slice: a prunable group passes through it
        up = _ancestors(layer)
        down = {lay.name for lay in model.layers if layer.name in _ancestors(lay)}
        through = [
            g for g in graph.prunable
            if any(m.produced and m.layer in up for m in g.members)
            and any(not m.produced and m.layer in down for m in g.members)
        ]
        assert through, f"no prunable group passes through {path!r}; frozen: {frozen}"


@contract
def test_thin_model_computes_the_cut_off_original(cls):
    model, graph, keep, thin, x = pruned(cls)
    path, layer = layer_under_test(model)
    # every prunable group lost channels, and the layer under test got narrower
    assert keep and all(len(keep[g.name]) < g.size for g in graph.prunable)
    thin_layer = dict(iter_layers(thin))[path]
    assert _shapes(thin_layer) != _shapes(layer), f"{path!r} kept its width"
    got = thin(x, training=False)
    if all(m.exact for g in graph.prunable for m in g.members):
        ref = cut_off(model, graph, keep, cut_inputs=cls in CUT_INPUTS)
        assert_close(got, ref(x, training=False))
    else:  # statistics over the channels change with the width: shapes only
        want = model(x, training=False)
        assert got.shape == want.shape
        assert np.all(np.isfinite(got))


@contract
def test_thin_model_survives_a_keras_file_round_trip(cls, tmp_path):
    _, _, _, thin, x = pruned(cls)
    thin.save(tmp_path / "thin.keras")
    loaded = keras.models.load_model(tmp_path / "thin.keras")
    assert_close(loaded(x, training=False), thin(x, training=False), rtol=1e-6)


def _counted_once(rec, slot, stated, derived):
    """``derived``, less the entries a stated answer leaves to a twin slot.

    An entry that depends on the same channel through two slots of one layer bound to
    the same channels (an RNN unit's own recurrent-kernel entries: its gate column, slot
    ``out``, and its row, slot ``recurrent``) is stated in one of them only, so that no
    entry counts twice for a channel. Where the stated answer says -1 and a twin slot
    derives the same position for the entry, the derived answer is taken as -1 too.
    """
    layout = rec.slots[slot]
    twins = [
        derive_positions(rec, other) for other, lay in rec.slots.items()
        if other != slot and np.array_equal(lay.src, layout.src) and np.array_equal(lay.idx, layout.idx)
    ]
    out = []
    for i, (s, d) in enumerate(zip(stated, derived)):
        if d is None or not twins:
            out.append(d)
            continue
        s = np.full(d.shape, -1) if s is None else (s.array() if isinstance(s, AxisPositions) else np.asarray(s))
        claimed = np.zeros(d.shape, dtype=bool)
        for twin in twins:
            if twin[i] is not None:
                claimed |= (twin[i] == d) & (d >= 0)
        d = np.where((s == -1) & claimed, -1, d)
        out.append(d if (d >= 0).any() else None)
    return out


@contract
def test_stated_weight_positions_equal_what_slicing_derives(cls):
    model = build(cls)
    graph = kp.analyze(model)
    compared = []
    for rec in graph.records:
        for slot, layout in rec.slots.items():
            stated = rec.handler.weight_positions(rec.layer, slot, len(layout))
            if any(skip(rec, slot) for skip, _ in STATED_ONLY):
                assert stated is not None, f"{rec.path} {slot}: neither stated nor derivable"
                continue
            derived = derive_positions(rec, slot)  # every other slot can be probed...
            assert len(derived) == len(rec.layer.weights)
            if stated is None:
                continue
            # ...and where a handler states positions, they agree
            derived = _counted_once(rec, slot, stated, derived)
            assert_positions_agree(stated, derived, f"{rec.path} {slot}")
            compared.append((rec.path, slot))
    assert compared  # the producer and consumer around the layer state theirs


@pytest.mark.xfail(
    raises=AssertionError,
    strict=True,
    reason="the mask of a Masking layer is computed by NotEqual and Any ops, which have no "
    "handler: a mask read downstream freezes the channels entering Masking",
)
def test_masking_whose_mask_is_read_downstream_keeps_channels_prunable():
    inp = keras.Input(SEQ, name="inp")
    x = L.Dense(6, name="before")(inp)
    x = L.Masking(0.0, name=UT)(x)
    x = L.Dense(4, name="after")(x)  # passes the mask on to the pooling, which reads it
    model = keras.Model(inp, L.Dense(2, name="head")(L.GlobalAveragePooling1D(name="pool")(x)))
    assert kp.analyze(model, warn=False)["before"].prunable


def test_rebuilt_adapted_normalization_keeps_its_statistics(rng):
    norm = L.Normalization(name=UT)
    norm.adapt(rng.normal(2.0, 3.0, size=(32, 4, 4, 6)).astype("float32"))
    inp = keras.Input((4, 4, 2), name="inp")
    model = keras.Model(inp, _tail(norm(L.Conv2D(6, 1, name="before")(inp))))
    graph = kp.analyze(model)
    keep = odd_channels(graph)
    thin = kp.rebuild(model, keep, graph=graph)
    x = sample(model, rng)
    assert_close(thin(x), cut_off(model, graph, keep)(x))
