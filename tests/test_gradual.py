"""The gradual loop: rounds, target, checkpoints, resume after a crash, distribution."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasprune as kp
from kerasprune.pruning import ConstantRatio, GradualPruner, RisingPercentile, TargetNotMetError, parse_target
from kerasprune.runs.rundir import RunDirectory

ROOT = Path(__file__).resolve().parents[1]
L = keras.layers


def tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 6, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32")
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def tiny_model():
    inp = keras.Input((6, 6, 1))
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    x = L.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(10, activation="relu", name="fc")(x)
    model = keras.Model(inp, L.Dense(2, activation="softmax", name="out")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class CountFits(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.fits = 0

    def on_train_begin(self, logs=None):
        self.fits += 1


def test_two_rounds_write_checkpoints_and_history(tmp_path):
    data = tiny_data()
    counter = CountFits()
    pruner = GradualPruner(tmp_path / "run", rounds=2, ratio=0.25, callbacks=[counter], verbose=0)
    best = pruner.run(tiny_model(), data, data)
    rows = pruner.history
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert counter.fits == 2
    neurons = [r["neurons"] for r in rows]
    assert neurons[0] == 8 + 8 + 10
    # papers/000: N*r lowest of the current model each round
    assert neurons[1] == neurons[0] - round(0.25 * neurons[0])
    assert neurons[2] == neurons[1] - round(0.25 * neurons[1])
    assert rows[2]["params"] < rows[1]["params"] < rows[0]["params"]
    assert set(rows[1]["widths"]) >= {"conv1", "conv2", "fc", "out"}
    assert "val_accuracy" in rows[1]["metrics"] and rows[1]["seconds"] > 0
    for r in rows:
        loaded = keras.models.load_model(tmp_path / "run" / r["checkpoint"])
        assert kp.count_params(loaded).total == r["params"]
    assert kp.count_params(best).total == rows[2]["params"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["criterion"] == "aaws"


def scripted(pruner, values):
    """Make the pruner 'measure' the given accuracies, one per evaluation."""
    it = iter(values)
    pruner._evaluate = lambda model, val: {"val_accuracy": next(it), "val_loss": 0.0}


def test_returns_the_last_model_that_met_the_target_never_one_below(tmp_path):
    data = tiny_data()
    pruner = GradualPruner(tmp_path / "run", target="val_accuracy>=0.9", ratio=0.1, verbose=0)
    scripted(pruner, [0.95, 0.93, 0.91, 0.85])
    best = pruner.run(tiny_model(), data, data)
    rows = pruner.history
    assert [r["meets_target"] for r in rows] == [True, True, True, False]
    assert kp.count_params(best).total == rows[2]["params"]


def test_retries_prune_the_last_model_that_met_the_target_again_with_half_the_ratio(tmp_path):
    data = tiny_data()
    run = tmp_path / "run"
    pruner = GradualPruner(run, target="val_accuracy>=0.9", ratio=0.2, retries=2, fine_tune_epochs=0,
                           verbose=0)
    # rounds: 1 holds, 2 misses, 3 (half) misses, 4 (a quarter) holds, 5-7 miss: stop
    scripted(pruner, [0.95, 0.93, 0.85, 0.86, 0.92, 0.5, 0.5, 0.5, 0.99])
    best = pruner.run(tiny_model(), data, data)
    rows = pruner.history
    assert [r["round"] for r in rows] == list(range(8))
    assert [r["meets_target"] for r in rows] == [True, True, False, False, True, False, False, False]
    assert [r["ratio"] for r in rows[1:]] == pytest.approx([0.2, 0.2, 0.1, 0.05, 0.2, 0.1, 0.05])
    n = [r["neurons"] for r in rows]
    assert n[1] == 26 - round(0.2 * 26)
    assert n[2] == n[1] - round(0.2 * n[1])
    # rounds 3 and 4 start again from round 1's model, rounds 5-7 from round 4's
    assert n[3] == n[1] - round(0.1 * n[1]) and n[4] == n[1] - round(0.05 * n[1])
    assert [n[5], n[6], n[7]] == [n[4] - round(f * n[4]) for f in (0.2, 0.1, 0.05)]
    assert kp.count_params(best).total == rows[4]["params"]
    assert json.loads((run / "run.json").read_text())["retries"] == 2


def test_a_resumed_run_retries_from_the_checkpoint_that_met_the_target(tmp_path):
    data = tiny_data()
    run = tmp_path / "run"
    first = GradualPruner(run, target="val_accuracy>=0.9", rounds=2, ratio=0.2, retries=1,
                          fine_tune_epochs=0, verbose=0)
    scripted(first, [0.95, 0.93, 0.85])  # round 2 misses, then the run hits its rounds
    first.run(tiny_model(), data, data)
    again = GradualPruner(run, target="val_accuracy>=0.9", rounds=3, ratio=0.2, retries=1,
                          fine_tune_epochs=0, verbose=0)
    scripted(again, [0.92])
    best = again.run(None, data, data)
    n = [r["neurons"] for r in again.history]
    assert n[3] == n[1] - round(0.1 * n[1])
    assert kp.count_params(best).total == again.history[3]["params"]


def test_a_retry_with_accumulate_scores_from_the_checkpoint_it_goes_back_to(tmp_path, monkeypatch):
    import kerasprune.pruning.gradual as gradual

    calls = []
    real = gradual.score
    monkeypatch.setattr(gradual, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = tiny_data()
    pruner = GradualPruner(tmp_path / "run", target="val_accuracy>=0.9", rounds=3, ratio=0.2,
                           retries=1, criterion="gsfp", accumulate=True, verbose=0)
    scripted(pruner, [0.95, 0.93, 0.85, 0.92])
    pruner.run(tiny_model(), data, data)
    assert [r["meets_target"] for r in pruner.history] == [True, True, False, True]
    assert len(calls) == 1  # round 1 only: round 3 takes round 1's accumulated scores


@pytest.mark.parametrize("kwargs, message", [
    ({"target": "val_accuracy>=0.9", "retries": -1}, "retries must be an integer >= 0"),
    ({"target": "val_accuracy>=0.9", "retries": True}, "retries must be an integer >= 0"),
    ({"rounds": 3, "retries": 2}, "retries needs a target"),
])
def test_invalid_retries_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradualPruner(tmp_path / "run", verbose=0, **kwargs)
    assert not (tmp_path / "run").exists()


def test_a_schedule_that_asks_for_nothing_more_ends_the_run_and_says_so(tmp_path, capsys):
    data = tiny_data()
    pruner = GradualPruner(tmp_path / "run", rounds=4, ratio=RisingPercentile(0.1, 0.0, 0.1),
                           fine_tune_epochs=0)
    pruner.run(tiny_model(), data, data)
    assert [r["round"] for r in pruner.history] == [0, 1]
    out = capsys.readouterr().out
    assert "round 2: the ratio schedule asks for nothing more; stopping" in out
    assert "nothing left to prune" not in out


def test_model_below_target_before_pruning_is_an_error(tmp_path):
    pruner = GradualPruner(tmp_path / "run", target="val_accuracy>=0.9", verbose=0)
    scripted(pruner, [0.5])
    with pytest.raises(TargetNotMetError, match="before any pruning"):
        pruner.run(tiny_model(), tiny_data(), tiny_data())


class Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["before_checkpoint", "after_checkpoint"])
def test_resume_after_a_crash_loses_and_redoes_no_completed_round(tmp_path, monkeypatch, where):
    data = tiny_data()
    counter = CountFits()
    run = tmp_path / "run"
    pruner = GradualPruner(run, rounds=3, ratio=0.2, callbacks=[counter], verbose=0)
    original_save, original_append = RunDirectory.save_model, RunDirectory.append

    def save_model(self, model, r, **kwargs):
        if r == 2 and where == "before_checkpoint":
            raise Crash()
        return original_save(self, model, r, **kwargs)

    def append(self, row):
        if row["round"] == 2 and where == "after_checkpoint":
            raise Crash()
        return original_append(self, row)

    monkeypatch.setattr(RunDirectory, "save_model", save_model)
    monkeypatch.setattr(RunDirectory, "append", append)
    with pytest.raises(Crash):
        pruner.run(tiny_model(), data, data)
    assert [r["round"] for r in pruner.history] == [0, 1]
    monkeypatch.setattr(RunDirectory, "save_model", original_save)
    monkeypatch.setattr(RunDirectory, "append", original_append)
    fits_before = counter.fits
    best = GradualPruner(run, rounds=3, ratio=0.2, callbacks=[counter], verbose=0).run(None, data, data)
    rows = pruner.history
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    # after_checkpoint: round 2 was fine-tuned and saved, only its row was missing
    assert counter.fits - fits_before == (1 if where == "after_checkpoint" else 2)
    assert rows[3]["neurons"] < rows[2]["neurons"] < rows[1]["neurons"]
    assert kp.count_params(best).total == rows[3]["params"]
    assert not list(run.glob(".tmp-*"))


def test_existing_run_directory_needs_resume(tmp_path):
    data = tiny_data()
    GradualPruner(tmp_path / "run", rounds=1, ratio=0.2, verbose=0).run(tiny_model(), data, data)
    with pytest.raises(kp.KerasPruneError, match="already holds a run"):
        GradualPruner(tmp_path / "run", rounds=2, verbose=0).run(tiny_model(), data, data, resume=False)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, keras, tensorflow as tf
    sys.path.insert(0, {tests!r})
    from test_gradual import tiny_data, tiny_model
    from kerasprune.pruning import GradualPruner
    keras.utils.set_random_seed(0)
    GradualPruner({run!r}, rounds=30, ratio=0.05, verbose=0).run(tiny_model(), tiny_data(256), tiny_data())
    """
)


def test_kill_minus_nine_mid_run_then_resume(tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT.format(tests=str(ROOT / "tests"), run=str(run)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))  # this checkout's kerasprune
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and not (run / "round_002.keras").exists():
            time.sleep(0.05)
            assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(np.random.default_rng().uniform(0.0, 1.5))  # somewhere inside a round
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    rows = RunDirectory(run).history()
    assert len(rows) >= 2
    done = rows[-1]["round"]
    best = GradualPruner(run, rounds=done + 1, ratio=0.05, verbose=0).run(None, tiny_data(256), tiny_data())
    rows = RunDirectory(run).history()
    assert [r["round"] for r in rows] == list(range(done + 2))
    for r in rows:
        keras.models.load_model(run / r["checkpoint"])
    assert not list(run.glob(".tmp-*"))
    assert kp.count_params(best).total == rows[-1]["params"]


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import sys, json, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, {tests!r})
    from test_gradual import tiny_data, tiny_model
    from kerasprune.pruning import GradualPruner
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = tiny_model()
    pruner = GradualPruner({run!r}, rounds=2, ratio=0.2, strategy=strategy, verbose=0)
    best = pruner.run(model, tiny_data(), tiny_data())
    kernel = best.get_layer("conv1").kernel
    print(json.dumps({{"replicas": strategy.num_replicas_in_sync,
                       "mirrored": type(kernel.value).__name__,
                       "in_scope": best.distribute_strategy is strategy,
                       "rounds": [r["round"] for r in pruner.history]}}))
    """
)


def test_fine_tuning_runs_under_the_callers_mirrored_strategy(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(MIRRORED_SCRIPT.format(tests=str(ROOT / "tests"), run=str(tmp_path / "run")))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT)),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["in_scope"] is True
    assert "Mirrored" in result["mirrored"]
    assert result["rounds"] == [0, 1, 2]


def test_schedules_and_targets():
    assert ConstantRatio(0.05)(3, 0.4) == 0.05
    s = RisingPercentile(start=0.5, step=0.1, final=0.8)
    assert s(1, 0.0) == pytest.approx(0.5)
    assert s(2, 0.5) == pytest.approx(0.1 / 0.5)  # 60% in total: 10 more points of the 50% left
    assert s(9, 0.8) == 0.0
    assert type(s).from_config(s.get_config()).get_config() == s.get_config()
    t = parse_target("val_accuracy >= 0.992")
    assert (t.metric, t.op, t.threshold) == ("val_accuracy", ">=", 0.992)
    assert t.met({"val_accuracy": 0.993}) and not t.met({"val_accuracy": 0.99})
    with pytest.raises(ValueError, match="METRIC OP NUMBER"):
        parse_target("accuracy above 0.9")
    with pytest.raises(ValueError, match="ratio per round"):
        ConstantRatio(1.5)


@pytest.mark.parametrize("criterion", ["gsfp", "taylor"])
def test_accumulate_scores_each_round_from_the_previous_fine_tuning(tmp_path, monkeypatch, criterion):
    import kerasprune.pruning.gradual as gradual

    calls, seen, accumulators = [], [], []
    real_score, real_select, real_acc = gradual.score, gradual.select, gradual.SaliencyAccumulator

    def counting_score(*args, **kwargs):
        calls.append(args[1])
        return real_score(*args, **kwargs)

    def recording_select(graph, scores, *args, **kwargs):
        seen.append({k: np.array(v) for k, v in scores.items()})
        return real_select(graph, scores, *args, **kwargs)

    def keeping_accumulator(*args, **kwargs):
        acc = real_acc(*args, **kwargs)
        accumulators.append(acc)
        return acc

    monkeypatch.setattr(gradual, "score", counting_score)
    monkeypatch.setattr(gradual, "select", recording_select)
    monkeypatch.setattr(gradual, "SaliencyAccumulator", keeping_accumulator)
    data = tiny_data()
    pruner = GradualPruner(tmp_path / "run", rounds=2, ratio=0.25, criterion=criterion, accumulate=True, verbose=0)
    pruner.run(tiny_model(), data, data)
    assert calls == [criterion]  # round 1 only: round 2 reuses the fine-tuning's saliency
    assert len(seen) == 2 and len(accumulators) == 2
    first_fit = accumulators[0].scores
    assert set(seen[1]) == set(first_fit)
    for name in first_fit:
        np.testing.assert_array_equal(seen[1][name], first_fit[name])
    with pytest.raises(ValueError, match="accumulate=True"):
        GradualPruner(tmp_path / "other", rounds=1, criterion="aaws", accumulate=True)


def test_accumulate_takes_any_accumulable_criterion_of_the_registry(tmp_path):
    import tensorflow as tf

    import kerasprune as kp
    from kerasprune.importance import WeightGradients

    rms = WeightGradients(lambda f: tf.sqrt(f.mean(lambda g, w: g * g)))
    kp.importance.register_criterion("test_gradual_grad_rms", accumulate=rms, overwrite=True)
    for criterion in ("grad_l1", "taylor_weights", "test_gradual_grad_rms"):
        pruner = GradualPruner(tmp_path / criterion, rounds=1, criterion=criterion, accumulate=True)
        assert pruner.accumulate
    with pytest.raises(ValueError, match="accumulate=True.*test_gradual_grad_rms"):
        GradualPruner(tmp_path / "weights", rounds=1, criterion="l1", accumulate=True)
