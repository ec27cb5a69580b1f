"""The callbacks inside ``model.fit`` on the running Keras backend (TensorFlow, JAX, PyTorch).

``make test`` runs this file under every backend. The saliency a callback adds up inside
the train step is checked against two references computed outside ``fit``, with the
weights frozen (learning rate 0): :func:`kerasprune.importance.raw_scores` over the same
batches, and the backend's own autodiff (``tf.GradientTape``, ``jax.grad``,
``torch.autograd``) of a ``keras.ops`` forward pass written from the weights
(``tests/test_backends.py``), reduced with NumPy. On JAX the train step is stateless, so a
saliency kept in state the trainer does not carry would come out as zeros: every
reference here is nonzero.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_backends import (
    LOGITS_LOSS,
    POINTS,
    autodiff_feature_gradients,
    autodiff_kernel_gradients,
    close,
    feature_reference,
    params_of,
    tiny_data,
    tiny_net,
    weight_reference,
)

from kerasprune.callbacks import SaliencyAccumulator, SoftFilterPruning
from kerasprune.importance import raw_scores

BACKEND = keras.config.backend()


def frozen_net(**compile_options) -> keras.Model:
    """The tiny network of ``test_backends``, compiled to train with learning rate 0."""
    model = tiny_net()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), LOGITS_LOSS, **compile_options)
    model.optimizer.build(model.trainable_variables)
    return model


def assert_optimizer_given_back(model: keras.Model, variables: int) -> None:
    """No hook and no accumulator of the callback is left on the optimizer."""
    assert "apply" not in vars(model.optimizer) and "stateless_apply" not in vars(model.optimizer)
    assert len(model.optimizer.variables) == variables
    assert not any(name in vars(model) for name in ("train_step", "compute_loss_and_updates"))
    assert not any("call" in vars(layer) for layer in model.layers)


def test_weight_gradient_saliencies_of_three_callbacks_in_one_fit_equal_the_score_and_the_autodiff():
    model = frozen_net()
    variables = len(model.optimizer.variables)
    x, y, sw = tiny_data(10, seed=3)
    criteria = ("gsfp", "grad_l1", "taylor_weights")
    accs = [SaliencyAccumulator(criterion=c, normalization="none", log_prefix=c) for c in criteria]
    hist = model.fit(x, y, sample_weight=sw, batch_size=5, epochs=2, shuffle=False, verbose=0, callbacks=accs)
    per_batch = [autodiff_kernel_gradients(model, x[i : i + 5], y[i : i + 5], sw[i : i + 5]) for i in (0, 5)]
    for criterion, acc in zip(criteria, accs):
        by_autodiff = weight_reference(criterion, params_of(model), per_batch)
        by_score = raw_scores(model, criterion, data=(x, y, sw), batch_size=5)
        assert acc.steps == 2 and hist.history[f"{criterion}_steps"] == [2.0, 2.0]
        assert set(acc.raw) == set(POINTS)
        for name in POINTS:
            assert by_autodiff[name].min() > 0
            close(acc.raw[name], by_autodiff[name], atol=1e-6)  # the last epoch
            close(acc.raw[name], by_score[name], atol=1e-6)
            close(acc.cumulative[name], 2 * by_autodiff[name], atol=1e-6)  # both epochs
    assert_optimizer_given_back(model, variables)


@pytest.mark.parametrize(
    "criterion, options",
    [
        ("mean_gradient", {}),
        ("taylor", {}),
        pytest.param(
            "mean_gradient",
            {"steps_per_execution": 2},
            marks=pytest.mark.skipif(BACKEND == "torch", reason="Keras runs one step per execution on PyTorch"),
        ),
    ],
)
def test_feature_map_saliency_in_fit_equals_the_score_and_the_backends_autodiff(criterion, options):
    model = frozen_net(**options)
    variables = len(model.optimizer.variables)
    x, y, sw = tiny_data(15, seed=4)
    acc = SaliencyAccumulator(criterion=criterion, normalization="none")
    model.fit(x, y, sample_weight=sw, batch_size=5, epochs=1, shuffle=False, verbose=0, callbacks=[acc])
    # per example, the gradient of its own weighted loss (examples do not interact here)
    by_autodiff = feature_reference(criterion, *autodiff_feature_gradients(model, x, y, sw))
    by_score = raw_scores(model, criterion, data=(x, y, sw), batch_size=5)
    assert acc.steps == 3
    assert set(acc.raw) == set(POINTS)
    for name in POINTS:
        assert by_autodiff[name].min() > 0
        close(acc.raw[name], by_autodiff[name], atol=1e-6)
        close(acc.raw[name], by_score[name], atol=1e-6)
    assert_optimizer_given_back(model, variables)
    # the model trains and predicts as before, untapped
    close(model.predict(x, verbose=0), tiny_net().predict(x, verbose=0))


@pytest.mark.parametrize("criterion", ["gsfp", "mean_gradient"])
def test_soft_pruning_masks_each_layers_least_salient_channels_which_then_train_again(criterion):
    model = tiny_net()
    model.compile(keras.optimizers.Adam(learning_rate=0.05), LOGITS_LOSS)
    x, y, _ = tiny_data(20, seed=5)
    soft = SoftFilterPruning(ratio=lambda epoch: 0.5 if epoch == 0 else 0.0, criterion=criterion, scope="layerwise")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(
            ({k: v.copy() for k, v in soft.scores.items()}, dict(soft.keep), params_of(model))
        )
    )
    model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0, callbacks=[soft, record])
    (scores, keep, after_masking), (_, keep_after, after_training) = seen
    assert set(keep) == set(POINTS) and keep_after == {}
    assert soft.history[0]["masked"] == sum(len(scores[n]) - len(keep[n]) for n in POINTS)
    readers = {"c1": "c2", "c2": "fc", "fc": "head"}
    for name in POINTS:
        assert scores[name].min() > 0
        size = len(scores[name])
        gone = np.setdiff1d(np.arange(size), keep[name])
        # about half of every layer, the lowest-scored ones
        assert size // 2 <= len(gone) <= (size + 1) // 2
        assert set(gone) == set(np.argsort(scores[name])[: len(gone)])
        kernel = after_masking[name][0].reshape(-1, size)
        assert np.all(kernel[:, gone] == 0) and np.all(after_masking[name][1][gone] == 0)
        # the next layer's inputs from them (after Flatten, position p carries channel p % 4)
        reader = after_masking[readers[name]][0]
        assert np.all(reader.reshape(-1, size, reader.shape[-1])[:, gone, :] == 0)
        # unmasked at the next epoch end: the optimizer's moments move them again
        assert np.all(np.any(after_training[name][0].reshape(-1, size)[:, gone] != 0, axis=0))
