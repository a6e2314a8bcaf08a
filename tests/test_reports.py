"""What a user reads after a run: evaluate.py's per-class results and confusion matrix (JSON,
log, PNG, TensorBoard), class names in TensorBoard, and HParams showing the run's best metrics."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_in_process, train_in_process, write_built_dataset
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from model.utils.report import per_class, picture, table

CLASSES = ["fist", "one", "two", "three", "four", "five"]


def events(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def scalar(accumulator, tag):
    """The last value written under a scalar tag."""
    return float(tf.make_ndarray(accumulator.Tensors(tag)[-1].tensor_proto))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A model trained 3 epochs on a tiny dataset with class names, then evaluated on test."""
    root = tmp_path_factory.mktemp("reports")
    data_dir = write_built_dataset(root / "16x16_HANDS", seed=5, num_test=30)
    (data_dir / "classes.json").write_text(json.dumps(dict(enumerate(CLASSES))))
    model_dir = root / "experiment"
    train_in_process(model_dir, data_dir, num_epochs=3)
    result = run_in_process("evaluate.py", "--model_dir", model_dir)  # the data the run trained on
    assert result.returncode == 0, result.stderr
    return model_dir, result


def test_per_class_results_are_computed_from_the_confusion_matrix():
    confusion = [[3, 1, 0], [2, 4, 0], [0, 0, 0]]  # a row per true class

    report = per_class(confusion, ["a", "b", "c"])

    assert report["a"] == pytest.approx({"precision": 3 / 5, "recall": 3 / 4, "f1": 2 / 3, "support": 4})
    assert report["b"] == pytest.approx({"precision": 4 / 5, "recall": 4 / 6, "f1": 8 / 11, "support": 6})
    assert report["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # never seen, no error
    lines = table(report, np.array(confusion)).splitlines()
    assert lines[1].split() == ["0", "a", "0.600", "0.750", "0.667", "4"]
    assert lines[-2].split() == ["1", "b", "2", "4", "0"]


def test_the_confusion_picture_has_a_cell_per_pair_shaded_by_its_share():
    image = np.asarray(picture(np.array([[9, 1], [0, 10]]), ["cat", "dog"]))
    assert image.ndim == 3 and image.shape[2] == 3
    # The darkest blue cells are the diagonal's: count 9 of 10 and 10 of 10
    blue_only = (image[..., 2] == 255) & (image[..., 0] < 60)
    assert blue_only.sum() > 2 * 25 * 25


def test_evaluate_writes_per_class_results_and_the_confusion_matrix(evaluated):
    model_dir, result = evaluated
    metrics = json.loads((model_dir / "metrics_test_best_weights.json").read_text())

    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.shape == (6, 6) and confusion.sum() == 30
    assert list(metrics["per_class"]) == CLASSES
    assert [metrics["per_class"][name]["support"] for name in CLASSES] == [5] * 6
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / 30)
    # The same table in the log, with the class names
    log = (model_dir / "evaluate.log").read_text()
    assert "precision  recall     f1  support" in log and "0 fist" in log and "5 five" in log
    assert "Confusion matrix" in log
    # The picture, as a PNG beside the metrics
    with Image.open(model_dir / "confusion_matrix_test_best_weights.png") as png:
        assert png.format == "PNG" and png.width > 6 * 30 and png.height > 6 * 30


def test_evaluation_results_and_picture_are_in_tensorboard(evaluated):
    model_dir, _ = evaluated
    metrics = json.loads((model_dir / "metrics_test_best_weights.json").read_text())

    root = events(model_dir)  # the run's own folder: what the HParams dashboard reads

    assert scalar(root, "test_best_weights/accuracy") == pytest.approx(metrics["accuracy"])
    [image] = root.Tensors("confusion_matrix/test_best_weights")
    width, height = (int(v) for v in tf.make_ndarray(image.tensor_proto)[:2])
    with Image.open(model_dir / "confusion_matrix_test_best_weights.png") as png:
        assert (width, height) == png.size


def test_hparams_shows_the_best_dev_metrics_not_the_last(evaluated):
    model_dir, _ = evaluated
    history = [json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines()]
    best = max(history, key=lambda record: record["accuracy"])  # the first of the best, as best_weights

    root = events(model_dir)

    assert scalar(root, "best_dev/accuracy") == pytest.approx(best["accuracy"])
    assert scalar(root, "best_dev/loss") == pytest.approx(best["loss"])
    assert json.loads((model_dir / "metrics_eval_best_weights.json").read_text())["epoch"] == best["epoch"]


def test_misclassified_images_are_one_picture_per_predicted_class_tagged_with_its_name(evaluated):
    model_dir, _ = evaluated
    root = events(model_dir)
    misclassified = [tag for tag in root.Tags()["tensors"] if tag.startswith("misclassified/")]
    assert misclassified, "a 3-epoch model gets some dev images wrong"
    assert {tag.removeprefix("misclassified/predicted_as_") for tag in misclassified} <= set(CLASSES)
    for tag in misclassified:  # one card in TensorBoard: the wrong images of the class side by side
        for event in root.Tensors(tag):
            width, height, *pictures = tf.make_ndarray(event.tensor_proto)
            assert len(pictures) == 1 and int(width) % int(height) == 0 and int(width) // int(height) <= 6


def test_overwrite_clears_the_earlier_runs_hparams(evaluated, tmp_path):
    data_dir = evaluated[0].parent / "16x16_HANDS"
    model_dir = shutil.copytree(evaluated[0], tmp_path / "experiment")  # the other tests read the original

    result = run_in_process(
        "train.py", "--model_dir", model_dir, "--data_dir", data_dir, "--overwrite", "--param", "num_epochs=1"
    )

    assert result.returncode == 0, result.stderr
    assert not (model_dir / "confusion_matrix_test_best_weights.png").exists()
    root = events(model_dir)
    assert "test_best_weights/accuracy" not in root.Tags()["tensors"]  # the earlier weights' results
    [hparams_file] = model_dir.glob("events.out.tfevents.*")  # the new run's only
    summary = [e.summary for e in tf.compat.v1.train.summary_iterator(str(hparams_file)) if e.summary.value]
    session = [v for s in summary for v in s.value if v.tag == "_hparams_/session_start_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(session[0].metadata.plugin_data.content)
    assert data.session_start_info.hparams["num_epochs"].string_value == "1"  # whole numbers as text: "1", not 1.0000
