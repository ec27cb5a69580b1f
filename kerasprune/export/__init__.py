"""Deploying a thin model: TFLite (float32, float16, int8) checked against Keras, SavedModel,
and sizes on disk.

::

    from kerasprune.export import export_tflite, export_saved_model

    result = export_tflite(thin, "thin.tflite", quantize="int8", calibration_data=train_ds)
    print(result)        # file, bytes, max |Keras - TFLite| on sample inputs
    export_saved_model(thin, "thin_savedmodel")
"""

from kerasprune.export.interpreter import interpreter_name, make_interpreter, run_tflite
from kerasprune.export.saved_model import directory_bytes, disk_sizes, export_saved_model
from kerasprune.export.tflite import (
    QUANTIZATIONS,
    TOLERANCES,
    ExportError,
    TFLiteExport,
    export_tflite,
    sample_batches,
)

__all__ = [
    "export_tflite",
    "export_saved_model",
    "disk_sizes",
    "directory_bytes",
    "TFLiteExport",
    "ExportError",
    "make_interpreter",
    "run_tflite",
    "interpreter_name",
    "sample_batches",
    "QUANTIZATIONS",
    "TOLERANCES",
]
