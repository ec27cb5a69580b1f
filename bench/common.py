"""What every benchmark prints beside its table: the machine and the versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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
