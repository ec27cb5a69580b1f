"""SelectionOptions: one checked, serializable value for the selection options, taken by
every entry point that selects, and one meaning of ``exclude`` everywhere."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from models import residual_net
from test_gradual import tiny_data, tiny_model

import kerasprune as kp
from kerasprune.callbacks import SaliencyAccumulator, SoftFilterPruning
from kerasprune.errors import CallbackError, ImportanceError, SelectionError
from kerasprune.pruning import GradualPruner
from kerasprune.runs.rundir import RunDirectory
from kerasprune.selection import SelectionOptions, resolve_options, select

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def random_scores(graph, seed=0):
    rng = np.random.default_rng(seed)
    return {g.name: rng.uniform(size=g.size) for g in graph.prunable}


def same_keep(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- the value


def test_defaults_are_todays_defaults_and_the_value_is_exported_at_the_top():
    opts = kp.SelectionOptions()
    assert kp.SelectionOptions is SelectionOptions
    assert opts.get_config() == {
        "scope": "global", "unit": "neurons", "hierarchy": "channels", "method": "count",
        "min_channels": 1, "max_ratio": 1.0, "round_to": 1, "exclude": [],
        "uniform": False, "hidden_size": False,
    }
    assert SelectionOptions.fields() == (
        "scope", "unit", "hierarchy", "method", "min_channels", "max_ratio", "round_to", "exclude",
        "uniform", "hidden_size",
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(scope="local"), r"unknown scope 'local'; use one of: global, layerwise, hier"),
        (dict(unit="bytes"), r"unknown unit 'bytes'; use one of: neurons, params, flops"),
        (dict(method="median"), r"unknown method 'median'; use one of: count, percentile"),
        (dict(hierarchy="depth"), r"unknown hierarchy 'depth'; use one of: channels, flops"),
        (dict(max_ratio=0), r"max_ratio must be in \(0, 1\], got 0"),
        (dict(max_ratio=1.5), r"max_ratio must be in \(0, 1\], got 1.5"),
        (dict(min_channels=0), r"min_channels must be at least 1 \(no group may be emptied\), got"),
        (dict(round_to=0), r"round_to must be a positive integer, got 0"),
        (dict(method="percentile", unit="flops"), r"method='percentile' .* use unit='neurons'"),
        (dict(min_channels=2.5), r"min_channels must be an integer, got 2.5"),
        (dict(max_ratio="half"), r"max_ratio must be a number"),
        (dict(exclude=3), r"exclude must be fnmatch patterns"),
        (dict(exclude=["fc", 3]), r"exclude patterns must be strings"),
    ],
)
def test_invalid_options_are_refused_when_made(options, message):
    with pytest.raises(SelectionError, match=message):
        SelectionOptions(**options)


def test_values_are_normalized_so_equal_options_compare_and_hash_equal():
    a = SelectionOptions(min_channels=2.0, max_ratio=1, exclude=["fc*"])
    b = SelectionOptions(min_channels=np.int64(2), max_ratio=1.0, exclude=("fc*",))
    assert a == b and hash(a) == hash(b)
    assert type(a.min_channels) is int and type(a.max_ratio) is float
    assert SelectionOptions(exclude="fc*").exclude == ("fc*",)  # one string is one pattern
    with pytest.raises(AttributeError):
        a.scope = "layerwise"  # frozen


def test_get_config_from_config_round_trip_also_through_json():
    opts = SelectionOptions(
        scope="hierarchical", unit="flops", hierarchy="flops", min_channels=3, max_ratio=0.6,
        round_to=4, exclude=["b2_*", "stem"],
    )
    config = opts.get_config()
    assert json.loads(json.dumps(config)) == config  # plain JSON
    assert SelectionOptions.from_config(config) == opts
    assert SelectionOptions.from_config(json.loads(json.dumps(config))) == opts
    assert SelectionOptions.from_config({"round_to": 8}) == SelectionOptions(round_to=8)
    with pytest.raises(SelectionError, match="unknown selection option 'rate'"):
        SelectionOptions.from_config({"rate": 0.5})
    with pytest.raises(SelectionError, match="unknown scope"):
        SelectionOptions.from_config({"scope": "local"})


def test_replace_changes_some_options_checks_them_and_leaves_the_original_alone():
    opts = SelectionOptions(scope="layerwise")
    wider = opts.replace(round_to=8, exclude=["fc"])
    assert wider == SelectionOptions(scope="layerwise", round_to=8, exclude=("fc",))
    assert opts == SelectionOptions(scope="layerwise")
    with pytest.raises(SelectionError, match="round_to must be a positive integer"):
        opts.replace(round_to=-1)
    with pytest.raises(SelectionError, match="unknown selection option 'ratio'"):
        opts.replace(ratio=0.3)


def test_resolve_merges_keywords_and_refuses_a_contradiction():
    assert resolve_options() == SelectionOptions()
    assert resolve_options(scope="layerwise", round_to=None) == SelectionOptions(scope="layerwise")
    opts = SelectionOptions(round_to=8, exclude=["fc"])
    assert resolve_options(opts) is opts
    assert resolve_options(opts, round_to=8, exclude="fc") is opts  # agreeing keywords
    with pytest.raises(SelectionError, match=r"round_to=4 \(options has 8\)"):
        resolve_options(opts, round_to=4)
    with pytest.raises(SelectionError, match="must be a kerasprune.SelectionOptions"):
        resolve_options({"round_to": 8})


# ----------------------------------------------------------------------------- select


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35)
    return model, kp.analyze(model, warn=False)


@pytest.mark.parametrize(
    "keywords",
    [
        dict(scope="layerwise", round_to=8),
        dict(scope="hierarchical", unit="flops", hierarchy="flops", min_channels=4),
        dict(scope="global", unit="params", max_ratio=0.5, exclude=["block_1*", "Conv1"]),
        dict(method="percentile", min_channels=2),
    ],
    ids=["layerwise", "hierarchical-flops", "global-params", "percentile"],
)
def test_select_with_options_equals_select_with_the_same_keywords(mobilenet, keywords):
    model, graph = mobilenet
    scores = random_scores(graph, seed=3)
    by_keywords = select(graph, scores, 0.3, **keywords)
    by_options = select(graph, scores, 0.3, options=SelectionOptions(**keywords))
    assert by_keywords and same_keep(by_keywords, by_options)


def test_select_refuses_a_keyword_that_contradicts_options():
    model = residual_net()
    graph = kp.analyze(model)
    scores = random_scores(graph)
    opts = SelectionOptions(scope="layerwise")
    assert same_keep(
        select(graph, scores, 0.4, options=opts, scope="layerwise"),
        select(graph, scores, 0.4, scope="layerwise"),
    )
    with pytest.raises(SelectionError, match=r"scope='global' \(options has 'layerwise'\)"):
        select(graph, scores, 0.4, options=opts, scope="global")


def test_prune_and_the_callback_refuse_a_contradiction_before_any_work():
    opts = SelectionOptions(round_to=2)
    with pytest.raises(SelectionError, match="round_to=4"):
        kp.prune(residual_net(), 0.3, round_to=4, options=opts)
    with pytest.raises(SelectionError, match="min_channels=3"):
        SoftFilterPruning(0.3, min_channels=3, options=opts)
    with pytest.raises(SelectionError, match="unit='flops'"):
        GradualPruner("unused", rounds=1, unit="flops", options=opts)


def test_prune_with_options_equals_prune_with_keywords():
    model = residual_net()
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    a = kp.prune(model, 0.4, scope="layerwise", min_channels=2, exclude=["b2_*"])
    opts = SelectionOptions(scope="layerwise", min_channels=2, exclude=["b2_*"])
    b = kp.prune(model, 0.4, options=opts)
    assert kp.count_params(a).total == kp.count_params(b).total < kp.count_params(model).total
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), rtol=1e-6)
    assert a.get_layer("b2_conv1").filters == model.get_layer("b2_conv1").filters


def test_prune_for_speedup_takes_options_and_selects_by_flops():
    model = residual_net()

    def by_flops(original, thin):
        return kp.count_flops(original).total / kp.count_flops(thin).total

    found = kp.prune_for_speedup(
        model, 1.5, measure=by_flops, tolerance=0.05, max_ratio_flops=0.6,
        options=SelectionOptions(scope="layerwise", exclude=["b2_*"]),
    )
    assert found.speedup >= 1.5
    assert found.model.get_layer("b2_conv1").filters == model.get_layer("b2_conv1").filters
    with pytest.raises(SelectionError, match="not 'params'"):
        kp.prune_for_speedup(model, 1.5, measure=by_flops, options=SelectionOptions(unit="params"))


# ----------------------------------------------------------------------------- exclude


def test_score_exclude_takes_fnmatch_patterns_of_groups_and_layers():
    model = residual_net()
    graph = kp.analyze(model)
    everything = kp.score(model, graph=graph)
    assert set(kp.score(model, graph=graph, exclude=["b2_*"])) == {"stem+b1_conv2", "b1_conv1"}
    # by a producing layer's name: b1_conv2 adds into the stem's residual group
    assert "stem+b1_conv2" not in kp.score(model, graph=graph, exclude=["b1_conv2"])
    assert set(kp.score(model, graph=graph, exclude="b?_conv1")) == set(everything) - {
        "b1_conv1", "b2_conv1"
    }
    with pytest.raises(ImportanceError, match=r"exclude pattern 'b3_\*' matches nothing"):
        kp.score(model, graph=graph, exclude=["b3_*"])


def test_score_exclude_conv_star_on_a_plain_chain():
    inp = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, name="conv1")(inp)
    x = keras.layers.Conv2D(4, 3, name="conv2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="fc")(x)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(x))
    assert set(kp.score(model)) == {"conv1", "conv2", "fc"}
    assert set(kp.score(model, exclude=["conv*"])) == {"fc"}


def test_exclude_matches_the_same_groups_in_graph_select_score_and_the_callback():
    model = residual_net()
    graph = kp.analyze(model)
    patterns = ["b1_conv2", "b2_c*"]
    matched = graph.matching(patterns)
    assert matched == {"stem+b1_conv2", "b2_proj+b2_conv2", "b2_conv1"}
    scored = kp.score(model, graph=graph, exclude=patterns)
    assert set(scored) == {g.name for g in graph.prunable} - matched
    keep = select(graph, random_scores(graph), 0.5, exclude=patterns)
    assert not set(keep) & matched
    # an unmatched pattern: the same message, each caller's own error class
    for call, error in [
        (lambda: graph.matching(["nope*"]), kp.GroupNotFoundError),
        (lambda: select(graph, random_scores(graph), 0.5, exclude=["nope*"]), SelectionError),
        (lambda: kp.score(model, graph=graph, exclude=["nope*"]), ImportanceError),
    ]:
        with pytest.raises(error, match=r"exclude pattern 'nope\*' matches nothing"):
            call()


def test_saliency_accumulator_exclude_takes_the_same_patterns():
    model = residual_net()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    y = np.arange(16) % 5
    acc = SaliencyAccumulator("gsfp", exclude=["b1_conv2", "b2_c*"])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[acc])
    graph = kp.analyze(model)
    left = {g.name for g in graph.prunable} - graph.matching(["b1_conv2", "b2_c*"])
    assert set(acc.scores) == left
    with pytest.raises(CallbackError, match=r"exclude pattern 'nope' matches nothing"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0,
                  callbacks=[SaliencyAccumulator("gsfp", exclude=["nope"])])


# ----------------------------------------------------------------------------- loops


def test_soft_filter_pruning_takes_ratio_and_exposes_its_options():
    model = residual_net()
    model.compile(keras.optimizers.SGD(learning_rate=0.01, momentum=0.9), LOSS)
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
    y = np.arange(32) % 5
    opts = SelectionOptions(min_channels=2, exclude=["b2_*"])
    soft = SoftFilterPruning(ratio=0.5, options=opts)
    assert soft.options is opts and soft.exclude == ("b2_*",) and soft.ratio == 0.5
    hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[soft])
    assert soft.keep and not set(soft.keep) & kp.analyze(model).matching(["b2_*"])
    assert soft.history[0]["ratio"] == 0.5 and hist.history["soft_ratio"] == [0.5]
    assert soft.ratio_at(3) == 0.5
    assert SoftFilterPruning(0.3, scope="layerwise").options == SelectionOptions(scope="layerwise")
    with pytest.raises(TypeError):
        SoftFilterPruning(rate=0.5)  # one word: ratio


def test_gradual_run_json_holds_the_options_and_resume_refuses_changed_ones(tmp_path, capsys):
    data = tiny_data()
    run = tmp_path / "run"
    opts = SelectionOptions(round_to=2, exclude=["fc"])
    pruner = GradualPruner(run, rounds=1, ratio=0.25, options=opts, verbose=0)
    assert pruner.options is opts
    pruner.run(tiny_model(), data, data)
    saved = json.loads((run / "run.json").read_text())
    assert saved["options"] == opts.get_config()
    assert not {"scope", "round_to", "exclude"} & set(saved)  # only under "options"
    assert SelectionOptions.from_config(saved["options"]) == opts
    # another option: refused, and nothing is pruned or recorded
    with pytest.raises(SelectionError, match=r"round_to=2.*round_to=4"):
        changed = GradualPruner(run, rounds=2, ratio=0.25, round_to=4, exclude=["fc"], verbose=0)
        changed.run(None, data, data)
    with pytest.raises(SelectionError, match=r"exclude=\['fc'\].*exclude=\[\]"):
        GradualPruner(run, rounds=2, ratio=0.25, round_to=2, verbose=0).run(None, data, data)
    assert [r["round"] for r in RunDirectory(run).history()] == [0, 1]
    # the same options, given as keywords this time: resumed; other settings only noted
    resumed = GradualPruner(run, rounds=2, ratio=0.25, round_to=2, exclude="fc", verbose=1)
    capsys.readouterr()
    resumed.run(None, data, data)
    assert [r["round"] for r in resumed.history] == [0, 1, 2]
    said = capsys.readouterr().out
    assert "differ from the run's: rounds" in said and "options" not in said


def test_gradual_resumes_a_run_json_written_with_separate_option_keys(tmp_path):
    data = tiny_data()
    run = tmp_path / "run"
    GradualPruner(run, rounds=1, ratio=0.25, round_to=2, verbose=0).run(tiny_model(), data, data)
    settings = json.loads((run / "run.json").read_text())
    settings.update(settings.pop("options"))  # the layout before SelectionOptions
    (run / "run.json").write_text(json.dumps(settings))
    with pytest.raises(SelectionError, match="round_to=2"):
        GradualPruner(run, rounds=2, ratio=0.25, verbose=0).run(None, data, data)
    pruner = GradualPruner(run, rounds=2, ratio=0.25, round_to=2, verbose=0)
    pruner.run(None, data, data)
    assert [r["round"] for r in pruner.history] == [0, 1, 2]
