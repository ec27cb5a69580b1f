"""The data criteria, the latency meter and pruning on the running Keras backend.

Every test here runs on the backend ``KERAS_BACKEND`` selects (``make test`` runs this
file under TensorFlow, JAX and PyTorch). The references are independent of kerasprune
and of the backend: a NumPy forward pass of a tiny network written with its weights
(float64), finite differences of it for the gradients, and the backend's own autodiff
(``tf.GradientTape``, ``jax.grad``, ``torch.autograd``) of a ``keras.ops`` function of
the weights; scores on the other backends are also checked against TensorFlow's for
the same weights and data (computed in a subprocess).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops
from models import L, randomize, residual_net
from reference import assert_close, cut_off

import kerasprune as kp
from kerasprune.costs import LatencyMeter
from kerasprune.costs.latency import compiled_call
from kerasprune.importance import raw_scores

BACKEND = keras.config.backend()
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

FORWARD = ["mean_response", "std_response", "apoz"]
FEATURE_GRADIENTS = ["mean_gradient", "taylor"]
WEIGHT_GRADIENTS = ["gsfp", "grad_l1", "taylor_weights"]
LOGITS_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def close(a, b, rtol=1e-4, atol=1e-7):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- a tiny network


def tiny_net() -> keras.Model:
    """conv 3x3 -> conv 2x2 -> flatten -> dense -> logits: small enough for NumPy by hand."""
    inp = keras.Input((5, 5, 2))
    x = L.Conv2D(3, 3, activation="relu", name="c1")(inp)
    x = L.Conv2D(4, 2, activation="relu", name="c2")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(4, activation="relu", name="fc")(x)
    model = keras.Model(inp, L.Dense(3, name="head")(x), name="tiny")
    randomize(model, seed=11, scale=0.6)
    model.compile(loss=LOGITS_LOSS)
    return model


def tiny_data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5, 5, 2)).astype("float32")
    y = rng.integers(0, 3, size=n).astype("int32")
    sw = rng.uniform(0.5, 2.0, size=n).astype("float32")
    return x, y, sw


def params_of(model):
    return {n: [np.asarray(w, np.float64) for w in model.get_layer(n).get_weights()] for n in ("c1", "c2", "fc", "head")}


def conv_valid(x, k):
    kh, kw = k.shape[:2]
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, k.shape[3]))
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            out[:, i, j] = np.tensordot(x[:, i : i + kh, j : j + kw], k, axes=3)
    return out


def relu(a):
    return np.maximum(a, 0.0)


# the network as four stages; each stage's output is where the next group is observed:
# c1 at the input of c2, c2 at the flattened input of fc, fc at the input of the head
STAGES = [
    lambda p, h: relu(conv_valid(h, p["c1"][0]) + p["c1"][1]),
    lambda p, h: relu(conv_valid(h, p["c2"][0]) + p["c2"][1]).reshape(len(h), -1),
    lambda p, h: relu(h @ p["fc"][0] + p["fc"][1]),
    lambda p, h: h @ p["head"][0] + p["head"][1],
]
POINTS = {"c1": 0, "c2": 1, "fc": 2}


def np_features(p, x):
    out, h = [], np.asarray(x, np.float64)
    for stage in STAGES:
        h = stage(p, h)
        out.append(h)
    return out


def np_losses(logits, y):
    """Per-example cross-entropy of logits (log-sum-exp minus the true logit)."""
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return lse - logits[np.arange(len(y)), y]


def per_channel(values, point):
    """``(n, ...) -> (n, channels)``: the mean over the positions carrying each channel
    (after Flatten: position p carries channel p % 4)."""
    if point == 1:
        return values.reshape(len(values), -1, 4).mean(axis=1)
    return values.reshape(len(values), -1, values.shape[-1]).mean(axis=1)


def response_reference(p, x):
    feats = np_features(p, x)
    out = {}
    for name, k in POINTS.items():
        r = per_channel(feats[k], k)
        zeros = per_channel((feats[k] == 0).astype(np.float64), k).mean(axis=0)
        out[name] = {"mean_response": np.abs(r.mean(0)), "std_response": r.std(0), "apoz": 1.0 - zeros}
    return out


def fd_feature_gradients(p, x, y, sw, eps=1e-6):
    """Per example, d(sw_i * loss_i)/d(feature map of example i) by central differences."""
    feats = np_features(p, x)
    grads = []
    for k in range(3):
        f = feats[k]
        flat = f.reshape(len(f), -1)
        g = np.zeros_like(flat)
        for j in range(flat.shape[1]):
            losses = []
            for sign in (1.0, -1.0):
                h = flat.copy()
                h[:, j] += sign * eps
                h = h.reshape(f.shape)
                for stage in STAGES[k + 1 :]:
                    h = stage(p, h)
                losses.append(np_losses(h, y) * sw)
            g[:, j] = (losses[0] - losses[1]) / (2 * eps)
        grads.append(g.reshape(f.shape))
    return feats[:3], grads


def feature_reference(criterion, feats, grads):
    out = {}
    for name, k in POINTS.items():
        q = grads[k] if criterion == "mean_gradient" else feats[k] * grads[k]
        out[name] = np.abs(per_channel(q, k)).mean(axis=0)
    return out


def batch_loss(p, x, y, sw):
    return float(np.sum(np_losses(np_features(p, x)[-1], y) * sw) / len(x))


def fd_kernel_gradients(p, x, y, sw, eps=1e-6):
    """d(batch mean loss)/d(kernel) of c1, c2 and fc, by central differences."""
    out = {}
    for name in POINTS:
        k = p[name][0]
        g = np.zeros(k.size)
        for j in range(k.size):
            vals = []
            for sign in (1.0, -1.0):
                q = dict(p)
                kk = k.copy().reshape(-1)
                kk[j] += sign * eps
                q[name] = [kk.reshape(k.shape), p[name][1]]
                vals.append(batch_loss(q, x, y, sw))
            g[j] = (vals[0] - vals[1]) / (2 * eps)
        out[name] = g.reshape(k.shape)
    return out


def weight_reference(criterion, p, kernel_grads_per_batch):
    """Summed over batches: Eq. 5 of Xu et al. (2018) (gsfp), mean |g| (grad_l1),
    |sum w*g| (taylor_weights), per filter (kernel column)."""
    total = {name: 0.0 for name in POINTS}
    for grads in kernel_grads_per_batch:
        for name in POINTS:
            w = p[name][0].reshape(-1, p[name][0].shape[-1])
            g = grads[name].reshape(w.shape)
            G = np.abs(g).mean(0)
            if criterion == "gsfp":
                W = np.sqrt((w * w).mean(0))
                N = w.shape[1]
                value = (N * G / G.sum()) * (N * W / W.sum())
            elif criterion == "grad_l1":
                value = G
            else:
                value = np.abs((w * g).sum(0))
            total[name] = total[name] + value
    return total


# ----------------------------------------------------------------------------- the backend's autodiff


def autodiff(f, args):
    """The gradient of scalar ``f(*args)`` with respect to each of ``args`` (NumPy arrays),
    by the running backend's own autodiff, as float64 NumPy arrays."""
    if BACKEND == "jax":
        import jax

        grads = jax.grad(f, argnums=tuple(range(len(args))))(*[ops.convert_to_tensor(a) for a in args])
    elif BACKEND == "torch":
        import torch

        ts = [ops.convert_to_tensor(a).detach().requires_grad_(True) for a in args]
        grads = torch.autograd.grad(f(*ts), ts)
    else:
        import tensorflow as tf

        ts = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(ts)
            value = f(*ts)
        grads = tape.gradient(value, ts)
    return [np.asarray(ops.convert_to_numpy(g), np.float64) for g in grads]


def ops_stages(w):
    """The four stages in keras.ops, of the model's float32 weights ``w``."""
    return [
        lambda h: ops.relu(ops.conv(h, w["c1"][0]) + w["c1"][1]),
        lambda h: ops.reshape(ops.relu(ops.conv(h, w["c2"][0]) + w["c2"][1]), (h.shape[0], -1)),
        lambda h: ops.relu(ops.matmul(h, w["fc"][0]) + w["fc"][1]),
        lambda h: ops.matmul(h, w["head"][0]) + w["head"][1],
    ]


def ops_losses(logits, y, sw):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True) * sw


def autodiff_feature_gradients(model, x, y, sw):
    """Per example, d(sw_i * loss_i)/d(feature map): the gradient of the summed losses
    of the stages after each feature map (examples do not interact)."""
    w = {n: [ops.convert_to_tensor(v) for v in model.get_layer(n).get_weights()] for n in ("c1", "c2", "fc", "head")}
    stages = ops_stages(w)
    feats, h = [], ops.convert_to_tensor(x)
    for stage in stages[:3]:
        h = stage(h)
        feats.append(np.asarray(ops.convert_to_numpy(h)))
    grads = []
    for k in range(3):

        def tail(f, k=k):
            for stage in stages[k + 1 :]:
                f = stage(f)
            return ops.sum(ops_losses(f, ops.convert_to_tensor(y), ops.convert_to_tensor(sw)))

        grads.append(autodiff(tail, [feats[k]])[0])
    return [f.astype(np.float64) for f in feats], grads


def autodiff_kernel_gradients(model, x, y, sw):
    names = ("c1", "c2", "fc", "head")
    weights = [v for n in names for v in model.get_layer(n).get_weights()]

    def loss(*flat):
        w = {n: [flat[2 * i], flat[2 * i + 1]] for i, n in enumerate(names)}
        h = ops.convert_to_tensor(x)
        for stage in ops_stages(w):
            h = stage(h)
        per = ops_losses(h, ops.convert_to_tensor(y), ops.convert_to_tensor(sw))
        return ops.sum(per) / len(x)

    grads = autodiff(loss, weights)
    return {n: grads[2 * i] for i, n in enumerate(names[:3])}


# ----------------------------------------------------------------------------- the criteria


@pytest.mark.parametrize("criterion", FORWARD)
def test_forward_statistics_match_a_numpy_forward_pass(criterion):
    model = tiny_net()
    x, _, _ = tiny_data(11)
    s = raw_scores(model, criterion, data=x, batch_size=4)  # 3 batches, the last of 3
    ref = response_reference(params_of(model), x)
    for name in POINTS:
        close(s[name], ref[name][criterion])


@pytest.mark.parametrize("criterion", FEATURE_GRADIENTS)
def test_feature_map_gradient_criteria_match_finite_differences(criterion):
    model = tiny_net()
    x, y, sw = tiny_data(10)
    s = raw_scores(model, criterion, data=(x, y, sw), batch_size=4)
    feats, grads = fd_feature_gradients(params_of(model), x, y, sw)
    ref = feature_reference(criterion, feats, grads)
    for name in POINTS:
        close(s[name], ref[name], atol=1e-6)


@pytest.mark.parametrize("criterion", WEIGHT_GRADIENTS)
def test_weight_gradient_criteria_match_finite_differences(criterion):
    model = tiny_net()
    x, y, sw = tiny_data(10)
    s = raw_scores(model, criterion, data=(x, y, sw), batch_size=4)
    p = params_of(model)
    per_batch = [fd_kernel_gradients(p, x[i : i + 4], y[i : i + 4], sw[i : i + 4]) for i in range(0, 10, 4)]
    ref = weight_reference(criterion, p, per_batch)
    for name in POINTS:
        close(s[name], ref[name], atol=1e-6)


@pytest.mark.parametrize("criterion", FEATURE_GRADIENTS + ["gsfp"])
def test_gradient_criteria_match_the_backends_own_autodiff(criterion):
    model = tiny_net()
    x, y, sw = tiny_data(9, seed=3)
    s = raw_scores(model, criterion, data=(x, y, sw), batch_size=5)
    if criterion == "gsfp":
        per_batch = [autodiff_kernel_gradients(model, x[i : i + 5], y[i : i + 5], sw[i : i + 5]) for i in (0, 5)]
        ref = weight_reference(criterion, params_of(model), per_batch)
    else:
        ref = feature_reference(criterion, *autodiff_feature_gradients(model, x, y, sw))
    for name in POINTS:
        close(s[name], ref[name], atol=1e-6)


def test_frozen_layers_and_a_compiled_loss_give_the_same_gradients():
    model = tiny_net()
    x, y, _ = tiny_data(8)
    base = {c: raw_scores(model, c, data=(x, y), batch_size=8) for c in ("mean_gradient", "grad_l1")}
    for layer in model.layers:
        layer.trainable = False  # gradients still reach feature maps and kernels
    frozen = {c: raw_scores(model, c, data=(x, y), batch_size=8, loss=LOGITS_LOSS) for c in base}
    for c in base:
        for name in POINTS:
            close(frozen[c][name], base[c][name], rtol=1e-5)


# ----------------------------------------------------------------------------- same as TensorFlow

_TF_SCRIPT = r"""
import os, sys
import numpy as np
import keras
import kerasprune as kp
from kerasprune.importance import raw_scores
import test_backends as tb

data = np.load(sys.argv[1], allow_pickle=True)
out = {}
for name, build in tb.CROSS_MODELS.items():
    model = build()
    model.set_weights([data[f"{name}/w{i}"] for i in range(len(model.weights))])
    for criterion in tb.CROSS_CRITERIA:
        s = raw_scores(model, criterion, data=(data[f"{name}/x"], data[f"{name}/y"]), batch_size=10,
                       loss=tb.CROSS_LOSSES[name])
        for group, v in s.items():
            out[f"{name}/{criterion}/{group}"] = v
np.savez(sys.argv[2], **out)
"""


def bn_chain() -> keras.Model:
    """A Sequential CNN with BatchNormalization and Dropout (inference mode: off)."""
    model = keras.Sequential(
        [
            keras.Input((7, 7, 2)),
            L.Conv2D(4, 3, name="c1"),
            L.BatchNormalization(name="bn"),
            L.ReLU(name="relu"),
            L.Dropout(0.5, name="drop"),
            L.Conv2D(5, 2, activation="relu", name="c2"),
            L.GlobalAveragePooling2D(name="gap"),
            L.Dense(3, name="head"),
        ],
        name="bn_chain",
    )
    return randomize(model, seed=4, scale=0.5)


# (each criterion is one compilation per batch shape on JAX: one batch, few models)
CROSS_MODELS = {"residual": residual_net, "bn_chain": bn_chain}
CROSS_LOSSES = {"residual": "mse", "bn_chain": LOGITS_LOSS}
CROSS_CRITERIA = FORWARD + FEATURE_GRADIENTS + ["gsfp"]


def _cross_data(name, model):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10,) + tuple(model.input_shape[1:])).astype("float32")
    if name == "residual":
        y = rng.normal(size=(10, 5)).astype("float32")
    else:
        y = rng.integers(0, 3, size=10).astype("int32")
    return x, y


@pytest.mark.skipif(BACKEND == "tensorflow", reason="this backend is TensorFlow: nothing to compare with")
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_every_data_criterion_scores_as_on_tensorflow_for_the_same_weights_and_data(tmp_path):
    arrays, mine = {}, {}
    for name, build in CROSS_MODELS.items():
        model = build()
        x, y = _cross_data(name, model)
        arrays.update({f"{name}/w{i}": w for i, w in enumerate(model.get_weights())})
        arrays[f"{name}/x"], arrays[f"{name}/y"] = x, y
        for criterion in CROSS_CRITERIA:
            s = raw_scores(model, criterion, data=(x, y), batch_size=10, loss=CROSS_LOSSES[name])
            mine.update({f"{name}/{criterion}/{g}": v for g, v in s.items()})
    np.savez(tmp_path / "in.npz", **arrays)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    subprocess.run(
        [sys.executable, "-c", _TF_SCRIPT, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        cwd=TESTS, env=env, check=True, capture_output=True, text=True,
    )
    theirs = dict(np.load(tmp_path / "out.npz"))
    assert sorted(theirs) == sorted(mine)
    for key in mine:
        np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-4, atol=1e-7, err_msg=key)


# ----------------------------------------------------------------------------- pruning, latency


def test_pruning_by_a_gradient_criterion_removes_the_lowest_channels_exactly():
    model = residual_net()
    model.compile(loss="mse")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(12, 5)).astype("float32")
    graph = kp.analyze(model)
    scores = kp.score(model, "taylor", data=(x, y), graph=graph, batch_size=6)
    keep = kp.select(graph, scores, 0.4, scope="layerwise")
    for name, kept in keep.items():  # every group keeps its highest-scoring channels
        dropped = np.setdiff1d(np.arange(len(scores[name])), kept)
        if len(dropped):
            assert scores[name][dropped].max() <= scores[name][kept].min()
    thin = kp.rebuild(model, keep, graph=graph)
    assert_close(thin(x, training=False), cut_off(model, graph, keep)(x, training=False))
    direct = kp.prune(model, 0.4, criterion="taylor", scope="layerwise", data=(x, y))
    assert kp.count_params(direct).total == kp.count_params(thin).total
    np.testing.assert_allclose(direct.predict_on_batch(x), thin.predict_on_batch(x), rtol=1e-5, atol=1e-6)


def test_the_compiled_call_the_latency_meter_times_gives_the_models_outputs():
    model = residual_net()
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype("float32")
    (out,) = compiled_call(model, ops.convert_to_tensor(x))()
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, model.predict_on_batch(x), rtol=1e-5, atol=1e-6)
    thin = kp.prune(model, 0.5, unit="flops")
    meter = LatencyMeter(batch_size=2, samples=2, min_seconds=0.01)
    times = meter.time([model, thin])
    assert len(times) == 2 and all(t > 0 for t in times)
    assert len(meter._fns) == 2


def test_prune_for_speedup_measures_on_this_backend():
    model = residual_net()
    model.compile(loss="mse")
    rng = np.random.default_rng(3)
    data = (rng.normal(size=(6, 8, 8, 3)).astype("float32"), rng.normal(size=(6, 5)).astype("float32"))
    # a speed-up no model reaches: the error reports what the meter measured here
    with pytest.raises(kp.SpeedupNotReachedError, match=r"measured \d+\.\d\dx faster, short of 1000\.00x"):
        kp.prune_for_speedup(model, 1000.0, criterion="mean_gradient", data=data, samples=1)


# ----------------------------------------------------------------------------- without TensorFlow


def test_importing_every_module_loads_no_tensorflow_on_this_backend():
    if BACKEND == "tensorflow":
        pytest.skip("Keras itself imports TensorFlow on the TensorFlow backend")
    code = (
        "import importlib, pkgutil, sys, kerasprune\n"
        "from kerasprune.graph.registry import _LAZY\n"
        # the keras-hub handler modules import keras-hub, which imports TensorFlow itself;
        # they load only when a keras-hub layer is met
        "hub = {m for ms in _LAZY.values() for m in ms}\n"
        "names = [m.name for m in pkgutil.walk_packages(kerasprune.__path__, 'kerasprune.')\n"
        "         if m.name != 'kerasprune.__main__' and m.name not in hub]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "import kerasprune as kp\n"
        "kp.prune, kp.score, kp.callbacks.SaliencyAccumulator, kp.data.load_dataset\n"
        "print(len(names), 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env=dict(os.environ, KERAS_BACKEND=BACKEND),
    )
    count, loaded = out.stdout.split()
    assert int(count) > 50 and loaded == "False"


def test_tensorflow_only_features_say_which_backend_they_need():
    if BACKEND == "tensorflow":
        pytest.skip("on the TensorFlow backend these features run")
    from kerasprune.export import export_tflite

    model = tiny_net()
    with pytest.raises(kp.BackendError, match="KERAS_BACKEND=tensorflow"):
        export_tflite(model, "never.tflite")
    # the callbacks run on every backend: tests/test_callbacks_backends.py


def test_several_processes_need_jax_and_say_so_on_the_other_backends():
    if BACKEND == "jax":
        pytest.skip("on JAX, tests/test_distribution.py runs two processes")
    from kerasprune import distribute

    with pytest.raises(kp.BackendError, match="needs KERAS_BACKEND=jax, not '" + BACKEND):
        distribute.initialize("127.0.0.1:1", 2, 0)
    assert distribute.process_index() == 0 and distribute.process_count() == 1
