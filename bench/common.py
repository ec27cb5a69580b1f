"""Shared by the benchmarks: the environment they run in, and the machine and versions
they print beside their tables.

Importing this module (before keras or tensorflow) quiets TensorFlow's C++ logs, picks the
TensorFlow backend, puts the checkout on ``sys.path`` and points tensorflow-datasets at
the prepared offline MNIST when ``../shared/data/tfds`` is beside the checkout.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))
_SHARED_TFDS = _ROOT.parent / "shared" / "data" / "tfds"
if "TFDS_DATA_DIR" not in os.environ and _SHARED_TFDS.is_dir():
    os.environ["TFDS_DATA_DIR"] = str(_SHARED_TFDS)


def print_table(header, rows, left: int = 1, rule: bool = True) -> None:
    """Print ``rows`` of strings under ``header`` in aligned columns: the first ``left``
    columns left-justified, the others right-justified, a rule under the header."""
    table = [tuple(header)] + [tuple(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for j, r in enumerate(table):
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0 and rule:
            print("  ".join("-" * w for w in widths))


def machine() -> str:
    """CPU model, usable cores and operating system of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} usable cores ({os.cpu_count()} CPUs), {platform.system()} {platform.release()}"


def versions() -> str:
    """Versions of python, tensorflow, keras, numpy and kerasprune."""
    import keras
    import numpy as np
    import tensorflow as tf

    import kerasprune

    return (
        f"python {platform.python_version()}, tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"numpy {np.__version__}, kerasprune {kerasprune.__version__}"
    )
