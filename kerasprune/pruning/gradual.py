"""Gradually global pruning (GGP): Algorithm 1 of Wang et al. (2017), resumable and distributed.

References:

- Wang et al. (2017), gradually global pruning (GGP): Zhengtao Wang, Ce Zhu, Zhiqiang Xia,
  Qi Guo and Yipeng Liu, "Towards Thinner Convolutional Neural Networks Through Gradually
  Global Pruning", IEEE International Conference on Image Processing (ICIP), 2017;
  arXiv:1703.09916.
- Xu et al. (2018), globally soft filter pruning (GSFP): Ke Xu, Xiaoyun Wang, Qun Jia,
  Jianjing An and Dong Wang, "Globally Soft Filter Pruning For Efficient Convolutional
  Neural Networks", submitted to ICLR 2019, OpenReview id H1fevoAcKX, 2018.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import keras
import numpy as np

from kerasprune import distribute
from kerasprune.backend import is_tf_dataset
from kerasprune.callbacks.saliency import SaliencyAccumulator
from kerasprune.errors import (
    ImportanceError,
    OptionError,
    RunError,
    ScheduleError,
    SelectionError,
    TargetError,
    TargetNotMetError,
)
from kerasprune.graph.analysis import analyze
from kerasprune.importance import accumulable_criteria, get_criterion, score
from kerasprune.importance.normalize import check_method
from kerasprune.pruning.oneshot import thin_model
from kerasprune.pruning.preflight import check_run
from kerasprune.pruning.schedules import RatioSchedule, get_schedule
from kerasprune.report.compare import model_stats
from kerasprune.runs import _faults
from kerasprune.runs.history import history_row
from kerasprune.runs.rundir import RunDirectory
from kerasprune.runs.target import Target, parse_target
from kerasprune.selection import SelectionOptions, resolve_options, select
from kerasprune.surgery.fold import check_compensate

__all__ = ["GradualPruner", "TargetNotMetError"]

def _take(data: Any, batches: Optional[int]) -> Any:
    if batches is None or data is None:
        return data
    if hasattr(data, "take"):
        return data.take(batches)
    return data


def round_seed(seed: int, round: int, phase: str = "round") -> int:
    """The seed of one phase of one round: a function of ``(seed, round, phase)`` only.

    Every random choice of a round (its data order and augmentation, dropout, the
    initializers of rebuilt layers) is drawn after ``keras.utils.set_random_seed`` of
    this value, so a round replays the same way in a resumed process as in one that ran
    from the start.

    Args:
        seed: the run's seed.
        round: the round number.
        phase: ``"round"`` (the start of the round: data, scoring, rebuild) or ``"fit"``
            (fine-tuning).
    """
    words = [int(seed) & 0xFFFFFFFF, int(round), {"round": 0, "fit": 1}[phase]]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def _round_data(train_data: Any, seed: int) -> Any:
    """``train_data(seed)`` for a function of the round's seed, else ``train_data`` itself."""
    if callable(train_data) and not hasattr(train_data, "element_spec") and not hasattr(train_data, "__len__"):
        return train_data(seed)
    return train_data


class _KillPoint(keras.callbacks.Callback):
    """The ``fine_tune`` kill point of the resume tests: after the first training batch."""

    def __init__(self, round: int) -> None:
        super().__init__()
        self.round = round

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        _faults.reached("fine_tune", self.round)


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = min(width, int(width * done / max(1, total)))
    return "[" + "=" * filled + ">" * (filled < width) + "." * (width - filled - 1 * (filled < width)) + "]"


def _with_options(saved: Dict[str, Any]) -> Dict[str, Any]:
    """``run.json`` settings with the selection options under ``"options"``.

    Runs written before the options were one object hold them as separate keys; those are
    gathered into ``"options"`` so that old and new run directories compare alike; the
    settings that came later get the value those runs had.
    """
    saved = {"compensate": "none", "fold_constants": False, "retries": 0, **saved}
    if "options" in saved:
        return saved
    names = SelectionOptions.fields()
    if not any(k in saved for k in names):
        return saved
    out = {k: v for k, v in saved.items() if k not in names}
    out["options"] = {k: saved[k] for k in names if k in saved}
    return out


class GradualPruner:
    """Prune a trained model a little at a time, fine-tuning after each round.

    Each round scores every neuron of every layer with a layer-normalized criterion,
    removes the lowest ``ratio`` across the network (``scope="global"``), rebuilds a
    thinner model, fine-tunes it and measures it on the validation data. It repeats while
    the ``target`` holds (or for ``rounds`` rounds) and returns the last model that met the
    target, never one below it.

    Every round writes ``round_NNN.keras`` and a row of ``history.json`` (round, neurons,
    parameters, FLOPs, the width of every layer, the metrics, seconds) into
    ``directory``, and at the end the returned model as ``pruned.keras``, each file
    atomically. A run killed at any point (``kill -9`` included) continues where it
    stopped when run again on the same directory: no completed round is lost or redone,
    and the resumed run is the same experiment as one never killed. Each round draws all
    its randomness after ``keras.utils.set_random_seed`` of a seed made from ``(seed,
    round)`` (:func:`round_seed`; this reseeds Python, NumPy, TensorFlow and Keras in the
    caller's process), and what carries from one round to the next is in its checkpoint:
    the weights, the optimizer's state (step count, momenta: rebuilding carries it over to
    the thinner model, and a ``.keras`` checkpoint keeps it) and, with ``accumulate``, the
    scores the fine-tuning accumulated. A ``tf.data`` pipeline that shuffles or augments
    draws each epoch from how often that dataset object was iterated in this process, so
    for a resumed run to see the same data, pass ``train_data`` as a function of the
    round's seed that builds the pipeline (``lambda seed: ds.shuffle(1024, seed=seed)``).

    Args:
        directory: where checkpoints and the history go.
        target: e.g. ``"val_accuracy>=0.992"``; rounds continue while it holds.
        rounds: at most this many rounds (required when there is no target).
        ratio: fraction removed per round (Wang et al. (2017) use 0.05), or a
            :class:`RatioSchedule` such as :class:`RisingPercentile`.
        criterion, normalization, scope, unit, hierarchy, min_channels, max_ratio,
            round_to, exclude, method, uniform, hidden_size: as in
            :func:`kerasprune.prune` (the selection
            options are shortcuts for the fields of ``options``; None: not given).
        fine_tune_epochs: epochs of ``model.fit`` after each round.
        seed: the run's seed; every round's random choices derive from it and the round
            number alone (written into ``run.json``).
        accumulate: take each round's scores from a
            :class:`~kerasprune.callbacks.SaliencyAccumulator` attached to the previous
            round's fine-tuning (the saliency of ``criterion`` added up over every
            training step of its last epoch, Xu et al. (2018), Eq. 6) instead of a separate
            pass over the data. Needs an accumulable criterion
            (:func:`kerasprune.importance.accumulable_criteria`: ``gsfp``, ``grad_l1``,
            ``taylor_weights``, ``mean_gradient``, ``taylor``, ...); the
            first round, which has no fine-tuning before it, scores with a separate pass
            (a resumed run takes the scores kept in the last round's checkpoint).
        score_batches: batches of the training data used by data-driven criteria.
        callbacks: the caller's Keras callbacks, passed to every fine-tuning ``fit``.
        strategy: a ``tf.distribute`` strategy; each rebuilt model is created and compiled
            in its scope, so fine-tuning runs on all its devices. A
            ``MultiWorkerMirroredStrategy`` over several workers is refused (Keras 3 cannot
            train under it); on several machines use Keras's distribution API on JAX
            (:mod:`kerasprune.distribute`): every process runs the same pruner on the same
            global batches, and only process 0 writes the run directory.
        verbose: 0 silent; 1 a bar over the rounds at the start of each (``round k/n``,
            the parameters and the metrics so far) above Keras's progress bars, and one
            summary line per round; 2 the same with one line per fine-tuning epoch
            (Keras's ``verbose=2``). Plain lines, so a notebook shows them alike.
        fit_kwargs: extra keyword arguments for ``fit`` (``steps_per_epoch`` ...).
        tensorboard: a TensorBoard log directory: every round (0 = before pruning) writes
            its parameters, FLOPs, neurons, ratio, ``width/<layer>`` and
            ``metrics/<name>`` scalars, and histograms ``saliency/<group>`` of the
            normalized scores that chose the round's channels
            (:class:`~kerasprune.report.tensorboard.TensorBoardWriter`).
        options: every selection option in one :class:`kerasprune.SelectionOptions`; a
            shortcut given as well must agree with it. Written into ``run.json``
            (``"options"``, its :meth:`~kerasprune.SelectionOptions.get_config`); a run is
            resumed only with the options it was started with.
        compensate: ``"mean"`` folds each removed channel's mean activation over the
            round's scoring data into the next layers' biases (see :func:`kerasprune.prune`);
            ``None`` (the default) folds nothing.
        fold_constants: after each round's selection, also remove the channels that
            carry exactly zero or a constant, folding the constant into the next biases
            (see :func:`kerasprune.prune`); the round's outputs do not change by it.
        retries: when a round misses the target, go back to the last model that met it
            and prune that again with half the ratio, then a quarter, ..., this many times
            in a row before the run stops (0, the default: stop at the first miss). Each
            try is a round of its own in the history (the missed ones have
            ``meets_target`` false) and counts towards ``rounds``.

    Attributes:
        options: the :class:`kerasprune.SelectionOptions` every round selects with.

    Example:

    ```python
    pruner = kp.GradualPruner("runs/lenet", target="val_accuracy>=0.99", ratio=0.05,
                              options=kp.SelectionOptions(round_to=4, exclude=["fc2"]))
    best = pruner.run(model, train_ds, val_ds)
    ```

    Raises:
        ValueError: neither a target nor rounds, an unknown criterion or normalization,
            or ``accumulate=True`` with a criterion the callback does not compute.
        SelectionError: an invalid selection option, or a shortcut that contradicts
            ``options``.
        BackendError: a ``MultiWorkerMirroredStrategy`` over several workers.
    """

    def __init__(
        self,
        directory: Union[str, Path],
        *,
        target: Union[str, Target, None] = None,
        rounds: Optional[int] = None,
        ratio: Union[float, RatioSchedule] = 0.05,
        criterion: str = "aaws",
        normalization: str = "layer_mean",
        scope: Optional[str] = None,
        unit: Optional[str] = None,
        hierarchy: Optional[str] = None,
        method: Optional[str] = None,
        min_channels: Optional[int] = None,
        max_ratio: Optional[float] = None,
        round_to: Optional[int] = None,
        exclude: Optional[Iterable[str]] = None,
        uniform: Optional[bool] = None,
        hidden_size: Optional[bool] = None,
        fine_tune_epochs: int = 1,
        seed: int = 0,
        accumulate: bool = False,
        score_batches: Optional[int] = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        strategy: Any = None,
        verbose: int = 1,
        fit_kwargs: Optional[Dict[str, Any]] = None,
        tensorboard: Optional[Union[str, Path]] = None,
        options: Optional[SelectionOptions] = None,
        compensate: Optional[str] = None,
        fold_constants: bool = False,
        retries: int = 0,
    ) -> None:
        if target is None and rounds is None:
            raise TargetError("give a target (e.g. 'val_accuracy>=0.99') or a number of rounds")
        if rounds is not None and rounds < 0:
            raise ScheduleError(f"rounds must be >= 0, got {rounds}")
        get_criterion(criterion)
        check_method(normalization)
        distribute.check_supported(strategy)
        if accumulate and get_criterion(criterion).accumulate is None:
            raise ImportanceError(
                f"accumulate=True takes its scores from SaliencyAccumulator, which computes "
                f"{', '.join(accumulable_criteria())}; criterion {criterion!r} is not one of them"
            )
        self.options = resolve_options(
            options, scope=scope, unit=unit, hierarchy=hierarchy, method=method,
            min_channels=min_channels, max_ratio=max_ratio, round_to=round_to, exclude=exclude,
            uniform=uniform, hidden_size=hidden_size,
        )
        self.run_dir = RunDirectory(directory)
        self.target = None if target is None else parse_target(target)
        self.rounds = rounds
        self.schedule = get_schedule(ratio)
        self.criterion = criterion
        self.normalization = normalization
        self.fine_tune_epochs = fine_tune_epochs
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise OptionError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.accumulate = bool(accumulate)
        self._accumulated: Optional[tuple] = None  # (model, scores) of the last fine-tuning
        self.score_batches = score_batches
        self.callbacks = list(callbacks)
        self.strategy = strategy
        self.verbose = verbose
        self.fit_kwargs = dict(fit_kwargs or {})
        self.tensorboard = tensorboard
        self._tb: Any = None
        self._round_scores: Optional[Dict[str, Any]] = None  # the scores of the round being pruned
        self.compensate = check_compensate(compensate)
        self.fold_constants = bool(fold_constants)
        if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
            raise OptionError(f"retries must be an integer >= 0, got {retries!r}")
        if retries and target is None:
            raise TargetError("retries needs a target: a round is retried when it misses the target")
        self.retries = int(retries)

    # ------------------------------------------------------------------ public

    @property
    def history(self) -> List[Dict[str, Any]]:
        """The completed rounds of the run directory, one dict per round."""
        return self.run_dir.history()

    def settings(self) -> Dict[str, Any]:
        """The run's settings, as written to ``run.json``.

        Returns:
            A JSON-serializable dict: the target, rounds, schedule, criterion,
            normalization, ``"options"`` (the selection options'
            :meth:`~kerasprune.SelectionOptions.get_config`), fine-tuning epochs, the
            seed, whether scores are accumulated, the bias compensation,
            ``fold_constants`` and ``retries``.
        """
        return {
            "target": None if self.target is None else str(self.target),
            "rounds": self.rounds,
            "schedule": self.schedule.describe(),
            "criterion": self.criterion,
            "normalization": self.normalization,
            "options": self.options.get_config(),
            "fine_tune_epochs": self.fine_tune_epochs,
            "seed": self.seed,
            "accumulate": self.accumulate,
            "compensate": self.compensate,
            "fold_constants": self.fold_constants,
            "retries": self.retries,
        }

    def run(self, model: Optional[keras.Model], train_data: Any, val_data: Any, *, resume: bool = True) -> keras.Model:
        """Prune ``model`` round after round; returns the last model that met the target.

        The returned model is also written to the directory as ``pruned.keras``.

        Args:
            model: a trained, compiled model (may be None when resuming a run directory).
            train_data: data for fine-tuning and for data-driven criteria (anything
                ``model.fit`` takes as ``x``: a ``tf.data.Dataset`` of ``(x, y)``), or a
                function ``train_data(seed) -> data`` called at the start of each round
                with the round's seed (:func:`round_seed`), for a pipeline whose shuffling
                and augmentation replay alike when the run is resumed.
            val_data: data the target is measured on (``model.evaluate``).
            resume: continue a run found in the directory (otherwise such a directory
                is an error).

        Raises:
            TargetNotMetError: the model does not meet the target before pruning.
            SelectionError: the directory holds a run started with other selection
                options (the message names them).
            RunError: the directory holds another run (``resume=False``) or none to
                resume (``model=None``), or one of its files is truncated or corrupt
                (the message names it and says what to do).
        """
        rd = self.run_dir
        rd.clean_temporaries()
        rows = rd.history()
        if rows and not resume:
            raise RunError(
                f"{rd.path} already holds a run ({len(rows)} rounds); resume it or use another directory"
            )
        if rows:
            model, rows = self._resume(rows, val_data)
        else:
            if model is None:
                raise RunError(f"{rd.path} holds no run to resume: pass the model to prune")
            if not getattr(model, "compiled", False):
                raise RunError(
                    "the model must be compiled (loss, optimizer, metrics) so it can be fine-tuned and measured"
                )
            check_run(  # before anything is written (kerasprune.pruning.preflight)
                model, train_data, val_data, target=self.target, exclude=self.options.exclude,
                criterion=self.criterion, fine_tune_epochs=self.fine_tune_epochs,
            )
            rows = [self._baseline(model, val_data)]
        first = rows[0]
        last = rows[-1]
        while True:
            r = last["round"] + 1
            if self.rounds is not None and r > self.rounds:
                break
            misses = self._misses(rows)
            if misses > self.retries:
                break
            if misses:  # go back to the last model that met the target, with a smaller step
                last = rows[-1 - misses]
                model = self._load(last["round"])
                self._keep_scores_of(model, last["round"])
                self._say(
                    f"round {r - 1} missed the target ({self.target}); retry {misses} of "
                    f"{self.retries}: round {r} prunes round {last['round']}'s model with "
                    f"{0.5 ** misses:g} of the ratio"
                )
            t0 = time.time()
            self._progress(r, last, first)
            keras.utils.set_random_seed(round_seed(self.seed, r))
            data = _round_data(train_data, round_seed(self.seed, r))
            unit = self.options.unit
            removed = 1.0 - last[unit] / max(1, first[unit])
            ratio = float(self.schedule(r, removed)) * 0.5 ** misses
            if ratio <= 0:
                self._say(f"round {r}: the ratio schedule asks for nothing more; stopping")
                break
            thin = self._prune_round(model, data, ratio, r)
            if thin is None:
                self._say(f"round {r}: nothing left to prune under the guards; stopping")
                break
            keras.utils.set_random_seed(round_seed(self.seed, r, "fit"))
            scores = self._fit(thin, data, r)
            metrics = self._evaluate(thin, val_data)
            row = self._row(r, thin, metrics, time.time() - t0, ratio)
            # the checkpoint, which keeps a copy of its row, first; then the row that completes the round
            rd.save_model(thin, r, row=row, scores=scores)
            rd.append(row)
            self._log_tensorboard(row)
            rows.append(row)
            self._report(row, first)
            model, last = thin, row
        best = self._best(rows, model)
        rd.save_pruned(best)
        return best

    # ------------------------------------------------------------------ steps

    def _scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def _say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    def _progress(self, r: int, last: Dict[str, Any], first: Dict[str, Any]) -> None:
        """The bar over the rounds: round ``r`` of at most ``rounds``, what was reached so far."""
        if not self.verbose:
            return
        kept = 100.0 * last["params"] / max(1, first["params"])
        metrics = " ".join(f"{k}={v:.4f}" for k, v in last["metrics"].items())
        if self.rounds is not None:
            head = f"round {r}/{self.rounds} {_bar(r - 1, self.rounds)}"
        else:
            head = f"round {r}"
        until = "" if self.target is None else f" (while {self.target})"
        self._say(f"{head} params {last['params']:,} ({kept:.1f}%) {metrics}{until}")

    def _evaluate(self, model: keras.Model, val_data: Any) -> Dict[str, float]:
        result = model.evaluate(val_data, return_dict=True, verbose=0)
        return {f"val_{k}": float(v) for k, v in result.items()}

    def _fit(self, model: keras.Model, train_data: Any, r: int) -> Optional[Dict[str, Any]]:
        """Fine-tune ``model``; returns the scores accumulated over it (``accumulate``) or None."""
        if self.fine_tune_epochs <= 0:
            return None
        kwargs = dict(self.fit_kwargs)
        kwargs.setdefault("verbose", self.verbose)
        if is_tf_dataset(train_data):  # it shuffles itself, if at all
            kwargs.setdefault("shuffle", False)
        callbacks = list(self.callbacks)
        saliency = None
        if self.accumulate:
            saliency = SaliencyAccumulator(
                self.criterion, normalization=self.normalization, exclude=self.options.exclude
            )
            callbacks.append(saliency)
        if os.environ.get(_faults.KILL_AT_ENV):
            callbacks.append(_KillPoint(r))
        model.fit(train_data, epochs=self.fine_tune_epochs, callbacks=callbacks, **kwargs)
        if saliency is not None and saliency.scores:
            self._accumulated = (model, saliency.scores)
            return saliency.scores
        return None

    def _row(self, r: int, model: keras.Model, metrics: Dict[str, float], seconds: Optional[float], ratio: Optional[float]) -> Dict[str, Any]:
        return history_row(
            r, ratio, model_stats(model).as_dict(), metrics, seconds,
            checkpoint=self.run_dir.checkpoint(r).name,
            meets_target=None if self.target is None else self.target.met(metrics),
        )

    def _baseline(self, model: keras.Model, val_data: Any) -> Dict[str, Any]:
        rd = self.run_dir
        t0 = time.time()
        metrics = self._evaluate(model, val_data)
        if self.target is not None and not self.target.met(metrics):  # before anything is written
            raise TargetNotMetError(
                f"the model does not meet the target before any pruning: "
                f"{self.target.metric}={metrics[self.target.metric]:.4f}, target {self.target}"
            )
        rd.write_json(rd.settings_file, self.settings())
        row = self._row(0, model, metrics, time.time() - t0, 0.0)
        rd.save_model(model, 0, row=row)
        rd.append(row)
        self._log_tensorboard(row)
        self._report(row, row)
        return row

    def _load(self, round: int, recorded: bool = True) -> keras.Model:
        with self._scope():
            return self.run_dir.load_model(round, recorded=recorded)

    def _resume(self, rows: List[Dict[str, Any]], val_data: Any):
        rd = self.run_dir
        saved = rd.settings()
        if saved is not None:
            saved = _with_options(saved)
            self._check_options(saved.get("options"))  # refused unless the same
            mine = self.settings()
            differ = sorted(
                k for k in set(saved) | set(mine) if k != "options" and saved.get(k) != mine.get(k)
            )
            if differ:
                self._say(f"resuming with settings that differ from the run's: {', '.join(differ)}")
        last = rows[-1]
        r = last["round"] + 1
        if rd.checkpoint(r).exists():  # killed after the checkpoint, before its row: finish the round
            model = self._load(r, recorded=False)
            row = rd.checkpoint_row(r)
            if row is None:  # a checkpoint written before rows were kept inside them
                row = self._row(r, model, self._evaluate(model, val_data), None, None)
            rd.append(row)
            self._log_tensorboard(row)
            rows = rows + [row]
            self._say(f"resumed: round {row['round']} was saved but not recorded; recorded it")
        else:
            model = self._load(last["round"])
        self._keep_scores_of(model, rows[-1]["round"])
        self._say(f"resuming {rd.path} after round {rows[-1]['round']}")
        return model, rows

    def _keep_scores_of(self, model: keras.Model, round: int) -> None:
        """With ``accumulate``, the scores kept in round ``round``'s checkpoint (``model`` was
        loaded from it) score the next round; none kept: a separate pass will."""
        if self.accumulate:
            scores = self.run_dir.checkpoint_scores(round)
            self._accumulated = (model, scores) if scores else None

    def _check_options(self, saved: Optional[Dict[str, Any]]) -> None:
        """Refuse to resume a run with other selection options than it was started with."""
        if saved is None:
            return
        try:
            theirs = SelectionOptions.from_config(saved)
        except SelectionError as err:
            raise SelectionError(
                f"{self.run_dir.settings_file} holds invalid selection options: {err}"
            ) from None
        if theirs == self.options:
            return
        mine = self.options.get_config()
        differ = [k for k, v in theirs.get_config().items() if mine[k] != v]
        was = ", ".join(f"{k}={theirs.get_config()[k]!r}" for k in differ)
        now = ", ".join(f"{k}={mine[k]!r}" for k in differ)
        raise SelectionError(
            f"{self.run_dir.path} was pruned with {was}, this pruner selects with {now}: a run "
            "keeps its selection options (rounds chosen two ways would be one history). Resume "
            "it with the run's options, kp.SelectionOptions.from_config(the \"options\" of "
            f"{self.run_dir.settings_file.name}), or prune into another directory"
        )

    def _prune_round(self, model: keras.Model, train_data: Any, ratio: float, r: int) -> Optional[keras.Model]:
        graph = analyze(model, warn=False)
        if self._accumulated is not None and self._accumulated[0] is model:
            scores = self._accumulated[1]  # from the fine-tuning that produced this model
        else:
            scores = score(
                model, self.criterion, normalization=self.normalization,
                data=_take(train_data, self.score_batches), graph=graph,
                exclude=self.options.exclude,
            )
        self._accumulated = None
        self._round_scores = scores
        _faults.reached("score", r)
        keep = select(graph, scores, ratio, model=model, options=self.options)
        if not keep:
            return None
        data = _take(train_data, self.score_batches) if self.compensate == "mean" else None
        with self._scope():
            return thin_model(model, keep, graph, compensate=self.compensate, data=data,
                              fold_constants=self.fold_constants)

    def _log_tensorboard(self, row: Dict[str, Any]) -> None:
        scores, self._round_scores = self._round_scores, None
        if self.tensorboard is None or not distribute.is_writer():
            return
        if self._tb is None:
            from kerasprune.report.tensorboard import TensorBoardWriter

            self._tb = TensorBoardWriter(self.tensorboard)
        self._tb.write_row(row, scores=scores)

    def _report(self, row: Dict[str, Any], first: Dict[str, Any]) -> None:
        metrics = " ".join(f"{k}={v:.4f}" for k, v in row["metrics"].items())
        kept = 100.0 * row["params"] / max(1, first["params"])
        secs = "" if row["seconds"] is None else f" ({row['seconds']:.1f}s)"
        self._say(
            f"round {row['round']:3d}: neurons {row['neurons']}, params {row['params']:,} "
            f"({kept:.1f}%), MACs {row['flops']:,}, {metrics}{secs}"
        )

    def _misses(self, rows: List[Dict[str, Any]]) -> int:
        """How many of the last rows in a row missed the target (0 without a target)."""
        if self.target is None:
            return 0
        n = 0
        for row in reversed(rows):
            if self.target.met(row["metrics"]):
                break
            n += 1
        return n

    def _best(self, rows: List[Dict[str, Any]], current: keras.Model) -> keras.Model:
        good = [r for r in rows if self.target is None or self.target.met(r["metrics"])]
        best = good[-1] if good else rows[0]
        if best is rows[-1]:
            return current
        return self._load(best["round"])
