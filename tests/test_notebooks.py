"""The notebooks in notebooks/ run top to bottom (small size) and draw their plots.

Each notebook is executed with nbclient in a kernel started from this interpreter (a
kernelspec written into a temporary ``JUPYTER_PATH`` that points at ``sys.executable``),
so the kernel sees the same virtual environment as the tests, whatever kernelspecs the
machine has installed. ``KERASPRUNE_NOTEBOOK_SMALL=1`` shrinks data and epochs.
"""

import ast
import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

from kerasprune.models import get_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
MNIST = ROOT.parent / "shared" / "data" / "tfds"
needs_mnist = pytest.mark.skipif(
    not (MNIST.exists() or os.environ.get("TFDS_DATA_DIR")), reason="the prepared MNIST is not beside the checkout"
)
KERNEL = "kerasprune-tests"


def _kernel_dir(tmp_path: Path) -> Path:
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "kerasprune tests",
                "language": "python",
            }
        )
    )
    return tmp_path / "jupyter"


def run_notebook(name: str, tmp_path: Path, monkeypatch) -> "nbformat.NotebookNode":
    """Execute ``notebooks/name`` at the small size with ``tmp_path`` as working directory."""
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_dir(tmp_path)))
    monkeypatch.setenv("KERASPRUNE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if MNIST.exists():
        monkeypatch.setenv("TFDS_DATA_DIR", os.environ.get("TFDS_DATA_DIR", str(MNIST)))
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(work)}}
    )
    client.execute()
    return nb


def stdout_of(nb, marker: str) -> str:
    """The printed text of the code cell whose source contains ``marker``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and marker in cell.source:
            return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    raise AssertionError(f"no cell contains {marker!r}")


def printed_pattern(nb):
    """The pattern data a notebook printed with ``print(pattern)``."""
    text = stdout_of(nb, "print(pattern)").strip().splitlines()
    rows = [ast.literal_eval(line) for line in text if line.startswith("[(")]
    assert rows, text
    return rows[-1]


def assert_images(folder: Path, names):
    for name in names:
        path = folder / name
        assert path.is_file(), f"{path} was not written"
        data = path.read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", path


def test_notebooks_are_stored_without_outputs_and_have_the_small_switch():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert len(names) == 3, names
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert 'SMALL = os.environ.get("KERASPRUNE_NOTEBOOK_SMALL") == "1"' in code[0].source, name


@needs_mnist
def test_gradual_lenet_notebook_prunes_and_draws_its_plots(tmp_path, monkeypatch):
    nb = run_notebook("01_gradual_lenet5_mnist.ipynb", tmp_path, monkeypatch)
    out = tmp_path / "work" / "runs" / "notebook_01_lenet"
    assert_images(out, ["saliency_none.png", "saliency_layer_mean.png", "run.png", "pattern.png"])
    pattern = printed_pattern(nb)
    assert [p[0] for p in pattern] == ["conv1", "conv2", "fc1"]
    assert [p[1] for p in pattern] == [20, 50, 500]
    assert all(1 <= after <= before for _, before, after in pattern)
    assert sum(p[2] for p in pattern) < 570  # the rounds removed neurons
    assert (out / "lenet5_thin.keras").is_file()
    history = json.loads((out / "gradual" / "history.json").read_text())
    assert [r["round"] for r in history][:2] == [0, 1]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert "test accuracy" in stdout_of(nb, "lenet5_thin.keras")


@needs_mnist
def test_soft_pruning_notebook_strips_to_the_masked_accuracy(tmp_path, monkeypatch):
    nb = run_notebook("02_soft_filter_pruning.ipynb", tmp_path, monkeypatch)
    out = tmp_path / "work" / "runs" / "notebook_02_soft"
    assert_images(out, ["saliency.png", "pattern.png"])
    pattern = printed_pattern(nb)
    assert [p[0] for p in pattern] == ["conv1", "conv2", "fc1"]
    assert sum(p[2] for p in pattern) < sum(p[1] for p in pattern)  # channels were removed
    text = stdout_of(nb, "kp.strip(model)")
    found = re.search(r"val_accuracy masked ([0-9.]+), thin ([0-9.]+)", text)
    assert found, text
    masked, thin = float(found.group(1)), float(found.group(2))
    assert masked == pytest.approx(thin, abs=2e-3)
    assert (out / "lenet5_soft_thin.keras").is_file()
    events = stdout_of(nb, "events = read_events")
    assert "params" in events and "width/conv1" in events and "saliency/" in events


def test_resnet_notebook_prunes_exports_and_times(tmp_path, monkeypatch):
    nb = run_notebook("03_resnet_groups_tflite.ipynb", tmp_path, monkeypatch)
    out = tmp_path / "work" / "runs" / "notebook_03_resnet"
    assert_images(out, ["saliency.png", "pattern.png"])
    convs = [layer.name for layer in get_model("resnet20").layers if layer.__class__.__name__ == "Conv2D"]
    pattern = printed_pattern(nb)
    assert [p[0] for p in pattern] == convs
    assert sum(p[2] for p in pattern) < sum(p[1] for p in pattern)
    assert (out / "resnet20_thin.tflite").stat().st_size > 0
    assert "speed-up" in stdout_of(nb, "median_seconds(lambda: call(batch)")
    assert "prunable groups" in stdout_of(nb, "graph.summary()")
