"""The ``kerasprune`` command: train, analyze, prune, report, and one-line errors."""

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasprune as kp
from kerasprune.cli import main

L = keras.layers
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "tfds"
needs_mnist = pytest.mark.skipif(
    not (MNIST.exists() or os.environ.get("TFDS_DATA_DIR")), reason="the prepared MNIST is not beside the checkout"
)


def small_model(path):
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(6, 3, activation="relu", name="conv")(inp)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(12, activation="relu", name="fc")(x)
    model = keras.Model(inp, L.Dense(3, name="out")(x))
    model.save(path)
    return model


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kerasprune: error: "), err
    return err[0]


def data_dir_args():
    return ["--data-dir", str(MNIST)] if MNIST.exists() else []


def test_report_prints_widths_params_and_flops_and_the_reduction(tmp_path, capsys):
    model = small_model(tmp_path / "a.keras")
    graph = kp.analyze(model)
    thin = kp.rebuild(model, {"conv": [0, 1, 2], "fc": range(6)}, graph=graph)
    thin.save(tmp_path / "b.keras")
    assert main(["report", str(tmp_path / "a.keras")]) == 0
    out = capsys.readouterr().out
    assert f"{kp.count_params(model).total:,}" in out
    assert main(["report", str(tmp_path / "a.keras"), str(tmp_path / "b.keras")]) == 0
    out = capsys.readouterr().out
    assert f"{kp.count_params(thin).total:,}" in out and f"{kp.count_flops(thin).total:,}" in out
    assert "conv" in out and "fc" in out


def test_analyze_lists_the_groups_and_why_frozen(tmp_path, capsys):
    small_model(tmp_path / "a.keras")
    assert main(["analyze", str(tmp_path / "a.keras")]) == 0
    out = capsys.readouterr().out
    assert "2 prunable groups (18 neurons)" in out
    assert "reaches model output 'out'" in out


def test_missing_corrupt_or_foreign_files_get_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.keras")]) == 1
    assert "no such file" in one_error_line(capsys)
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip at all")
    assert main(["report", str(bad)]) == 1
    assert "cannot load" in one_error_line(capsys)
    other = tmp_path / "model.h5"
    other.write_bytes(b"x")
    assert main(["analyze", str(other)]) == 1
    assert "not a .keras file" in one_error_line(capsys)


def test_unknown_criterion_or_scope_option_is_one_line_before_any_work(tmp_path, capsys):
    small_model(tmp_path / "a.keras")
    code = main(["prune", str(tmp_path / "a.keras"), "--dir", str(tmp_path / "run"), "--rounds", "1",
                 "--criterion", "mean_gradiant"])
    assert code == 1
    line = one_error_line(capsys)
    assert "unknown importance criterion 'mean_gradiant'" in line and "mean_gradient" in line
    assert not (tmp_path / "run" / "history.json").exists()
    with pytest.raises(SystemExit) as exc:
        main(["prune", str(tmp_path / "a.keras"), "--dir", str(tmp_path / "run"), "--ratio", "1.5"])
    assert exc.value.code == 2
    assert "must be between 0 and 1" in capsys.readouterr().err


@needs_mnist
def test_train_then_prune_then_resume_from_the_command(tmp_path, capsys):
    base = tmp_path / "base.keras"
    common = ["--take", "512", "--val-take", "256", "--batch-size", "64", "-q"] + data_dir_args()
    assert main(["train", "--model", "lenet5", "--epochs", "1", "--out", str(base)] + common) == 0
    run = tmp_path / "run"
    args = ["prune", str(base), "--dir", str(run), "--rounds", "1", "--ratio", "0.2",
            "--fine-tune-epochs", "1"] + common
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "round   1" in out and "pruned model" in out
    history = json.loads((run / "history.json").read_text())
    assert [r["round"] for r in history] == [0, 1]
    thin = keras.models.load_model(run / "pruned.keras")
    assert kp.count_params(thin).total == history[1]["params"] < history[0]["params"]
    # the same directory again: refused without --resume, a no-op with it
    assert main(args) == 1
    assert "--resume" in one_error_line(capsys)
    assert main(args + ["--resume"]) == 0
    assert len(json.loads((run / "history.json").read_text())) == 2


@needs_mnist
def test_a_target_the_model_misses_before_pruning_is_one_line(tmp_path, capsys):
    base = tmp_path / "untrained.keras"
    from kerasprune.models import lenet5

    model = lenet5()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(base)
    code = main(["prune", str(base), "--dir", str(tmp_path / "run"), "--target", "val_accuracy>=0.99",
                 "--take", "128", "--val-take", "128", "-q"] + data_dir_args())
    assert code == 1
    assert "does not meet the target before any pruning" in one_error_line(capsys)


@needs_mnist
def test_soft_pruning_from_the_command_ends_with_a_stripped_model(tmp_path, capsys):
    from kerasprune.models import lenet5

    base = tmp_path / "base.keras"
    model = lenet5()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(base)
    run = tmp_path / "soft"
    code = main(["prune", str(base), "--dir", str(run), "--soft", "--soft-epochs", "2", "--ratio", "0.4",
                 "--take", "256", "--val-take", "128", "--batch-size", "64", "-q"] + data_dir_args())
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "pruned model" in out
    thin = keras.models.load_model(run / "pruned.keras")
    masked = keras.models.load_model(run / "masked.keras")
    x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(thin.predict(x, verbose=0), masked.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert kp.count_params(thin).total < kp.count_params(masked).total


def test_speedup_writes_a_thin_model_or_says_in_one_line_what_it_reached(tmp_path, capsys):
    # a model whose time is its multiply-adds: two wide Dense layers at batch 64
    inp = keras.Input((512,))
    x = L.Dense(2048, activation="relu", name="wide1")(inp)
    x = L.Dense(2048, activation="relu", name="wide2")(x)
    model = keras.Model(inp, L.Dense(10, name="out")(x))
    base = tmp_path / "wide.keras"
    model.save(base)
    thin_path = tmp_path / "thin.keras"
    code = main(["speedup", str(base), "--to", "1.3", "--out", str(thin_path), "--batch-size", "64",
                 "--samples", "2", "--tolerance", "0.05"])
    assert code == 0
    out = capsys.readouterr().out
    assert "of the FLOPs removed: measured" in out and str(thin_path) in out
    thin = keras.models.load_model(thin_path)
    assert kp.count_flops(thin).total < kp.count_flops(model).total
    assert thin.output_shape == model.output_shape
    # no model runs a thousand times faster by losing at most 20% of its FLOPs
    code = main(["speedup", str(base), "--to", "1000", "--out", str(tmp_path / "never.keras"),
                 "--max-ratio-flops", "0.2", "--samples", "1"])
    assert code == 1
    assert "short of 1000.00x" in one_error_line(capsys)
    assert not (tmp_path / "never.keras").exists()
