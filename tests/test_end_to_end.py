"""The pipeline through the real scripts, each a new process as a user starts it: train (with a
console free of TensorFlow's chatter), evaluate, resume, and the same metrics from two
deterministic runs. End-to-end tier: the same behaviour, run in the test's process, is checked
by test_train.py in the fast tier."""

import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import run_script, tiny_params, train_experiment, write_built_dataset

pytestmark = pytest.mark.slow


def read_json(path):
    return json.loads(path.read_text())


def checkpoints(folder):
    return sorted(p.stem for p in folder.glob("ckpt-*.index"))


@pytest.fixture(scope="module")
def built_dataset(tmp_path_factory):
    """The tiny dataset, written once for this module: its tests only read it."""
    return write_built_dataset(tmp_path_factory.mktemp("data") / "16x16_SIGNS")


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory, built_dataset):
    """An experiment trained for 2 epochs by train.py in its own process, and that finished process;
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


def test_evaluate_writes_test_metrics(trained, built_dataset):
    result = run_script("evaluate.py", "--model_dir", trained, "--data_dir", built_dataset)
    assert result.returncode == 0, result.stderr
    metrics = read_json(trained / "metrics_test_best_weights.json")
    assert 0.0 <= metrics["accuracy"] <= 1.0 and math.isfinite(metrics["loss"])
    assert "Test metrics on 24 images" in (trained / "evaluate.log").read_text()


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


def test_deterministic_runs_in_two_processes_give_identical_metrics(built_dataset, tmp_path):
    metrics = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.json").write_text(json.dumps(tiny_params(deterministic=True)))
        result = run_script("train.py", "--model_dir", tmp_path / name, "--data_dir", built_dataset)
        assert result.returncode == 0, result.stderr
        metrics.append(read_json(tmp_path / name / "metrics_eval_last_weights.json"))

    assert metrics[0] == metrics[1]
