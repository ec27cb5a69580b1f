"""Where a group's channels are observed as feature maps, and per-channel streaming sums.

**Observation points.** :meth:`PruningGraph.response_points` lists the top-level tensors
that layers' weights read, with the positions of the group's channels along the last
axis. kerasprune observes a group at the points read by a layer that creates channels of
its own (the next convolution or Dense layer: the feature map it sees, after
BatchNormalization and activation); points read only by per-channel layers (the
BatchNormalization right after a conv) are used only when there is no such point. A
group that no top-level layer reads (its channels live inside a nested model, a
keras-hub Backbone in a CausalLM, or inside a composite layer, a transformer block) is
observed at the tensors its readers get inside those graphs
(:meth:`PruningGraph.nested_response_points`): the model is then run call by call
(:class:`~kerasprune.graph.composite.FlatRunner`), each composite traced again at the
batch's real shapes, so a block the analysis traced at a fixed length is observed at the
data's length. A
group observed at several points (a residual group: the input of every block that reads
it) gets, per channel, **the mean over its points** of the per-point statistic.

**Per-example channel value.** At a point of shape ``(batch, ..., P)``, a channel's value
for one example is the mean over every position that carries it: the spatial positions
of a feature map, and all ``H*W`` positions of a flattened one (``Flatten`` before a Dense).

**Streaming.** Statistics are sums over examples: each batch goes through one compiled
call (a statistics model's ``predict_on_batch``, or a gradient step of
:mod:`~kerasprune.importance.autodiff`) that returns the batch's per-channel sums, which
are added up in float64 on the host, so memory is bounded by one batch whatever the data
size. Everything here is ``keras.ops``: it runs on every Keras backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
from keras import ops

from kerasprune.backend import accumulation_dtype, current, host_arrays, require_tensorflow
from kerasprune.errors import ImportanceError
from kerasprune.graph.composite import FlatRunner
from kerasprune.graph.keras_graph import functional_of, graph_inputs, iter_nodes
from kerasprune.graph.keras_graph import readers as tensor_readers
from kerasprune.importance.base import ScoringContext

__all__ = ["Site", "ObservationPlan", "stream_sums", "as_list", "batch_size_of"]


def as_list(outputs) -> List[Any]:
    """A model's outputs as a list (a single-output model returns a bare tensor)."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def batch_size_of(x: Any) -> int:
    """The number of examples in a batch of inputs (the first axis of its first array)."""
    return int(keras.tree.flatten(x)[0].shape[0])


@dataclass(frozen=True)
class Site:
    """One group's channels at one observed tensor.

    Attributes:
        tensor: index of the tensor in :attr:`ObservationPlan.tensors`.
        positions: positions along the tensor's last axis (int32).
        channels: the group channel carried at each of ``positions``.
        direct: every channel at exactly one position; ``positions`` sorted by channel.
        inv_counts: 1 / positions per channel (0 where the channel is not carried).
        offset: where this site's channels start in the plan's flat layout.
        size: channels of the group.
    """

    tensor: int
    positions: np.ndarray
    channels: np.ndarray
    direct: bool
    inv_counts: np.ndarray
    offset: int
    size: int

    @property
    def present(self) -> np.ndarray:
        """Which channels this site carries."""
        return self.inv_counts > 0


class ObservationPlan:
    """Every observed tensor of a set of groups, and each group's sites on them.

    Args:
        ctx: the scoring context (model, graph, groups).

    A group whose channels no top-level layer reads (it lives inside a nested model or
    a composite layer) is observed in the model's flattened graph
    call by call (:class:`~kerasprune.graph.composite.FlatRunner`): then :attr:`nested`
    is True, its entries of :attr:`tensors` are observation keys or top-level
    KerasTensors, and :meth:`run_nested` takes the place of the models (which a graph
    holding a layer name twice cannot be: every block of a transformer has a
    ``self_attention_layernorm``).

    Raises:
        ImportanceError: a group has no observation point.
    """

    def __init__(self, ctx: ScoringContext) -> None:
        self.ctx = ctx
        self.fn = functional_of(ctx.model)
        readers = tensor_readers(self.fn)
        makers = {id(rec.layer) for rec in ctx.graph.records if rec.produced}
        self.tensors: List[object] = []
        self.sites: Dict[str, List[Site]] = {}
        self.width = 0
        self.nested = False
        self._runner: Optional[FlatRunner] = None
        for group in ctx.groups:
            points = ctx.graph.response_points(group)
            if not points:
                inner = ctx.graph.nested_response_points(group)
                if not inner:
                    raise ctx.fail(group, "its channels are never seen as a feature map that a layer's weights read")
                self.nested = True
                fed_inner = [p for p in inner if any(id(r) in makers for r in p[3])]
                points = [p[:3] for p in (fed_inner or inner)]
                fed = []
            else:
                fed = [p for p in points if any(id(op) in makers for op in readers.get(id(p[0]), []))]
            sites = [self._site(kt, pos, ch, group.size) for kt, pos, ch in (fed or points)]
            held = np.any([s.present for s in sites], axis=0)
            if not held.all():
                raise ctx.fail(group, f"channels {np.nonzero(~held)[0][:5].tolist()} are never observed")
            self.sites[group.name] = sites

    def _site(self, kt, positions: np.ndarray, channels: np.ndarray, size: int) -> Site:
        for i, t in enumerate(self.tensors):
            if t is kt or (isinstance(t, tuple) and isinstance(kt, tuple) and t == kt):
                index = i
                break
        else:
            self.tensors.append(kt)
            index = len(self.tensors) - 1
        counts = np.bincount(channels, minlength=size)
        direct = len(channels) == size and bool(np.all(counts == 1))
        order = np.argsort(channels, kind="stable")
        inv = np.zeros(size, dtype=np.float32)
        inv[counts > 0] = 1.0 / counts[counts > 0]
        site = Site(
            tensor=index,
            positions=np.asarray(positions[order] if direct else positions, dtype=np.int32),
            channels=np.asarray(channels[order] if direct else channels, dtype=np.int32),
            direct=direct,
            inv_counts=inv,
            offset=self.width,
            size=size,
        )
        self.width += size
        return site

    # ------------------------------------------------------------------ models

    def probe(self, with_outputs: bool = False) -> Tuple[keras.Model, int]:
        """One model from the inputs to every observed tensor (then the model's outputs).

        Returns:
            ``(probe, n_observed)``: the probe's first ``n_observed`` outputs are the
            observed tensors, the rest (with ``with_outputs``) the model's outputs.
        """
        outputs = list(self.tensors)
        if with_outputs:
            outputs += list(self.fn.outputs)
        return keras.Model(graph_inputs(self.fn), outputs, name="kerasprune_probe"), len(self.tensors)

    def statistics_model(self, what: Callable[[Any], Any], squares: bool = False) -> keras.Model:
        """A model from the inputs to the batch's sums of per-example channel values.

        Args:
            what: applied to each observed feature map before its spatial mean (a
                function of ``keras.ops``, run symbolically when the model is built).
            squares: also return the sums of the squared values.

        Returns:
            A model whose ``predict_on_batch`` gives the ``(width,)`` sum over the batch's
            examples of :meth:`channel_values` (then, with ``squares``, the sum of their
            squares), in :func:`~kerasprune.backend.accumulation_dtype`.
        """
        values = self.channel_values([self.spatial_mean(what(t)) for t in self.tensors])
        values = ops.cast(values, accumulation_dtype())
        outputs = [ops.sum(values, axis=0)]
        if squares:
            outputs.append(ops.sum(values * values, axis=0))
        return keras.Model(graph_inputs(self.fn), outputs, name="kerasprune_statistics")

    def gradient_probe(self) -> Tuple[keras.Model, List[Any]]:
        """The model's graph with a zero *probe* input added to every observed tensor.

        Every observed tensor ``t`` is replaced, for the layers that read it (and as an
        output), by ``t + z`` where ``z`` is a new input of ``t``'s shape: fed with zeros
        the model computes what it always did, and the gradient of anything with respect
        to ``z`` is its gradient with respect to ``t``. The layers are the model's own
        (called again on the new tensors), so are the weights.

        Returns:
            ``(probed, probes)``: ``probed`` takes ``[model inputs, [z, ...]]`` (one ``z``
            per observed tensor, in plan order) and returns ``[t, ..., outputs...]``: the
            observed tensors, then the model's outputs; ``probes`` are the ``z`` inputs.
        """
        index = {id(t): i for i, t in enumerate(self.tensors)}
        probes = [
            keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=f"kerasprune_probe_{i}")
            for i, t in enumerate(self.tensors)
        ]
        observed: List[Any] = list(self.tensors)
        mapped: Dict[int, Any] = {}

        def place(old: Any, new: Any) -> None:
            i = index.get(id(old))
            if i is not None:
                observed[i] = new
                new = ops.add(new, probes[i])
            mapped[id(old)] = new

        for t in keras.tree.flatten(graph_inputs(self.fn)):
            place(t, t)

        def swap(a: Any) -> Any:
            return mapped.get(id(a), a) if isinstance(a, keras.KerasTensor) else a

        for node in iter_nodes(self.fn):
            args, kwargs = keras.tree.map_structure(
                swap, (tuple(node.arguments.args), dict(node.arguments.kwargs))
            )
            result = node.operation(*args, **kwargs)
            for old, new in zip(keras.tree.flatten(node.outputs), keras.tree.flatten(result)):
                place(old, new)
        outputs = observed + [mapped.get(id(o), o) for o in keras.tree.flatten(self.fn.outputs)]
        model = keras.Model([graph_inputs(self.fn), probes], outputs, name="kerasprune_gradient_probe")
        return model, probes

    # ------------------------------------------------------------------ nested plans

    def run_nested(self, x: Any, add: Optional[Sequence[Any]] = None) -> Tuple[List[Any], List[Any]]:
        """For a :attr:`nested` plan: run the model on ``x`` call by call
        (:class:`~kerasprune.graph.composite.FlatRunner`) and return ``(observed,
        outputs)``: the observed tensors (in plan order) and the model's outputs.

        Args:
            x: a batch of the model's inputs (arrays, backend tensors or KerasTensors).
            add: one tensor per observed tensor, added to it for every call that reads
                it (a zero probe: the gradient with respect to it is the gradient with
                respect to the observed tensor).

        Raises:
            ImportanceError: the model cannot be run call by call on ``x``.
        """
        if self._runner is None:
            self._runner = FlatRunner(self.fn)
        edit = None if add is None else (lambda i, v: ops.add(v, add[i]))
        try:
            return self._runner(x, list(self.tensors), edit)
        except ValueError as err:
            raise ImportanceError(f"the model cannot be run call by call to observe its nested groups: {err}") from err

    def nested_zeros(self, x: Any) -> List[Any]:
        """Zeros shaped like each observed tensor for batch ``x`` (shapes found by
        running the model symbolically)."""
        specs = keras.tree.map_structure(
            lambda a: keras.KerasTensor(tuple(np.shape(a)), dtype=keras.backend.standardize_dtype(a.dtype)), x
        )
        observed, _ = self.run_nested(specs)
        return [ops.zeros(tuple(t.shape), t.dtype) for t in observed]

    def nested_statistics(self, what: Callable[[Any], Any], squares: bool = False) -> Callable[[Any], List[Any]]:
        """For a :attr:`nested` plan, what :meth:`statistics_model`'s ``predict_on_batch``
        gives: ``x -> [sums]`` (then the sums of squares), computed call by call."""

        def statistics(x: Any) -> List[Any]:
            observed, _ = self.run_nested(x)
            values = self.channel_values([self.spatial_mean(what(t)) for t in observed])
            values = ops.cast(values, accumulation_dtype())
            out = [ops.sum(values, axis=0)]
            if squares:
                out.append(ops.sum(values * values, axis=0))
            return out

        compiled = _compiled(statistics)

        def run(x: Any) -> List[Any]:
            tensors = keras.tree.map_structure(ops.convert_to_tensor, x)
            return [ops.convert_to_numpy(v) for v in compiled(tensors)]

        return run

    # ------------------------------------------------------------------ tensor side

    @staticmethod
    def spatial_mean(t: Any) -> Any:
        """``(batch, ..., P) -> (batch, P)``: the mean over every axis but the first and last."""
        t = ops.cast(t, "float32")
        rank = len(t.shape)
        if rank < 2:
            raise ImportanceError("an observed tensor must have a batch and a channel axis")
        if rank == 2:
            return t
        return ops.mean(t, axis=tuple(range(1, rank - 1)))

    def channel_values(self, per_tensor: Sequence[Any]) -> Any:
        """Per example, each site's channel values, all sites side by side.

        Args:
            per_tensor: for each observed tensor, a ``(batch, P)`` tensor of per-position
                values (usually :meth:`spatial_mean` of something).

        Returns:
            ``(batch, width)``: for each site, in plan order, the mean over the positions
            carrying each channel (0 for a channel the site does not carry).
        """
        cols = [self.site_values(per_tensor[s.tensor], s) for sites in self.sites.values() for s in sites]
        return ops.concatenate(cols, axis=1)

    @staticmethod
    def site_values(per_position: Any, site: Site) -> Any:
        """``(batch, P) -> (batch, site.size)``: per channel, the mean over the positions of
        the site's tensor that carry it (0 for a channel the site does not carry)."""
        picked = ops.take(per_position, site.positions, axis=1)
        if site.direct:
            return picked
        summed = ops.segment_sum(ops.transpose(picked), site.channels, num_segments=site.size)
        return ops.transpose(summed) * site.inv_counts

    # ------------------------------------------------------------------ numpy side

    def combine(self, per_site: np.ndarray) -> Dict[str, np.ndarray]:
        """Per group, the mean over its sites of a flat per-site statistic."""
        out = {}
        for name, sites in self.sites.items():
            total = np.zeros(sites[0].size)
            n = np.zeros(sites[0].size)
            for s in sites:
                part = per_site[s.offset : s.offset + s.size]
                total += np.where(s.present, part, 0.0)
                n += s.present
            out[name] = total / n
        return out


def _compiled(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn`` compiled by the backend (``tf.function``, ``jax.jit``; eager on PyTorch):
    a model run call by call is then one compiled program per input shape."""
    name = current()
    if name == "tensorflow":
        return require_tensorflow("the TensorFlow backend").function(fn, reduce_retracing=True)
    if name == "jax":
        import jax

        return jax.jit(fn)
    return fn


def stream_sums(
    ctx: ScoringContext,
    width: int,
    batch_sums: Callable[[Any, Any, Any], Tuple[Any, Any]],
    needs_labels: bool = False,
) -> Tuple[np.ndarray, float]:
    """Run ``batch_sums`` on every batch and add its results up in float64.

    Args:
        ctx: the scoring context (its data, ``max_batches``, ``verbose``).
        width: length of the vector ``batch_sums`` returns.
        batch_sums: ``(x, y, sample_weight) -> (vector of width, count)``, usually one
            compiled call per batch; arrays of any backend (or numpy).
        needs_labels: raise a clear error when a batch has no labels.

    Returns:
        ``(sums, count)``: the vector summed over batches and the total count.
    """
    acc = np.zeros(width, np.float64)
    count = 0.0
    bar: Optional[keras.utils.Progbar] = ctx.progress()
    seen = 0
    for x, y, sw in ctx.batches():
        if needs_labels and y is None:
            raise ImportanceError(
                f"criterion {ctx.criterion!r} needs labels: the data must give (x, y) batches"
            )
        vec, n = batch_sums(host_arrays(x), host_arrays(y), host_arrays(sw))
        acc += np.asarray(ops.convert_to_numpy(vec), np.float64).reshape(width)
        count += float(ops.convert_to_numpy(n))
        seen += 1
        if bar is not None:
            bar.update(seen)
    if seen == 0:
        raise ImportanceError(f"criterion {ctx.criterion!r} got no batches: the scoring data is empty")
    return acc, count
