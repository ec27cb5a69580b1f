"""Pruning on several processes: Keras's DataParallel on JAX, and the strategies refused.

The multi-process test starts two JAX processes on 127.0.0.1 (one CPU device each) that
run the same ``GradualPruner`` into one shared run directory, then a plain ``fit`` with
``SoftFilterPruning`` and a ``SaliencyAccumulator``, and a third, plain
single-process run (no distribution at all) over the same global batches as the
reference. It runs under any ``KERAS_BACKEND`` of the test session: the workers set
``KERAS_BACKEND=jax`` themselves.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kerasprune import distribute
from kerasprune.errors import BackendError

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {root!r})
    pid, count, port, run, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    writes = []

    def audit(event, args):  # every write, rename, removal or mkdir under the run directory
        if event == "open":
            path, mode, flags = args
            writing = isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if isinstance(path, (str, os.PathLike)) and str(path).startswith(run) and writing:
                writes.append(f"open {{path}}")
        elif event in ("os.remove", "os.rename", "os.replace", "os.mkdir", "os.rmdir", "shutil.rmtree"):
            if str(args[0]).startswith(run):
                writes.append(f"{{event}} {{args[0]}}")

    from kerasprune import distribute
    if count > 1:
        distribute.initialize(f"127.0.0.1:{{port}}", count, pid)
    import keras
    import numpy as np
    import tensorflow as tf
    from kerasprune import GradualPruner
    if count > 1:
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    if pid > 0:
        sys.addaudithook(audit)
    def weights_of(m):
        return [np.asarray(w).tolist() for w in m.get_weights()]

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype("float32")
    y = (x[:, :6].sum(axis=1) > x[:, 6:].sum(axis=1)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # six global batches

    inp = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu", name="fc1")(inp)
    h = keras.layers.Dense(12, activation="relu", name="fc2")(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="out")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Rounds(keras.callbacks.Callback):  # each thin model as fine-tuning starts
        def __init__(self):
            super().__init__()
            self.rounds = []

        def on_train_begin(self, logs=None):
            self.rounds.append({{
                "widths": {{l.name: l.units for l in self.model.layers if hasattr(l, "units")}},
                "weights": weights_of(self.model),
                "devices": min(len(v.value.sharding.device_set) for v in self.model.variables),
            }})

    seen = Rounds()
    pruner = GradualPruner(run, rounds=2, ratio=0.2, criterion="mean_gradient", score_batches=3,
                           callbacks=[seen], verbose=0)
    best = pruner.run(model, data, data)
    metrics = best.evaluate(data, return_dict=True, verbose=0)

    # the callbacks inside a plain fit under the same distribution: soft masking from the
    # weights' gradients, and a feature-map saliency, both summed over the global batches
    from kerasprune.callbacks import SaliencyAccumulator, SoftFilterPruning
    keras.utils.set_random_seed(11)
    fresh = keras.models.clone_model(model)
    fresh.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    soft = SoftFilterPruning(ratio=0.25, criterion="gsfp")
    feature = SaliencyAccumulator(criterion="mean_gradient")
    fresh.fit(data, epochs=2, verbose=0, callbacks=[soft, feature])
    called = {{"soft": {{g: v.tolist() for g, v in soft.raw.items()}},
              "keep": {{g: v.tolist() for g, v in soft.keep.items()}},
              "feature": {{g: v.tolist() for g, v in feature.raw.items()}},
              "steps": [soft.steps, feature.steps],
              "weights": weights_of(fresh)}}
    with open(out, "w") as f:
        json.dump({{"process": distribute.process_index(), "processes": distribute.process_count(),
                   "rounds": seen.rounds, "metrics": metrics, "writes": writes, "callbacks": called,
                   "weights": weights_of(best)}}, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_all(commands, env, timeout):
    """Start every command at once; wait for all, killing every one left at the timeout."""
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    deadline = time.monotonic() + timeout
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers ran past {timeout}s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [(p.returncode, log) for p, log in zip(procs, logs)]


def _all_close(weights, reference) -> bool:
    """Every array of ``weights`` equals its ``reference`` to 1e-5."""
    return len(weights) == len(reference) and all(
        np.allclose(u, v, atol=1e-5) for u, v in zip(weights, reference)
    )


def _history(run: Path):
    return json.loads((run / "history.json").read_text())


def test_two_jax_processes_prune_like_one_process_over_the_same_global_batches(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed: the multi-process route runs on the JAX backend")
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    port = str(_free_port())
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    commands = [[sys.executable, str(script), str(i), "2", port, str(shared), str(tmp_path / f"p{i}.json")] for i in (0, 1)]
    commands.append([sys.executable, str(script), "0", "1", "0", str(alone), str(tmp_path / "ref.json")])
    for rc, log in _run_all(commands, env, timeout=400):
        assert rc == 0, log[-3000:]
    p0, p1, ref = (json.loads((tmp_path / n).read_text()) for n in ("p0.json", "p1.json", "ref.json"))

    assert (p0["process"], p1["process"], p0["processes"], ref["processes"]) == (0, 1, 2, 1)
    # every process kept the same channels of the same weights, every round
    assert len(p0["rounds"]) == len(p1["rounds"]) == 2
    for a, b in zip(p0["rounds"], p1["rounds"]):
        assert a["widths"] == b["widths"]
        assert all(np.array_equal(u, v) for u, v in zip(a["weights"], b["weights"]))
        assert a["devices"] == 2  # the thin model was built under DataParallel over both processes
    assert all(np.array_equal(u, v) for u, v in zip(p0["weights"], p1["weights"]))
    # only process 0 wrote the shared directory, and it holds the whole run
    assert p1["writes"] == []
    assert sorted(p.name for p in shared.iterdir()) == sorted(p.name for p in alone.iterdir())
    # the same as one process over the same global batches
    rows, ref_rows = _history(shared), _history(alone)
    assert [r["widths"] for r in rows] == [r["widths"] for r in ref_rows]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [a["widths"] for a in p0["rounds"]] == [a["widths"] for a in ref["rounds"]]
    for r, q in zip(rows, ref_rows):
        assert r["metrics"].keys() == q["metrics"].keys()
        assert np.allclose([r["metrics"][k] for k in q["metrics"]], list(q["metrics"].values()), atol=1e-5)
    assert _all_close(p0["weights"], ref["weights"])
    assert np.allclose(list(p0["metrics"].values()), [ref["metrics"][k] for k in p0["metrics"]], atol=1e-5)

    # the callbacks: the same saliency and masks on both processes, as one process computes
    c0, c1, cref = p0["callbacks"], p1["callbacks"], ref["callbacks"]
    assert c0["steps"] == c1["steps"] == cref["steps"] == [6, 6]  # the six global batches, once each
    assert c0["keep"] == c1["keep"] == cref["keep"] and c0["keep"]  # soft masking chose alike
    for kind in ("soft", "feature"):
        assert c0[kind].keys() == cref[kind].keys() == {"fc1", "fc2"}
        for g in cref[kind]:
            assert np.array_equal(c0[kind][g], c1[kind][g])
            assert np.allclose(c0[kind][g], cref[kind][g], rtol=1e-4, atol=1e-7)
            assert np.max(cref[kind][g]) > 0  # not the silent zeros of a stateless step
    assert _all_close(c0["weights"], cref["weights"])


def _two_worker_strategy():
    tf = pytest.importorskip("tensorflow")

    class TwoWorkers(tf.distribute.MultiWorkerMirroredStrategy):
        """A MultiWorkerMirroredStrategy's type and cluster, without starting the cluster:
        a real one must be made at program start, before any TensorFlow op, and waits for
        its peers."""

        def __init__(self):
            pass

        @property
        def cluster_resolver(self):
            spec = tf.train.ClusterSpec({"worker": ["127.0.0.1:1", "127.0.0.1:2"]})
            return tf.distribute.cluster_resolver.SimpleClusterResolver(spec)

    return TwoWorkers()


def test_multi_worker_mirrored_strategy_is_refused_naming_the_upstream_issue_and_jax(tmp_path):
    from kerasprune import GradualPruner

    with pytest.raises(BackendError) as err:
        GradualPruner(tmp_path / "run", rounds=1, strategy=_two_worker_strategy())
    message = str(err.value)
    assert "keras-team/keras#20585" in message and "KERAS_BACKEND=jax" in message
    assert "over 2 workers" in message and "\n" not in message
    assert not (tmp_path / "run").exists()


def test_a_multi_worker_strategy_in_scope_is_refused_too(monkeypatch):
    tf = pytest.importorskip("tensorflow")
    strategy = _two_worker_strategy()
    monkeypatch.setattr(tf.distribute, "has_strategy", lambda: True)
    monkeypatch.setattr(tf.distribute, "get_strategy", lambda: strategy)
    with pytest.raises(BackendError, match="keras-team/keras#20585"):
        distribute.check_supported()


def test_mirrored_and_single_worker_strategies_pass():
    tf = pytest.importorskip("tensorflow")
    distribute.check_supported(tf.distribute.get_strategy())
    distribute.check_supported(tf.distribute.MirroredStrategy(["/cpu:0"]))
    one = _two_worker_strategy()
    spec = tf.train.ClusterSpec({"worker": ["127.0.0.1:1"]})
    type(one).cluster_resolver = property(lambda self: tf.distribute.cluster_resolver.SimpleClusterResolver(spec))
    distribute.check_supported(one)


def test_a_single_process_job_writes_as_process_zero_and_never_waits():
    assert (distribute.process_index(), distribute.process_count(), distribute.is_writer()) == (0, 1, True)
    distribute.barrier("nothing to wait for")
    with distribute.alone():
        pass
