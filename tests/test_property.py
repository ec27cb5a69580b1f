"""Property-based tests: random small functional architectures, random keep-sets.

Hypothesis draws an architecture *spec* (a stem, a few blocks, a head) mixing the
supported families: plain conv chains, residual blocks (``Add``, ``Subtract``,
``Average``, ``Maximum``) with and without a projection shortcut, concatenated branches,
squeeze-and-excitation gates (reshaped, kept-dims and rank-broadcast, gate on either
side), depthwise and separable convolutions (with multipliers), grouped convolutions,
Dense on feature maps, pooling, nested models (called once or twice), shared layers,
composite layers (a residual block written as a layer with sublayers),
BatchNormalization and GAP or Flatten heads. For each model it draws a keep-set (a random non-empty subset of
every prunable group, the same count in each block) and checks that

* the thin model equals the original with the removed channels cut off
  (``reference.cut_off``, which zeroes channels where they are created),
* every layer producing a pruned group has exactly the kept width,
* the thin model survives a ``.keras`` round trip with identical outputs.

The spec is plain data (tuples), so a failing example prints as a readable recipe.
Runs are derandomized: CI draws the same examples every time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Sequence, Tuple

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from models import L, randomize
from reference import assert_close, cut_off

import kerasprune as kp
from kerasprune.graph.composite import iter_layers

Spec = Tuple[int, Tuple[tuple, ...], tuple]

SIDE = 8  # input is SIDE x SIDE x 3
ACTS = ["relu", "tanh", "swish", None]  # all map 0 to 0, which the cut-off reference needs

PROPERTY_SETTINGS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    # no shrinking: a failure prints its spec and keep-set at once instead of spending
    # minutes rebuilding models; add Phase.shrink locally to minimize a failing case
    phases=(Phase.explicit, Phase.generate),
    # the autouse conftest fixture only resets global Keras state; each example also
    # clears the session itself, so sharing the fixture across examples is harmless
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# --------------------------------------------------------------------------- specs

width = st.integers(2, 10)
act = st.sampled_from(ACTS)
BRANCHES = {
    "conv": (width,),
    "conv2": (width, width),
    "identity": (),
    "pool": (),
}
BLOCKS = {
    "conv": (width, act, st.booleans(), st.sampled_from([1, 3])),
    "residual": (width, st.booleans(), st.sampled_from(["Add", "Subtract", "Average", "Maximum"])),
    "projection": (width, width, st.sampled_from([1, 2])),
    "concat": (),  # filled below: its branches
    "se": (st.integers(1, 4), st.sampled_from(["reshape", "keepdims", "broadcast"]), st.booleans()),
    "separable": (width, st.sampled_from([1, 2])),
    "dense": (width,),
    "depthwise": (st.sampled_from([1, 2]), st.booleans()),
    "grouped": (st.integers(1, 5),),
    "pool": (st.sampled_from(["max", "avg"]),),
    "nested": (width, st.booleans()),
    "shared": (width, width, st.sampled_from(["add", "concat", "chain"])),
    "composite": (width, st.booleans()),
}


def _kind_then_params(table: dict) -> st.SearchStrategy:
    """``(kind, *params)``: the kind drawn uniformly first, so every family shows up."""
    return st.sampled_from(sorted(table)).flatmap(lambda k: st.tuples(st.just(k), *table[k]))


branch = _kind_then_params(BRANCHES)
BLOCKS["concat"] = (st.lists(branch, min_size=2, max_size=3).map(tuple),)
block = _kind_then_params(BLOCKS)
head = st.one_of(
    st.tuples(st.just("gap"), st.one_of(st.none(), width)),
    st.tuples(st.just("flatten"), width),
)
specs = st.tuples(st.integers(2, 10), st.lists(block, min_size=1, max_size=5).map(tuple), head)


# --------------------------------------------------------------------------- builder


def _channels(x) -> int:
    return int(x.shape[-1])


def _side(x) -> int:
    return int(x.shape[1])


def _conv_block(x, name: str, filters: int, activation, bn: bool, kernel: int):
    x = L.Conv2D(filters, kernel, padding="same", activation=None if bn else activation, name=f"{name}_conv")(x)
    if bn:
        x = L.BatchNormalization(name=f"{name}_bn")(x)
        x = L.Activation(activation or "linear", name=f"{name}_act")(x)
    return x


def _residual(x, name: str, mid: int, bn: bool, merge: str):
    y = L.Conv2D(mid, 3, padding="same", activation="relu", name=f"{name}_c1")(x)
    y = L.Conv2D(_channels(x), 3, padding="same", name=f"{name}_c2")(y)
    if bn:
        y = L.BatchNormalization(name=f"{name}_bn")(y)
    x = getattr(L, merge)(name=f"{name}_merge")([y, x] if bn else [x, y])
    return L.ReLU(name=f"{name}_relu")(x)


def _projection(x, name: str, mid: int, out: int, stride: int):
    stride = stride if _side(x) >= 4 else 1
    y = L.Conv2D(mid, 3, strides=stride, padding="same", activation="relu", name=f"{name}_c1")(x)
    y = L.Conv2D(out, 3, padding="same", name=f"{name}_c2")(y)
    y = L.BatchNormalization(name=f"{name}_bn")(y)
    s = L.Conv2D(out, 1, strides=stride, name=f"{name}_proj")(x)
    return L.Add(name=f"{name}_add")([s, y])


def _concat(x, name: str, branches: Sequence[tuple]):
    outs = []
    for i, b in enumerate(branches):
        bname = f"{name}_br{i}"
        if b[0] == "conv":
            outs.append(L.Conv2D(b[1], 1, activation="relu", name=bname)(x))
        elif b[0] == "conv2":
            y = L.Conv2D(b[1], 1, activation="relu", name=f"{bname}a")(x)
            outs.append(L.Conv2D(b[2], 3, padding="same", name=f"{bname}b")(y))
        elif b[0] == "pool":
            outs.append(L.MaxPooling2D(3, strides=1, padding="same", name=bname)(x))
        else:
            outs.append(x)
    return L.Concatenate(axis=-1, name=f"{name}_cat")(outs)


def _squeeze_excite(x, name: str, reduced: int, variant: str, gate_first: bool):
    c = _channels(x)
    if variant == "keepdims":
        s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(x)
        s = L.Conv2D(reduced, 1, activation="relu", name=f"{name}_reduce")(s)
        s = L.Conv2D(c, 1, activation="sigmoid", name=f"{name}_expand")(s)
    else:
        s = L.GlobalAveragePooling2D(name=f"{name}_gap")(x)
        s = L.Dense(reduced, activation="relu", name=f"{name}_reduce")(s)
        s = L.Dense(c, activation="sigmoid", name=f"{name}_expand")(s)
        if variant == "reshape":
            s = L.Reshape((1, 1, c), name=f"{name}_reshape")(s)
        # "broadcast": Multiply broadcasts (B, C) against (B, H, W, C) itself
    return L.Multiply(name=f"{name}_gate")([s, x] if gate_first else [x, s])


def _separable(x, name: str, filters: int, multiplier: int):
    return L.SeparableConv2D(
        filters, 3, depth_multiplier=multiplier, padding="same", activation="relu", name=f"{name}_sep"
    )(x)


def _dense(x, name: str, units: int):
    return L.Dense(units, activation="relu", name=f"{name}_dense")(x)  # a 1x1 conv on rank 4


def _depthwise(x, name: str, multiplier: int, bn: bool):
    x = L.DepthwiseConv2D(3, depth_multiplier=multiplier, padding="same", name=f"{name}_dw")(x)
    if bn:
        x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(6.0, name=f"{name}_relu")(x)


def _grouped(x, name: str, per_group: int):
    groups = 2 if _channels(x) % 2 == 0 else 1
    return L.Conv2D(per_group * 2, 3, groups=groups, padding="same", activation="relu", name=f"{name}_gconv")(x)


def _pool(x, name: str, kind: str):
    if _side(x) < 2:
        return x
    cls = L.MaxPooling2D if kind == "max" else L.AveragePooling2D
    return cls(2, padding="same", name=f"{name}_pool")(x)


def _nested(x, name: str, filters: int, twice: bool):
    c = _channels(x)
    inner_in = keras.Input(tuple(x.shape[1:]), name=f"{name}_in")
    y = L.Conv2D(filters, 3, padding="same", name="conv")(inner_in)
    y = L.BatchNormalization(name="bn")(y)
    y = L.ReLU(name="relu")(y)
    y = L.Conv2D(c if twice else filters, 1, name="mix")(y)  # twice: maps C -> C
    inner = keras.Model(inner_in, y, name=f"{name}_model")
    x = inner(x)
    return inner(x) if twice else x


def _shared(x, name: str, mid: int, out: int, mode: str):
    if mode == "chain":  # one layer called on its own output: input and output coupled
        shared = L.Conv2D(_channels(x), 3, padding="same", activation="tanh", name=f"{name}_shared")
        return shared(shared(x))
    a = L.Conv2D(mid, 1, name=f"{name}_a")(x)
    b = L.Conv2D(mid, 3, padding="same", name=f"{name}_b")(x)
    shared = L.Conv2D(out, 3, padding="same", activation="relu", name=f"{name}_shared")
    ya, yb = shared(a), shared(b)
    if mode == "add":
        return L.Add(name=f"{name}_add")([ya, yb])
    return L.Concatenate(name=f"{name}_cat")([ya, yb])


@keras.saving.register_keras_serializable(package="kptest_property")
class CompositeResidual(keras.layers.Layer):
    """A user's residual block as a layer with sublayers (walked inside by tracing)."""

    def __init__(self, mid: int, channels: int, bn: bool, **kwargs):
        super().__init__(**kwargs)
        self.mid, self.channels, self.bn = mid, channels, bn
        self.c1 = L.Conv2D(mid, 3, padding="same", activation="relu", name="c1")
        self.norm = L.BatchNormalization(name="norm") if bn else None
        self.c2 = L.Conv2D(channels, 1, name="c2")
        self.add = L.Add(name="add")

    def call(self, x, training=None):
        y = self.c1(x)
        if self.norm is not None:
            y = self.norm(y, training=training)
        return self.add([x, self.c2(y)])

    def get_config(self):
        return {**super().get_config(), "mid": self.mid, "channels": self.channels, "bn": self.bn}


def _composite(x, name: str, mid: int, bn: bool):
    return CompositeResidual(mid, _channels(x), bn, name=f"{name}_block")(x)


BUILDERS = {
    "conv": _conv_block,
    "residual": _residual,
    "projection": _projection,
    "concat": _concat,
    "se": _squeeze_excite,
    "separable": _separable,
    "dense": _dense,
    "depthwise": _depthwise,
    "grouped": _grouped,
    "pool": _pool,
    "nested": _nested,
    "shared": _shared,
    "composite": _composite,
}


def build_model(spec: Spec, seed: int = 0) -> keras.Model:
    """The functional model described by ``spec``, with random weights.

    Args:
        spec: ``(stem width, blocks, head)`` as drawn by :data:`specs`.
        seed: seed of the random weights.
    """
    stem, blocks, (head_kind, hidden) = spec
    inp = keras.Input((SIDE, SIDE, 3), name="img")
    x = L.Conv2D(stem, 3, padding="same", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for i, blk in enumerate(blocks):
        x = BUILDERS[blk[0]](x, f"b{i}", *blk[1:])
    if head_kind == "flatten":
        x = L.Flatten(name="flat")(x)
    else:
        x = L.GlobalAveragePooling2D(name="gap")(x)
    if hidden is not None:
        x = L.Dense(hidden, activation="relu", name="fc")(x)
    out = L.Dense(3, name="head")(x)
    return randomize(keras.Model(inp, out, name="drawn"), seed=seed)


# --------------------------------------------------------------------------- keep-sets


@st.composite
def keep_sets(draw, graph: kp.PruningGraph) -> dict:
    """A random keep-set for ``graph``: a non-empty subset of every prunable group.

    Each of a group's ``blocks`` keeps the same number of channels (drawn once per
    group); which channels each block keeps is drawn independently.
    """
    keep = {}
    for g in graph.prunable:
        per = g.size // g.blocks
        n = draw(st.integers(1, per), label=f"kept per block of {g.name}")
        idx: List[int] = []
        for b in range(g.blocks):
            chosen = draw(st.permutations(range(per)))[:n]
            idx.extend(b * per + c for c in sorted(chosen))
        keep[g.name] = idx
    return keep


def _width_of(layer) -> int:
    cfg = layer.get_config()
    for key in ("filters", "units"):
        if key in cfg:
            return int(cfg[key])
    raise AssertionError(f"layer {layer.name} has no width key")


# --------------------------------------------------------------------------- properties


def check_pruned(model: keras.Model, graph: kp.PruningGraph, keep: dict, x: np.ndarray) -> None:
    """Rebuild ``model`` with ``keep`` and check the thin model against the references.

    * its outputs equal the cut-off original's (1e-5 relative, float32),
    * each producer's new width is the kept count of the groups its output holds,
    * a ``.keras`` save and plain ``load_model`` give identical outputs.
    """
    thin = kp.rebuild(model, keep, graph=graph)
    ref = cut_off(model, graph, keep)
    out = np.asarray(thin(x, training=False))
    assert_close(out, ref(x, training=False))

    # a producer's new width: the kept channels of every group its outputs hold, each
    # counted as often as it occupies the slot (a filter set aliased to a depthwise
    # multiplied or concatenated layout holds several groups or repeats)
    expected: dict = {}
    for g in graph.groups:
        kept = len(keep.get(g.name, range(g.size)))
        for m in g.members:
            if m.produced and m.slot == "out":
                expected[m.layer] = expected.get(m.layer, 0) + kept * m.factor
    thin_layers = dict(iter_layers(thin))
    assert {path: _width_of(thin_layers[path]) for path in expected} == expected
    assert kp.count_params(thin).total <= kp.count_params(model).total

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thin.keras"
        thin.save(path)
        loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), out)


def _inputs(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, SIDE, SIDE, 3)).astype("float32")


@PROPERTY_SETTINGS
@given(spec=specs, seed=st.integers(0, 2**16), data=st.data())
def test_random_architecture_prunes_exactly_and_round_trips(spec: Spec, seed: int, data) -> None:
    """Thin model == cut-off original; produced widths == kept counts; .keras round trip."""
    keras.backend.clear_session()
    model = build_model(spec, seed)
    graph = kp.analyze(model, warn=False)
    for blk in spec[1]:
        event(f"block {blk[0]}")  # coverage, shown by --hypothesis-show-statistics
    assert not graph.unsupported, graph.unsupported  # every drawn layer has a handler
    assert graph.prunable, "the stem's channels at least must be prunable"
    keep = data.draw(keep_sets(graph), label="keep")
    check_pruned(model, graph, keep, _inputs(seed))


# every variant of every block kind at least once, whatever the draws above cover
FIXED_SPECS = {
    "squeeze_excite_variants": (
        6,
        (("se", 2, "reshape", False), ("se", 3, "keepdims", True), ("se", 1, "broadcast", True),
         ("conv", 5, "swish", True, 3), ("se", 2, "broadcast", False)),
        ("gap", None),
    ),
    "residual_merges_and_projections": (
        6,
        (("residual", 4, True, "Add"), ("residual", 3, False, "Subtract"),
         ("projection", 4, 6, 2), ("residual", 2, True, "Average"),
         ("residual", 5, False, "Maximum"), ("projection", 3, 8, 1), ("grouped", 3)),
        ("flatten", 5),
    ),
    "multiplied_depthwise_under_gates_and_adds": (
        4,
        (("depthwise", 2, True), ("residual", 3, False, "Add"), ("se", 2, "reshape", True),
         ("separable", 5, 2), ("depthwise", 1, False), ("dense", 6)),
        ("flatten", 4),
    ),
    "concatenations": (
        5,
        (("concat", (("conv", 3), ("identity",), ("pool",))),
         ("concat", (("identity",), ("identity",))), ("residual", 3, True, "Add"),
         ("concat", (("conv2", 2, 4), ("conv", 3))), ("grouped", 3), ("se", 2, "keepdims", False)),
        ("gap", 4),
    ),
    "nested_and_shared": (
        6,
        (("nested", 4, False), ("nested", 3, True), ("shared", 3, 4, "add"),
         ("shared", 2, 3, "concat"), ("shared", 2, 2, "chain"), ("pool", "avg"), ("pool", "max")),
        ("flatten", 3),
    ),
    "composite_layers": (
        5,
        (("composite", 3, True), ("conv", 4, "relu", False, 3), ("composite", 6, False),
         ("residual", 2, False, "Add"), ("composite", 2, True)),
        ("gap", None),
    ),
}


def _random_keep_counts(graph: kp.PruningGraph, rng: np.random.Generator) -> dict:
    """Keep a random number (1..all) of random channels per prunable group and block."""
    keep = {}
    for g in graph.prunable:
        per = g.size // g.blocks
        n = int(rng.integers(1, per + 1))
        keep[g.name] = [b * per + int(c) for b in range(g.blocks) for c in np.sort(rng.choice(per, n, replace=False))]
    return keep


@pytest.mark.parametrize("name", list(FIXED_SPECS))
def test_every_block_variant_prunes_exactly_and_round_trips(name: str) -> None:
    model = build_model(FIXED_SPECS[name], seed=3)
    graph = kp.analyze(model, warn=False)
    assert not graph.unsupported, graph.unsupported
    rng = np.random.default_rng(5)
    for _ in range(2):
        check_pruned(model, graph, _random_keep_counts(graph, rng), _inputs(4))


@PROPERTY_SETTINGS
@given(spec=specs)
def test_random_architecture_keeping_everything_is_an_identical_copy(spec: Spec) -> None:
    """A keep-set that lists every channel of every group changes nothing."""
    keras.backend.clear_session()
    model = build_model(spec)
    graph = kp.analyze(model, warn=False)
    keep = {g.name: list(range(g.size)) for g in graph.groups}
    thin = kp.rebuild(model, keep, graph=graph)
    assert kp.count_params(thin).total == kp.count_params(model).total
    x = np.random.default_rng(1).normal(size=(2, SIDE, SIDE, 3)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(thin(x, training=False)), np.asarray(model(x, training=False))
    )


# --------------------------------------------------------------------------- regressions
# found by the random architectures above; each one reduced to its core


@pytest.mark.parametrize("multiplier", [1, 2])
def test_grouped_conv_after_merge_that_carries_an_aliased_layout_freezes_instead_of_crashing(
    multiplier: int,
) -> None:
    """A residual ``Add([y, x])`` whose ``x`` is a concatenation (or a depthwise-multiplied
    layout) makes ``y``'s filters a view of ``x``'s channels, and the Add's output carries
    ``y``'s layout. A grouped conv reading it used to record its blocks on that view,
    which the groups then ignored: uneven keep-sets were accepted and the rebuild failed
    slicing the grouped kernel. Its blocks must be checked against what ``y`` is a view
    of: a concatenation of two groups is not one group split in blocks, so it is frozen.
    """
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(3, 1, name="a")(inp)
    if multiplier == 1:
        x = L.Concatenate(name="cat")([a, L.Conv2D(3, 1, name="b")(inp)])
    else:
        x = L.DepthwiseConv2D(1, depth_multiplier=2, name="dw")(a)
    y = L.Conv2D(6, 3, padding="same", name="y")(x)
    x = L.Add(name="add")([y, x])  # y first: the output carries y's (aliased) layout
    x = L.Conv2D(4, 3, groups=2, padding="same", name="grouped")(x)
    model = randomize(keras.Model(inp, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))))
    graph = kp.analyze(model, warn=False)
    for name in ("a", "b") if multiplier == 1 else ("a",):
        grp = graph.group_of(name)
        assert not grp.prunable and "2 blocks that do not line up" in grp.reason
    with pytest.raises(kp.FrozenGroupError, match="blocks that do not line up"):
        kp.rebuild(model, {graph.group_of("a").name: [0]}, graph=graph)
    # the grouped conv's own filters still prune in aligned blocks, exactly
    keep = {graph.group_of("grouped").name: [1, 3]}
    check_pruned(model, graph, keep, np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32"))
