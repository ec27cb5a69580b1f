"""A user's own model and data: kp.load_data's sources, and the command on a folder of PNGs.

The images are generated here: three classes of 16x16 grayscale images, each class a bright
vertical band at its own place on noise, read back with PIL as the reference.
"""

import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import kerasprune as kp
from kerasprune.cli import main
from kerasprune.data import data_kind, load_data

L = keras.layers
MNIST = Path(os.environ.get("TFDS_DATA_DIR")
             or Path(__file__).resolve().parents[2] / "shared" / "data" / "tfds")
needs_mnist = pytest.mark.skipif(not (MNIST / "mnist").exists(),
                                 reason="the prepared MNIST is not there")
CLASSES = ("band_left", "band_middle", "band_right")
PER_CLASS = 20


def _write_images(root):
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            img = rng.integers(0, 70, (16, 16), dtype=np.uint8)
            img[:, 1 + 5 * c:4 + 5 * c] = rng.integers(180, 255, (16, 3), dtype=np.uint8)
            Image.fromarray(img, mode="L").save(root / name / f"{i:02d}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images") / "pictures"
    _write_images(root)
    return root


def _model(compile_it=True):
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1))
    x = L.Rescaling(1 / 255, name="scale")(inp)  # the preprocessing, inside the model
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(16, activation="relu", name="fc")(x)
    model = keras.Model(inp, L.Dense(3, name="out")(x), name="bands")
    if compile_it:
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    """The tiny model trained for a few epochs on the folder, saved with its compile setup."""
    train, val = load_data(folder, image_size=(16, 16), channels=1, batch_size=8)
    model = _model()
    model.fit(train, epochs=6, verbose=0)
    path = tmp_path_factory.mktemp("model") / "bands.keras"
    model.save(path)
    return path


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kerasprune: error: "), err
    return err[0]


# --------------------------------------------------------------------------- the loaders


def test_a_folder_of_class_folders_gives_every_image_once_labelled_by_its_folder(folder):
    reference = {}  # pixels -> class index, read with PIL
    for c, name in enumerate(CLASSES):
        for png in sorted((folder / name).iterdir()):
            reference[np.asarray(Image.open(png)).tobytes()] = c
    splits = load_data(folder, image_size=(16, 16), channels=1, batch_size=7, val_fraction=0.25)
    assert splits.kind == "directory" and splits.num_classes == 3
    assert splits.input_shape == (16, 16, 1)
    seen = {}
    for part, ds in (("train", splits.train), ("val", splits.val)):
        for x, y in ds.unbatch().as_numpy_iterator():
            assert x.dtype == np.float32 and x.max() <= 255  # fed as they are: 0-255
            key = x[..., 0].astype(np.uint8).tobytes()
            assert reference[key] == y, "an image labelled with another folder's class"
            assert key not in seen, "an image in two places"
            seen[key] = part
    assert set(seen) == set(reference)
    assert list(seen.values()).count("val") == int(0.25 * len(reference))


def test_rescale_multiplies_the_inputs_and_the_datasets_read_the_same_images_each_time(folder):
    raw = load_data(folder, image_size=(16, 16), channels=1, batch_size=64)
    scaled = load_data(folder, image_size=(16, 16), channels=1, batch_size=64, rescale=1 / 255)
    a = np.concatenate([x for x, _ in raw.val.as_numpy_iterator()])
    b = np.concatenate([x for x, _ in scaled.val.as_numpy_iterator()])
    np.testing.assert_allclose(b, a / 255, rtol=1e-6)


def test_a_npz_gives_its_validation_pair_or_holds_out_a_seeded_fraction(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 5)).astype("float32"), np.arange(30) % 4
    xv, yv = rng.normal(size=(6, 5)).astype("float32"), np.arange(6) % 4
    np.savez(tmp_path / "pair.npz", x=x, y=y, x_val=xv, y_val=yv)
    train, val = load_data(tmp_path / "pair.npz", batch_size=4)
    got = np.concatenate([b for b, _ in val.as_numpy_iterator()])
    np.testing.assert_array_equal(got, xv)
    assert sorted(np.concatenate([b for _, b in train.as_numpy_iterator()])) == sorted(y)
    np.savez(tmp_path / "one.npz", x=x, y=y)
    splits = load_data(tmp_path / "one.npz", batch_size=4, val_fraction=0.2)
    assert splits.num_classes == 4
    held = np.concatenate([b for b, _ in splits.val.as_numpy_iterator()])
    kept = np.concatenate([b for b, _ in splits.train.as_numpy_iterator()])
    assert len(held) == 6 and len(kept) == 24
    np.testing.assert_array_equal(np.sort(np.concatenate([held, kept]), axis=0), np.sort(x, axis=0))


def test_module_function_is_imported_from_the_working_directory_and_used_as_it_is(
        tmp_path, monkeypatch):
    (tmp_path / "my_bands_data.py").write_text(
        "import tensorflow as tf\n"
        "SETS = (tf.data.Dataset.from_tensor_slices(([[1.0]], [0])).batch(1),\n"
        "        tf.data.Dataset.from_tensor_slices(([[2.0]], [1])).batch(1))\n"
        "def load():\n"
        "    return SETS\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_bands_data", raising=False)
    assert data_kind("my_bands_data:load") == "function"
    train, val = load_data("my_bands_data:load")
    module = sys.modules.pop("my_bands_data")
    assert train is module.SETS[0] and val is module.SETS[1]
    with pytest.raises(kp.DatasetError, match="used as they are: take"):
        load_data("my_bands_data:load", take=3)


@needs_mnist
def test_any_tfds_name_reads_its_splits_raw_and_rescale_gives_the_prepared_pixels():
    raw = load_data("mnist:3.0.1", val_split="test[:16]", take=8, batch_size=8, data_dir=MNIST,
                    download=False, rescale=1 / 255)
    prepared = load_data("mnist", val_split="test[:16]", take=8, batch_size=8, data_dir=MNIST,
                         download=False)
    assert raw.kind == "tfds" and raw.num_classes == 10 and raw.input_shape == (28, 28, 1)
    a = np.concatenate([x for x, _ in raw.val.as_numpy_iterator()])
    b = np.concatenate([x for x, _ in prepared.val.as_numpy_iterator()])
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "missing", "no such directory or file"),
    (lambda d: d / "missing.npz", "no such file"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "cannot read"),
], ids=["directory", "npz", "other_file"])
def test_a_source_that_is_not_there_is_a_dataset_error_naming_it(tmp_path, make, expected):
    source = make(tmp_path)
    with pytest.raises(kp.DatasetError, match=expected) as caught:
        load_data(source)
    assert str(source) in str(caught.value)


def test_empty_data_is_a_dataset_error_before_any_pipeline_runs(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(kp.DatasetError, match="No training images found"):
        load_data(tmp_path / "empty")
    for name in "ab":
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty" / name / "0.png")
    with pytest.raises(kp.DatasetError, match="holds 2 images, of which val_fraction 0.1"):
        load_data(tmp_path / "empty")
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 3)), y=np.zeros((0,), int))
    with pytest.raises(kp.DatasetError, match="holds no examples"):
        load_data(tmp_path / "none.npz")


# --------------------------------------------------------------------------- GradualPruner.run


def _arrays(n=24):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (n, 16, 16, 1)).astype("float32"), np.arange(n) % 3


@pytest.mark.parametrize("case, error, expected", [
    ("exclude", kp.SelectionError, "exclude pattern 'nothing_here\\*' matches nothing"),
    ("target", kp.TargetError, "'val_auc' is never measured.*val_accuracy"),
    ("no_loss", kp.RunError, "compiled without a loss"),
    ("empty_train", kp.DatasetError, "train_data holds no examples"),
    ("target_missed", kp.TargetNotMetError, "does not meet the target before any pruning"),
], ids=["exclude", "target", "no_loss", "empty_train", "target_missed"])
def test_gradual_run_refuses_bad_arguments_before_writing_anything(tmp_path, case, error,
                                                                   expected):
    import tensorflow as tf

    model = _model()
    x, y = _arrays()
    train = val = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    kwargs = dict(rounds=1, ratio=0.2)
    if case == "exclude":
        kwargs["exclude"] = ["nothing_here*"]
    if case == "target":
        kwargs = dict(target="val_auc>=0.5")
    if case == "target_missed":  # a random model on 3 classes
        kwargs = dict(target="val_accuracy>=0.99")
    if case == "no_loss":
        model.compile(optimizer="adam", metrics=["accuracy"])
    if case == "empty_train":
        train = train.take(0)
    pruner = kp.GradualPruner(tmp_path / "run", verbose=0, **kwargs)
    with pytest.raises(error, match=expected):
        pruner.run(model, train, val)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the command


def test_prune_report_export_of_a_users_model_on_a_folder_of_pngs(folder, trained, tmp_path,
                                                                  capsys):
    run = tmp_path / "run"
    code = main(["prune", str(trained), "--data", str(folder), "--target", "val_accuracy>=0.6",
                 "--dir", str(run), "--ratio", "0.2", "--rounds", "2", "--fine-tune-epochs", "1",
                 "--batch-size", "16", "-q"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "training setup (bands.keras's own): loss sparse_categorical_crossentropy, " \
           "optimizer SGD (lr 0.05), metrics accuracy" in out
    history = json.loads((run / "history.json").read_text())
    assert [r["round"] for r in history] == [0, 1, 2]
    assert history[0]["metrics"]["val_accuracy"] >= 0.6
    assert json.loads((run / "run.json").read_text())["target"] == "val_accuracy>=0.6"
    # the rounds fine-tuned with the saved setup: SGD at 0.05 on logits
    round1 = keras.models.load_model(run / "round_001.keras")
    assert type(round1.optimizer).__name__ == "SGD"
    assert float(round1.optimizer.learning_rate) == pytest.approx(0.05)
    assert round1.loss.get_config()["from_logits"] is True
    pruned = run / "pruned.keras"
    thin = keras.models.load_model(pruned)
    kept = [r for r in history if r["metrics"]["val_accuracy"] >= 0.6][-1]
    assert kp.count_params(thin).total == kept["params"] < history[0]["params"]

    assert main(["report", str(trained), str(pruned)]) == 0
    report = capsys.readouterr().out
    assert f"{history[0]['params']:,}" in report and f"{kept['params']:,}" in report

    tflite, saved = tmp_path / "thin.tflite", tmp_path / "thin_sm"
    code = main(["export", str(pruned), "--tflite", str(tflite), "--quantize", "int8",
                 "--calibration-data", str(folder), "--calibration-steps", "16",
                 "--saved-model", str(saved)])
    assert code == 0, capsys.readouterr().err
    assert tflite.stat().st_size > 0 and (saved / "saved_model.pb").exists()
    # the int8 file answers like the Keras model on the folder's images (the export's check)
    assert "TFLite:" in capsys.readouterr().out


def test_an_uncompiled_model_prunes_with_the_loss_and_optimizer_given(folder, tmp_path, capsys):
    path = tmp_path / "plain.keras"
    _model(compile_it=False).save(path)
    run = tmp_path / "run"
    code = main(["prune", str(path), "--data", str(folder), "--dir", str(run), "--rounds", "1",
                 "--ratio", "0.2", "--fine-tune-epochs", "0", "--loss", "sparse_categorical_crossentropy",
                 "--metrics", "accuracy", "--optimizer", "adam", "--lr", "0.002", "-q",
                 "--take", "24", "--val-take", "8", "--batch-size", "8"])
    assert code == 0, capsys.readouterr().err
    assert "with --loss, --metrics, --optimizer, --lr" in capsys.readouterr().out
    round1 = keras.models.load_model(run / "round_001.keras")
    assert type(round1.optimizer).__name__ == "Adam"
    assert float(round1.optimizer.learning_rate) == pytest.approx(0.002)
    assert "val_accuracy" in json.loads((run / "history.json").read_text())[1]["metrics"]


def _no_loss(tmp_path):
    path = tmp_path / "noloss.keras"
    model = _model(compile_it=False)
    model.compile(optimizer="adam")
    model.save(path)
    return path


def _empty_npz(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 16, 16, 1)), y=np.zeros((0,), int))
    return tmp_path / "empty.npz"


# argv after "prune MODEL --dir RUN" (FOLDER: the PNGs), what the one line says
WHY = {
    "exclude_matches_nothing": ("--data FOLDER --rounds 1 --exclude nothing_here*",
                                ["exclude pattern 'nothing_here*' matches nothing in model 'bands'"]),
    "target_never_measured": ("--data FOLDER --target val_auc>=0.5",
                              ["'val_auc' is never measured", "val_accuracy, val_loss"]),
    "uncompiled_model": ("--data FOLDER --rounds 1 MODEL=plain",
                         ["saved uncompiled", "pass --loss", "sparse_categorical_crossentropy"]),
    "model_without_loss": ("--data FOLDER --rounds 1 MODEL=noloss",
                           ["saved without a loss", "pass --loss"]),
    "empty_dataset": ("--data EMPTY --rounds 1", ["empty.npz holds no examples"]),
    "images_of_another_size": ("--data FOLDER --rounds 1 --image-size 12x12",
                               ["gives inputs of shape (12, 12, 1)", "takes (16, 16, 1)",
                                "--image-size"]),
    "another_number_of_classes": ("--data TWO --rounds 1",
                                  ["has 2 classes", "outputs 3 scores"]),
    "augment_of_a_folder": ("--data FOLDER --rounds 1 --augment",
                            ["augment (--augment) applies to the datasets", "RandomFlip"]),
    "data_and_dataset": ("--data FOLDER --dataset mnist --rounds 1",
                         ["--data or --dataset, not both"]),
    "unknown_loss": ("--data FOLDER --rounds 1 --loss crossentropy",
                     ["--loss", "Keras has no loss named 'crossentropy'"]),
    "missing_folder": ("--data FOLDER/nowhere --rounds 1",
                       ["--data", "no such directory or file"]),
    "ratio_0": ("--data FOLDER --rounds 1 --ratio 0", ["--ratio", "between 0 and 1", "got 0"]),
}


@pytest.mark.parametrize("line, expected", WHY.values(), ids=list(WHY))
def test_a_command_that_fails_on_its_arguments_says_why_in_one_line_and_writes_nothing(
        folder, trained, tmp_path, capsys, line, expected):
    two = tmp_path / "two"
    for name in CLASSES[:2]:
        (two / name).mkdir(parents=True)
        for png in sorted((folder / name).iterdir())[:10]:
            (two / name / png.name).write_bytes(png.read_bytes())
    paths = {"FOLDER": str(folder), "EMPTY": str(_empty_npz(tmp_path)), "TWO": str(two)}
    model = str(trained)
    args = []
    for arg in line.split():
        if arg.startswith("MODEL="):
            name = arg.split("=")[1]
            if name == "plain":
                _model(compile_it=False).save(tmp_path / "plain.keras")
                model = str(tmp_path / "plain.keras")
            else:
                model = str(_no_loss(tmp_path))
            continue
        for key, value in paths.items():
            arg = arg.replace(key, value)
        args.append(arg)
    run = tmp_path / "run"
    assert main(["prune", model, "--dir", str(run), "-q", *args]) == 1
    error = one_error_line(capsys)
    assert all(e in error for e in expected), error
    assert not run.exists(), "a command that failed on its arguments wrote its run directory"


def test_the_data_help_says_where_the_preprocessing_goes(capsys):
    assert main(["prune", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "inputs are fed as they are" in out and "--rescale" in out
    assert "a model saved without a loss needs --loss" in out
