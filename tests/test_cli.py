"""The ``kerasprune`` command: train, analyze, prune, report, and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasprune as kp
from kerasprune.cli import build_parser, main

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
    code = main(["prune", str(tmp_path / "a.keras"), "--dir", str(tmp_path / "run"),
                 "--ratio", "1.5"])
    assert code == 1  # an argument error: one line and status 1, as every other error
    assert "must be between 0 and 1" in one_error_line(capsys)


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
    code = main(["soft", str(base), "--dir", str(run), "--epochs", "2", "--ratio", "0.4",
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


# --------------------------------------------------------------------------- the parser

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("tensorflow", "onednn", "absl", "cuda")


def _python(code_or_args, *, module=False):
    """Run the worktree's kerasprune in a fresh interpreter, without TF_CPP_MIN_LOG_LEVEL."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if module:
        argv = [sys.executable, "-m", "kerasprune", *code_or_args]
    else:
        argv = [sys.executable, "-c", code_or_args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_help_lists_every_command_and_prints_no_tensorflow_noise():
    done = _python(["--help"], module=True)
    assert done.returncode == 0, done.stderr
    from kerasprune.cli import COMMANDS

    for name, command in COMMANDS.items():
        assert name in done.stdout and command.summary.split()[0] in done.stdout
    lines = (done.stdout + done.stderr).splitlines()
    noisy = [line for line in lines if any(n in line.lower() for n in NOISE)]
    assert not noisy


def test_the_cli_and_its_top_level_parser_import_neither_keras_nor_tensorflow():
    code = (
        "import sys, kerasprune, kerasprune.errors, kerasprune.cli\n"
        "kerasprune.cli.build_parser().format_help()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow'))\n"
        "print(heavy)\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_package_stays_whole_through_its_lazy_names():
    # kp.<name> of __all__, subpackages as attributes, dir() and star import
    assert kp.prune is __import__("kerasprune.pruning", fromlist=["prune"]).prune
    assert kp.callbacks.SoftFilterPruning is not None and kp.report.layer_widths is not None
    assert set(kp.__all__) <= set(dir(kp)) and "models" in dir(kp)
    with pytest.raises(AttributeError):
        kp.no_such_name  # noqa: B018


def test_a_command_help_returns_0_and_lists_the_registered_choices(capsys):
    from kerasprune.data import available_datasets
    from kerasprune.importance import accumulable_criteria, available_criteria
    from kerasprune.importance.normalize import available_normalizations
    from kerasprune.models import available_models
    from kerasprune.selection import HIERARCHIES, METHODS, SCOPES, UNITS

    def braces(names):
        return "{" + ",".join(names) + "}"

    assert main(["prune", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    registries = (available_normalizations(), SCOPES, UNITS, METHODS, HIERARCHIES,
                  available_datasets())
    for names in registries:
        assert braces(names) in out
    assert ", ".join(available_criteria()) in out
    assert main(["soft", "--help"]) == 0
    out = capsys.readouterr().out
    assert braces(accumulable_criteria()) in out and "--rounds" not in out and "--target" not in out
    assert main(["train", "--help"]) == 0
    assert braces(available_models()) in capsys.readouterr().out


@pytest.fixture
def max_abs_criterion(monkeypatch):
    """A user's criterion, registered in-process (and forgotten after the test)."""
    from kerasprune.importance import base, combine_layers

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    calls = []

    @kp.register_criterion("test_max_abs", description="largest |w| of the filter")
    def max_abs(ctx):
        calls.append(len(ctx.groups))
        out = {}
        for group in ctx.groups:
            per_layer = []
            for f in ctx.filters(group):
                m = np.zeros(group.size)
                np.maximum.at(m, f.channel, np.abs(f.values()))
                per_layer.append(m)
            out[group.name] = combine_layers(per_layer)
        return out

    return calls


def test_a_criterion_registered_in_process_is_listed_and_accepted(capsys, max_abs_criterion):
    assert main(["prune", "--help"]) == 0
    assert "test_max_abs" in capsys.readouterr().out
    assert main(["speedup", "--help"]) == 0  # a weight criterion: speedup takes it too
    assert "test_max_abs" in capsys.readouterr().out
    args = build_parser().parse_args(["prune", "m.keras", "--dir", "d", "--rounds", "1",
                                      "--criterion", "test_max_abs"])
    assert args.criterion == "test_max_abs"


@needs_mnist
def test_a_criterion_registered_in_process_prunes_from_the_command(tmp_path, capsys,
                                                                   max_abs_criterion):
    from kerasprune.models import lenet5

    base = tmp_path / "base.keras"
    model = lenet5()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(base)
    run = tmp_path / "run"
    code = main(["prune", str(base), "--dir", str(run), "--rounds", "1", "--ratio", "0.2",
                 "--criterion", "test_max_abs", "--take", "128", "--val-take", "128",
                 "--batch-size", "64", "-q"] + data_dir_args())
    assert code == 0, capsys.readouterr().err
    assert max_abs_criterion, "the registered criterion was never called"
    assert json.loads((run / "run.json").read_text())["criterion"] == "test_max_abs"


# argv (split at spaces; RUN is a directory the command must not create), what the line says
ARGUMENT_ERRORS = {
    "ratio_above_1": ("prune m.keras --dir RUN --rounds 1 --ratio 2",
                      ["--ratio", "between 0 and 1", "got 2"]),
    "ratio_without_dir": ("prune m.keras --ratio 2", ["--ratio", "between 0 and 1"]),
    "val_take_0": ("prune m.keras --dir RUN --rounds 1 --val-take 0",
                   ["--val-take", ">= 1", "got 0"]),
    "take_not_a_number": ("train --out RUN/m.keras --take many", ["--take", "integer"]),
    "max_ratio_0": ("prune m.keras --dir RUN --rounds 1 --max-ratio 0",
                    ["--max-ratio", "0 < x <= 1"]),
    "rounds_0": ("prune m.keras --dir RUN --rounds 0", ["--rounds", ">= 1"]),
    "negative_lr": ("train --out RUN/m.keras --lr -1", ["--lr", "> 0"]),
    "speedup_to_1": ("speedup m.keras --to 1 --out RUN/o.keras", ["--to", "> 1"]),
    "max_ratio_flops_1": ("speedup m.keras --to 2 --out RUN/o.keras --max-ratio-flops 1",
                          ["--max-ratio-flops", "between 0 and 1"]),
    "soft_epochs_0": ("soft m.keras --dir RUN --ratio 0.5 --epochs 0", ["--epochs", ">= 1"]),
    "unknown_scope": ("prune m.keras --dir RUN --rounds 1 --scope glob",
                      ["--scope", "invalid choice: 'glob'", "(choose from 'global'"]),
    "unknown_normalization": ("report m.keras --normalization max",
                              ["--normalization", "'layer_mean'"]),
    "unknown_model": ("train --out RUN/m.keras --model lenet6", ["--model", "'lenet5'"]),
    "unknown_dataset": ("train --out RUN/m.keras --dataset mnst", ["--dataset", "'mnist'"]),
    "data_criterion_for_speedup": ("speedup m.keras --to 2 --out RUN/o.keras --criterion taylor",
                                   ["--criterion", "computed from data", "aaws"]),
    "weight_criterion_for_soft": ("soft m.keras --dir RUN --ratio 0.5 --criterion aaws",
                                  ["--criterion", "'gsfp'"]),
    "bad_target": ("prune m.keras --dir RUN --target accuracy>>1",
                   ["--target", "METRIC OP NUMBER"]),
    "bad_rising": ("prune m.keras --dir RUN --rounds 1 --rising 0.5,0.1",
                   ["--rising", "START,STEP,FINAL"]),
    "missing_dir": ("prune m.keras --rounds 1", ["required", "--dir"]),
    "missing_command": ("", ["required", "COMMAND"]),
    "unknown_command": ("prun", ["invalid choice: 'prun'", "'prune'"]),
    "unknown_flag": ("analyze m.keras --bogus", ["unrecognized arguments: --bogus"]),
}

FLAGS_APART = {
    "accumulate_with_a_weight_criterion": (
        "prune m.keras --dir RUN --rounds 1 --accumulate --criterion aaws",
        ["--accumulate", "gsfp", "aaws"]),
    "percentile_by_flops": ("prune m.keras --dir RUN --rounds 1 --method percentile --unit flops",
                            ["--method percentile", "--unit neurons"]),
    "ratio_and_rising": ("prune m.keras --dir RUN --rounds 1 --ratio 0.1 --rising 0.5,0.1,0.9",
                         ["--rising", "--ratio"]),
    "neither_target_nor_rounds": ("prune m.keras --dir RUN", ["--target", "--rounds"]),
    "retries_without_target": ("prune m.keras --dir RUN --rounds 3 --retries 2", ["--retries", "--target"]),
    "negative_retries": ("prune m.keras --dir RUN --target val_accuracy>=0.9 --retries -1",
                         ["--retries", "-1"]),
    "run_without_plots": ("report m.keras --run RUN", ["--run", "--plots"]),
    "nothing_to_export": ("export m.keras", ["--tflite", "--saved-model"]),
    "quantize_without_tflite": ("export m.keras --saved-model RUN --quantize float16",
                                ["--quantize", "--tflite"]),
    "int8_without_calibration": ("export m.keras --tflite RUN/m.tflite --quantize int8",
                                 ["--calibration-data"]),
    "calibration_neither_npy_nor_dataset": (
        "export m.keras --tflite RUN/m.tflite --calibration-data inputs.txt",
        ["--calibration-data", ".npy", "mnist"]),
}


def _argv(line, tmp_path):
    return [a.replace("RUN", str(tmp_path / "run")) for a in line.split()]


@pytest.mark.parametrize("line, expected", ARGUMENT_ERRORS.values(), ids=list(ARGUMENT_ERRORS))
def test_an_argument_error_is_one_line_naming_the_flag_with_status_1(tmp_path, capsys, line,
                                                                     expected):
    assert main(_argv(line, tmp_path)) == 1
    error = one_error_line(capsys)
    assert all(e in error for e in expected), error
    assert not list(tmp_path.iterdir()), "an argument error wrote something"


@pytest.mark.parametrize("line, expected", FLAGS_APART.values(), ids=list(FLAGS_APART))
def test_flags_that_do_not_go_together_fail_while_parsing(tmp_path, capsys, line, expected):
    assert main(_argv(line, tmp_path)) == 1
    error = one_error_line(capsys)
    assert all(e in error for e in expected), error
    assert not list(tmp_path.iterdir()), "an argument error wrote something"


@pytest.mark.parametrize("flag", [["--soft"], ["--soft-epochs", "3"]])
def test_prune_soft_is_gone_and_points_to_the_soft_command(tmp_path, capsys, flag):
    argv = ["prune", "m.keras", "--dir", str(tmp_path / "run"), "--rounds", "1", *flag]
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert flag[0] in line and "kerasprune soft" in line


def test_soft_takes_only_the_flags_that_apply_to_it(capsys):
    args = build_parser().parse_args(["soft", "m.keras", "--dir", "d", "--ratio", "0.5"])
    assert args.func.__name__ == "cmd_soft" and args.criterion == "gsfp" and args.epochs == 10
    for gradual_only in ("target", "rounds", "rising", "hierarchy", "method", "fine_tune_epochs",
                         "score_batches", "resume", "accumulate"):
        assert not hasattr(args, gradual_only)
        flag = "--" + gradual_only.replace("_", "-")
        assert main(["soft", "m.keras", "--dir", "d", "--ratio", "0.5", flag, "1"]) == 1
        assert f"unrecognized arguments: {flag}" in one_error_line(capsys)
    assert main(["soft", "m.keras", "--dir", "d"]) == 1
    assert "--ratio" in one_error_line(capsys)


def test_version_prints_and_returns_0(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kerasprune {kp.__version__}"
