"""Callbacks inside model.fit: saliency accumulation, soft filter pruning, strip."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from models import randomize, residual_net

from kerasprune.callbacks import CallbackError, SaliencyAccumulator, SoftFilterPruning, dead_channels, strip
from kerasprune.costs.counting import count_params
from kerasprune.errors import KerasPruneError
from kerasprune.graph.analysis import analyze

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def conv_bn_net() -> keras.Model:
    inp = keras.Input((8, 8, 3), name="img")
    x = L.Conv2D(6, 3, name="c1")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(5, 3, activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x))


def data(n: int = 64, classes: int = 4, shape=(8, 8, 3), seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, classes, n)


def brute_force(model: keras.Model, x, y, batch: int, criterion: str, layers) -> dict:
    """Per-batch GradientTape saliency of each layer's kernel, summed (numpy formulas)."""
    kernels = {name: model.get_layer(name).kernel for name in layers}
    total = {name: 0.0 for name in layers}
    for start in range(0, len(x), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        with tf.GradientTape() as tape:
            loss = LOSS(yb, model(xb, training=True))
        grads = tape.gradient(loss, [kernels[n].value for n in layers])
        for name, g in zip(layers, grads):
            w = kernels[name].numpy().astype(np.float64)
            g = g.numpy().astype(np.float64)
            axes = tuple(range(w.ndim - 1))
            n = np.prod(w.shape[:-1])
            if criterion == "taylor_weights":
                s = np.abs((w * g).sum(axis=axes))
            else:
                gn = np.abs(g).sum(axis=axes) / n
                if criterion == "grad_l1":
                    s = gn
                else:
                    wn = np.sqrt((w * w).sum(axis=axes) / n)
                    big_n = w.shape[-1]
                    s = (big_n * gn / gn.sum()) * (big_n * wn / wn.sum())
            total[name] = total[name] + s
    return total


def assert_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    assert np.max(np.abs(actual - expected)) <= rtol * scale, (actual, expected)


@pytest.mark.parametrize("criterion", ["gsfp", "taylor_weights", "grad_l1"])
def test_accumulated_saliency_equals_brute_force_gradient_tape(criterion):
    model = conv_bn_net()
    x, y = data()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    expected = brute_force(model, x, y, 16, criterion, ["c1", "c2"])
    acc = SaliencyAccumulator(criterion=criterion, normalization="none")
    hist = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[acc])
    assert acc.steps == 4
    assert set(acc.raw) == {"c1", "c2"}
    # |sum w*g| cancels: float32 gradient rounding weighs more in it than in the others
    rtol = 1e-4 if criterion == "taylor_weights" else 1e-5
    for name in ("c1", "c2"):
        assert_close(acc.raw[name], expected[name], rtol)
        assert_close(acc.scores[name], expected[name], rtol)  # normalization "none"
    assert hist.history["saliency_steps"] == [4.0]
    assert np.isclose(hist.history["saliency_min"][0], min(v.min() for v in acc.scores.values()))
    # the optimizer is given back untouched
    assert "apply" not in vars(model.optimizer)


def test_saliency_with_steps_per_execution_2_and_layer_mean_normalization():
    model = conv_bn_net()
    x, y = data()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS, steps_per_execution=2)
    expected = brute_force(model, x, y, 16, "gsfp", ["c1", "c2"])
    acc = SaliencyAccumulator(criterion="gsfp")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[acc])
    assert acc.steps == 4
    for name in ("c1", "c2"):
        assert_close(acc.raw[name], expected[name])
        assert_close(acc.scores[name], expected[name] / expected[name].mean())


def test_saliency_resets_each_epoch_and_cumulates_over_epochs():
    model = conv_bn_net()
    x, y = data()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    expected = brute_force(model, x, y, 32, "grad_l1", ["c1"])["c1"]
    acc = SaliencyAccumulator(criterion="grad_l1", normalization="none")
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[acc])
    assert acc.steps == 2
    assert_close(acc.scores["c1"], expected)  # the last epoch only
    assert_close(acc.cumulative["c1"], 2 * expected)
    keep_going = SaliencyAccumulator(criterion="grad_l1", normalization="none", reset_each_epoch=False)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[keep_going])
    assert keep_going.steps == 4
    assert_close(keep_going.scores["c1"], 2 * expected)
    assert_close(keep_going.cumulative["c1"], 2 * expected)


def _masked_entries_are_zero(model, graph, keep):
    layers = {rec.path: rec.layer for rec in graph.records}
    for name, kept in keep.items():
        gone = np.setdiff1d(np.arange(graph[name].size), kept)
        for e in graph.entries(graph[name]):
            values = layers[e.layer].weights[e.weight].numpy().reshape(-1)[e.flat]
            assert np.all(values[np.isin(e.channel, gone)] == 0.0), (name, e.layer, e.name)


def test_soft_pruning_masks_filters_inputs_and_residual_groups_without_emptying_any():
    model = randomize(residual_net())
    x, y = data(64, classes=5)
    model.compile(keras.optimizers.SGD(learning_rate=0.01, momentum=0.9), LOSS)
    soft = SoftFilterPruning(ratio=0.7, min_channels=2)
    hist = model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[soft])
    graph = analyze(model, warn=False)
    assert soft.keep, "something is masked"
    for group in graph.prunable:
        assert len(soft.keep.get(group.name, range(group.size))) >= 2
    _masked_entries_are_zero(model, graph, soft.keep)
    # the residual group made by stem and b1_conv2 (added together) is masked in both,
    # and in the convs that read it
    res = graph.group_of("stem")
    assert graph.group_of("b1_conv2") is res
    gone = np.setdiff1d(np.arange(res.size), soft.keep[res.name])
    assert gone.size
    for layer in ("stem", "b1_conv2"):
        assert np.all(model.get_layer(layer).kernel.numpy()[..., gone] == 0.0)
        assert np.all(model.get_layer(layer).bias.numpy()[gone] == 0.0)
    assert np.all(model.get_layer("stem_bn").gamma.numpy()[gone] == 0.0)
    for reader in ("b1_conv1", "b2_conv1", "b2_proj"):
        assert np.all(model.get_layer(reader).kernel.numpy()[:, :, gone, :] == 0.0)
    assert hist.history["soft_masked"][0] == sum(graph[n].size - len(k) for n, k in soft.keep.items())


def test_masked_filters_come_back_when_training_goes_on():
    model = conv_bn_net()
    x, y = data()
    model.compile(keras.optimizers.Adam(learning_rate=0.01), LOSS)
    soft = SoftFilterPruning(ratio=lambda epoch: 0.5 if epoch == 0 else 0.0)
    snapshots = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(model.get_layer("c1").kernel.numpy().copy())
    )
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[soft, record])
    assert [h["ratio"] for h in soft.history] == [0.5, 0.0]
    assert soft.history[0]["masked"] == round(0.5 * 11) and soft.history[1]["masked"] == 0 and soft.keep == {}
    first, second = snapshots
    zero_after_first = np.all(first == 0.0, axis=(0, 1, 2))
    assert zero_after_first.any()
    assert np.all(np.any(second[..., zero_after_first] != 0.0, axis=(0, 1, 2)))


def test_strip_after_soft_pruning_equals_masked_model_also_after_reload(tmp_path):
    model = randomize(residual_net())
    x, y = data(64, classes=5)
    model.compile(keras.optimizers.SGD(learning_rate=0.01), LOSS)
    soft = SoftFilterPruning(ratio=0.4, criterion="taylor_weights")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[soft])
    expected = model.predict(x, verbose=0)
    graph = analyze(model, warn=False)
    dead = dead_channels(model, graph)
    for name, kept in soft.keep.items():
        assert np.array_equal(dead[name], np.setdiff1d(np.arange(graph[name].size), kept))
    thin = strip(model, graph)
    assert count_params(thin).total < count_params(model).total
    assert_close(thin.predict(x, verbose=0), expected)
    path = tmp_path / "soft.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    thin2 = strip(reloaded)
    assert count_params(thin2).total == count_params(thin).total
    assert_close(thin2.predict(x, verbose=0), expected)


def test_strip_keeps_a_channel_whose_batchnorm_beta_still_sends_a_constant():
    model = randomize(conv_bn_net())
    kernel = model.get_layer("c1").kernel
    k = kernel.numpy()
    k[..., 2] = 0.0
    kernel.assign(k)
    bias = model.get_layer("c1").bias
    b = bias.numpy()
    b[2] = 0.0
    bias.assign(b)
    bn = model.get_layer("bn")  # a positive constant after BN, which the ReLU passes
    gamma, beta, mean, var = bn.get_weights()
    beta[2] = 1.0 + abs(gamma[2] * mean[2]) / np.sqrt(var[2] + bn.epsilon)
    bn.set_weights([gamma, beta, mean, var])
    assert dead_channels(model) == {}
    assert count_params(strip(model)).total == count_params(model).total


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3)
        self.head = L.Dense(4)

    def call(self, x):
        return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))


def test_subclassed_model_fails_at_train_begin_with_a_clear_error():
    model = _Subclassed()
    x, y = data(16)
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    started = []
    spy = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda b, logs: started.append(b))
    with pytest.raises(CallbackError, match="subclassed") as info:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[SoftFilterPruning(0.5), spy])
    assert isinstance(info.value, KerasPruneError)
    assert started == []


def test_bad_options_fail_when_the_callback_is_made():
    with pytest.raises(CallbackError, match="criterion"):
        SaliencyAccumulator(criterion="aaws")
    with pytest.raises(CallbackError, match="ratio"):
        SoftFilterPruning(ratio=1.5)
    with pytest.raises(KerasPruneError):
        SoftFilterPruning(ratio=0.5, scope="everywhere")


def test_saliency_inside_an_xla_compiled_train_step():
    model = conv_bn_net()
    x, y = data(32)
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS, jit_compile=True)
    expected = brute_force(model, x, y, 16, "gsfp", ["c1", "c2"])
    acc = SaliencyAccumulator(criterion="gsfp", normalization="none")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[acc])
    assert acc.steps == 2
    for name in ("c1", "c2"):
        assert_close(acc.raw[name], expected[name])


def test_saliency_under_mixed_precision_reads_the_unscaled_gradients():
    keras.config.set_dtype_policy("mixed_float16")
    model = conv_bn_net()
    x, y = data()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    assert hasattr(model.optimizer, "inner_optimizer")  # a LossScaleOptimizer
    expected = brute_force(model, x, y, 16, "grad_l1", ["c1", "c2"])
    acc = SaliencyAccumulator(criterion="grad_l1", normalization="none")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[acc])
    assert acc.steps == 4
    for name in ("c1", "c2"):
        # float16 forward and backward passes: agreement to float16 rounding only
        assert_close(acc.raw[name], expected[name], rtol=2e-3)


_MIRRORED_SCRIPT = r"""
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from kerasprune.callbacks import SaliencyAccumulator

L = keras.layers


def net():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, activation="relu", name="c1")(inp)
    x = L.Conv2D(5, 3, activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x))


def run(model, criterion):
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    acc = SaliencyAccumulator(criterion=criterion, normalization="none")
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[acc])
    return {"steps": acc.steps, "raw": {k: v.tolist() for k, v in acc.raw.items()},
            "cumulative": {k: v.tolist() for k, v in acc.cumulative.items()}}


rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
y = rng.integers(0, 4, 64)
keras.utils.set_random_seed(1)
weights = net().get_weights()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = {}
for criterion in ("gsfp", "mean_gradient"):
    single = net()
    single.set_weights(weights)
    with strategy.scope():
        mirrored = net()
        mirrored.set_weights(weights)
    result[criterion] = {"one": run(single, criterion), "two": run(mirrored, criterion)}
print("RESULT" + json.dumps(result))
"""


def test_mirrored_strategy_on_two_cpus_equals_one_device_over_the_same_global_batches(tmp_path):
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=240)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT"):])
    for criterion in ("gsfp", "mean_gradient"):  # weight and feature-map gradients
        one, two = result[criterion]["one"], result[criterion]["two"]
        assert one["steps"] == two["steps"] == 4
        for key in ("raw", "cumulative"):
            for name in ("c1", "c2"):
                assert_close(two[key][name], one[key][name])


def test_saliency_follows_class_weights_through_the_train_step_loss():
    model = conv_bn_net()
    x, y = data()
    class_weight = {0: 3.0, 1: 0.5, 2: 1.0, 3: 0.0}
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    kernel = model.get_layer("c2").kernel
    expected = 0.0
    for start in range(0, 64, 32):
        xb, yb = x[start : start + 32], y[start : start + 32]
        sw = np.array([class_weight[int(c)] for c in yb], np.float32)
        with tf.GradientTape() as tape:
            loss = LOSS(yb, model(xb, training=True), sample_weight=sw)
        g = tape.gradient(loss, kernel.value).numpy().astype(np.float64)
        expected = expected + np.abs(g).sum(axis=(0, 1, 2)) / np.prod(g.shape[:-1])
    acc = SaliencyAccumulator(criterion="grad_l1", normalization="none")
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, class_weight=class_weight, callbacks=[acc])
    assert_close(acc.raw["c2"], expected)


def test_soft_pruning_on_a_concatenating_model_by_flops_strips_exactly():
    from models import concat_flatten_net

    from kerasprune.costs.counting import count_flops

    model = concat_flatten_net()
    x, y = data(64, classes=3, shape=(6, 6, 2))
    model.compile(keras.optimizers.SGD(learning_rate=0.01), LOSS)
    soft = SoftFilterPruning(ratio=0.3, unit="flops", scope="global")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[soft])
    graph = analyze(model, warn=False)
    assert soft.keep
    _masked_entries_are_zero(model, graph, soft.keep)
    thin = strip(model, graph)
    assert count_flops(thin).total <= 0.75 * count_flops(model).total
    assert_close(thin.predict(x, verbose=0), model.predict(x, verbose=0))


def interrupted_then_complete_fit(model, x, y, acc) -> None:
    """A fit that raises after its first batch (no on_train_end), then a whole one."""

    class Stop(Exception):
        pass

    def boom(batch, logs):
        raise Stop()

    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    with pytest.raises(Stop):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=[acc, keras.callbacks.LambdaCallback(on_train_batch_end=boom)])
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[acc])


def test_a_second_fit_after_an_interrupted_one_does_not_stack_hooks():
    model = conv_bn_net()
    x, y = data(32)
    acc = SaliencyAccumulator(criterion="grad_l1", normalization="none")
    interrupted_then_complete_fit(model, x, y, acc)
    assert acc.steps == 2
    expected = brute_force(model, x, y, 16, "grad_l1", ["c1"])["c1"]
    assert_close(acc.raw["c1"], expected)
    assert "apply" not in vars(model.optimizer)


# -- feature-map gradient criteria (mean_gradient, taylor) -------------------------------


def plain_residual_net() -> keras.Model:
    """Residual and concatenating groups, no BatchNormalization or dropout: training and
    inference compute the same function."""
    inp = keras.Input((8, 8, 3), name="img")
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inp)
    y = L.Conv2D(4, 3, padding="same", activation="relu", name="b_conv1")(x)
    y = L.Conv2D(6, 3, padding="same", name="b_conv2")(y)
    x = L.ReLU(name="b_relu")(L.Add(name="b_add")([x, y]))
    z = L.Conv2D(3, 1, activation="tanh", name="side")(x)
    x = L.Concatenate(name="cat")([x, z])
    x = L.Conv2D(5, 3, strides=2, activation="relu", name="top")(x)
    x = L.Flatten(name="flat")(x)
    return randomize(keras.Model(inp, L.Dense(4, name="fc")(x)), seed=3)


@pytest.mark.parametrize(
    "criterion, options",
    [("mean_gradient", {}), ("taylor", {}), ("mean_gradient", {"steps_per_execution": 2, "jit_compile": True})],
)
def test_feature_map_saliency_in_fit_equals_the_scoring_pass_over_the_same_batches(criterion, options):
    import kerasprune as kp

    model = plain_residual_net()
    x, y = data(48)
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS, **options)
    # the independent reference: kerasprune.score's own pass (a probe model under a
    # GradientTape, in inference mode), the same batches, the same (fixed) weights
    expected = kp.importance.raw_scores(model, criterion, data=(x, y), batch_size=16)
    acc = SaliencyAccumulator(criterion=criterion, normalization="none")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[acc])
    assert acc.steps == 3
    assert set(acc.raw) == set(expected) == {g.name for g in acc.graph.prunable}
    for name in expected:
        assert np.all(expected[name] > 0)
        assert_close(acc.raw[name], expected[name])
    # the model's layers and the optimizer are given back untouched
    assert not any("call" in vars(layer) for layer in model.layers)
    assert "apply" not in vars(model.optimizer)


def test_mean_gradient_in_fit_uses_the_training_mode_batch_gradient_with_batchnorm():
    model = conv_bn_net()
    x, y = data(64)
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    # brute force: the gradient of the batch's mean loss in training mode (batch
    # statistics) at the tensors the next layers read, per example times the batch size
    probe = keras.Model(model.inputs, [model.get_layer("relu").output, model.get_layer("gap").output, model.output])
    sums = {"c1": 0.0, "c2": 0.0}
    for start in range(0, 64, 16):
        xb, yb = x[start : start + 16], y[start : start + 16]
        with tf.GradientTape() as tape:
            relu, gap, out = probe([xb], training=True)
            loss = LOSS(yb, out)
        g_relu, g_gap = tape.gradient(loss, [relu, gap])
        sums["c1"] = sums["c1"] + np.abs(16 * g_relu.numpy().astype(np.float64).mean(axis=(1, 2))).sum(axis=0)
        sums["c2"] = sums["c2"] + np.abs(16 * g_gap.numpy().astype(np.float64)).sum(axis=0)
    acc = SaliencyAccumulator(criterion="mean_gradient", normalization="none")
    hist = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[acc])
    for name in ("c1", "c2"):
        assert_close(acc.raw[name], sums[name] / 64)
        assert_close(acc.cumulative[name], sums[name] / 64)  # the mean over both epochs
    assert hist.history["saliency_steps"] == [4.0, 4.0]


def test_feature_map_saliency_under_mixed_precision_divides_out_the_loss_scale_and_skips_overflows():
    import kerasprune as kp

    keras.config.set_dtype_policy("mixed_float16")
    model = plain_residual_net()
    x, y = data(64)
    # a loss scale so large that the first steps overflow in float16 and are skipped,
    # halving it each time, until the gradients are finite
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(learning_rate=0.0), initial_scale=2.0**14)
    model.compile(optimizer, LOSS)
    acc = SaliencyAccumulator(criterion="taylor", normalization="none")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[acc])
    assert 0 < acc.steps < 4, "the test needs some skipped and some applied steps"
    assert float(optimizer.dynamic_scale.numpy()) > 1.0
    applied = slice(64 - 16 * acc.steps, 64)  # the skipped steps are the first ones
    expected = kp.importance.raw_scores(model, "taylor", data=(x[applied], y[applied]), batch_size=16)
    for name in expected:
        assert_close(acc.raw[name], expected[name], rtol=5e-3)  # float16 rounding


def test_soft_pruning_by_taylor_masks_and_strips_exactly():
    model = plain_residual_net()
    x, y = data(64)
    model.compile(keras.optimizers.SGD(learning_rate=0.01, momentum=0.9), LOSS)
    soft = SoftFilterPruning(ratio=0.3, criterion="taylor")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[soft])
    graph = analyze(model, warn=False)
    assert soft.keep and soft.history[-1]["masked"] > 0
    _masked_entries_are_zero(model, graph, soft.keep)
    thin = strip(model, graph)
    assert count_params(thin).total < count_params(model).total
    assert_close(thin.predict(x, verbose=0), model.predict(x, verbose=0))


def _shared_relu_net() -> keras.Model:
    inp = keras.Input((8, 8, 3))
    relu = L.ReLU(name="shared_relu")
    x = relu(L.Conv2D(4, 3, padding="same", name="c1")(inp))
    x = relu(L.Conv2D(4, 3, padding="same", name="c2")(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3, name="fc")(x))


def _frozen_stem_net() -> keras.Model:
    model = conv_bn_net()
    model.get_layer("c1").trainable = False
    model.get_layer("bn").trainable = False
    return model


@pytest.mark.parametrize(
    "make, message", [(_shared_relu_net, "called 2 times"), (_frozen_stem_net, "no trainable weight")]
)
def test_feature_map_criteria_refuse_what_they_cannot_tap_before_the_first_step(make, message):
    model = make()
    x, y = data(16, classes=3)
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    started = []
    spy = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda b, logs: started.append(b))
    with pytest.raises(CallbackError, match=message):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[SaliencyAccumulator("mean_gradient"), spy])
    assert started == []
    assert not any("call" in vars(layer) for layer in model.layers)


def test_feature_map_taps_left_by_an_interrupted_fit_are_replaced_not_stacked():
    import kerasprune as kp

    model = plain_residual_net()
    x, y = data(32)
    acc = SaliencyAccumulator(criterion="mean_gradient", normalization="none")
    interrupted_then_complete_fit(model, x, y, acc)
    expected = kp.importance.raw_scores(model, "mean_gradient", data=(x, y), batch_size=16)
    for name in expected:
        assert_close(acc.raw[name], expected[name])  # each tapped once per step
    assert not any("call" in vars(layer) for layer in model.layers)


# -- criteria of the one registry, users' own included ----------------------------------


def test_a_user_registered_weight_gradient_criterion_is_accumulated_and_equals_its_score():
    import kerasprune as kp
    from kerasprune.importance import WeightGradients

    rms = WeightGradients(lambda f: tf.sqrt(f.mean(lambda g, w: g * g)))
    kp.importance.register_criterion("test_fit_grad_rms", accumulate=rms, overwrite=True)
    assert "test_fit_grad_rms" in kp.importance.accumulable_criteria()
    model = plain_residual_net()  # no BatchNormalization: training and inference agree
    x, y = data(48)
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    # the reference: kerasprune.score's pass over the same batches with the same weights
    expected = kp.importance.raw_scores(model, "test_fit_grad_rms", data=(x, y), batch_size=16)
    acc = SaliencyAccumulator(criterion="test_fit_grad_rms", normalization="none")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[acc])
    assert acc.steps == 3
    assert set(acc.raw) == set(expected) == {g.name for g in acc.graph.prunable}
    for name in expected:
        assert expected[name].max() > 0
        assert_close(acc.raw[name], expected[name])
    # and by hand, per batch from a GradientTape, for a single-producer group
    kernel = model.get_layer("top").kernel
    by_hand = 0.0
    for start in range(0, 48, 16):
        with tf.GradientTape() as tape:
            loss = LOSS(y[start : start + 16], model(x[start : start + 16], training=True))
        g = tape.gradient(loss, kernel.value).numpy().astype(np.float64).reshape(-1, 5)
        by_hand = by_hand + np.sqrt((g * g).mean(axis=0))
    assert_close(acc.raw["top"], by_hand)


def test_a_user_feature_gradient_criterion_sees_each_examples_own_gradient_in_fit():
    import kerasprune as kp
    from kerasprune.importance import FeatureGradients

    # squared: not linear in the gradient, so the batch size must scale the gradient
    # before the reduction, not its result
    squared = FeatureGradients(lambda m: tf.square(m.channels(m.g)))
    kp.importance.register_criterion("test_fit_mg_squared", accumulate=squared, overwrite=True)
    model = plain_residual_net()
    x, y = data(48)
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    expected = kp.importance.raw_scores(model, "test_fit_mg_squared", data=(x, y), batch_size=16)
    acc = SaliencyAccumulator(criterion="test_fit_mg_squared", normalization="none")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[acc])
    for name in expected:
        assert expected[name].max() > 0
        assert_close(acc.raw[name], expected[name])


def test_the_callbacks_take_their_criteria_from_the_registry():
    import kerasprune as kp

    kp.importance.register_criterion("test_not_accumulable", lambda ctx: {}, overwrite=True)
    with pytest.raises(CallbackError, match="cannot be accumulated") as info:
        SaliencyAccumulator(criterion="test_not_accumulable")
    for name in kp.importance.accumulable_criteria():
        assert name in str(info.value)
    with pytest.raises(CallbackError, match="'nope' is not a registered criterion.*gsfp"):
        SoftFilterPruning(ratio=0.5, criterion="nope")
    for name in ("gsfp", "taylor_weights", "grad_l1", "mean_gradient", "taylor"):
        assert SaliencyAccumulator(criterion=name).criterion == name
