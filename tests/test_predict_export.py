"""predict.py and export.py: predictions that agree with evaluate.py, images of any kind,
unreadable files, class names, and exported models that give predict.py's results, loaded in
the test's process or (end-to-end tier) in a fresh process that cannot import the template."""

import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_in_process, run_script, train_in_process, write_built_dataset
from PIL import Image


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained 5 epochs on a tiny built dataset, one that has learnt enough to predict more
    than one class: (model_dir, data_dir). Deterministic: the same model in every run of the tests, so that
    a comparison of two preprocessings never meets a model left by chance with near ties."""
    root = tmp_path_factory.mktemp("predict")
    data_dir = write_built_dataset(root / "16x16_SIGNS", seed=3, num_test=36)
    train_in_process(root / "experiment", data_dir, num_epochs=5, learning_rate=0.01, deterministic=True)
    return root / "experiment", data_dir


def predict(model_dir, *args):
    return run_in_process("predict.py", "--model_dir", model_dir, *args)


def read_csv(path):
    with open(path) as f:
        return {row["image"]: row for row in csv.DictReader(f)}


def test_predictions_on_the_test_split_agree_with_evaluate(trained, tmp_path):
    model_dir, data_dir = trained
    evaluated = run_in_process("evaluate.py", "--model_dir", model_dir, "--data_dir", data_dir)
    assert evaluated.returncode == 0, evaluated.stderr
    accuracy = json.loads((model_dir / "metrics_test_best_weights.json").read_text())["accuracy"]

    result = predict(model_dir, data_dir / "test", "--output", tmp_path / "predictions.csv", "--top_k", "3")

    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "predictions.csv")
    assert len(rows) == 36
    correct = [name.split("/")[-1].split("_")[0] == row["class_1"] for name, row in rows.items()]
    assert np.mean(correct) == pytest.approx(accuracy, abs=1e-6)
    for row in rows.values():  # the top 3, most likely first
        probabilities = [float(row[f"probability_{rank}"]) for rank in (1, 2, 3)]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-5
    assert "Predicted 36 images" in (model_dir / "predict.log").read_text()


def test_images_of_any_kind_are_read_and_unreadable_ones_skipped_with_the_reason(trained, tmp_path, monkeypatch):
    model_dir, data_dir = trained
    rng = np.random.default_rng(0)
    pixels = np.clip(np.array([200, 40, 40]) + rng.normal(0, 25, (30, 20, 3)), 0, 255).astype(np.uint8)
    folder = tmp_path / "new"
    folder.mkdir()
    Image.fromarray(pixels).save(folder / "upright.png")
    # The same picture stored sideways with an EXIF tag saying so, as phones do
    sideways = Image.fromarray(np.rot90(pixels, k=1))  # turned 90 degrees anticlockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to display
    sideways.save(folder / "sideways.png", exif=exif)
    Image.fromarray(pixels).convert("L").save(folder / "grey.jpg")
    Image.fromarray(np.dstack([pixels, np.full((30, 20), 128, np.uint8)])).save(folder / "alpha.png")
    Image.fromarray(np.repeat(np.repeat(pixels, 20, axis=0), 20, axis=1)).save(folder / "large.jpg")  # 600x400
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "cut.jpg").write_bytes(next((data_dir / "test").iterdir()).read_bytes()[:300])
    shutil.copy(next((data_dir / "test").iterdir()), folder / "locked.jpg")
    (folder / "notes.txt").write_text("not an image, and not an image's name")
    system_open = open

    def refusing_open(file, *args, **kwargs):  # a file the user may not read, as the system refuses it
        if str(file).endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", str(file))
        return system_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)

    result = predict(model_dir, folder, "--output", tmp_path / "p.csv", "--top_k", "2")

    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "p.csv")
    assert sorted(name.split("/")[-1] for name in rows) == [
        "alpha.png",
        "grey.jpg",
        "large.jpg",
        "sideways.png",
        "upright.png",
    ]
    assert f"Skipped {folder / 'broken.jpg'}: not an image that can be read (damaged, cut short" in result.stderr
    assert f"Skipped {folder / 'cut.jpg'}: not an image that can be read (damaged, cut short" in result.stderr
    assert f"Skipped {folder / 'locked.jpg'}: Permission denied. Check its permissions" in result.stderr
    assert "skipped 3 unreadable" in result.stderr
    by_name = {name.split("/")[-1]: row for name, row in rows.items()}
    # EXIF honoured: the sideways file is predicted exactly as the upright one
    assert by_name["sideways.png"]["probability_1"] == by_name["upright.png"]["probability_1"]
    assert by_name["sideways.png"]["class_1"] == by_name["upright.png"]["class_1"]


@pytest.mark.parametrize("factor", [1, 2], ids=["image_size", "twice image_size, average-pooled"])
def test_the_tflite_model_gives_predict_pys_classes(trained, tmp_path, factor):
    import tensorflow as tf

    model_dir, data_dir = trained
    size = 16 * factor  # the tiny dataset's image_size, or twice it
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((data_dir / "test").iterdir()):  # the test images, at the size the phone gives
        Image.open(path).resize((size, size), Image.Resampling.BICUBIC).save(photos / f"{path.stem}.png")
    exported = run_in_process(
        "export.py",
        "--model_dir",
        model_dir,
        "--format",
        "tflite",
        "--tflite_size",
        size,
        "--output_dir",
        tmp_path / "x",
    )
    predicted = predict(model_dir, photos, "--output", tmp_path / "p.csv", "--top_k", "1")

    assert exported.returncode == 0 and predicted.returncode == 0, exported.stderr + predicted.stderr
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "x" / "model.tflite"))
    interpreter.allocate_tensors()
    (pixels,), (probabilities,) = interpreter.get_input_details(), interpreter.get_output_details()
    agree = []
    for name, row in read_csv(tmp_path / "p.csv").items():
        interpreter.set_tensor(pixels["index"], np.asarray(Image.open(name).convert("RGB"))[None])
        interpreter.invoke()
        agree.append(str(int(np.argmax(interpreter.get_tensor(probabilities["index"])))) == row["class_1"])
    assert len(agree) == 36 and np.mean(agree) >= 35 / 36


LOAD_TFLITE = """
import json, sys
import numpy as np
import tensorflow as tf
from PIL import Image
interpreter = tf.lite.Interpreter(model_path=sys.argv[1])
interpreter.allocate_tensors()
(pixels,), (probabilities,) = interpreter.get_input_details(), interpreter.get_output_details()
classes = []
for name in sys.argv[2:]:
    interpreter.set_tensor(pixels["index"], np.asarray(Image.open(name).convert("RGB"))[None])
    interpreter.invoke()
    classes.append(str(int(np.argmax(interpreter.get_tensor(probabilities["index"])))))
print(json.dumps(classes))
"""


@pytest.mark.slow
def test_the_tflite_model_loads_in_a_fresh_process_and_gives_predict_pys_classes(trained, tmp_path):
    model_dir, data_dir = trained
    images = sorted(str(path) for path in (data_dir / "test").iterdir())
    assert (
        run_script("export.py", "--model_dir", model_dir, "--format", "tflite", "--output_dir", tmp_path).returncode
        == 0
    )
    predicted = predict(model_dir, data_dir / "test", "--output", tmp_path / "p.csv", "--top_k", "1")
    loaded = subprocess.run(  # a process that cannot import the template: TensorFlow, NumPy and Pillow only
        [sys.executable, "-c", LOAD_TFLITE, str(tmp_path / "model.tflite"), *images],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert predicted.returncode == 0 and loaded.returncode == 0, loaded.stderr
    expected = read_csv(tmp_path / "p.csv")
    assert json.loads(loaded.stdout.splitlines()[-1]) == [expected[name]["class_1"] for name in images]


def test_class_names_come_from_the_datasets_classes_json(trained, tmp_path):
    model_dir, data_dir = trained
    names = ["zero", "one", "two", "three", "four", "five"]
    data_copy = tmp_path / "named"
    shutil.copytree(data_dir / "test", data_copy / "test")
    (data_copy / "classes.json").write_text(json.dumps(dict(enumerate(names))))

    result = predict(model_dir, data_copy / "test", "--data_dir", data_copy, "--output", tmp_path / "p.csv")

    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "p.csv").values()
    assert {row["class_1"] for row in rows} <= set(names) and len({row["class_1"] for row in rows}) > 1
    # (Without a classes.json, as in the tiny dataset, the names are the label numbers: the
    # agreement with evaluate.py above compares them with the labels in the file names.)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["does/not/exist.jpg"], "does/not/exist.jpg does not exist"),
        (["--top_k", "0", "x.jpg"], "--top_k must be at least 1"),
    ],
)
def test_predict_mistakes_are_clear_errors(trained, args, expected):
    model_dir, _ = trained
    result = run_in_process("predict.py", "--model_dir", model_dir, *args)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_a_folder_with_only_unreadable_files_is_an_error(trained, tmp_path):
    model_dir, _ = trained
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    result = run_in_process("predict.py", "--model_dir", model_dir, tmp_path / "bad.jpg")
    assert result.returncode == 2
    assert "None of the files could be read" in result.stderr and "Traceback" not in result.stderr


# Loads the exports in a process of its own, from a folder where the template cannot be
# imported: the SavedModel must need no Python code. Prints {image: [class, probability]}.
LOAD_EXPORTS = """
import json, sys
import numpy as np
import tensorflow as tf
export_dir, repo, images = sys.argv[1], sys.argv[2], sys.argv[3:]
serving = tf.saved_model.load(export_dir + "/saved_model")
from_bytes = serving.signatures["serving_default"](image_bytes=tf.constant([open(p, "rb").read() for p in images]))
results = {"bytes": {p: [c.decode(), float(max(q))] for p, c, q in
                     zip(images, from_bytes["class"].numpy(), from_bytes["probabilities"].numpy())}}
from PIL import Image
results["pixels"] = {}
for p in images:
    out = serving.signatures["serve_pixels"](pixels=tf.constant(np.asarray(Image.open(p).convert("RGB"))[None]))
    results["pixels"][p] = [out["class"].numpy()[0].decode(), float(out["probabilities"].numpy().max())]
sys.path.insert(0, repo)
import model.input_fn, model.utils.layers  # noqa: F401  the .keras file's layers are the template's
keras_model = tf.keras.models.load_model(export_dir + "/model.keras")
results["keras"] = {}
for p in images:
    q = keras_model.predict(np.asarray(Image.open(p).convert("RGB"))[None], verbose=0)[0]
    results["keras"][p] = [str(int(q.argmax())), float(q.max())]
print(json.dumps(results))
"""


def load_exports(export_dir, images, fresh_process):
    """{export: {image: [class, probability]}} of LOAD_EXPORTS, run in a fresh process or here."""
    args = [str(export_dir), str(REPO), *images]
    if fresh_process:
        loaded = subprocess.run(
            [sys.executable, "-c", LOAD_EXPORTS, *args],
            cwd=export_dir.parent,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert loaded.returncode == 0, loaded.stderr
        return json.loads(loaded.stdout.splitlines()[-1])
    argv, path, printed = sys.argv, list(sys.path), io.StringIO()
    sys.argv = ["-c", *args]
    try:
        with contextlib.redirect_stdout(printed):
            exec(LOAD_EXPORTS, {"__name__": "__main__"})
    finally:
        sys.argv, sys.path[:] = argv, path
    return json.loads(printed.getvalue().splitlines()[-1])


@pytest.fixture(params=["this_process", pytest.param("a_fresh_process", marks=pytest.mark.slow)])
def fresh_process(request):
    """Whether the exports are loaded in a fresh process, as a user's server loads them (end-to-end
    tier, with predict.py and export.py run as a user runs them), or in the test's process."""
    return request.param == "a_fresh_process"


def test_exported_models_give_predict_py_results(trained, tmp_path, fresh_process):
    model_dir, data_dir = trained
    images = sorted(str(p) for p in (data_dir / "test").iterdir())[:12]
    big = tmp_path / "big.png"  # not the model's size: the exports must resize as predict.py does
    Image.open(images[0]).resize((50, 70), Image.Resampling.NEAREST).save(big)
    images.append(str(big))
    run = run_script if fresh_process else run_in_process
    predicted = run("predict.py", "--model_dir", model_dir, *images, "--output", tmp_path / "p.csv")
    assert predicted.returncode == 0, predicted.stderr
    expected = {
        name: (row["class_1"], float(row["probability_1"])) for name, row in read_csv(tmp_path / "p.csv").items()
    }

    exported = run("export.py", "--model_dir", model_dir, "--output_dir", tmp_path / "export")
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "export/classes.json").read_text()) == {str(i): str(i) for i in range(6)}
    for export, predictions in load_exports(tmp_path / "export", images, fresh_process).items():
        for image in images:
            label, probability = predictions[image]
            assert label == expected[image][0], (export, image)
            assert probability == pytest.approx(expected[image][1], abs=1e-5), (export, image)


def test_predict_and_the_exports_make_images_square_as_the_data_was_built(trained, tmp_path, fresh_process):
    # The data a model trained on was built with --resize crop: a wide photo whose centre square
    # is a test image must then be classified as that image, by predict.py and every export.
    model_dir, data_dir = trained
    cropped_data = tmp_path / "cropped_data"
    cropped_data.mkdir()
    (cropped_data / "build.json").write_text(json.dumps({"size": 16, "resize": "crop"}))
    original = sorted((data_dir / "test").iterdir())[0]
    wide = np.random.default_rng(0).integers(0, 256, (16, 48, 3), np.uint8)
    wide[:, 16:32] = np.asarray(Image.open(original))
    Image.fromarray(wide).save(tmp_path / "wide.png")
    images = [str(original), str(tmp_path / "wide.png")]

    run = run_script if fresh_process else run_in_process
    predicted = run(
        "predict.py", "--model_dir", model_dir, *images, "--data_dir", cropped_data, "--output", tmp_path / "p.csv"
    )
    squashed = run(
        "predict.py", "--model_dir", model_dir, *images, "--output", tmp_path / "squashed.csv"
    )  # its own data: squash

    assert predicted.returncode == 0 and squashed.returncode == 0, predicted.stderr + squashed.stderr
    rows = read_csv(tmp_path / "p.csv")
    # The CSV rounds to 6 decimals: one probability, computed at two places of a batch, can
    # print 0.493764 and 0.493765.
    same = pytest.approx(float(rows[images[0]]["probability_1"]), abs=1.5e-6)
    assert float(rows[images[1]]["probability_1"]) == same
    assert rows[images[1]]["class_1"] == rows[images[0]]["class_1"]
    squashed_rows = read_csv(tmp_path / "squashed.csv")
    assert squashed_rows[images[1]]["probability_1"] != rows[images[1]]["probability_1"]

    exported = run("export.py", "--model_dir", model_dir, "--data_dir", cropped_data, "--output_dir", tmp_path / "e")
    assert exported.returncode == 0, exported.stderr
    for export, predictions in load_exports(tmp_path / "e", images, fresh_process).items():
        for image in images:
            assert predictions[image][0] == rows[image]["class_1"], (export, image)
            assert predictions[image][1] == pytest.approx(float(rows[image]["probability_1"]), abs=1e-5), export
