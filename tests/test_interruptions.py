"""Interrupted training loses at most the epoch in progress, and resumes to the planned end.

The fast tests stop train.py running in the test's process with a real Ctrl-C or SIGTERM at a
chosen moment, and damage its folder as kills do; the end-to-end tests (marked slow) signal and
kill -9 train.py processes, thirty times in a row for one of them.
"""

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_in_process, run_script, tiny_params

from model.utils import summaries
from model.utils.files import read_json_lines

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


def signal_in_epoch(model_dir, epoch, sig, monkeypatch):
    """Sends `sig` to this process (as Ctrl-C or `kill` would) during the first step of `epoch`,
    once the epoch before it is saved."""
    write_images = summaries.write_images

    def write_then_signal(writer, step, name, images):
        write_images(writer, step, name, images)
        if saved_epochs(model_dir)[-1:] == [epoch - 1]:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(summaries, "write_images", write_then_signal)  # called in each epoch's first step


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_run_stopped_by_a_signal_resumes_to_the_planned_epoch(trained_once, model_dir, sig, monkeypatch):
    data_dir = trained_once.data_dir
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=NUM_EPOCHS)))
    with monkeypatch.context() as patch:
        signal_in_epoch(model_dir, 2, sig, patch)
        stopped = run_in_process("train.py", "--model_dir", model_dir, "--data_dir", data_dir)

    # A clean stop: a message, no traceback, the usual exit status of Ctrl-C
    assert stopped.returncode == 130, stopped.stderr
    assert "Stopped after 1 epochs" in stopped.stderr and "--restore_from" in stopped.stderr
    assert "Traceback" not in stopped.stderr and "Epoch 2/6 - Train metrics" not in stopped.stderr
    assert json.loads((model_dir / "run.json").read_text())["status"] == "interrupted"
    assert saved_epochs(model_dir) == [1]
    assert_every_metrics_file_is_valid_json(model_dir)

    # The same command resumes: it remembers its data folder (run.json)
    result = run_in_process("train.py", "--model_dir", model_dir, "--restore_from", "last_weights")

    assert result.returncode == 0, result.stderr
    assert f"images from {data_dir}" in result.stderr
    assert "1 epochs done" in result.stderr
    assert f"Epoch 2/{NUM_EPOCHS} - Train metrics" in result.stderr
    assert f"Epoch 1/{NUM_EPOCHS} - Train" not in result.stderr, "a saved epoch was trained again"
    assert saved_epochs(model_dir)[-1] == NUM_EPOCHS
    assert json.loads((model_dir / "metrics_eval_last_weights.json").read_text())["epoch"] == NUM_EPOCHS
    assert_every_metrics_file_is_valid_json(model_dir)
    assert json.loads((model_dir / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
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

    # The same command resumes, whatever stopped the run: it remembers its data folder (run.json)
    result = run_script("train.py", "--model_dir", model_dir, "--restore_from", "last_weights")

    assert result.returncode == 0, result.stderr
    assert f"images from {built_dataset}" in result.stderr
    assert f"{stopped_at} epochs done" in result.stderr
    assert f"Epoch {stopped_at + 1}/{NUM_EPOCHS} - Train metrics" in result.stderr
    assert f"Epoch {stopped_at}/{NUM_EPOCHS} - Train" not in result.stderr, "a saved epoch was trained again"
    assert saved_epochs(model_dir)[-1] == NUM_EPOCHS
    assert json.loads((model_dir / "metrics_eval_last_weights.json").read_text())["epoch"] == NUM_EPOCHS
    assert_every_metrics_file_is_valid_json(model_dir)
    # A kill -9 in the middle of a write leaves its temporary file: the resumed run deletes it.
    assert not list(model_dir.glob(".*.tmp")), "a temporary file was left behind"
    assert json.loads((model_dir / "run.json").read_text())["status"] == "finished"


def test_a_folder_damaged_by_kills_resumes_from_its_newest_readable_checkpoint(trained_once, model_dir):
    # What kills -9 leave: TensorFlow's `checkpoint` state file not updated, the newest index
    # half written, a checkpoint's data cut short, a half-written *_temp folder, an orphaned
    # older checkpoint, a JSON file's temporary file, and a history line ahead of the checkpoints.
    built_dataset = trained_once.data_dir
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))
    assert run_in_process("train.py", "--model_dir", model_dir, "--data_dir", built_dataset).returncode == 0
    last, best = model_dir / "last_weights", model_dir / "best_weights"
    (last / "checkpoint").unlink()
    (last / "ckpt-3.index").write_bytes(b"truncated")
    for path in best.glob("ckpt-3.data-*"):  # if epoch 3 was the best, its copy in best_weights too
        path.write_bytes(path.read_bytes()[:100])
    (last / "ckpt-4_temp").mkdir()
    (last / "ckpt-4_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1").write_bytes(b"half")
    for path in last.glob("ckpt-1.*"):
        shutil.copy(path, best / path.name)
    (model_dir / ".metrics_eval_last_weights.json.x1y2z3.tmp").write_text('{"accura')
    (model_dir / ".notes.tmp").write_text("mine")  # the user's own file stays
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=4)))

    result = run_in_process(
        "train.py", "--model_dir", model_dir, "--data_dir", built_dataset, "--restore_from", "last_weights"
    )

    assert result.returncode == 0, result.stderr
    assert "ckpt-3 cannot be read" in result.stderr and "Traceback" not in result.stderr
    assert "ckpt-2: 2 epochs done" in result.stderr
    assert "Epoch 3/4 - Train metrics" in result.stderr and "Epoch 4/4 - Train metrics" in result.stderr
    assert json.loads((model_dir / "metrics_eval_last_weights.json").read_text())["epoch"] == 4
    assert [record["epoch"] for record in read_json_lines(model_dir / "history.jsonl")] == [1, 2, 3, 4]
    assert saved_epochs(model_dir) == [1, 2, 3, 4] and not list(last.glob("*_temp"))
    assert len(list(best.glob("ckpt-*.index"))) == 1
    best_epoch = json.loads((model_dir / "metrics_eval_best_weights.json").read_text())["epoch"]
    assert list(best.glob("ckpt-*.index")) == [best / f"ckpt-{best_epoch}.index"]
    assert [path.name for path in model_dir.glob(".*.tmp")] == [".notes.tmp"]


def test_a_run_killed_in_its_first_saves_resumes_with_the_same_command(trained_once, model_dir):
    # Killed between the two saves of epoch 1: best_weights holds ckpt-1, last_weights nothing.
    built_dataset = trained_once.data_dir
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=1)))
    assert run_in_process("train.py", "--model_dir", model_dir, "--data_dir", built_dataset).returncode == 0
    shutil.rmtree(model_dir / "last_weights")
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=2)))
    resume = (
        "train.py",
        "--model_dir",
        model_dir,
        "--data_dir",
        built_dataset,
        "--restore_from",
        model_dir / "last_weights",
    )

    refused = run_in_process("train.py", "--model_dir", model_dir, "--data_dir", built_dataset)
    resumed = run_in_process(*resume)

    assert refused.returncode == 2 and f"--restore_from {model_dir / 'last_weights'}" in refused.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert "best_weights/ckpt-1: 1 epochs done" in resumed.stderr
    assert saved_epochs(model_dir) == [2]

    # Killed before any checkpoint: the same command starts from fresh weights, and says so.
    for name in ("last_weights", "best_weights"):
        shutil.rmtree(model_dir / name)
    started = run_in_process(*resume)

    assert started.returncode == 0, started.stderr
    assert "holds no checkpoint yet: starting from freshly initialised weights" in started.stderr
    assert [record["epoch"] for record in read_json_lines(model_dir / "history.jsonl")] == [1, 2]


def test_an_explicit_unreadable_checkpoint_is_a_clear_error(trained, trained_once):
    model_dir, built_dataset = trained, trained_once.data_dir
    for path in (model_dir / "best_weights").glob("ckpt-*.data-*"):
        path.write_bytes(path.read_bytes()[:50])
    [prefix] = [path.with_suffix("") for path in (model_dir / "best_weights").glob("ckpt-*.index")]

    evaluated = run_in_process(
        "evaluate.py", "--model_dir", model_dir, "--data_dir", built_dataset, "--restore_from", prefix
    )

    assert evaluated.returncode == 2 and "Traceback" not in evaluated.stderr
    assert f"The checkpoint {prefix} cannot be read" in evaluated.stderr


def test_a_second_run_in_a_locked_folder_is_refused(trained, trained_once):
    # The lock of a run training in the folder, held here: a lock belongs to an open file, so
    # this process's train.py meets it as another process's train.py would.
    with open(trained / ".lock", "a") as first_run:
        fcntl.flock(first_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = run_in_process(
            "train.py", "--model_dir", trained, "--data_dir", trained_once.data_dir, "--restore_from", "last_weights"
        )

    assert second.returncode == 2, second.stderr
    assert "Another train.py is writing into" in second.stderr and "Traceback" not in second.stderr
    assert "Restored" not in (trained / "train.log").read_text(), "the second run must not have started"


@pytest.mark.slow
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
        assert "Another train.py is writing into" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None, "the first run must go on"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 130
    assert "Restored" not in (model_dir / "train.log").read_text(), "the second run must not have started"


def saving_began(model_dir, before):
    """Whether a save began since `before` (the files of the weights folders then)."""
    return weight_files(model_dir) - before


def weight_files(model_dir):
    return {str(path) for path in model_dir.glob("*_weights/*")}


@pytest.mark.slow  # 30 starts of train.py: about 4 minutes
def test_thirty_kills_at_random_moments_never_strand_a_run(built_dataset, model_dir):
    # Each kill -9 lands at a random moment, or just as a save begins (the first ones in epoch
    # 1's saves); each is followed by the same resume command. The run must end where planned.
    num_epochs = 60  # more than 30 kills can interrupt
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=num_epochs, batch_size=4)))
    resume = [sys.executable, str(REPO / "train.py"), "--model_dir", str(model_dir), "--data_dir", str(built_dataset)]
    resume += ["--restore_from", str(model_dir / "last_weights")]
    rng = random.Random(0)
    for kill in range(30):
        before = weight_files(model_dir)
        process = subprocess.Popen(resume, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill % 2 == 0:  # as a save begins
            while not saving_began(model_dir, before) and process.poll() is None:
                time.sleep(0.001)
        else:  # at a random moment, most often while training
            deadline = time.monotonic() + rng.uniform(1, 6)
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.01)
        process.kill()
        process.wait()
        assert process.returncode in (-signal.SIGKILL, 0), f"kill {kill}: train.py failed before the kill"
        if process.returncode == 0:
            break  # the run ended before this kill came

    finished = subprocess.run(resume, capture_output=True, text=True, timeout=300)

    assert finished.returncode == 0, finished.stderr[-3000:]
    assert kill >= 29, "fewer than 30 kills landed before the run ended"
    history = read_json_lines(model_dir / "history.jsonl")
    assert [record["epoch"] for record in history] == list(range(1, num_epochs + 1))
    assert json.loads((model_dir / "metrics_eval_last_weights.json").read_text())["epoch"] == num_epochs
    best = json.loads((model_dir / "metrics_eval_best_weights.json").read_text())
    assert best == {key: value for key, value in history[best["epoch"] - 1].items() if not key.startswith("train_")}
    assert [path.name for path in (model_dir / "best_weights").glob("ckpt-*.index")] == [f"ckpt-{best['epoch']}.index"]
    assert saved_epochs(model_dir) == list(range(num_epochs - 4, num_epochs + 1))
    assert not list(model_dir.glob("*_weights/*_temp")) and not list(model_dir.glob(".*.tmp"))
    assert json.loads((model_dir / "run.json").read_text())["status"] == "finished"
