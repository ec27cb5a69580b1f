"""Running a TFLite model: the LiteRT interpreter, or TensorFlow's where LiteRT is missing.

``tf.lite.Interpreter`` is deprecated in favour of the ``ai-edge-litert`` package
(``from ai_edge_litert.interpreter import Interpreter``); kerasprune uses LiteRT when it
is installed (``pip install kerasprune[export]``) and falls back to TensorFlow's copy,
silencing its deprecation warning, so that checking an export never needs an extra.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Union

import numpy as np

from kerasprune.backend import require_tensorflow
from kerasprune.errors import ExportError

__all__ = ["make_interpreter", "run_tflite", "interpreter_name"]


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore

        return Interpreter, "LiteRT"
    except ImportError:
        tf = require_tensorflow("running a TFLite model without ai-edge-litert (pip install ai-edge-litert)")
        return tf.lite.Interpreter, "tf.lite"


def interpreter_name() -> str:
    """``"LiteRT"`` when the ai-edge-litert interpreter is used, else ``"tf.lite"``."""
    return _interpreter_class()[1]


def make_interpreter(model: Union[bytes, str], num_threads: Optional[int] = None):
    """An interpreter for a TFLite flatbuffer (bytes) or ``.tflite`` file path."""
    cls, _ = _interpreter_class()
    kwargs = {"model_content": model} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    if num_threads is not None:
        kwargs["num_threads"] = int(num_threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(**kwargs)


def run_tflite(interpreter, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Run ``interpreter`` on one batch (one array per model input); returns its outputs.

    The batch dimension is resized to the batch given; inputs are matched to the
    interpreter's input tensors in order.
    """
    details = interpreter.get_input_details()
    if len(details) != len(inputs):
        raise ExportError(f"the TFLite model has {len(details)} inputs, {len(inputs)} given")
    for d, x in zip(details, inputs):
        if tuple(d["shape"]) != tuple(x.shape):
            interpreter.resize_tensor_input(d["index"], list(x.shape))
    interpreter.allocate_tensors()
    for d, x in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(d["index"], np.asarray(x, dtype=d["dtype"]))
    interpreter.invoke()
    return [np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()]
