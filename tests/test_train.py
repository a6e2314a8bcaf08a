"""train.py and evaluate.py, run in the test's process: what a run writes, resuming, refusing to
overwrite, divergence, determinism and the debug mode. (The same story through processes started
as a user starts them: test_end_to_end.py.)"""

import json
import math
import re

from conftest import REPO, run_in_process, tiny_params, train_losses, write_experiment
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


def train(model_dir, data_dir, *args):
    return run_in_process("train.py", "--model_dir", model_dir, "--data_dir", data_dir, *args)


def test_console_tells_the_training_story(trained_once):
    assert "Epoch 2/2 - Eval metrics" in trained_once.result.stderr


def test_train_writes_checkpoints_metrics_logs_and_summaries(trained_once):
    trained = trained_once.model_dir
    assert checkpoints(trained / "last_weights") == ["ckpt-1", "ckpt-2"]
    assert len(checkpoints(trained / "best_weights")) == 1

    for name in ("metrics_eval_last_weights.json", "metrics_eval_best_weights.json"):
        metrics = read_json(trained / name)
        assert 0.0 <= metrics["accuracy"] <= 1.0
        assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0
    assert read_json(trained / "metrics_eval_last_weights.json")["epoch"] == 2

    log = (trained / "train.log").read_text()
    assert "Epoch 1/2 - Train metrics" in log and "Epoch 2/2 - Eval metrics" in log

    # One folder per run for TensorBoard: the train and dev curves told apart by their names
    assert not [path for path in trained.iterdir() if path.name.endswith("_summaries")]
    tags = summary_tags(trained)
    for name in (
        "train/loss",
        "train/accuracy",
        "train/learning_rate",
        "dev/loss",
        "dev/accuracy",
        "best_dev/accuracy",
    ):
        assert tags[name] == "scalars", name
    assert tags["train_inputs"] == "images"
    # After two epochs on tiny data the model still gets dev images wrong: they are shown.
    misclassified = [tag for tag in tags if tag.startswith("misclassified/predicted_as_")]
    assert misclassified and all(tags[tag] == "images" for tag in misclassified)


def test_evaluate_writes_test_metrics(trained, trained_once):
    result = run_in_process("evaluate.py", "--model_dir", trained, "--data_dir", trained_once.data_dir)
    assert result.returncode == 0, result.stderr
    metrics = read_json(trained / "metrics_test_best_weights.json")
    assert 0.0 <= metrics["accuracy"] <= 1.0 and math.isfinite(metrics["loss"])
    assert "Test metrics on 24 images" in (trained / "evaluate.log").read_text()


def test_train_refuses_to_overwrite_earlier_weights(trained, trained_once):
    before = checkpoints(trained / "last_weights")
    result = train(trained, trained_once.data_dir)
    assert result.returncode == 2
    assert "--restore_from" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr
    assert checkpoints(trained / "last_weights") == before


def test_resume_trains_only_the_missing_epochs(trained, trained_once):
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))
    result = train(trained, trained_once.data_dir, "--restore_from", trained / "last_weights")
    assert result.returncode == 0, result.stderr
    log = (trained / "train.log").read_text()
    assert "2 epochs done" in log
    assert log.count("Epoch 3/3 - Train metrics") == 1
    assert "Epoch 1/3" not in log and "Epoch 2/3" not in log
    assert checkpoints(trained / "last_weights") == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert read_json(trained / "metrics_eval_last_weights.json")["epoch"] == 3


def test_worse_resumed_epoch_keeps_the_best_weights(trained_once, model_dir):
    # Learn the colours well first, then resume with a learning rate that wrecks the model.
    # Deterministic, so that the wrecked epoch is the same on every run of the test.
    data_dir = trained_once.data_dir
    (model_dir / "params.json").write_text(
        json.dumps(tiny_params(num_epochs=4, learning_rate=0.01, deterministic=True))
    )
    assert train(model_dir, data_dir).returncode == 0
    best_before = read_json(model_dir / "metrics_eval_best_weights.json")
    assert best_before["accuracy"] >= 0.5, "the tiny colour dataset should be learnt in 4 epochs"
    best_files_before = checkpoints(model_dir / "best_weights")

    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=5, learning_rate=1e4, deterministic=True)))
    result = train(model_dir, data_dir, "--restore_from", "last_weights")
    assert result.returncode == 0, result.stderr
    assert read_json(model_dir / "metrics_eval_last_weights.json")["accuracy"] < best_before["accuracy"]
    assert read_json(model_dir / "metrics_eval_best_weights.json") == best_before
    assert checkpoints(model_dir / "best_weights") == best_files_before


def test_num_labels_mismatch_is_a_clear_error(trained_once, model_dir):
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_labels=4)))
    result = train(model_dir, trained_once.data_dir)
    assert result.returncode == 2
    assert "num_labels" in result.stderr and "Traceback" not in result.stderr
    assert not (model_dir / "last_weights").exists()


def test_divergence_stops_with_a_hint_and_keeps_the_best_weights(trained, trained_once):
    best_before = read_json(trained / "metrics_eval_best_weights.json")
    best_files_before = checkpoints(trained / "best_weights")
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=3, learning_rate=1e30)))

    result = train(trained, trained_once.data_dir, "--restore_from", "last_weights")

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "diverged" in result.stderr and "epoch 3, step" in result.stderr and "learning_rate" in result.stderr
    assert read_json(trained / "metrics_eval_best_weights.json") == best_before
    assert checkpoints(trained / "best_weights") == best_files_before
    assert checkpoints(trained / "last_weights") == ["ckpt-1", "ckpt-2"]
    run = read_json(trained / "run.json")
    assert run["status"] == "diverged" and "learning_rate" in run["error"]
    assert [previous["status"] for previous in run["previous_runs"]] == ["finished"]


def test_run_json_records_what_ran_and_how_it_ended(trained_once):
    trained = trained_once.model_dir
    run = read_json(trained / "run.json")

    assert run["status"] == "finished" and run["start_time"] <= run["end_time"]
    assert "train.py" in run["command"] and str(trained) in run["command"]
    assert run["versions"]["tensorflow"] == "2.21.0" and run["versions"]["keras"].startswith("3.")
    assert run["data"]["train"] == 96 and run["data"]["dev"] == 24
    if (REPO / ".git").exists():
        assert re.fullmatch("[0-9a-f]{40}", run["git"]["commit"]) and isinstance(run["git"]["dirty"], bool)


def test_deterministic_runs_give_identical_metrics(trained_once, tmp_path):
    # Twice in one process here; in two processes, as a user reruns: test_end_to_end.py
    metrics = []
    for name in ("first", "second"):
        write_experiment(tmp_path / name, deterministic=True)
        result = train(tmp_path / name, trained_once.data_dir)
        assert result.returncode == 0, result.stderr
        metrics.append(read_json(tmp_path / name / "metrics_eval_last_weights.json"))

    assert metrics[0] == metrics[1]


def test_overfit_batches_learns_one_batch_by_heart(trained_once, model_dir):
    # The debug mode a student runs first on a new model: one batch, learnt until the loss is ~0
    result = train(
        model_dir, trained_once.data_dir,
        "--param", "overfit_batches=1", "--param", "num_epochs=50", "--param", "learning_rate=0.01",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Debug mode: overfitting 1 train batch(es)" in result.stderr
    losses = train_losses(model_dir)
    assert len(losses) == 50
    assert losses[0] > 1.0 and losses[-1] < 0.05
    # Evaluated on that same batch: every image right
    assert json.loads((model_dir / "metrics_eval_last_weights.json").read_text())["accuracy"] == 1.0
