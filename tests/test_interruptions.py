"""Interrupted training loses at most the epoch in progress, and resumes to the planned end."""

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_script, tiny_params

NUM_EPOCHS = 6


def start_training(model_dir, data_dir):
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "--model_dir", str(model_dir), "--data_dir", str(data_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def saved_epochs(model_dir):
    return sorted(int(p.stem.split("-")[1]) for p in (model_dir / "last_weights").glob("ckpt-*.index"))


def assert_every_metrics_file_is_valid_json(model_dir):
    for path in model_dir.glob("metrics_*.json"):
        metrics = json.loads(path.read_text())
        assert 0.0 <= metrics["accuracy"] <= 1.0, path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_run_resumes_to_the_planned_epoch(built_dataset, model_dir, sig):
    # Many small steps per epoch, so that the signal lands in the middle of one.
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=NUM_EPOCHS, batch_size=2)))
    process = start_training(model_dir, built_dataset)
    wait_for(model_dir / "last_weights" / "ckpt-1.index", process)
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)

    if sig == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:  # a clean stop: a message, no traceback, the usual exit status of Ctrl-C
        assert process.returncode == 130, output
        assert "Stopped after" in output and "--restore_from" in output and "Traceback" not in output
    status = json.loads((model_dir / "run.json").read_text())["status"]
    assert status == ("running" if sig == signal.SIGKILL else "interrupted")  # kill -9 leaves no time to write
    stopped_at = saved_epochs(model_dir)[-1]
    assert stopped_at < NUM_EPOCHS, "the signal came too late to interrupt training"
    assert_every_metrics_file_is_valid_json(model_dir)  # written whole or not at all, even under kill -9

    result = run_script(
        "train.py", "--model_dir", model_dir, "--data_dir", built_dataset, "--restore_from", "last_weights"
    )

    assert result.returncode == 0, result.stderr
    assert f"{stopped_at} epochs done" in result.stderr
    assert f"Epoch {stopped_at + 1}/{NUM_EPOCHS} - Train metrics" in result.stderr
    assert f"Epoch {stopped_at}/{NUM_EPOCHS} - Train" not in result.stderr, "a saved epoch was trained again"
    assert saved_epochs(model_dir)[-1] == NUM_EPOCHS
    assert json.loads((model_dir / "metrics_eval_last_weights.json").read_text())["epoch"] == NUM_EPOCHS
    assert_every_metrics_file_is_valid_json(model_dir)
    # A kill -9 in the middle of a write leaves its temporary file: the resumed run deletes it.
    assert not list(model_dir.glob(".*.tmp")), "a temporary file was left behind"
    assert json.loads((model_dir / "run.json").read_text())["status"] == "finished"


def test_kill_between_checkpoint_files_and_state_file_loses_nothing(built_dataset, model_dir):
    # A kill -9 can land after TensorFlow wrote ckpt-N but before it updated the `checkpoint`
    # state file, and even in the middle of writing an index: simulate both exactly.
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))
    assert run_script("train.py", "--model_dir", model_dir, "--data_dir", built_dataset).returncode == 0
    (model_dir / "last_weights" / "checkpoint").unlink()
    (model_dir / "last_weights" / "ckpt-3.index").write_bytes(b"truncated")
    # A kill -9 in the middle of writing a JSON file leaves its temporary file; a user's own file stays.
    (model_dir / ".metrics_eval_last_weights.json.x1y2z3.tmp").write_text('{"accura')
    (model_dir / ".notes.tmp").write_text("mine")
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=4)))

    result = run_script(
        "train.py", "--model_dir", model_dir, "--data_dir", built_dataset, "--restore_from", "last_weights"
    )

    assert result.returncode == 0, result.stderr
    assert "ckpt-2: 2 epochs done" in result.stderr
    assert "Epoch 3/4 - Train metrics" in result.stderr and "Epoch 4/4 - Train metrics" in result.stderr
    assert json.loads((model_dir / "metrics_eval_last_weights.json").read_text())["epoch"] == 4
    assert [path.name for path in model_dir.glob(".*.tmp")] == [".notes.tmp"]


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_trains(built_dataset, model_dir):
    # Far more epochs than the test lasts: the first run is still training when the second starts.
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=100000)))
    first = start_training(model_dir, built_dataset)
    try:
        wait_for(model_dir / "last_weights" / "ckpt-1.index", first)

        second = run_script(
            "train.py", "--model_dir", model_dir, "--data_dir", built_dataset, "--restore_from", "last_weights"
        )

        assert second.returncode == 2, second.stderr
        assert "Another train.py is training in" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None, "the first run must go on"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 130
    assert "Restored" not in (model_dir / "train.log").read_text(), "the second run must not have started"
