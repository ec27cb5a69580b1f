"""Export: TFLite (float32, float16, int8) agrees with Keras, SavedModel serves the same
outputs, sizes on disk shrink with the model, and the command's messages."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from models import randomize, residual_net

import kerasprune as kp
from kerasprune.cli import main
from kerasprune.export import (
    ExportError,
    disk_sizes,
    export_saved_model,
    export_tflite,
    interpreter_name,
    make_interpreter,
    run_tflite,
)


@pytest.fixture(scope="module")
def thin_and_data():
    keras.utils.set_random_seed(0)
    model = randomize(residual_net())
    graph = kp.analyze(model)
    thin = kp.rebuild(model, {g.name: range(g.size - 2) for g in graph.prunable}, graph=graph)
    x = np.random.default_rng(1).normal(size=(96, 8, 8, 3)).astype("float32")
    return model, thin, x


def keras_out(model, x):
    return np.asarray(model(x, training=False))


def test_float32_tflite_equals_keras_on_fresh_inputs(tmp_path, thin_and_data):
    _, thin, x = thin_and_data
    result = export_tflite(thin, tmp_path / "thin.tflite", check_data=x[:16])
    assert result.path.exists() and result.bytes == os.path.getsize(result.path)
    assert result.max_abs_diff < 1e-4 and result.interpreter == interpreter_name()
    fresh = x[50:90]  # not used by the check
    got = run_tflite(make_interpreter(str(result.path)), [fresh])[0]
    np.testing.assert_allclose(got, keras_out(thin, fresh), rtol=1e-4, atol=1e-5)


def test_the_litert_interpreter_is_used_when_installed():
    pytest.importorskip("ai_edge_litert")
    assert interpreter_name() == "LiteRT"


@pytest.mark.parametrize("quantize, limit", [("float16", 0.01), ("int8", 0.1)])
def test_quantized_tflite_is_smaller_and_close_to_keras(tmp_path, thin_and_data, quantize, limit):
    _, thin, x = thin_and_data
    plain = export_tflite(thin, tmp_path / "f32.tflite")
    result = export_tflite(thin, tmp_path / f"{quantize}.tflite", quantize=quantize, calibration_data=x[:64])
    assert result.bytes < plain.bytes
    fresh = x[64:]
    ref = keras_out(thin, fresh)
    got = run_tflite(make_interpreter(str(result.path)), [fresh])[0]
    assert np.max(np.abs(got - ref)) <= limit * (ref.max() - ref.min())
    if quantize == "int8":
        interp = make_interpreter(str(result.path))
        kinds = {d["dtype"] for d in interp.get_tensor_details()}
        assert np.int8 in kinds


def test_int8_without_calibration_and_a_failed_check_write_nothing(tmp_path, thin_and_data):
    _, thin, x = thin_and_data
    with pytest.raises(ExportError, match="calibration_data"):
        export_tflite(thin, tmp_path / "a.tflite", quantize="int8")
    with pytest.raises(ExportError, match="not written"):
        export_tflite(thin, tmp_path / "b.tflite", quantize="int8", calibration_data=x[:32], tolerance=1e-9)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ExportError, match=".tflite"):
        export_tflite(thin, tmp_path / "c.bin")


def test_saved_model_serves_the_keras_outputs(tmp_path, thin_and_data):
    _, thin, x = thin_and_data
    path = export_saved_model(thin, tmp_path / "sm")
    loaded = tf.saved_model.load(str(path))  # keep it alive while serving
    served = loaded.serve(tf.constant(x[:8]))
    np.testing.assert_allclose(np.asarray(served), keras_out(thin, x[:8]), rtol=1e-5, atol=1e-6)


def test_disk_sizes_shrink_with_the_thin_model(thin_and_data):
    model, thin, _ = thin_and_data
    before, after = disk_sizes(model), disk_sizes(thin)
    assert set(before) == {"keras", "saved_model", "tflite"}
    assert all(after[k] < before[k] for k in before)


def test_export_command_writes_checked_files_and_reports_errors_in_one_line(tmp_path, thin_and_data, capsys):
    model, thin, x = thin_and_data
    thin.save(tmp_path / "thin.keras")
    model.save(tmp_path / "base.keras")
    np.save(tmp_path / "calib.npy", x[:64])
    code = main(["export", str(tmp_path / "thin.keras"), "--tflite", str(tmp_path / "t.tflite"),
                 "--saved-model", str(tmp_path / "sm"), "--quantize", "int8",
                 "--calibration-data", str(tmp_path / "calib.npy")])
    assert code == 0
    out = capsys.readouterr().out
    assert "max |Keras - TFLite|" in out and (tmp_path / "t.tflite").exists() and (tmp_path / "sm").is_dir()
    assert main(["export", str(tmp_path / "thin.keras"), "--tflite", str(tmp_path / "u.tflite"),
                 "--quantize", "int8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibration_data" in err[0]
    assert main(["report", str(tmp_path / "base.keras"), str(tmp_path / "thin.keras"), "--sizes"]) == 0
    out = capsys.readouterr().out
    assert "SavedModel" in out and "TFLite float32" in out
