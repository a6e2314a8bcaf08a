"""The whole pipeline through the real scripts, as a user runs it: train, evaluate, resume."""

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_in_process, run_script, tiny_params, train_experiment, train_losses, write_built_dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_json(path):
    return json.loads(path.read_text())


def checkpoints(folder):
    return sorted(p.stem for p in folder.glob("ckpt-*.index"))


def summary_tags(folder):
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    # tf.summary writes scalars and images as tensors; the plugin name tells them apart.
    return {tag: events.SummaryMetadata(tag).plugin_data.plugin_name for tag in events.Tags()["tensors"]}


@pytest.fixture(scope="module")
def built_dataset(tmp_path_factory):
    """The tiny dataset, written once for this module: its tests only read it."""
    return write_built_dataset(tmp_path_factory.mktemp("data") / "16x16_SIGNS")


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory, built_dataset):
    """An experiment trained for 2 epochs on the tiny dataset, and train.py's finished process;
    tests that change the experiment take a copy (trained)."""
    model_dir = tmp_path_factory.mktemp("trained") / "experiment"
    return model_dir, train_experiment(model_dir, built_dataset)


@pytest.fixture
def trained(trained_once, tmp_path):
    return Path(shutil.copytree(trained_once[0], tmp_path / "experiment"))


def test_console_tells_the_training_story_without_tensorflow_chatter(trained_once):
    result = trained_once[1]

    assert "Epoch 2/2 - Eval metrics" in result.stderr
    for chatter in ("oneDNN", "cuda", "absl", "Sharding callback"):
        assert chatter not in result.stdout + result.stderr


def test_train_writes_checkpoints_metrics_logs_and_summaries(trained_once):
    trained = trained_once[0]
    assert checkpoints(trained / "last_weights") == ["ckpt-1", "ckpt-2"]
    assert len(checkpoints(trained / "best_weights")) == 1

    for name in ("metrics_eval_last_weights.json", "metrics_eval_best_weights.json"):
        metrics = read_json(trained / name)
        assert 0.0 <= metrics["accuracy"] <= 1.0
        assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0
    assert read_json(trained / "metrics_eval_last_weights.json")["epoch"] == 2

    log = (trained / "train.log").read_text()
    assert "Epoch 1/2 - Train metrics" in log and "Epoch 2/2 - Eval metrics" in log

    train_tags = summary_tags(trained / "train_summaries")
    assert train_tags["loss"] == "scalars" and train_tags["accuracy"] == "scalars"
    assert train_tags["input_images"] == "images"
    eval_tags = summary_tags(trained / "eval_summaries")
    assert eval_tags["accuracy"] == "scalars" and eval_tags["loss"] == "scalars"
    # After two epochs on tiny data the model still gets dev images wrong: they are shown.
    misclassified = [tag for tag in eval_tags if tag.startswith("misclassified/predicted_as_")]
    assert misclassified and all(eval_tags[tag] == "images" for tag in misclassified)


def test_evaluate_writes_test_metrics(trained, built_dataset):
    result = run_script("evaluate.py", "--model_dir", trained, "--data_dir", built_dataset)
    assert result.returncode == 0, result.stderr
    metrics = read_json(trained / "metrics_test_best_weights.json")
    assert 0.0 <= metrics["accuracy"] <= 1.0 and math.isfinite(metrics["loss"])
    assert "Test metrics on 24 images" in (trained / "evaluate.log").read_text()


def test_train_refuses_to_overwrite_earlier_weights(trained, built_dataset):
    before = checkpoints(trained / "last_weights")
    result = run_in_process("train.py", "--model_dir", trained, "--data_dir", built_dataset)
    assert result.returncode == 2
    assert "--restore_from" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr
    assert checkpoints(trained / "last_weights") == before


def test_resume_trains_only_the_missing_epochs(trained, built_dataset):
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))
    result = run_script(
        "train.py", "--model_dir", trained, "--data_dir", built_dataset, "--restore_from", trained / "last_weights"
    )
    assert result.returncode == 0, result.stderr
    log = (trained / "train.log").read_text()
    assert "2 epochs done" in log
    assert log.count("Epoch 3/3 - Train metrics") == 1
    assert "Epoch 1/3" not in log and "Epoch 2/3" not in log
    assert checkpoints(trained / "last_weights") == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert read_json(trained / "metrics_eval_last_weights.json")["epoch"] == 3


def test_worse_resumed_epoch_keeps_the_best_weights(built_dataset, model_dir):
    # Learn the colours well first, then resume with a learning rate that wrecks the model.
    # Deterministic, so that the wrecked epoch is the same on every run of the test.
    (model_dir / "params.json").write_text(
        json.dumps(tiny_params(num_epochs=4, learning_rate=0.01, deterministic=True))
    )
    assert run_script("train.py", "--model_dir", model_dir, "--data_dir", built_dataset).returncode == 0
    best_before = read_json(model_dir / "metrics_eval_best_weights.json")
    assert best_before["accuracy"] >= 0.5, "the tiny colour dataset should be learnt in 4 epochs"
    best_files_before = checkpoints(model_dir / "best_weights")

    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=5, learning_rate=1e4, deterministic=True)))
    result = run_script(
        "train.py", "--model_dir", model_dir, "--data_dir", built_dataset, "--restore_from", "last_weights"
    )
    assert result.returncode == 0, result.stderr
    assert read_json(model_dir / "metrics_eval_last_weights.json")["accuracy"] < best_before["accuracy"]
    assert read_json(model_dir / "metrics_eval_best_weights.json") == best_before
    assert checkpoints(model_dir / "best_weights") == best_files_before


def test_num_labels_mismatch_is_a_clear_error(built_dataset, model_dir):
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_labels=4)))
    result = run_in_process("train.py", "--model_dir", model_dir, "--data_dir", built_dataset)
    assert result.returncode == 2
    assert "num_labels" in result.stderr and "Traceback" not in result.stderr
    assert not (model_dir / "last_weights").exists()


def test_divergence_stops_with_a_hint_and_keeps_the_best_weights(trained, built_dataset):
    best_before = read_json(trained / "metrics_eval_best_weights.json")
    best_files_before = checkpoints(trained / "best_weights")
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=3, learning_rate=1e30)))

    result = run_script(
        "train.py", "--model_dir", trained, "--data_dir", built_dataset, "--restore_from", "last_weights"
    )

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "diverged" in result.stderr and "epoch 3, step" in result.stderr and "learning_rate" in result.stderr
    assert read_json(trained / "metrics_eval_best_weights.json") == best_before
    assert checkpoints(trained / "best_weights") == best_files_before
    assert checkpoints(trained / "last_weights") == ["ckpt-1", "ckpt-2"]
    run = read_json(trained / "run.json")
    assert run["status"] == "diverged" and "learning_rate" in run["error"]
    assert [previous["status"] for previous in run["previous_runs"]] == ["finished"]


def test_run_json_records_what_ran_and_how_it_ended(trained_once):
    trained = trained_once[0]
    run = read_json(trained / "run.json")

    assert run["status"] == "finished" and run["start_time"] <= run["end_time"]
    assert "train.py" in run["command"] and str(trained) in run["command"]
    assert run["versions"]["tensorflow"] == "2.21.0" and run["versions"]["keras"].startswith("3.")
    assert run["data"]["train"] == 96 and run["data"]["dev"] == 24
    if (REPO / ".git").exists():
        assert re.fullmatch("[0-9a-f]{40}", run["git"]["commit"]) and isinstance(run["git"]["dirty"], bool)


def test_deterministic_runs_give_identical_metrics(built_dataset, tmp_path):
    metrics = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.json").write_text(json.dumps(tiny_params(deterministic=True)))
        result = run_script("train.py", "--model_dir", tmp_path / name, "--data_dir", built_dataset)
        assert result.returncode == 0, result.stderr
        metrics.append(read_json(tmp_path / name / "metrics_eval_last_weights.json"))

    assert metrics[0] == metrics[1]


def test_overfit_batches_learns_one_batch_by_heart(built_dataset, model_dir):
    # The debug mode a student runs first on a new model: one batch, learnt until the loss is ~0
    result = run_script(
        "train.py", "--model_dir", model_dir, "--data_dir", built_dataset,
        "--param", "overfit_batches=1", "--param", "num_epochs=50", "--param", "learning_rate=0.01",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Debug mode: overfitting 1 train batch(es)" in result.stderr
    losses = train_losses(model_dir)
    assert len(losses) == 50
    assert losses[0] > 1.0 and losses[-1] < 0.05
    # Evaluated on that same batch: every image right
    assert json.loads((model_dir / "metrics_eval_last_weights.json").read_text())["accuracy"] == 1.0
