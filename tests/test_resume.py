"""Resuming a gradual run: the same experiment as one never killed, and files that name themselves.

The reference is a run in this process that is never interrupted. The other run is killed
once at every phase of a round, the first time by a real ``os._exit`` in a child process
(half-way through writing a checkpoint), then by an exception that, like a kill, skips
every clean-up (``kerasprune.runs._faults``), each time resumed by a fresh pruner.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from reference import assert_same_row

import kerasprune as kp
from kerasprune.pruning import GradualPruner
from kerasprune.runs import _faults
from kerasprune.runs.rundir import RunDirectory

ROOT = Path(__file__).resolve().parents[1]
L = keras.layers

# the run both ways: gsfp scores accumulated while fine-tuning, dropout, data reshuffled every
# epoch from the round's seed, two epochs a round
SETTINGS = dict(rounds=3, ratio=0.15, criterion="gsfp", accumulate=True, fine_tune_epochs=2, seed=7)


def arrays():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int32")
    return x, y


def train_data(seed):
    import tensorflow as tf

    x, y = arrays()
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=seed).batch(16)


def val_data():
    import tensorflow as tf

    x, y = arrays()
    return tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(16)


def base_model(path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    x = L.Dense(12, activation="relu", name="fc1")(inp)
    x = L.Dropout(0.25, name="drop")(x)
    x = L.Dense(10, activation="relu", name="fc2")(x)
    model = keras.Model(inp, L.Dense(2, activation="softmax", name="out")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*arrays(), epochs=1, batch_size=16, verbose=0)  # an optimizer with state
    model.save(path)


CHILD = textwrap.dedent(
    """
    import sys, keras
    sys.path.insert(0, {tests!r})
    from test_resume import SETTINGS, train_data, val_data
    from kerasprune.pruning import GradualPruner
    model = keras.models.load_model({base!r})
    GradualPruner({run!r}, verbose=0, **SETTINGS).run(model, train_data, val_data())
    """
)


class Killed(BaseException):
    """What the kill points raise in this process instead of ending it."""


def killed(phase):
    raise Killed(phase)


def resume_until_killed(run, monkeypatch, kill_at):
    monkeypatch.setenv(_faults.KILL_AT_ENV, kill_at)
    with pytest.raises(Killed):
        GradualPruner(run, verbose=0, **SETTINGS).run(None, train_data, val_data())
    monkeypatch.delenv(_faults.KILL_AT_ENV)


def weights(path):
    return [np.asarray(w) for w in keras.models.load_model(path).get_weights()]


def same_round(mine, theirs):
    assert_same_row(mine, theirs)
    assert mine["seconds"] is not None and mine["seconds"] > 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run killed at every phase and resumed, and the same run never killed."""
    tmp = tmp_path_factory.mktemp("resume")
    base = tmp / "base.keras"
    base_model(base)
    killed_run, reference = tmp / "killed", tmp / "reference"
    # a real kill first, half-way through writing round 1's checkpoint; the reference runs meanwhile
    script = tmp / "child.py"
    script.write_text(CHILD.format(tests=str(ROOT / "tests"), base=str(base), run=str(killed_run)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", PYTHONPATH=str(ROOT),
               **{_faults.KILL_AT_ENV: "checkpoint_write@1"})
    child = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        GradualPruner(reference, verbose=1, **SETTINGS).run(keras.models.load_model(base), train_data, val_data())
    _, stderr = child.communicate(timeout=300)
    return {"base": base, "killed": killed_run, "reference": reference, "child": (child.returncode, stderr),
            "stdout": out.getvalue()}


def test_a_run_killed_at_every_phase_resumes_to_the_history_and_model_of_one_never_killed(runs, monkeypatch):
    run = runs["killed"]
    returncode, stderr = runs["child"]
    assert returncode == 137, stderr[-3000:]
    # killed writing round 1's checkpoint: a half-written temporary, no checkpoint, round 0 only
    assert [r["round"] for r in RunDirectory(run).history()] == [0]
    assert not (run / "round_001.keras").exists() and list(run.glob(".tmp-round_001.*"))
    monkeypatch.setattr(_faults, "_die", lambda: killed("raised"))

    resume_until_killed(run, monkeypatch, "history_write@1")  # round 1 redone; its row half-written
    assert (run / "round_001.keras").exists() and [r["round"] for r in RunDirectory(run).history()] == [0]
    resume_until_killed(run, monkeypatch, "fine_tune@2")  # round 1 recorded from its checkpoint
    assert [r["round"] for r in RunDirectory(run).history()] == [0, 1]
    resume_until_killed(run, monkeypatch, "score@3")  # round 2 done, round 3 scored, nothing written
    assert [r["round"] for r in RunDirectory(run).history()] == [0, 1, 2]
    resume_until_killed(run, monkeypatch, "final_save")  # every round done, pruned.keras half-written
    assert [r["round"] for r in RunDirectory(run).history()] == [0, 1, 2, 3]
    assert not (run / "pruned.keras").exists() and list(run.glob(".tmp-pruned.*"))

    best = GradualPruner(run, verbose=0, **SETTINGS).run(None, train_data, val_data())
    mine, theirs = RunDirectory(run).history(), RunDirectory(runs["reference"]).history()
    assert len(mine) == len(theirs) == 4
    assert mine[-1]["neurons"] < mine[0]["neurons"]
    for a, b in zip(mine, theirs):
        same_round(a, b)
    assert not list(run.glob(".tmp-*"))
    ours, reference = weights(run / "pruned.keras"), weights(runs["reference"] / "pruned.keras")
    assert [w.shape for w in ours] == [w.shape for w in reference]
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert kp.count_params(best).total == mine[-1]["params"]


def test_a_round_recovered_from_its_checkpoint_keeps_its_ratio_and_time(runs, tmp_path):
    ref = RunDirectory(runs["reference"])
    rows = ref.history()
    # the reference as if killed after writing round 3's checkpoint, before its row
    run = tmp_path / "run"
    run.mkdir()
    for name in ("run.json", "round_000.keras", "round_001.keras", "round_002.keras", "round_003.keras"):
        (run / name).write_bytes((runs["reference"] / name).read_bytes())
    (run / "history.json").write_text(json.dumps(rows[:3]))
    GradualPruner(run, verbose=0, **SETTINGS).run(None, train_data, val_data())
    recovered = RunDirectory(run).history()[3]
    assert recovered == rows[3]  # ratio, seconds, metrics and all
    assert recovered["ratio"] == SETTINGS["ratio"] and recovered["seconds"] > 0


def test_the_bar_over_the_rounds_shows_round_k_of_n_params_and_metrics_above_the_epoch_bars(runs):
    lines = runs["stdout"].replace("\r", "\n").splitlines()
    rows = RunDirectory(runs["reference"]).history()
    for k in (1, 2, 3):
        bar = [i for i, line in enumerate(lines) if line.startswith(f"round {k}/3 [")]
        assert len(bar) == 1, lines
        line = lines[bar[0]]
        before = rows[k - 1]
        assert f"params {before['params']:,}" in line
        assert f"val_accuracy={before['metrics']['val_accuracy']:.4f}" in line
        # Keras's epoch bars of that round come after it, before the round's summary line
        summary = next(i for i, text in enumerate(lines) if text.startswith(f"round {k:3d}:"))
        assert any("Epoch 1/2" in text for text in lines[bar[0]:summary])
        assert bar[0] < summary


def damaged(runs, tmp_path, name, keep_rows=None):
    run = tmp_path / "run"
    run.mkdir()
    for p in runs["reference"].iterdir():
        (run / p.name).write_bytes(p.read_bytes())
    if keep_rows is not None:
        rows = json.loads((run / "history.json").read_text())[:keep_rows]
        (run / "history.json").write_text(json.dumps(rows))
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) // 2])
    return run


@pytest.mark.parametrize(
    "name, keep_rows, todo",
    [
        ("round_003.keras", 3, "delete it to redo round 3"),  # never recorded
        ("round_003.keras", None, "restore it from a copy"),  # recorded: the run resumes from it
        ("history.json", None, "restore it from a copy"),
        ("run.json", None, "restore it from a copy, or delete it"),
    ],
)
def test_a_truncated_file_of_the_run_is_named_as_truncated_or_corrupt_with_what_to_do(runs, tmp_path, name, keep_rows, todo):
    run = damaged(runs, tmp_path, name, keep_rows)
    with pytest.raises(kp.KerasPruneError) as caught:
        GradualPruner(run, verbose=0, **dict(SETTINGS, rounds=4)).run(None, train_data, val_data())
    message = str(caught.value)
    assert message.startswith(f"{run / name} is truncated or corrupt (")
    assert todo in message and "\n" not in message


def test_deleting_a_truncated_unrecorded_checkpoint_redoes_its_round(runs, tmp_path):
    run = damaged(runs, tmp_path, "round_003.keras", keep_rows=3)
    (run / "round_003.keras").unlink()
    (run / "pruned.keras").unlink()
    GradualPruner(run, verbose=0, **SETTINGS).run(None, train_data, val_data())
    mine, theirs = RunDirectory(run).history(), RunDirectory(runs["reference"]).history()
    assert len(mine) == 4
    same_round(mine[3], theirs[3])
