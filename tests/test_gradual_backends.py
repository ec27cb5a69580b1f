"""``GradualPruner`` on the running Keras backend (TensorFlow, JAX, PyTorch).

``make test`` runs this file under JAX and PyTorch (on TensorFlow, ``test_gradual.py`` and
``test_resume.py`` check the same). The data are NumPy arrays in a
``keras.utils.PyDataset`` (no ``tf.data``), the models a few Dense or Conv2D layers, so
each test takes a few seconds. Each is checked against a reference computed apart from the
pruner: the thin model against NumPy slices of the original at the channels a NumPy AAWS
ranking keeps; a run killed inside fine-tuning and in its final save (``kerasprune.runs._faults``) and resumed
against the same run never killed; scores accumulated inside fine-tuning against a
separate scoring pass over the same batches (learning rate 0, so the weights they are
taken on are the same).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from reference import assert_same_row

import kerasprune as kp
from kerasprune.pruning import GradualPruner
from kerasprune.pruning import gradual as gradual_module
from kerasprune.runs import _faults
from kerasprune.runs.rundir import RunDirectory

BACKEND = keras.config.backend()
L = keras.layers

# on TensorFlow, test_gradual.py and test_resume.py run the same behaviour
pytestmark = pytest.mark.skipif(BACKEND == "tensorflow",
                                reason="test_gradual.py and test_resume.py run it on TensorFlow")


class Batches(keras.utils.PyDataset):
    """NumPy arrays in fixed batches, their order shuffled by ``seed`` (None: in order)."""

    def __init__(self, x, y, batch_size=16, seed=None):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        order = np.arange(len(x))
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(x))
        self.order = order

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        at = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        return self.x[at], self.y[at]


def dense_arrays(n=32, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int32")
    return x, y


def image_arrays(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 6, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32")
    return x, y


def dense_model(optimizer="adam", dropout=0.0):
    inp = keras.Input((8,))
    x = L.Dense(12, activation="relu", name="fc1")(inp)
    if dropout:
        x = L.Dropout(dropout, name="drop")(x)
    x = L.Dense(10, activation="relu", name="fc2")(x)
    model = keras.Model(inp, L.Dense(2, activation="softmax", name="out")(x))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def conv_model():
    inp = keras.Input((6, 6, 1))
    x = L.Conv2D(6, 3, activation="relu", name="conv")(inp)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(8, activation="relu", name="fc")(x)
    model = keras.Model(inp, L.Dense(2, activation="softmax", name="out")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class ThinModels(keras.callbacks.Callback):
    """Each round's thin model as its fine-tuning starts: its weights by layer."""

    def __init__(self):
        super().__init__()
        self.rounds = []

    def on_train_begin(self, logs=None):
        self.rounds.append({l.name: [np.asarray(w) for w in l.get_weights()] for l in self.model.layers})


def layer_weights(model):
    return {l.name: [np.asarray(w) for w in l.get_weights()] for l in model.layers}


def test_a_round_on_this_backend_keeps_the_original_weights_at_the_channels_a_numpy_aaws_ranking_keeps(tmp_path):
    keras.utils.set_random_seed(0)
    model = conv_model()
    original = layer_weights(model)
    data = Batches(*image_arrays())
    thin = ThinModels()
    best = GradualPruner(tmp_path / "run", rounds=1, ratio=0.3, callbacks=[thin], verbose=0).run(model, data, data)
    rows = RunDirectory(tmp_path / "run").history()
    assert [r["round"] for r in rows] == [0, 1]

    # the reference: AAWS (mean |w| of each filter) divided by its layer's mean, one global
    # ranking over both groups, the lowest removed (as many as the round removed)
    (ck, cb), (fk, fb), (ok, ob) = original["conv"], original["fc"], original["out"]
    conv_s = np.abs(ck).mean(axis=(0, 1, 2))
    fc_s = np.abs(fk).mean(axis=0)
    scores = np.concatenate([conv_s / conv_s.mean(), fc_s / fc_s.mean()])
    removed = rows[0]["neurons"] - rows[1]["neurons"]
    assert removed > 0
    gone = set(np.argsort(scores, kind="stable")[:removed].tolist())
    keep_conv = np.array([c for c in range(6) if c not in gone])
    keep_fc = np.array([u for u in range(8) if u + 6 not in gone])
    assert rows[1]["widths"]["conv"] == len(keep_conv) and rows[1]["widths"]["fc"] == len(keep_fc)

    got = thin.rounds[0]
    np.testing.assert_array_equal(got["conv"][0], ck[..., keep_conv])
    np.testing.assert_array_equal(got["conv"][1], cb[keep_conv])
    # Flatten of a (4, 4, 6) map: the Dense rows of the kept channels at every position
    rows_kept = fk.reshape(4, 4, 6, 8)[:, :, keep_conv, :].reshape(-1, 8)
    np.testing.assert_array_equal(got["fc"][0], rows_kept[:, keep_fc])
    np.testing.assert_array_equal(got["fc"][1], fb[keep_fc])
    np.testing.assert_array_equal(got["out"][0], ok[keep_fc])
    np.testing.assert_array_equal(got["out"][1], ob)

    # the returned model is the fine-tuned thin one, saved as pruned.keras and loadable here
    assert kp.count_params(best).total == rows[1]["params"]
    saved = keras.models.load_model(tmp_path / "run" / "pruned.keras")
    for a, b in zip(saved.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = image_arrays()[0]
    np.testing.assert_allclose(np.asarray(saved.predict(x, verbose=0)), np.asarray(best.predict(x, verbose=0)), atol=1e-6)


# the resumed run: data reshuffled from the round's seed, dropout, Adam's state carried over
RESUME = dict(rounds=2, ratio=0.2, criterion="mean_gradient", fine_tune_epochs=1, seed=5)


def shuffled(seed):
    return Batches(*dense_arrays(), seed=seed)


def val_data():
    return Batches(*dense_arrays())


class Killed(BaseException):
    """What the kill points raise here instead of ending the process (no clean-up runs)."""


def test_a_run_killed_in_fine_tuning_and_in_its_final_save_resumes_to_the_history_and_weights_of_one_never_killed(tmp_path, monkeypatch):
    reference, run = tmp_path / "reference", tmp_path / "killed"
    keras.utils.set_random_seed(0)
    GradualPruner(reference, verbose=0, **RESUME).run(dense_model(dropout=0.25), shuffled, val_data())

    def die():
        raise Killed()

    monkeypatch.setattr(_faults, "_die", die)
    keras.utils.set_random_seed(0)
    model = dense_model(dropout=0.25)  # the same model: the same seed
    # killed inside round 2's fine-tuning (round 1 recorded), then half-way through pruned.keras
    for kill_at, recorded in (("fine_tune@2", [0, 1]), ("final_save", [0, 1, 2])):
        monkeypatch.setenv(_faults.KILL_AT_ENV, kill_at)
        with pytest.raises(Killed):
            GradualPruner(run, verbose=0, **RESUME).run(model, shuffled, val_data())
        model = None  # every later start resumes the directory
        assert [r["round"] for r in RunDirectory(run).history()] == recorded, kill_at
    monkeypatch.delenv(_faults.KILL_AT_ENV)
    assert not (run / "pruned.keras").exists() and list(run.glob(".tmp-pruned.*"))

    best = GradualPruner(run, verbose=0, **RESUME).run(None, shuffled, val_data())
    mine, theirs = RunDirectory(run).history(), RunDirectory(reference).history()
    assert len(mine) == len(theirs) == 3 and mine[-1]["neurons"] < mine[0]["neurons"]
    for a, b in zip(mine, theirs):
        assert_same_row(a, b)
    assert not list(run.glob(".tmp-*"))
    ours = keras.models.load_model(run / "pruned.keras").get_weights()
    ref = keras.models.load_model(reference / "pruned.keras").get_weights()
    assert [np.shape(w) for w in ours] == [np.shape(w) for w in ref]
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert kp.count_params(best).total == mine[-1]["params"]


def test_accumulated_gsfp_scores_prune_the_channels_a_separate_pass_over_the_same_batches_prunes(tmp_path, monkeypatch):
    passes = []
    real_score = gradual_module.score

    def counted(*args, **kwargs):
        passes.append(1)
        return real_score(*args, **kwargs)

    monkeypatch.setattr(gradual_module, "score", counted)
    data = Batches(*dense_arrays())
    runs = {}
    for accumulate in (True, False):
        keras.utils.set_random_seed(0)
        model = dense_model(optimizer=keras.optimizers.SGD(learning_rate=0.0))  # the weights stay
        thin = ThinModels()
        passes.clear()
        GradualPruner(tmp_path / str(accumulate), rounds=2, ratio=0.25, criterion="gsfp",
                      accumulate=accumulate, callbacks=[thin], verbose=0).run(model, data, data)
        runs[accumulate] = (RunDirectory(tmp_path / str(accumulate)).history(), thin.rounds, len(passes))
    (acc_rows, acc_thin, acc_passes), (ref_rows, ref_thin, ref_passes) = runs[True], runs[False]
    # round 1 is scored by a pass (nothing was fine-tuned before it); round 2 by the callback
    assert (acc_passes, ref_passes) == (1, 2)
    assert [r["widths"] for r in acc_rows] == [r["widths"] for r in ref_rows]
    assert acc_rows[2]["neurons"] < acc_rows[1]["neurons"] < acc_rows[0]["neurons"]
    for a, b in zip(acc_thin[1].values(), ref_thin[1].values()):  # round 2's thin models: the same channels
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
