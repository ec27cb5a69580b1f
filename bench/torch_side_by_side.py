"""kerasprune beside Torch-Pruning: the same networks, the same one-shot pruning problem.

Not a test, and not needed by ``make test``: it needs the optional ``torch`` extra
(``pip install -e ".[torch]"``: torch and torch-pruning). Prints tables with the machine
and the versions.

For each network (the CIFAR ResNet-56 with 1x1-convolution projection shortcuts and the
CIFAR VGG-16 with BatchNormalization of :mod:`kerasprune.models`) the script builds the
Keras model and a PyTorch mirror of it (same layers, widths, shortcuts, BatchNormalization,
pooling and classifier; the PyTorch modules carry the Keras layer names), copies the
Keras weights into the PyTorch model, and prunes both one shot, globally, by the L1
magnitude of each channel's filter, to the same fraction of the prunable channels:

* kerasprune: ``analyze`` -> ``score(model, "l1", normalization=...)`` ->
  ``select(graph, scores, ratio, scope="global", unit="neurons")`` -> ``rebuild``; the
  model is built once and every repeat prunes it (kerasprune never modifies its input).
* Torch-Pruning: ``BasePruner(model, example_inputs, importance, global_pruning=True,
  pruning_ratio=ratio, ignored_layers=[classifier])`` (its DependencyGraph is built here)
  and then one ``step()``; every repeat prunes a fresh ``copy.deepcopy`` of the model (the
  copy is not timed: Torch-Pruning prunes in place).

The problems are made equal: the output layer (``predictions``) is left alone in both;
the importance is the L1 norm of the filter that produces the channel (for a channel made
by several layers, as in the residual groups, the mean over those layers), divided per
group by its mean: kerasprune's ``l1`` with ``normalization="layer_mean"`` and, on the
Torch-Pruning side, a ``GroupMagnitudeImportance(p=1, group_reduction="mean",
normalizer="mean")`` that reads only the producing filters (``--tp-importance matched``,
the default). ``--tp-importance stock`` uses Torch-Pruning's stock group importance
instead (it also sums the next layers' input slices and |gamma| of the BatchNormalization
into each channel's score), so the two then select different channels. With the same
weights and the same criterion both libraries must keep exactly the same channels: the
script checks it layer by layer (weights of every layer of the thin models equal).
The match holds for ``--normalization layer_mean`` (the default). With ``l2`` or ``none``
whole groups can fall below the global threshold: Torch-Pruning then leaves such a group
untouched (it never empties a group and does not give its share to other groups), while
kerasprune keeps one channel of it and removes the rest of the budget elsewhere, so the
two remove different numbers of channels (the report shows both counts).

Reported, per network and ratio: the channels removed; the median wall time of the
pruning, split into analysis (``analyze`` / the pruner's construction, which builds its
DependencyGraph), scoring + selection (``score`` + ``select`` / ``step`` up to its first
group) and surgery (``rebuild`` / pruning the groups); parameters and multiply-adds after
pruning, in each framework's own counter (``kerasprune.count_params``/``count_flops`` and
``torch_pruning.utils.count_ops_and_params``) and in the common definition "MACs of the
convolutions and dense layers"; and the measured CPU latency of the original and the thin
model in its own framework (batch 1 and 32; Keras as a compiled ``tf.function`` call, and
the Keras models exported to TFLite as deployed, LiteRT interpreter, batch 1;
PyTorch in eval mode under ``torch.inference_mode()``; threads fixed to ``--threads`` in
both; the original and the thin models of every ratio timed in each sampling round,
interleaved, medians). Speed-up = original time /
thin time; MACs cut = original / thin MACs of the convolutions and dense layers;
efficiency = speed-up / MACs cut.

The machine may be shared: a pruning run or latency sample during which other processes
used more than ``--max-other-load`` CPUs (``/proc/stat`` minus this process) is taken
again, ``--retries`` times at most; the report gives the other processes' mean load and
the counts. (PyTorch's OpenMP threads wait by spinning, so one busy core can make a
2-thread forward pass tens of times slower.)

    .venv/bin/python bench/torch_side_by_side.py [--models resnet56 vgg16_bn]
        [--ratios 0.3 0.5] [--repeats 5] [--samples 7] [--threads 2]
        [--normalization layer_mean] [--tp-importance matched] [--max-other-load 0.25]

or ``make bench-torch`` (installs the ``torch`` extra first). The defaults take about 4
minutes on 2 idle CPU cores. Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import common  # noqa: E402,F401  (bench/common.py: environment first)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine, print_table, versions  # noqa: E402
from latency import keras_fn, tflite_fn, timer  # noqa: E402
from rebuild_speed import timed  # noqa: E402

import kerasprune as kp  # noqa: E402
from kerasprune.models import get_model  # noqa: E402

try:
    import torch  # noqa: E402
    import torch_pruning as tp  # noqa: E402
    from torch import nn  # noqa: E402
    from torch_pruning.pruner import function as tp_function  # noqa: E402
except ImportError as err:  # pragma: no cover - depends on the optional extra
    sys.exit(
        f"bench/torch_side_by_side.py needs the optional torch extra ({err}); install it with\n"
        f"    .venv/bin/python -m pip install -e '.[torch]'    (or: make bench-torch)"
    )

# kerasprune normalization -> Torch-Pruning normalizer that computes the same thing
NORMALIZERS = {
    "layer_mean": "mean",
    "l2": lambda s: s / s.norm(),
    "none": None,
}
NORMALIZER_NAMES = {"layer_mean": "'mean'", "l2": "s / ||s||_2 (a callable)", "none": "None"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# The PyTorch mirrors of kerasprune.models.cifar_resnet and vgg16_bn. Every module is
# stored in one ModuleDict under the name of its Keras layer, so weights, widths and
# counts can be compared by name. BatchNormalization keeps Keras' epsilon (1e-3).
# ---------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    # Keras "same": 3x3 pads 1 each side at stride 1 (TensorFlow pads stride-2 inputs of
    # even size 0 before and 1 after, PyTorch 1 and 1: the same shapes and work)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


def _bn2d(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class TorchCifarResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016) as kerasprune builds it: stem conv-BN-ReLU, three
    stages of basic blocks (16/32/64 filters), identity shortcuts inside a stage and a
    strided 1x1 convolution + BN where width or stride changes (option B), global
    average pooling, a softmax classifier."""

    def __init__(self, depth: int = 56, num_classes: int = 10, width: int = 16):
        super().__init__()
        n = (depth - 2) // 6
        L = nn.ModuleDict()
        L["stem_conv"], L["stem_bn"], L["stem_relu"] = _conv(3, width, 3), _bn2d(width), nn.ReLU()
        self.blocks: List[Tuple[str, bool]] = []
        cin = width
        for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
            for block in range(1, n + 1):
                stride = 2 if stage > 1 and block == 1 else 1
                name = f"stage{stage}_block{block}"
                L[f"{name}_conv1"] = _conv(cin, filters, 3, stride)
                L[f"{name}_bn1"] = _bn2d(filters)
                L[f"{name}_relu1"] = nn.ReLU()
                L[f"{name}_conv2"] = _conv(filters, filters, 3)
                L[f"{name}_bn2"] = _bn2d(filters)
                proj = stride != 1 or cin != filters
                if proj:
                    L[f"{name}_proj_conv"] = _conv(cin, filters, 1, stride)
                    L[f"{name}_proj_bn"] = _bn2d(filters)
                L[f"{name}_out"] = nn.ReLU()
                self.blocks.append((name, proj))
                cin = filters
        L["pool"] = nn.AdaptiveAvgPool2d(1)
        L["predictions"] = nn.Linear(cin, num_classes)
        self.layers = L

    def forward(self, x):
        L = self.layers
        x = L["stem_relu"](L["stem_bn"](L["stem_conv"](x)))
        for name, proj in self.blocks:
            y = L[f"{name}_relu1"](L[f"{name}_bn1"](L[f"{name}_conv1"](x)))
            y = L[f"{name}_bn2"](L[f"{name}_conv2"](y))
            shortcut = L[f"{name}_proj_bn"](L[f"{name}_proj_conv"](x)) if proj else x
            x = L[f"{name}_out"](shortcut + y)
        x = torch.flatten(L["pool"](x), 1)
        return torch.softmax(L["predictions"](x), dim=1)


class TorchVGG16BN(nn.Module):
    """CIFAR VGG-16 with BN as kerasprune builds it: 13 conv-BN-ReLU (64, 64 | 128, 128 |
    256 x3 | 512 x3 | 512 x3), 2x2 max pooling after each block, Flatten, Dense 512 (no
    bias) - BN - ReLU - Dropout 0.5, softmax classifier."""

    BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

    def __init__(self, num_classes: int = 10, fc_units: int = 512, dropout: float = 0.5):
        super().__init__()
        L = nn.ModuleDict()
        self.order: List[str] = []
        cin = 3
        for b, block in enumerate(self.BLOCKS, start=1):
            for i, filters in enumerate(block, start=1):
                L[f"block{b}_conv{i}"] = _conv(cin, filters, 3)
                L[f"block{b}_bn{i}"] = _bn2d(filters)
                L[f"block{b}_relu{i}"] = nn.ReLU()
                self.order += [f"block{b}_conv{i}", f"block{b}_bn{i}", f"block{b}_relu{i}"]
                cin = filters
            L[f"block{b}_pool"] = nn.MaxPool2d(2)
            self.order.append(f"block{b}_pool")
        L["flatten"] = nn.Flatten()
        L["fc1"] = nn.Linear(cin, fc_units, bias=False)
        L["fc1_bn"] = nn.BatchNorm1d(fc_units, eps=1e-3, momentum=0.01)
        L["fc1_relu"] = nn.ReLU()
        L["fc1_dropout"] = nn.Dropout(dropout)
        L["predictions"] = nn.Linear(fc_units, num_classes)
        self.order += ["flatten", "fc1", "fc1_bn", "fc1_relu", "fc1_dropout", "predictions"]
        self.layers = L

    def forward(self, x):
        for name in self.order:
            x = self.layers[name](x)
        return torch.softmax(x, dim=1)


TORCH_MODELS: Dict[str, Callable[[], nn.Module]] = {
    "resnet56": lambda: TorchCifarResNet(56),
    "vgg16_bn": lambda: TorchVGG16BN(),
}


@torch.no_grad()
def copy_keras_weights(kmodel: keras.Model, tmodel: nn.Module) -> int:
    """Copy every Keras layer's weights into the PyTorch module of the same name (NHWC
    kernels to NCHW); returns the number of layers copied. Raises if a weighted module of
    either side has no counterpart or a shape differs."""
    L = tmodel.layers
    copied = 0
    for layer in kmodel.layers:
        w = [v.numpy() for v in layer.weights]
        if not w:
            continue
        if layer.name not in L:
            raise RuntimeError(f"no PyTorch module for Keras layer {layer.name!r}")
        m = L[layer.name]
        if isinstance(layer, keras.layers.Conv2D):
            pairs = [(m.weight, w[0].transpose(3, 2, 0, 1))] + ([(m.bias, w[1])] if layer.use_bias else [])
        elif isinstance(layer, keras.layers.Dense):
            pairs = [(m.weight, w[0].T)] + ([(m.bias, w[1])] if layer.use_bias else [])
        elif isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = w  # center and scale are on in both models
            pairs = [(m.weight, gamma), (m.bias, beta), (m.running_mean, mean), (m.running_var, var)]
        else:
            raise RuntimeError(f"cannot copy weights of {type(layer).__name__} {layer.name!r}")
        for t, a in pairs:
            if tuple(t.shape) != a.shape:
                raise RuntimeError(f"{layer.name}: PyTorch {tuple(t.shape)} vs Keras {a.shape}")
            t.copy_(torch.from_numpy(np.ascontiguousarray(a)))
        copied += 1
    weighted = [n for n, m in L.items() if any(True for _ in m.parameters(recurse=False))]
    if copied != len(weighted):
        raise RuntimeError(f"copied {copied} layers, the PyTorch model has {len(weighted)} weighted modules")
    return copied


# ---------------------------------------------------------------------------------------
# Torch-Pruning side
# ---------------------------------------------------------------------------------------


class FilterL1Importance(tp.importance.GroupMagnitudeImportance):
    """The L1 norm of the filter producing each channel (a conv's or linear layer's output
    slice), averaged over the group's producing layers, then normalized per group:
    kerasprune's ``l1`` criterion. The next layers' input slices and the BN scales, which
    Torch-Pruning's stock group importance also adds in, are left out."""

    OUT_FNS = (tp_function.prune_conv_out_channels, tp_function.prune_linear_out_channels)

    def __init__(self, normalizer):
        super().__init__(p=1, group_reduction="mean", normalizer=normalizer, bias=False,
                         target_types=[nn.Conv2d, nn.Linear])

    @torch.no_grad()
    def __call__(self, group):
        per_layer, roots = [], []
        for i, (dep, idxs) in enumerate(group):
            if dep.pruning_fn not in self.OUT_FNS or not isinstance(dep.layer, (nn.Conv2d, nn.Linear)):
                continue
            per_layer.append(dep.layer.weight.data[idxs].flatten(1).abs().sum(1))
            roots.append(group[i].root_idxs)
        if not per_layer:
            return None
        return self._normalize(self._reduce(per_layer, roots), self.normalizer)


def tp_importance(kind: str, normalization: str):
    if kind == "matched":
        return FilterL1Importance(NORMALIZERS[normalization])
    return tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean",
                                                  normalizer=NORMALIZERS[normalization])


def tp_groups(model: nn.Module, example: "torch.Tensor") -> Tuple[int, int]:
    """(groups, channels) of the prunable groups of ``model`` as Torch-Pruning sees them,
    the classifier ignored."""
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    ignored = list(model.layers["predictions"].modules())
    groups = list(dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]))
    return len(groups), sum(dg.get_out_channels(g[0][0].target.module) for g in groups)


def torch_prune(model: nn.Module, example, ratio: float, importance) -> Tuple[dict, int, int]:
    """Prune ``model`` in place; returns the times, the channels removed (as the pruning
    indices of the groups say) and the prunable channels at the start.

    Times: ``analysis`` builds the pruner (its DependencyGraph); ``select`` runs
    ``step(interactive=True)`` up to its first group (every group's importance and the
    global threshold); ``surgery`` prunes the groups."""
    t0 = time.perf_counter()
    pruner = tp.pruner.BasePruner(
        model, example, importance=importance, global_pruning=True, pruning_ratio=ratio,
        ignored_layers=[model.layers["predictions"]],
    )
    t1 = time.perf_counter()
    steps = pruner.step(interactive=True)
    group = next(steps, None)
    t2 = time.perf_counter()
    removed = 0
    while group is not None:
        removed += len(group[0].idxs)
        group.prune()
        group = next(steps, None)
    t3 = time.perf_counter()
    times = {"analysis": t1 - t0, "select": t2 - t1, "surgery": t3 - t2, "total": t3 - t0}
    return times, removed, pruner.initial_total_channels


def torch_counts(model: nn.Module, example) -> dict:
    """Parameters and MACs from Torch-Pruning's counter, and the MACs of the convolutions
    and linear layers alone (kerasprune's definition)."""
    macs, params, layer_macs, _ = tp.utils.count_ops_and_params(model, example, layer_wise=True)
    core = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n = int(layer_macs[m] or 0)
            if isinstance(m, nn.Linear) and m.bias is not None:
                n -= m.out_features  # the counter adds one per bias; kerasprune counts none
            core += n
    return {"params": int(params), "trainable": sum(p.numel() for p in model.parameters()),
            "macs_own": int(macs), "macs": core}


def torch_consistent(model: nn.Module) -> List[str]:
    """Modules whose recorded widths disagree with their tensors (empty: consistent)."""
    bad = []
    for name, m in model.layers.items():
        if isinstance(m, nn.Conv2d) and tuple(m.weight.shape[:2]) != (m.out_channels, m.in_channels // m.groups):
            bad.append(name)
        elif isinstance(m, nn.Linear) and tuple(m.weight.shape) != (m.out_features, m.in_features):
            bad.append(name)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and not (
            m.num_features == m.weight.numel() == m.bias.numel() == m.running_mean.numel() == m.running_var.numel()
        ):
            bad.append(name)
    return bad


# ---------------------------------------------------------------------------------------
# kerasprune side
# ---------------------------------------------------------------------------------------


def keras_prune(model: keras.Model, ratio: float, normalization: str):
    """analyze -> score -> select -> rebuild; returns the thin model, the times, the keep
    set, the graph and the prunable channels of the graph."""
    t0 = time.perf_counter()
    graph = kp.analyze(model)
    t1 = time.perf_counter()
    scores = kp.score(model, "l1", normalization=normalization, graph=graph)
    keep = kp.select(graph, scores, ratio, scope="global", unit="neurons")
    t2 = time.perf_counter()
    thin = kp.rebuild(model, keep, graph=graph)
    t3 = time.perf_counter()
    total = sum(g.size for g in graph.prunable)
    times = {"analysis": t1 - t0, "select": t2 - t1, "surgery": t3 - t2, "total": t3 - t0}
    return thin, times, keep, graph, total


def keras_channels(model: keras.Model) -> Tuple[int, int]:
    graph = kp.analyze(model)
    return len(graph.prunable), sum(g.size for g in graph.prunable)


def keras_counts(model: keras.Model) -> dict:
    p = kp.count_params(model)
    macs = kp.count_flops(model).total
    return {"params": p.total, "trainable": p.trainable, "macs_own": macs, "macs": macs}


# ---------------------------------------------------------------------------------------
# checks between the two thin models
# ---------------------------------------------------------------------------------------


def compare_layers(kmodel: keras.Model, tmodel: nn.Module) -> Tuple[int, List[str]]:
    """Compare every weighted layer of the Keras model with the PyTorch module of the same
    name: widths and values. Returns (layers compared, names that differ)."""
    L = tmodel.layers
    differ, n = [], 0
    for layer in kmodel.layers:
        w = [v.numpy() for v in layer.weights]
        if not w:
            continue
        n += 1
        m = L[layer.name]
        if isinstance(layer, keras.layers.Conv2D):
            ours = [w[0].transpose(3, 2, 0, 1)]
            theirs = [m.weight]
        elif isinstance(layer, keras.layers.Dense):
            ours, theirs = [w[0].T], [m.weight]
        else:  # BatchNormalization
            ours, theirs = w, [m.weight, m.bias, m.running_mean, m.running_var]
        for a, t in zip(ours, theirs):
            t = t.detach().numpy()
            if a.shape != t.shape or not np.array_equal(a, t):
                differ.append(layer.name)
                break
    return n, differ


def width_summary(kmodel: keras.Model, tmodel: nn.Module) -> List[str]:
    """Names of the layers whose output width differs between the two models."""
    out = []
    for layer in kmodel.layers:
        m = tmodel.layers[layer.name] if layer.name in tmodel.layers else None
        if isinstance(layer, keras.layers.Conv2D):
            if m.out_channels != layer.filters or m.in_channels != layer.kernel.shape[2]:
                out.append(layer.name)
        elif isinstance(layer, keras.layers.Dense):
            if m.out_features != layer.units or m.in_features != layer.kernel.shape[0]:
                out.append(layer.name)
    return out


# ---------------------------------------------------------------------------------------
# latency and machine load
# ---------------------------------------------------------------------------------------


def torch_fn(model: nn.Module, x: np.ndarray) -> Callable[[], object]:
    """One forward call of ``model`` on ``x`` (NHWC, transposed to NCHW), eval mode, under
    ``torch.inference_mode()``."""
    model.eval()
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def run():
        with torch.inference_mode():
            return model(t)

    run()  # warm-up, outside the timing
    return run


class OtherLoad:
    """CPU time that other processes (not this one) use while a block runs: all CPUs'
    busy time from ``/proc/stat`` minus this process's own CPU time, in CPUs (1.0: one
    core kept busy by other work). Reads 0 where ``/proc/stat`` is missing."""

    def __init__(self):
        self.other, self.wall, self.last = 0.0, 0.0, 0.0

    @staticmethod
    def _busy() -> Optional[float]:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    @staticmethod
    def _own() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def __enter__(self):
        self._b0, self._o0, self._t0 = self._busy(), self._own(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        b1, wall = self._busy(), time.perf_counter() - self._t0
        self.last = 0.0
        if self._b0 is not None and b1 is not None and wall > 0:
            self.last = max(0.0, (b1 - self._b0) - (self._own() - self._o0)) / wall
            self.other += self.last * wall
            self.wall += wall
        return False

    def mean(self) -> str:
        return f"{self.other / self.wall:.2f}" if self.wall > 0 else "n/a"


def quiet(fn: Callable[[], tuple], monitor: OtherLoad, args, load: dict) -> tuple:
    """``fn()`` (after a garbage collection, as ``rebuild_speed.timed``), run again while
    other processes used more than ``args.max_other_load`` CPUs during it, up to
    ``args.retries`` times; counts the retakes and the runs still loaded in ``load``."""
    for attempt in range(args.retries + 1):
        with monitor:
            out = timed(fn)[1]
        if monitor.last <= args.max_other_load:
            return out
        if attempt < args.retries:
            load["retaken"] += 1
            time.sleep(0.5)
    load["loaded"] += 1
    return out


def sample_all(pairs: Dict[tuple, Dict[str, Callable[[], object]]], args, load: dict) -> Dict[tuple, Dict[str, List[float]]]:
    """Seconds per call (``latency.timer``) of every setting and variant, ``args.samples``
    times, all of them interleaved in each round (as ``latency.measure``, keeping every
    sample); a sample taken while the machine was busy with other work is taken again
    (:func:`quiet`)."""
    times: Dict[tuple, Dict[str, List[float]]] = {s: {v: [] for v in fns} for s, fns in pairs.items()}
    for _ in range(args.samples):
        for setting, fns in pairs.items():
            for variant, fn in fns.items():
                times[setting][variant].append(quiet(lambda: (timer(fn),), load["latency"], args, load)[0])
    return times


# ---------------------------------------------------------------------------------------


def fmt_int(n: int) -> str:
    return f"{n:,}"


def to_nchw(x: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def bench_model(name: str, args, x1, x32, example, load: dict) -> dict:
    log(f"[{name}] building the Keras model and its PyTorch mirror")
    keras.utils.set_random_seed(0)  # the same weights whatever ran before
    kmodel = get_model(name)
    tmodel = TORCH_MODELS[name]()
    copied = copy_keras_weights(kmodel, tmodel)
    tmodel.eval()
    res = {"name": name, "copied": copied, "rows": [], "lat": [], "checks": []}

    k0, t0 = keras_counts(kmodel), torch_counts(tmodel, example)
    kg, kc = keras_channels(kmodel)
    tg, tc = tp_groups(tmodel, example)
    res["orig"] = [("kerasprune", k0, kg, kc), ("Torch-Pruning", t0, tg, tc)]
    if name == "vgg16_bn":  # the same padding on both sides: the two compute the same
        ko = kmodel(x32, training=False).numpy()
        with torch.inference_mode():
            to = tmodel(to_nchw(x32)).numpy()
        res["checks"].append(f"original models agree on a batch of 32: max |output diff| {np.abs(ko - to).max():.1e}")

    imp = tp_importance(args.tp_importance, args.normalization)
    thins: Dict[float, tuple] = {}
    for ratio in args.ratios:
        log(f"[{name}] ratio {ratio}: warm-up")
        keras_prune(kmodel, ratio, args.normalization)
        torch_prune(copy.deepcopy(tmodel), example, ratio, imp)
        kt: List[dict] = []
        tt: List[dict] = []
        for r in range(args.repeats):
            kthin, kdt, keep, graph, ktotal = quiet(
                lambda: keras_prune(kmodel, ratio, args.normalization), load["prune"], args, load)
            kt.append(kdt)

            def torch_once():
                fresh = copy.deepcopy(tmodel)  # Torch-Pruning prunes in place; the copy is not timed
                return (fresh,) + quiet(lambda: torch_prune(fresh, example, ratio, imp), load["prune"], args, load)

            tthin, tdt, tremoved, ttotal = torch_once()
            tt.append(tdt)
            log(f"[{name}] ratio {ratio} repeat {r + 1}/{args.repeats}: kerasprune {kdt['total']:.3f}s, "
                f"Torch-Pruning {tdt['total']:.3f}s")
        kremoved = sum(graph[g].size - len(k) for g, k in keep.items())
        kmed = {k: statistics.median(d[k] for d in kt) for k in kt[0]}
        tmed = {k: statistics.median(d[k] for d in tt) for k in tt[0]}
        kthin_counts, tthin_counts = keras_counts(kthin), torch_counts(tthin, example)

        # the thin models hold the channels their libraries report, and the same ones
        _, kleft = keras_channels(kthin)
        _, tleft = tp_groups(tthin, example)
        n, differ = compare_layers(kthin, tthin)
        wdiff = width_summary(kthin, tthin)
        bad = torch_consistent(tthin)
        ky = kthin(x32, training=False).numpy()
        with torch.inference_mode():
            ty = tthin(to_nchw(x32)).numpy()
        line = (
            f"{ratio:.0%}: kerasprune removed {kremoved} of {ktotal} channels, its thin model has "
            f"{kleft} ({'ok' if ktotal - kremoved == kleft else 'MISMATCH'}); Torch-Pruning removed "
            f"{tremoved} of {ttotal}, its thin model has {tleft} "
            f"({'ok' if ttotal - tremoved == tleft else 'MISMATCH'}); PyTorch module shapes "
            f"{'consistent' if not bad else 'INCONSISTENT: ' + ', '.join(bad)}; outputs {ky.shape} and "
            f"{ty.shape}; widths equal in {n - len(wdiff)}/{n} weighted layers, weights equal (same "
            f"channels kept) in {n - len(differ)}/{n}"
            + (f" (differ: {', '.join(differ[:6])})" if differ else "")
        )
        if name == "vgg16_bn":
            line += f"; thin models agree: max |output diff| {np.abs(ky - ty).max():.1e}"
        res["checks"].append(line)
        same = "yes" if not differ else f"no ({len(differ)}/{n} layers differ)"
        for fw, removed, total, med, c0, c1 in (
            ("kerasprune", kremoved, ktotal, kmed, k0, kthin_counts),
            ("Torch-Pruning", tremoved, ttotal, tmed, t0, tthin_counts),
        ):
            res["rows"].append({"ratio": ratio, "fw": fw, "removed": removed, "total": total, "med": med,
                                "c0": c0, "c1": c1, "same": same})

        thins[ratio] = (kthin, kthin_counts, tthin, tthin_counts)

    # latency: the original and every thin model of both frameworks, interleaved
    log(f"[{name}] timing latency")
    pairs: Dict[tuple, Dict[object, Callable[[], object]]] = {}
    for batch, x in (("b1", x1), ("b32", x32)):
        pairs[("kerasprune", batch)] = {"orig": keras_fn(kmodel, x)}
        pairs[("kerasprune", batch)].update({r: keras_fn(t[0], x) for r, t in thins.items()})
        pairs[("Torch-Pruning", batch)] = {"orig": torch_fn(tmodel, x)}
        pairs[("Torch-Pruning", batch)].update({r: torch_fn(t[2], x) for r, t in thins.items()})
    with tempfile.TemporaryDirectory() as tmp:
        # the thin Keras model as deployed: exported to TFLite (checked against Keras), batch 1
        pairs[("kerasprune TFLite", "b1")] = {"orig": tflite_fn(kmodel, x1, args.threads, tmp)}
        pairs[("kerasprune TFLite", "b1")].update({r: tflite_fn(t[0], x1, args.threads, tmp) for r, t in thins.items()})
        lat = sample_all(pairs, args, load)
    for ratio, (_, kc1, _, tc1) in thins.items():
        for fw in ("kerasprune", "kerasprune TFLite", "Torch-Pruning"):
            c0, c1 = (t0, tc1) if fw == "Torch-Pruning" else (k0, kc1)
            cut = c0["macs"] / c1["macs"]
            for batch in ("b1",) if fw.endswith("TFLite") else ("b1", "b32"):
                t = lat[(fw, batch)]
                orig, thin = statistics.median(t["orig"]), statistics.median(t[ratio])
                best = min(t["orig"]) / min(t[ratio])
                res["lat"].append({"ratio": ratio, "fw": fw, "batch": batch, "orig": orig, "thin": thin,
                                   "speed": orig / thin, "cut": cut, "eff": orig / thin / cut,
                                   "eff_best": best / cut})
    return res


def report(results: List[dict], args, load: dict) -> None:
    tp_version = importlib.metadata.version("torch-pruning")
    print(f"machine: {machine()}")
    print(f"versions: {versions()}, torch {torch.__version__}, torch-pruning {tp_version}")
    print(f"threads: {args.threads} in both (TensorFlow intra-op, torch.set_num_threads); pruning times: "
          f"median of {args.repeats} interleaved repeats after one warm-up; latency: median of "
          f"{args.samples} samples, the original and all thin models interleaved")
    print(f"other processes on the machine used {load['prune'].mean()} CPUs on average while pruning was "
          f"timed, {load['latency'].mean()} while latency was timed; pruning runs and latency samples taken again "
          f"because others used more than {args.max_other_load} CPUs: {load['retaken']}, still loaded after "
          f"{args.retries} retakes (kept): {load['loaded']}")
    crit = ("filter L1, mean over a group's producing layers" if args.tp_importance == "matched" else
            "Torch-Pruning's stock GroupMagnitudeImportance(p=1): filters + next layers' input slices + "
            "BN |gamma|, mean over the group's members")
    print(f"criterion: kerasprune score('l1', normalization={args.normalization!r}); Torch-Pruning "
          f"--tp-importance {args.tp_importance} ({crit}), normalizer {NORMALIZER_NAMES[args.normalization]}; "
          f"global ranking over all prunable channels, the classifier 'predictions' left alone in both")
    print()

    print("original models (params and MACs per example in each framework's own counter; "
          "'conv+dense MACs' is kerasprune's definition, computed on both)")
    rows = []
    for res in results:
        for fw, c, groups, channels in res["orig"]:
            rows.append((res["name"], fw, fmt_int(c["params"]), fmt_int(c["trainable"]), fmt_int(c["macs_own"]),
                         fmt_int(c["macs"]), str(groups), fmt_int(channels)))
    print_table(("model", "framework", "params", "trainable", "MACs (own counter)", "conv+dense MACs",
                 "prunable groups", "channels"), rows, left=2)
    print("  the params differ by BatchNormalization's moving mean and variance: weights in Keras (counted), "
          "buffers in PyTorch (not);")
    print("  the MACs differ because Torch-Pruning's counter also counts BatchNormalization (2 per element), "
          "ReLU and pooling (1 per element) and bias additions")
    print()

    print("one-shot global L1 pruning, median seconds from the model to the thin model: analysis = "
          "kp.analyze / pruner construction (DependencyGraph);")
    print("score+select = kp.score + kp.select / step() up to its first group (all importances, global "
          "threshold); surgery = kp.rebuild / pruning the groups in place")
    rows = []
    for res in results:
        by: Dict[float, Dict[str, dict]] = {}
        for r in res["rows"]:
            by.setdefault(r["ratio"], {})[r["fw"]] = r
        for ratio, pair in by.items():
            base = pair["Torch-Pruning"]["med"]["total"]
            for fw, r in pair.items():
                m = r["med"]
                rows.append((res["name"], f"{ratio:.0%}", fw, f"{r['removed']}/{r['total']}",
                             f"{m['analysis']:.3f}", f"{m['select']:.3f}", f"{m['surgery']:.3f}",
                             f"{m['total']:.3f}", f"{m['total'] / base:.2f}", fmt_int(r["c1"]["params"]),
                             fmt_int(r["c1"]["macs_own"]), fmt_int(r["c1"]["macs"]),
                             f"{r['c0']['macs'] / r['c1']['macs']:.2f}x", r["same"]))
    print_table(("model", "ratio", "framework", "channels removed", "analysis s", "score+select s", "surgery s",
                 "total s", "vs TP", "params after", "MACs after (own)", "conv+dense MACs after", "MACs cut",
                 "same channels"), rows, left=3)
    print()

    print("CPU latency of original and thin model in its own framework, ms per call (median); MACs cut = "
          "conv+dense MACs orig/thin;")
    print("efficiency = speed-up / MACs cut; 'best-of' = the same from the fastest sample of each model")
    rows = []
    for res in results:
        for r in res["lat"]:
            rows.append((res["name"], f"{r['ratio']:.0%}", r["fw"], r["batch"][1:], f"{r['orig'] * 1e3:.2f}",
                         f"{r['thin'] * 1e3:.2f}", f"{r['speed']:.2f}x", f"{r['cut']:.2f}x", f"{r['eff']:.2f}",
                         f"{r['eff_best']:.2f}"))
    print_table(("model", "ratio", "framework", "batch", "orig ms", "thin ms", "speed-up", "MACs cut",
                 "efficiency", "best-of"), rows, left=3)
    print()

    print("checks:")
    for res in results:
        print(f"  {res['name']}: Keras weights copied into all {res['copied']} weighted PyTorch modules")
        for line in res["checks"]:
            print(f"  {res['name']} {line}")
    print()

    print("targets: kerasprune's analysis+pruning no slower than Torch-Pruning's; efficiency at least as good")
    for res in results:
        times: Dict[float, Dict[str, float]] = {}
        for r in res["rows"]:
            times.setdefault(r["ratio"], {})[r["fw"]] = r["med"]["total"]
        eff: Dict[tuple, Dict[str, float]] = {}
        for r in res["lat"]:
            eff.setdefault((r["ratio"], r["batch"]), {})[r["fw"]] = r["eff"]
        for ratio, t in times.items():
            k, p = t["kerasprune"], t["Torch-Pruning"]
            parts = [f"time {k:.3f}s vs {p:.3f}s ({k / p:.2f}x, {'met' if k <= p else 'NOT met'})"]
            for batch in ("b1", "b32"):
                ek, ep = eff[(ratio, batch)]["kerasprune"], eff[(ratio, batch)]["Torch-Pruning"]
                parts.append(f"efficiency batch {batch[1:]} {ek:.2f} vs {ep:.2f} ({'met' if ek >= ep else 'NOT met'})")
            el = eff[(ratio, "b1")]["kerasprune TFLite"]
            ep = eff[(ratio, "b1")]["Torch-Pruning"]
            parts.append(f"TFLite batch 1 {el:.2f} vs {ep:.2f} ({'met' if el >= ep else 'NOT met'})")
            print(f"  {res['name']} {ratio:.0%}: " + "; ".join(parts))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(TORCH_MODELS), default=["resnet56", "vgg16_bn"])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5],
                   help="fractions of the prunable channels to remove, globally (default 0.3 0.5)")
    p.add_argument("--repeats", type=int, default=5, help="timed pruning repeats, median reported (default 5)")
    p.add_argument("--samples", type=int, default=7, help="interleaved latency samples, median reported (default 7)")
    p.add_argument("--max-other-load", type=float, default=0.25,
                   help="retake a pruning run or latency sample when other processes used more CPUs than this during it "
                        "(default 0.25)")
    p.add_argument("--retries", type=int, default=3, help="retakes of a loaded run or sample at most (default 3)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of both frameworks (default 2)")
    p.add_argument("--normalization", choices=list(NORMALIZERS), default="layer_mean",
                   help="per-group normalization of the scores, the same in both (default layer_mean = "
                        "Torch-Pruning's normalizer 'mean')")
    p.add_argument("--tp-importance", choices=("matched", "stock"), default="matched",
                   help="Torch-Pruning importance: 'matched' (filter L1 as kerasprune's l1, default) or "
                        "'stock' (GroupMagnitudeImportance(p=1), which also reads consumers and BN)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.samples < 1:
        p.error("--repeats and --samples must be at least 1")
    for r in args.ratios:
        if not 0.0 < r < 1.0:
            p.error(f"ratios must be in (0, 1), got {r}")

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", message="kerasprune: layer")
    tf.get_logger().setLevel("ERROR")  # a tf.function per model and batch: retracing notes

    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(1, 32, 32, 3)).astype("float32")
    x32 = rng.normal(size=(32, 32, 32, 3)).astype("float32")
    example = to_nchw(x1)
    load = {"prune": OtherLoad(), "latency": OtherLoad(), "retaken": 0, "loaded": 0}
    results = [bench_model(name, args, x1, x32, example, load) for name in args.models]
    report(results, args, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
