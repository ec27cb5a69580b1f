"""One compiled gradient step per Keras backend: TensorFlow, JAX and PyTorch.

The gradient criteria (:mod:`~kerasprune.importance.gradients`) write their loss as a
function of plain tensors, the model run with ``model.stateless_call`` on values it is
given, and their reduction with ``keras.ops``. :func:`gradient_step` differentiates the
loss with the backend's own autodiff and compiles the whole step:

- ``tensorflow``: ``tf.GradientTape`` inside a ``tf.function``;
- ``jax``: ``jax.value_and_grad`` inside ``jax.jit``;
- ``torch``: ``torch.autograd.grad``, eager (the reduction runs under ``no_grad``).

:func:`variable_values` gives the values of Keras variables in the form the backend's
step takes them (detached from any autodiff record on PyTorch).
"""

from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple

from kerasprune.backend import current, require_backend, require_tensorflow

__all__ = ["gradient_step", "variable_values", "GRADIENT_BACKENDS"]

#: the backends :func:`gradient_step` can differentiate on
GRADIENT_BACKENDS = ("tensorflow", "jax", "torch")

LossFn = Callable[..., Tuple[Any, Any]]
FinishFn = Callable[..., Any]


def variable_values(variables: Sequence[Any]) -> List[Any]:
    """The current value of each Keras variable as a backend tensor, for a stateless call
    (on PyTorch detached, so that only what is differentiated is recorded)."""
    name = current()
    if name == "torch":
        return [v.value.detach() for v in variables]
    if name == "tensorflow":
        tf = require_tensorflow("the TensorFlow backend")
        return [tf.convert_to_tensor(v.value) for v in variables]
    return [v.value for v in variables]


def gradient_step(loss: LossFn, finish: FinishFn, feature: str = "gradient criteria") -> Callable[..., Any]:
    """A compiled ``step(diff, *rest)`` that differentiates ``loss`` with respect to ``diff``.

    Args:
        loss: ``loss(diff, *rest) -> (scalar, aux)``: a scalar to differentiate and
            anything else the step needs (backend tensors, in a ``keras.tree``).
        finish: ``finish(grads, aux, diff, *rest) -> result``: runs after the backward
            pass, inside the same compiled function; ``grads`` holds the gradient of the
            scalar with respect to each tensor of ``diff`` (zeros where it does not
            depend on it).
        feature: what runs, for the error on an unsupported backend.

    Returns:
        ``step(diff, *rest) -> result``; ``diff`` is a list of float tensors, ``rest``
        any arguments (``None`` allowed).

    Raises:
        BackendError: Keras runs on a backend without autodiff here (numpy, openvino).
    """
    require_backend(feature, *GRADIENT_BACKENDS)
    name = current()
    if name == "tensorflow":
        return _tensorflow_step(loss, finish)
    if name == "jax":
        return _jax_step(loss, finish)
    return _torch_step(loss, finish)


def _tensorflow_step(loss: LossFn, finish: FinishFn) -> Callable[..., Any]:
    tf = require_tensorflow("the TensorFlow backend")
    finish = tf.autograph.experimental.do_not_convert(finish)  # tensor code, traced as is

    @tf.function(reduce_retracing=True)
    def step(diff, *rest):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(diff)
            value, aux = loss(diff, *rest)
        grads = tape.gradient(value, diff, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads = [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices (a gather) made dense
        return finish(grads, aux, diff, *rest)

    return step


def _jax_step(loss: LossFn, finish: FinishFn) -> Callable[..., Any]:
    import jax

    def step(diff, *rest):
        (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(list(diff), *rest)
        return finish(grads, aux, diff, *rest)

    return jax.jit(step)


def _torch_step(loss: LossFn, finish: FinishFn) -> Callable[..., Any]:
    import keras
    import torch

    def step(diff, *rest):
        diff = [d.detach().requires_grad_(True) for d in diff]
        with torch.enable_grad():
            value, aux = loss(diff, *rest)
            if value.requires_grad:
                grads = torch.autograd.grad(value, diff, allow_unused=True)
            else:  # the scalar depends on none of diff
                grads = [None] * len(diff)
        grads = [torch.zeros_like(d) if g is None else g for g, d in zip(grads, diff)]
        aux = keras.tree.map_structure(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, aux)
        with torch.no_grad():
            return finish(grads, aux, [d.detach() for d in diff], *rest)

    return step
