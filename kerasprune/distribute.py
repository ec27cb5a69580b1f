"""Pruning on several machines: which process writes, when processes wait, what is refused.

The route that works is Keras's own distribution API on the JAX backend: every process
calls :func:`initialize` (``jax.distributed`` under Keras's
``keras.distribution.initialize``), then sets ``keras.distribution.DataParallel`` over
``keras.distribution.list_devices()`` (every device of every process), and runs the same
:class:`~kerasprune.GradualPruner` on the same global ``tf.data`` batches. Keras hands
each process its share of every global batch in ``fit`` and ``evaluate`` and all-reduces
the gradients, so the weights stay replicated. The pruner's own steps then agree on every
process without any exchange: weight criteria read the replicated weights, data criteria
iterate the full scoring batches (``score_batches`` of the training data, the same on
every process: kerasprune does not shard them), selection is deterministic, and each
rebuilt model is created under the global distribution, so its variables get the
``DataParallel`` layout.

Only process 0 writes (checkpoints, ``history.json``, ``run.json``, TensorBoard events);
the others keep the model in memory, wait at a barrier after each write, and read
process 0's files from the shared run directory when they resume.

``tf.distribute.MultiWorkerMirroredStrategy`` across more than one worker is refused
(:func:`check_supported`): Keras 3's ``fit`` and ``evaluate`` fail under it before the
first step, with no kerasprune code involved (keras-team/keras#20585, open).

A leaf module, like :mod:`kerasprune.runs`: it imports nothing of kerasprune but the
errors, and JAX or TensorFlow only where they are already in use.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, Optional

from kerasprune import backend
from kerasprune.errors import BackendError

__all__ = [
    "UPSTREAM_ISSUE",
    "initialize",
    "process_index",
    "process_count",
    "is_writer",
    "barrier",
    "alone",
    "check_supported",
]

#: the open Keras 3 issue that keeps ``MultiWorkerMirroredStrategy`` from training
UPSTREAM_ISSUE = "keras-team/keras#20585"


def _jax_in_use() -> Any:
    """The ``jax`` module when Keras runs on it, else None (never imports JAX itself)."""
    if "keras" not in sys.modules or backend.current() != "jax":
        return None
    return sys.modules.get("jax")


def initialize(coordinator_address: str, num_processes: int, process_id: int) -> None:
    """Join this process to a multi-process JAX job (call it first, in every process).

    Selects the gloo collectives for CPU devices (without them JAX on CPU cannot
    all-reduce across processes; GPUs and TPUs bring their own), then calls
    ``keras.distribution.initialize``, which starts ``jax.distributed`` and gives every
    process the same random seed. Set the distribution afterwards, e.g.
    ``keras.distribution.set_distribution(keras.distribution.DataParallel(
    devices=keras.distribution.list_devices()))``.

    Args:
        coordinator_address: ``"host:port"`` of process 0, reachable from every process.
        num_processes: how many processes take part.
        process_id: this process's index, 0 to ``num_processes - 1``; 0 writes the run.

    Raises:
        BackendError: Keras does not run on JAX.
    """
    if backend.current() != "jax":
        raise BackendError(
            f"kerasprune.distribute.initialize needs KERAS_BACKEND=jax, not {backend.current()!r}"
        )
    import jax
    import keras

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(coordinator_address, num_processes, process_id)


def process_index() -> int:
    """This process's index in a multi-process job: 0 in a single-process one."""
    jax = _jax_in_use()
    return 0 if jax is None else int(jax.process_index())


def process_count() -> int:
    """How many processes take part in the job: 1 in a single-process one."""
    jax = _jax_in_use()
    return 1 if jax is None else int(jax.process_count())


def is_writer() -> bool:
    """Whether this process writes the run's files: process 0 only."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of the job has reached the barrier called ``name``.

    A no-op in a single-process job. Every process must call it, in the same order and
    with the same names.

    Args:
        name: the barrier's name, the same on every process.
    """
    if process_count() <= 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"kerasprune:{name}")


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Run the block outside Keras's distribution: for what process 0 does by itself.

    Under a multi-process distribution every new Keras variable is a global array that
    all processes must create together, and ``model.save`` creates some (a reference
    optimizer among them); process 0 writing a checkpoint alone would wait forever for
    the others. In the block the distribution is unset, so such variables stay local;
    the replicated weights are read from this process's copy. A no-op in a
    single-process job.
    """
    if process_count() <= 1:
        yield
        return
    import keras

    saved = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(saved)


def _workers(strategy: Any) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return sum(len(spec.get(job, ())) for job in ("chief", "worker")) or 1


def check_supported(strategy: Optional[Any] = None) -> None:
    """Refuse a distribution kerasprune's loops cannot train under.

    Looks at ``strategy`` and, where TensorFlow is already imported, at the
    ``tf.distribute`` strategy in scope. A ``MultiWorkerMirroredStrategy`` whose cluster
    has more than one worker is refused: Keras 3 fails under it before the first step.
    ``MirroredStrategy`` and a single-worker cluster pass, and so does everything on JAX.

    Args:
        strategy: the strategy the caller passed, if any.

    Raises:
        BackendError: a multi-worker ``MultiWorkerMirroredStrategy``; the message names
            the upstream issue and the JAX route.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    candidates = [strategy]
    if tf.distribute.has_strategy():
        candidates.append(tf.distribute.get_strategy())
    for s in candidates:
        if s is None or not isinstance(s, tf.distribute.MultiWorkerMirroredStrategy):
            continue
        n = _workers(s)
        if n > 1:
            raise BackendError(
                f"MultiWorkerMirroredStrategy over {n} workers is not supported: Keras 3's fit "
                f"and evaluate fail under it ({UPSTREAM_ISSUE}); prune on several machines with "
                "KERAS_BACKEND=jax, kerasprune.distribute.initialize and "
                "keras.distribution.DataParallel instead (README: several machines)"
            )
