"""Plots of a pruning result, ``kerasprune report --plots``, and TensorBoard event contents."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasprune as kp
from kerasprune.callbacks import SaliencyAccumulator, SoftFilterPruning
from kerasprune.cli import main
from kerasprune.pruning import GradualPruner
from kerasprune.report import read_events
from kerasprune.report.tensorboard import TensorBoardWriter, histogram_buckets

pytest.importorskip("matplotlib")

from kerasprune.report.plots import PlotError, pattern_data, plot_pattern, plot_run, plot_saliency  # noqa: E402

L = keras.layers
PNG = b"\x89PNG\r\n\x1a\n"


def small_net():
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(6, 3, activation="relu", name="conv1")(inp)
    x = L.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(12, activation="relu", name="fc")(x)
    model = keras.Model(inp, L.Dense(3, activation="softmax", name="out")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=n).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def rows(n=4):
    out = []
    for r in range(n):
        out.append(
            {
                "round": r, "ratio": 0.1 * (r > 0), "params": 1000 - 200 * r, "flops": 5000 - 1000 * r,
                "neurons": 26 - 3 * r, "widths": {"conv1": 6 - r, "fc": 12 - 2 * r},
                "metrics": {"val_accuracy": 0.9 - 0.02 * r, "val_loss": 0.1 * r}, "meets_target": r < 3,
            }
        )
    return out


def is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG


# ----------------------------------------------------------------------------- plots


def test_pattern_lists_prunable_layers_in_model_order_without_the_output_layer(tmp_path):
    model = small_net()
    thin = kp.rebuild(model, {"conv1": [0, 2, 4], "fc": range(3)})
    data = plot_pattern(model, thin, tmp_path / "pattern.png")
    assert data == [("conv1", 6, 3), ("conv2", 8, 8), ("fc", 12, 3)]
    assert is_png(tmp_path / "pattern.png")


def test_pattern_of_a_residual_network_has_every_producer_of_its_groups(tmp_path):
    from kerasprune.models import get_model

    model = get_model("resnet20")
    thin = kp.prune(model, 0.3)
    data = pattern_data(model, thin)
    convs = [layer.name for layer in model.layers if isinstance(layer, L.Conv2D)]
    assert [d[0] for d in data] == convs
    widths = kp.report.layer_widths(thin)
    assert all(after == widths[name] for name, _, after in data)
    # every conv of a residual group keeps the same width
    graph = kp.analyze(model)
    for group in graph.prunable:
        kept = {dict((d[0], d[2]) for d in data)[p] for p in group.producers}
        assert len(kept) == 1, group.name


def test_svg_output_follows_the_suffix_and_other_suffixes_are_refused(tmp_path):
    model = small_net()
    plot_saliency(kp.score(model), tmp_path / "s.svg")
    assert (tmp_path / "s.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    with pytest.raises(PlotError, match=r"\.png or \.svg"):
        plot_saliency(kp.score(model), tmp_path / "s.jpg")


def test_saliency_plot_returns_one_distribution_per_group_as_scored(tmp_path):
    model = small_net()
    scores = kp.score(model, "aaws", normalization="layer_mean")
    data = plot_saliency(scores, tmp_path / "saliency.png")
    assert list(data) == list(scores) == ["conv1", "conv2", "fc"]
    for name in scores:
        np.testing.assert_allclose(data[name], scores[name])
        assert data[name].mean() == pytest.approx(1.0)  # layer_mean centres every layer on 1
    assert is_png(tmp_path / "saliency.png")


def test_run_plot_reads_rows_or_a_run_directory_and_checks_metric_and_target(tmp_path):
    points = plot_run(rows(), tmp_path / "run.png", target="val_accuracy>=0.85")
    assert [p.round for p in points] == [0, 1, 2, 3]
    assert [p.params for p in points] == [1000, 800, 600, 400]
    assert points[3].value == pytest.approx(0.84) and points[3].meets_target is False
    assert is_png(tmp_path / "run.png")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.json").write_text(json.dumps(rows(2)))
    assert len(plot_run(tmp_path / "run", tmp_path / "run2.png", metric="val_loss", target=0.5)) == 2
    with pytest.raises(PlotError, match="val_top5"):
        plot_run(rows(), tmp_path / "x.png", metric="val_top5")
    with pytest.raises(PlotError, match="val_loss"):
        plot_run(rows(), tmp_path / "x.png", target="val_loss<=0.2")
    with pytest.raises(PlotError, match="no run history"):
        plot_run(tmp_path / "missing", tmp_path / "x.png")


def test_plotting_module_loads_only_when_a_plot_function_is_used():
    # (Keras itself may import matplotlib when it is installed; kerasprune must not need it)
    code = (
        "import sys, kerasprune, kerasprune.report; "
        "assert 'kerasprune.report.plots' not in sys.modules; "
        "f = kerasprune.report.plot_pattern; "
        "assert 'kerasprune.report.plots' in sys.modules and f.__module__ == 'kerasprune.report.plots'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- CLI


def test_report_plots_writes_pattern_saliency_and_run_curve(tmp_path, capsys):
    model = small_net()
    model.save(tmp_path / "a.keras")
    kp.rebuild(model, {"conv1": [0, 1, 2], "fc": range(6)}).save(tmp_path / "b.keras")
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text(json.dumps(rows()))
    (run / "run.json").write_text(json.dumps({"target": "val_accuracy>=0.85"}))
    argv = ["report", str(tmp_path / "a.keras"), str(tmp_path / "b.keras"), "--plots", str(tmp_path / "plots"),
            "--run", str(run)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in ("pattern.png", "saliency.png", "run.png"):
        assert is_png(tmp_path / "plots" / name)
        assert f"plot: {tmp_path / 'plots' / name}" in out
    assert main(["report", str(tmp_path / "a.keras"), "--plots", str(tmp_path / "one"), "--plot-format", "svg"]) == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["saliency.svg"]


def test_report_run_without_history_is_one_error_line(tmp_path, capsys):
    small_net().save(tmp_path / "a.keras")
    assert main(["report", str(tmp_path / "a.keras"), "--plots", str(tmp_path / "p"), "--run", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "history.json" in err[0]


# ----------------------------------------------------------------------------- TensorBoard


def test_writer_scalars_and_histograms_read_back_exactly(tmp_path):
    tb = TensorBoardWriter(tmp_path / "tb")
    tb.write_row(rows()[1], scores={"conv1": np.array([0.5, 1.0, 1.5, 1.0])})
    tb.close()
    events = read_events(tmp_path / "tb")
    assert events["params"] == [(1, 800.0)]
    assert events["width/conv1"] == [(1, 5.0)] and events["width/fc"] == [(1, 10.0)]
    assert events["metrics/val_accuracy"][0][1] == pytest.approx(0.88)
    step, buckets = events["saliency/conv1"][0]
    assert step == 1 and buckets.shape[1] == 3 and buckets[:, 2].sum() == 4
    assert buckets[0, 0] == 0.5 and buckets[-1, 1] == 1.5
    np.testing.assert_array_equal(histogram_buckets([2.0, 2.0]), [[1.5, 2.5, 2.0]])


def test_events_carry_the_tensorboard_plugin_metadata(tmp_path):
    tb = TensorBoardWriter(tmp_path / "tb")
    tb.scalars({"params": 3.0}, 0)
    tb.histograms({"g": [1.0, 2.0]}, 0)
    tb.close()
    plugins = {}
    for file in (tmp_path / "tb").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(file)):
            for v in event.summary.value:
                plugins[v.tag] = v.metadata.plugin_data.plugin_name
    assert plugins == {"params": "scalars", "saliency/g": "histograms"}


def test_gradual_pruner_writes_one_step_per_round_with_widths_and_saliency(tmp_path):
    data = tiny_data()
    pruner = GradualPruner(tmp_path / "run", rounds=2, ratio=0.25, verbose=0, tensorboard=tmp_path / "tb")
    pruner.run(small_net(), data, data)
    history = pruner.history
    events = read_events(tmp_path / "tb")
    assert events["params"] == [(r["round"], float(r["params"])) for r in history]
    assert events["neurons"] == [(r["round"], float(r["neurons"])) for r in history]
    assert [v for _, v in events["width/conv1"]] == [float(r["widths"]["conv1"]) for r in history]
    assert [s for s, _ in events["metrics/val_accuracy"]] == [0, 1, 2]
    # rounds 1 and 2 were chosen by scores of conv1's channels before each round
    steps = [(s, int(b[:, 2].sum())) for s, b in events["saliency/conv1"]]
    assert steps == [(1, history[0]["widths"]["conv1"]), (2, history[1]["widths"]["conv1"])]


def test_soft_pruning_writes_the_unmasked_size_per_epoch(tmp_path):
    model = small_net()
    soft = SoftFilterPruning(0.5, criterion="gsfp", tensorboard_dir=str(tmp_path / "tb"))
    model.fit(tiny_data(), epochs=2, callbacks=[soft], verbose=0)
    events = read_events(tmp_path / "tb")
    thin = kp.strip(model)
    assert events["params"][-1] == (1, float(kp.count_params(thin).total))
    assert events["flops"][-1][1] == pytest.approx(kp.count_flops(thin).total, rel=1e-6)
    widths = kp.report.layer_widths(thin)
    for layer in ("conv1", "conv2", "fc"):
        assert events[f"width/{layer}"][-1] == (1, float(widths[layer]))
    assert [s for s, _ in events["metrics/soft_masked"]] == [0, 1]
    assert events["metrics/soft_masked"][-1][1] == float(soft.history[-1]["masked"])
    assert {t for t in events if t.startswith("saliency/")} == {"saliency/conv1", "saliency/conv2", "saliency/fc"}


def test_saliency_accumulator_writes_epoch_logs_and_histograms(tmp_path):
    model = small_net()
    acc = SaliencyAccumulator("gsfp", tensorboard_dir=str(tmp_path / "tb"))
    model.fit(tiny_data(), epochs=2, callbacks=[acc], verbose=0)
    events = read_events(tmp_path / "tb")
    assert [s for s, _ in events["metrics/loss"]] == [0, 1]
    assert [s for s, _ in events["metrics/saliency_mean"]] == [0, 1]
    _, buckets = events["saliency/fc"][-1]
    assert buckets[:, 2].sum() == 12
    assert "params" not in events  # only the soft pruner knows a pruned size


def test_cli_prune_tensorboard_option_reaches_the_pruner(monkeypatch):
    from kerasprune import cli

    seen = {}

    class Stop(Exception):
        pass

    def fake(directory, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr("kerasprune.pruning.GradualPruner", fake)
    args = cli.build_parser().parse_args(["prune", "m.keras", "--dir", "d", "--rounds", "1", "--tensorboard", "tb"])
    monkeypatch.setattr(cli, "_load_model", lambda path: small_net())
    with pytest.raises(Stop):
        cli.cmd_prune(args)
    assert seen["tensorboard"] == "tb"


def test_cli_soft_prune_tensorboard_option_reaches_the_callback(monkeypatch):
    from kerasprune import cli

    seen = {}

    class Stop(Exception):
        pass

    def fake(ratio, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr("kerasprune.callbacks.SoftFilterPruning", fake)
    argv = ["soft", "m.keras", "--dir", "d", "--ratio", "0.5", "--tensorboard", "tb"]
    args = cli.build_parser().parse_args(argv)
    with pytest.raises(Stop):
        cli.cmd_soft(args)
    assert seen["tensorboard_dir"] == "tb"
