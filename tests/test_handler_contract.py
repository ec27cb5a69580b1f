"""The contract of every registered layer handler, checked class by class.

The parametrization comes from the handler registry itself: every layer or operation
class in ``registered_handlers()`` needs a tiny model in ``MINIMAL_MODELS`` (or a reason
in ``EXEMPT``), or its tests fail and say so. The models of the Keras operations
(``keras.ops.add``, ``relu``, ``mean``, ...) are generated from their handler families
(``FAMILY_CALLS``, ``CALLS``). For each class:

* the channels reaching the layer under test are prunable: some prunable group has a
  member on it, or, for a layer without weights or slots (Dropout, Add, ...), a prunable
  group is produced before it and read after it;
* the thin model (every prunable group loses channels) computes what the cut-off
  original computes (``reference.cut_off``; shapes only for ``exact = False`` handlers);
* the thin model survives a ``.keras`` round trip;
* every weight position a handler states equals the one derived from its slicing.

The layer or operation under test is named ``under_test``. The cut-off reference lets a
removed channel carry zero through the layers without channel slots, so their models use
activations that map 0 to 0 (relu, tanh); where a layer turns zero into something else
(``CUT_INPUTS``), or an operation's call does (``exp``, ``x == y``: found by calling it on
zeros, ``turns_zero_into_nonzero``), the reference also zeroes the consumer's weights
that read the channel.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Tuple

import keras
import numpy as np
import pytest
from keras import ops
from keras.src.applications.convnext import LayerScale
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
from keras.src.ops import nn as knn
from models import L, randomize
from reference import assert_close, assert_positions_agree, cut_off

import kerasprune as kp
from kerasprune.graph.composite import iter_layers
from kerasprune.graph.entries import AxisPositions, derive_positions
from kerasprune.graph.handlers import ops as op_handlers
from kerasprune.graph.keras_graph import is_operation, operation_name, producer
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


def reversible_embedding() -> keras.Model:
    """Tied logits: the reverse call reads the embedding's channels (through ``mid``)."""
    inp = keras.Input((7,), dtype="int32", name="tokens")
    emb = L.ReversibleEmbedding(VOCAB, 6, name=UT)
    x = L.Dense(6, activation="relu", name="mid")(emb(inp))
    return keras.Model(inp, _tail(emb(x, reverse=True)))


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


def grouped_query_attention() -> keras.Model:
    """Self-attention with 2 key/value heads shared by 4 query heads: the output width
    follows the query, so ``out`` joins ``before``; the heads are their own group."""
    inp = keras.Input((5, 3), name="inp")
    x = L.Dense(6, name="before")(inp)
    y = L.GroupQueryAttention(head_dim=2, num_query_heads=4, num_key_value_heads=2, name=UT)(x, x)
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
    L.ReversibleEmbedding: reversible_embedding,
    L.EinsumDense: lambda: _seq(L.EinsumDense("btc,cd->btd", output_shape=(None, 5), bias_axes="d", name=UT)),
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
    L.RMSNormalization: lambda: sandwich(L.RMSNormalization(name=UT)),
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
    # and Any ops, and Any reduces the channels, which freezes them (see the xfail test)
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
    L.GroupQueryAttention: grouped_query_attention,
    L.LSTM: lambda: _seq(L.LSTM(4, name=UT)),
    L.GRU: lambda: _seq(L.GRU(4, return_sequences=True, name=UT)),
    L.SimpleRNN: lambda: _seq(L.SimpleRNN(4, return_sequences=True, name=UT)),
    L.RNN: lambda: _seq(L.RNN(L.LSTMCell(3), return_sequences=True, name=UT)),
    L.Bidirectional: lambda: _seq(L.Bidirectional(L.GRU(3, return_sequences=True), name=UT)),
    # keras.applications' own layers
    LayerScale: lambda: sandwich(LayerScale(0.5, 6, name=UT)),
    CustomScaleLayer: lambda: merge(CustomScaleLayer, scale=0.2),
}

# layer or operation class -> why it has no minimal model of its own
EXEMPT = {
    knn.AdaptiveMaxPool: "Keras cannot load it from a .keras file (compute_output_spec adds the saved "
    "output_size, a list, to a tuple); test_adaptive_pooling_contract_but_the_round_trip checks the rest",
    knn.AdaptiveAveragePool: "as AdaptiveMaxPool",
}

# layer classes whose minimal model turns a removed (zero) channel into something non-zero
# before the consumer reads it: the reference zeroes the consumer's weights too (for the
# operations, turns_zero_into_nonzero tells)
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


# -- Keras operations -----------------------------------------------------------------------
# The operation classes (``keras.src.ops.numpy.Add``, ``nn.Relu``, ...: what ``x + y`` and
# ``keras.ops.relu(x)`` leave in a graph) get their minimal models generated, not written
# out: each calls the operation's public ``keras.ops`` function (``operation_name``) the
# way its handler's family takes arguments (FAMILY_CALLS), or as CALLS says for an
# operation the family's call does not fit (a domain, an integer operand, an axis).

OPERATIONS = [c for c in registered_handlers() if issubclass(c, keras.Operation) and not issubclass(c, L.Layer)]
IMG = (4, 4, 3)  # the operations' models: 1x1 Conv2D producers on a 4x4 image


class OpCall(NamedTuple):
    """How an operation's model calls its function ``f``: ``call(f, *xs)``, where ``xs``
    are the outputs of one producer per width (``before``, then ``other``) of an input
    of ``shape``; the result (cast to float32 if it is not) goes on to ``_tail``."""

    call: Callable
    widths: Tuple[int, ...] = (4,)
    shape: Tuple[int, ...] = IMG


def _one(call, **kwargs) -> OpCall:
    return OpCall(call, **kwargs)


def _two(call, **kwargs) -> OpCall:
    return OpCall(call, widths=(4, 4), **kwargs)


def _positive(t):  # log, rsqrt, reciprocal, arccosh, a power's base: >= 1
    return ops.abs(t) + 1.0


def _unit(t):  # arcsin, arccos, arctanh, erfinv: inside (-1, 1)
    return ops.tanh(t) * 0.5


def _ints(t):  # bitwise operations, gcd: integers of a few bits
    return ops.cast(t * 4.0, "int32")


def _shift(t):  # shift counts: 0 to a few
    return ops.cast(ops.abs(t) * 2.0, "int32")


def _channels_last(t):  # (B, C, H, W) -> (B, H, W, C)
    return ops.transpose(t, (0, 2, 3, 1))


def _total(ts):  # the pieces of a split, summed
    return functools.reduce(ops.add, ts)


_MIX = np.linspace(-1.0, 1.0, 16, dtype="float32").reshape(4, 4)

# handler class (an operation family) -> how its operations are called; the element-wise
# family calls f(x), or f(a, b) with two coupled producers for its binary operations
FAMILY_CALLS = {
    op_handlers.ElementwiseOpHandler: _one(lambda f, x: f(x)),
    op_handlers.ClipOpHandler: _one(lambda f, x: f(x, -0.5, 0.5)),
    op_handlers.AlongAxisOpHandler: _one(lambda f, x: f(x, axis=1)),  # along the height
    op_handlers.ReductionOpHandler: _one(lambda f, x: f(x, axis=(1, 2), keepdims=True)),
    op_handlers.TransposeOpHandler: _one(lambda f, x: _channels_last(f(x, (0, 3, 1, 2)))),
    op_handlers.ExpandDimsOpHandler: _one(lambda f, x: f(x, 1)),
    op_handlers.SqueezeOpHandler: _one(lambda f, x: f(x, axis=1), shape=(1, 4, 3)),
    # the width and the channels merged: the new shape holds 4 * width, edited
    op_handlers.ReshapeOpHandler: _one(lambda f, x: f(x, (-1, 4, 4 * x.shape[-1]))),
    op_handlers.ConcatenateOpHandler: OpCall(lambda f, a, b: f([a, b], axis=-1), widths=(4, 3)),
    op_handlers.StackOpHandler: _two(lambda f, a, b: f([a, b], axis=1)),
    op_handlers.SplitOpHandler: _one(lambda f, x: _total(f(x, 2, axis=1))),
    op_handlers.UnstackOpHandler: _one(lambda f, x: _total(f(x, axis=1))),
    op_handlers.GetItemOpHandler: _one(lambda f, x: f(x, (slice(None), slice(1, 3), slice(None, None, 2)))),
    # the width in the shape follows the kept channels
    op_handlers.SliceOpHandler: _one(lambda f, x: f(x, (0, 1, 0, 0), (-1, 2, 4, x.shape[-1]))),
    op_handlers.PadOpHandler: _one(lambda f, x: f(x, ((0, 0), (1, 1), (0, 0), (0, 0)))),
    op_handlers.ContractionOpHandler: _one(lambda f, x: f(_MIX, x)),  # mixes the rows: channels carried
    op_handlers.PoolingOpHandler: _one(lambda f, x: f(x, 2)),
}
_BINARY = _two(lambda f, a, b: f(a, b))

# operation class name -> its call, where its family's does not fit
CALLS = {
    **dict.fromkeys(["Log", "Log10", "Log2", "Rsqrt", "Reciprocal", "Arccosh"], _one(lambda f, x: f(_positive(x)))),
    **dict.fromkeys(["Sqrt", "Log1p"], _one(lambda f, x: f(ops.abs(x)))),
    **dict.fromkeys(["Arcsin", "Arccos", "Arctanh", "Erfinv"], _one(lambda f, x: f(_unit(x)))),
    **dict.fromkeys(["BitwiseInvert", "BitwiseNot"], _one(lambda f, x: f(_ints(x)))),
    **dict.fromkeys(["Cast", "SaturateCast"], _one(lambda f, x: f(x, "float16"))),
    "Threshold": _one(lambda f, x: f(x, 0.1, -1.0)),
    **dict.fromkeys(["Divide", "TrueDivide", "FloorDivide", "Mod", "Fmod"], _two(lambda f, a, b: f(a, _positive(b)))),
    "Power": _two(lambda f, a, b: f(_positive(a), b)),
    "Ldexp": _two(lambda f, a, b: f(a, _ints(b))),
    **dict.fromkeys(["Gcd", "Lcm", "BitwiseAnd", "BitwiseOr", "BitwiseXor"], _two(lambda f, a, b: f(_ints(a), _ints(b)))),
    **dict.fromkeys(
        ["BitwiseLeftShift", "LeftShift", "BitwiseRightShift", "RightShift"], _two(lambda f, a, b: f(_ints(a), _shift(b)))
    ),
    **dict.fromkeys(["Equal", "NotEqual"], _two(lambda f, a, b: f(ops.round(a), ops.round(b)))),
    "Where": _two(lambda f, a, b: f(ops.greater(a, b), a, b)),
    "Roll": _one(lambda f, x: f(x, 1, axis=1)),
    **dict.fromkeys(["Argmax", "Argmin", "Nanargmax", "Nanargmin"], _one(lambda f, x: f(x, axis=1, keepdims=True))),
    "Moveaxis": _one(lambda f, x: _channels_last(f(x, 3, 1))),
    "Swapaxes": _one(lambda f, x: _channels_last(f(x, 1, 3))),  # (B, C, W, H): the square image transposed
    "Einsum": _two(lambda f, a, b: f("bhwc,bhwc->bhc", a, b)),  # sums over the width, couples a and b
    "Resize": _one(lambda f, x: f(x, (3, 5))),
    # channels first: Keras gives channels-last inputs a wrong symbolic shape (see EXEMPT)
    **dict.fromkeys(
        ["AdaptiveMaxPool", "AdaptiveAveragePool"],
        _one(lambda f, x: _channels_last(f(ops.transpose(x, (0, 3, 1, 2)), (2, 2), data_format="channels_first"))),
    ),
}


def op_call(cls) -> OpCall:
    if cls.__name__ in CALLS:
        return CALLS[cls.__name__]
    family = type(registered_handlers()[cls])
    if family is op_handlers.ElementwiseOpHandler and cls in op_handlers._BINARY:
        return _BINARY
    if family not in FAMILY_CALLS:
        pytest.fail(f"no call for operation family {family.__name__}: add one to FAMILY_CALLS", pytrace=False)
    return FAMILY_CALLS[family]


def op_function(cls):
    """The public ``keras.ops`` function that records a ``cls`` (``keras.ops.add`` for
    Add); for an alias subclass (``Abs`` of ``Absolute``: ``keras.ops.abs`` records an
    Absolute) the class itself, called."""
    if any(base in registered_handlers() for base in cls.__mro__[1:]):
        return lambda *args, **kwargs: cls()(*args, **kwargs)
    fn = keras
    for part in operation_name(object.__new__(cls)).split(".")[1:]:  # the name reads the class only
        fn = getattr(fn, part)
    return fn


def _naming_under_test(fn, cls):
    """``fn``, naming the operation it records UT (checking that it is a ``cls``)."""

    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        for t in keras.tree.flatten(out):
            op = producer(t)[0]
            if op is not None:  # None: an eager call
                assert type(op) is cls, f"{fn} recorded a {type(op).__name__}, not a {cls.__name__}"
                op.name = UT
        return out

    return call


def op_model(cls) -> keras.Model:
    spec = op_call(cls)
    inp = keras.Input(spec.shape, name="inp")
    xs = [L.Conv2D(w, 1, name=n)(inp) for w, n in zip(spec.widths, ("before", "other"))]
    y = spec.call(_naming_under_test(op_function(cls), cls), *xs)
    if y.dtype != "float32":  # a comparison, an integer operation, a cast
        y = ops.cast(y, "float32")
    return keras.Model(inp, _tail(y))


def turns_zero_into_nonzero(cls) -> bool:
    """Whether the operation's call, on zero producers (every channel removed), passes
    something else on (``exp``, the ``+ 1`` of ``log(|x| + 1)``, a softmax over the
    height); its result must stay finite, or no reference could cut the channels off."""
    spec = op_call(cls)
    zeros = [np.zeros((1,) + spec.shape[:-1] + (w,), "float32") for w in spec.widths]
    out = np.asarray(ops.cast(spec.call(op_function(cls), *zeros), "float32"))
    assert np.isfinite(out).all(), f"{cls.__name__}'s call is not finite on zeros"
    return bool(out.any())


MINIMAL_MODELS.update({cls: functools.partial(op_model, cls) for cls in OPERATIONS if cls not in EXEMPT})


def _name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


REGISTERED = sorted(registered_handlers(), key=_name)
UNDER_CONTRACT = [cls for cls in REGISTERED if cls not in EXEMPT]


def _id(cls) -> str:
    """Test ids: the class name, with its module for an operation (``numpy.Add``, not the layer ``Add``)."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" if cls in OPERATIONS else cls.__name__


contract = pytest.mark.parametrize("cls", UNDER_CONTRACT, ids=_id)


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


def calls_of(model) -> dict:
    """path -> layer or operation of ``model``, nested models included."""
    out = dict(iter_layers(model))
    out.update((op.name, op) for op in model.operations if is_operation(op))
    return out


def layer_under_test(model):
    """(path, layer or operation) of the one named UT, nested models included."""
    found = [(p, lay) for p, lay in calls_of(model).items() if lay.name == UT]
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


_ANALYZED: dict = {}
_PRUNED: dict = {}


def analyzed(cls):
    """(model, graph) for ``cls``, built and analyzed once per class."""
    if cls not in _ANALYZED:
        model = build(cls)
        _ANALYZED[cls] = (model, kp.analyze(model))
    return _ANALYZED[cls]


def pruned(cls):
    """(model, graph, keep, thin, x) for ``cls``, built once per class."""
    if cls not in _PRUNED:
        model, graph = analyzed(cls)
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
    return out, [tuple(w.shape) for w in getattr(layer, "weights", ())]  # operations have none


def needs_cut_inputs(cls) -> bool:
    return cls in CUT_INPUTS or (cls in OPERATIONS and turns_zero_into_nonzero(cls))


def test_contract_tables_name_registered_classes_only():
    registered = set(REGISTERED)
    stale = [_name(c) for c in list(MINIMAL_MODELS) + list(EXEMPT) if c not in registered]
    assert not stale, f"no handler is registered for {stale}: remove them from the tables"
    both = [_name(c) for c in EXEMPT if c in MINIMAL_MODELS]
    assert not both, f"{both} are both exempt and under contract"
    names = {c.__name__ for c in OPERATIONS}
    stale = sorted(set(CALLS) - names)
    assert not stale, f"CALLS names {stale}, which are no registered operation classes"


@contract
def test_channels_through_the_layer_are_prunable(cls):
    model, graph = analyzed(cls)
    path, layer = layer_under_test(model)
    assert type(layer) is cls
    rec = next(r for r in graph.records if r.path == path)
    assert rec.handler is registered_handlers()[cls]
    frozen = [(g.name, g.reason) for g in graph.frozen]
    if getattr(layer, "weights", None) or rec.slots:
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
    thin_layer = calls_of(thin)[path]
    assert _shapes(thin_layer) != _shapes(layer), f"{path!r} kept its width"
    got = thin(x, training=False)
    if all(m.exact for g in graph.prunable for m in g.members):
        ref = cut_off(model, graph, keep, cut_inputs=needs_cut_inputs(cls))
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
    model, graph = analyzed(cls)
    compared = []
    for rec in graph.records:
        if not getattr(rec.layer, "weights", None):  # an operation: no weight positions to state
            continue
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
    reason="the mask of a Masking layer is any(x != 0, axis=-1): the Any operation reduces the "
    "channel axis, which freezes the channels entering Masking when the mask is read downstream",
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


@pytest.mark.parametrize("cls", [knn.AdaptiveMaxPool, knn.AdaptiveAveragePool], ids=_id)
def test_adaptive_pooling_contract_but_the_round_trip(cls, tmp_path):
    """The contract of the adaptive poolings, exempt since Keras cannot reload them: their
    channels are prunable and the thin model is the cut-off original; when the round trip
    stops failing, they belong under the contract."""
    model = randomize(op_model(cls), seed=7)
    graph = kp.analyze(model)
    path, op = layer_under_test(model)
    assert type(op) is cls and graph.record(path).handler is registered_handlers()[cls]
    assert graph.group_of("before").prunable
    keep = odd_channels(graph)
    thin = kp.rebuild(model, keep, graph=graph)
    x = sample(model, np.random.default_rng(3))
    assert_close(thin(x, training=False), cut_off(model, graph, keep, cut_inputs=needs_cut_inputs(cls))(x))
    thin.save(tmp_path / "thin.keras")
    with pytest.raises(TypeError, match="could not be deserialized"):
        keras.models.load_model(tmp_path / "thin.keras")
