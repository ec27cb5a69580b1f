"""Selection: scopes, units, guards, ties, errors, and one-shot prune; checked against
brute-force references (sorting every channel by hand, counting the rebuilt model)."""

import warnings

import keras
import numpy as np
import pytest
from models import randomize, residual_net

import kerasprune as kp
from kerasprune.costs.channels import RemovalMeter, channel_costs
from kerasprune.selection import SelectionError, select

L = keras.layers


def chain_net():
    """Two feature-map levels (8x8, then 4x4) and a Dense level; every group plain."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(10, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.Conv2D(12, 3, padding="same", activation="relu", name="c2")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="c3")(x)
    x = L.Conv2D(20, 3, padding="same", activation="relu", name="c4")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(24, activation="relu", name="fc")(x)
    return randomize(keras.Model(inp, L.Dense(3, name="out")(x)))


def random_scores(graph, seed=0):
    rng = np.random.default_rng(seed)
    return {g.name: rng.uniform(size=g.size) for g in graph.prunable}


def removed_of(graph, keep):
    return {name: sorted(set(range(graph[name].size)) - set(int(i) for i in idx)) for name, idx in keep.items()}


def brute_global(graph, scores, n_remove):
    """Every channel of every group sorted by (score, group order, index): the lowest n."""
    rows = []
    for pos, g in enumerate(graph.prunable):
        rows += [(float(s), pos, i, g.name) for i, s in enumerate(scores[g.name])]
    rows.sort()
    out = {}
    for _, _, i, name in rows[:n_remove]:
        out.setdefault(name, []).append(i)
    return {k: sorted(v) for k, v in out.items()}


def test_global_removes_the_n_times_r_lowest_channels_of_the_whole_network():
    model = chain_net()
    graph = kp.analyze(model)
    scores = random_scores(graph)
    total = sum(g.size for g in graph.prunable)
    for ratio in (0.05, 0.2, 0.4):
        keep = select(graph, scores, ratio)
        assert removed_of(graph, keep) == brute_global(graph, scores, round(total * ratio))


def test_layerwise_removes_the_same_fraction_of_every_group_lowest_first():
    model = chain_net()
    graph = kp.analyze(model)
    scores = random_scores(graph, seed=1)
    keep = select(graph, scores, 0.25, scope="layerwise")
    for g in graph.prunable:
        n = round(g.size * 0.25)
        expected = sorted(np.argsort(scores[g.name], kind="stable")[:n].tolist())
        assert removed_of(graph, keep).get(g.name, []) == expected


def test_percentile_removes_every_channel_below_the_threshold():
    model = chain_net()
    graph = kp.analyze(model)
    scores = random_scores(graph, seed=2)
    everything = np.concatenate([scores[g.name] for g in graph.prunable])
    threshold = np.percentile(everything, 30)
    keep = select(graph, scores, 0.3, method="percentile")
    for g in graph.prunable:
        expected = np.nonzero(scores[g.name] < threshold)[0].tolist()
        assert removed_of(graph, keep).get(g.name, []) == expected


def test_equal_scores_break_ties_by_graph_order_then_channel_index():
    model = chain_net()
    graph = kp.analyze(model)
    scores = {g.name: np.ones(g.size) for g in graph.prunable}
    first = graph.prunable[0]
    keep = select(graph, scores, 5 / sum(g.size for g in graph.prunable))
    assert removed_of(graph, keep) == {first.name: [0, 1, 2, 3, 4]}
    assert removed_of(graph, select(graph, scores, 0.3)) == removed_of(graph, select(graph, scores, 0.3))


def test_min_channels_and_max_ratio_bound_every_group_and_the_rest_absorb_the_budget():
    model = chain_net()
    graph = kp.analyze(model)
    # group c1 scores far below everything else: a global ranking wants all of it
    scores = random_scores(graph, seed=3)
    scores["c1"] = scores["c1"] * 1e-3
    total = sum(g.size for g in graph.prunable)
    keep = select(graph, scores, 0.3, min_channels=4)
    assert len(keep["c1"]) == 4
    assert sum(g.size - len(keep.get(g.name, range(g.size))) for g in graph.prunable) == round(0.3 * total)
    keep = select(graph, scores, 0.3, max_ratio=0.5)
    for g in graph.prunable:
        assert g.size - len(keep.get(g.name, range(g.size))) <= g.size // 2
    with pytest.warns(UserWarning, match="guards"):
        keep = select(graph, scores, 0.95)
    assert all(len(k) >= 1 for k in keep.values())


def test_round_to_keeps_pruned_widths_multiples_of_n():
    model = chain_net()
    graph = kp.analyze(model)
    scores = random_scores(graph, seed=4)
    for ratio in (0.1, 0.3, 0.6):
        keep = select(graph, scores, ratio, round_to=4)
        assert keep
        for name, kept in keep.items():
            assert len(kept) % 4 == 0 and 0 < len(kept) < graph[name].size
            lowest = np.argsort(scores[name], kind="stable")[: graph[name].size - len(kept)]
            assert sorted(set(range(graph[name].size)) - set(kept.tolist())) == sorted(lowest.tolist())


def test_exclude_by_layer_name_or_group_pattern_and_unknown_pattern_is_an_error():
    model = residual_net()
    graph = kp.analyze(model)
    scores = random_scores(graph, seed=5)
    keep = select(graph, scores, 0.5, exclude=["b1_conv2"])  # a producer of the residual group
    assert "stem+b1_conv2" not in keep and keep
    keep = select(graph, scores, 0.5, exclude=["b2_*"])
    assert set(keep) <= {"stem+b1_conv2", "b1_conv1"}
    with pytest.raises(SelectionError, match="b1_conv3"):
        select(graph, scores, 0.5, exclude=["b1_conv3"])


def test_grouped_convolution_loses_the_same_number_of_channels_in_every_block():
    inp = keras.Input((6, 6, 4))
    x = L.Conv2D(8, 1, name="pw")(inp)
    x = L.Conv2D(8, 3, groups=4, padding="same", name="grouped")(x)
    model = randomize(keras.Model(inp, L.Conv2D(3, 1, name="head")(x)))
    graph = kp.analyze(model)
    blocky = [g for g in graph.prunable if g.blocks > 1]
    assert blocky
    scores = random_scores(graph, seed=6)
    keep = select(graph, scores, 0.5, scope="layerwise")
    for g in blocky:
        width = g.size // g.blocks
        kept = keep[g.name]
        per_block = np.bincount(kept // width, minlength=g.blocks)
        assert len(set(per_block.tolist())) == 1
    thin = kp.rebuild(model, keep, graph=graph)
    assert thin.get_layer("grouped").filters == len(keep[graph.group_of("grouped").name])


def test_hierarchical_shares_the_budget_by_level_channels_and_ranks_globally_inside():
    model = chain_net()
    graph = kp.analyze(model)
    scores = random_scores(graph, seed=7)
    costs = channel_costs(graph)
    levels = {}
    for g in graph.prunable:
        levels.setdefault(costs.spatial[g.name], []).append(g.name)
    assert sorted(levels) == [1, 16, 64]  # fc | c3, c4 | c1, c2
    total = sum(g.size for g in graph.prunable)
    budget = round(0.3 * total)
    keep = select(graph, scores, 0.3, scope="hierarchical")
    removed = removed_of(graph, keep)
    for size, names in levels.items():
        n_level = sum(graph[n].size for n in names)
        share = budget * n_level / total
        rows = sorted((scores[n][i], i, n) for n in names for i in range(graph[n].size))
        taken = [(n, i) for _, i, n in rows[: int(np.floor(share + 0.5))]]
        got = [(n, i) for n in names for i in removed.get(n, [])]
        assert sorted(got) == sorted(taken)


def test_hierarchical_flops_shares_follow_each_levels_macs():
    model = chain_net()
    graph = kp.analyze(model)
    scores = random_scores(graph, seed=8)
    costs = channel_costs(graph)
    flops = kp.count_flops(model).per_layer
    assert costs.layer_flops["c3"] == flops["c3"]
    keep = select(graph, scores, 0.3, scope="hierarchical", hierarchy="flops")
    removed = {n: len(v) for n, v in removed_of(graph, keep).items()}
    budget = round(0.3 * sum(g.size for g in graph.prunable))
    level_macs = {64: flops["c1"] + flops["c2"], 16: flops["c3"] + flops["c4"], 1: flops["fc"]}
    total = sum(level_macs.values())
    got = {64: removed.get("c1", 0) + removed.get("c2", 0), 16: removed.get("c3", 0) + removed.get("c4", 0),
           1: removed.get("fc", 0)}
    assert sum(got.values()) == budget  # rounding leftovers are spent globally
    for size, macs in level_macs.items():
        assert abs(got[size] - budget * macs / total) <= 1.0, size


def test_marginal_channel_costs_equal_what_rebuilding_without_that_channel_saves():
    model = residual_net()
    graph = kp.analyze(model)
    costs = channel_costs(graph)
    params0 = kp.count_params(model).total
    flops0 = kp.count_flops(model).total
    for g in graph.prunable:
        thin = kp.rebuild(model, {g.name: range(1, g.size)}, graph=graph)
        assert costs.params[g.name][0] == params0 - kp.count_params(thin).total
        assert costs.flops[g.name][0] == pytest.approx(flops0 - kp.count_flops(thin).total)


@pytest.mark.parametrize("unit", ["params", "flops"])
def test_parameter_and_flops_budgets_are_met_as_measured_on_the_rebuilt_model(unit):
    model = chain_net()
    graph = kp.analyze(model)
    scores = random_scores(graph, seed=9)
    count = kp.count_params if unit == "params" else kp.count_flops
    before = count(model).total
    costs = channel_costs(graph)
    step = max(float(getattr(costs, unit)[g.name].max()) for g in graph.prunable)
    meter = RemovalMeter(graph)
    for scope in ("global", "layerwise", "hierarchical"):
        for ratio in (0.3, 0.6):
            keep = select(graph, scores, ratio, scope=scope, unit=unit)
            thin = kp.rebuild(model, keep, graph=graph)
            removed = before - count(thin).total
            assert meter(keep)[unit] == pytest.approx(removed)
            assert abs(removed - ratio * before) <= step, (scope, ratio)


def test_selection_errors_say_what_is_wrong():
    model = chain_net()
    graph = kp.analyze(model)
    scores = random_scores(graph)
    with pytest.raises(SelectionError, match=r"ratio must be in \[0, 1\)"):
        select(graph, scores, 1.0)
    with pytest.raises(SelectionError, match="unknown scope 'local'"):
        select(graph, scores, 0.1, scope="local")
    with pytest.raises(SelectionError, match="has 12 channels"):
        select(graph, {**scores, "c2": np.ones(3)}, 0.1)
    with pytest.raises(SelectionError, match="NaN"):
        select(graph, {**scores, "c2": np.full(12, np.nan)}, 0.1)
    with pytest.raises(SelectionError, match="unit='neurons'"):
        select(graph, scores, 0.1, unit="flops", method="percentile")
    with pytest.raises(SelectionError, match="min_channels"):
        select(graph, scores, 0.1, min_channels=0)
    with pytest.raises(SelectionError, match="cannot be pruned"):
        select(graph, {**scores, "out": np.ones(3)}, 0.1)
    assert select(graph, scores, 0.0) == {}


def test_prune_is_score_then_select_then_rebuild_and_leaves_the_model_alone():
    model = chain_net()
    before = [w.copy() for w in model.get_weights()]
    thin = kp.prune(model, 0.3)
    graph = kp.analyze(model)
    keep = select(graph, kp.score(model, graph=graph), 0.3)
    ref = kp.rebuild(model, keep, graph=graph)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(thin.predict(x, verbose=0), ref.predict(x, verbose=0), rtol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    total = sum(g.size for g in graph.prunable)
    widths = sum(len(k) for k in keep.values()) + sum(g.size for g in graph.prunable if g.name not in keep)
    assert total - widths == round(0.3 * total)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        kp.prune(model, 0.3, exclude=["c1"])


def repeated_blocks_net(widths=(16, 16, 12)):
    """Residual MLP blocks ``x + down(relu(up(norm(x))))``; blocks ``blk0``, ``blk1``...
    with the given FFN widths, on a stream of 8 channels normalized by LayerNormalization."""
    inp = keras.Input((5, 8))
    x = L.Dense(8, name="embed")(inp)
    for i, w in enumerate(widths):
        h = L.LayerNormalization(name=f"blk{i}_norm")(x)
        h = L.Dense(w, activation="relu", name=f"blk{i}_up")(h)
        x = L.Add(name=f"blk{i}_add")([x, L.Dense(8, name=f"blk{i}_down")(h)])
    return randomize(keras.Model(inp, L.Dense(3, name="head")(x)))


def test_uniform_removes_as_many_channels_from_each_repeated_group_its_own_lowest():
    model = repeated_blocks_net()
    graph = kp.analyze(model)
    ffn = [graph.group_of("blk0_up").name, graph.group_of("blk1_up").name]
    odd = graph.group_of("blk2_up").name  # another width: another kind
    scores = random_scores(graph, seed=3)
    plain = select(graph, scores, 0.4)
    even = select(graph, scores, 0.4, uniform=True)
    removed = {n: graph[n].size - len(even.get(n, range(graph[n].size))) for n in ffn}
    assert removed[ffn[0]] == removed[ffn[1]] > 0
    want = int(round(np.mean([graph[n].size - len(plain.get(n, range(graph[n].size))) for n in ffn])))
    assert removed[ffn[0]] == want
    for n in ffn:  # each group keeps its own highest-scoring channels
        top = np.sort(np.argsort(-scores[n], kind="stable")[: graph[n].size - removed[n]])
        np.testing.assert_array_equal(even[n], top)
    assert np.array_equal(even.get(odd, []), plain.get(odd, []))


def test_hidden_size_groups_normalized_together_are_left_alone_unless_asked_for():
    model = repeated_blocks_net()
    graph = kp.analyze(model)
    stream = graph.group_of("embed")
    assert stream.prunable and not stream.exact
    assert all(graph[n].exact for n in (graph.group_of("blk0_up").name,))
    scores = random_scores(graph)
    scores[stream.name] = np.zeros(stream.size)  # the lowest of all
    assert stream.name not in select(graph, scores, 0.3)
    assert stream.name in select(graph, scores, 0.3, hidden_size=True)
    assert stream.name in select(graph, scores, 0.3, options=kp.SelectionOptions(hidden_size=True))
    with pytest.raises(SelectionError, match="hidden_size must be True or False, got 'yes'"):
        kp.SelectionOptions(hidden_size="yes")
