"""search_hyperparams.py: search.json mistakes, grid and random trials, skipping finished trials,
isolating failed ones, launchers, interrupting and resuming.

The fast tests run the search in the test's process, each trial trained by the stand-in train.py
of tests/stub_scripts (no TensorFlow: a trial takes a fraction of a second); the `trainer`
fixture runs the tests that hold for both also as a user runs them, each trial a real train.py
(end-to-end tier, like the tests marked slow here).
"""

import ast
import concurrent.futures
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_in_process, run_script, tiny_params

from search import runner

LOG_UNIFORM_LR = {"distribution": "log_uniform", "low": 1e-4, "high": 1e-1}


def make_search(parent, space, **params):
    """A search folder: a tiny params.json and search.json (a dict, raw text, or None for none)."""
    parent.mkdir(parents=True, exist_ok=True)
    (parent / "params.json").write_text(json.dumps(tiny_params(**params), indent=4))
    if isinstance(space, bytes):
        (parent / "search.json").write_bytes(space)
    elif space is not None:
        (parent / "search.json").write_text(space if isinstance(space, str) else json.dumps(space))
    return parent


def search_args(parent, data_dir, *args):
    return ["--parent_dir", str(parent), "--data_dir", str(data_dir), *map(str, args)]


def search(parent, data_dir, *args, env=None):
    """The search, run in this process."""
    return run_in_process("search_hyperparams.py", *search_args(parent, data_dir, *args), env=env)


def search_for_real(parent, data_dir, *args):
    """The search as a user runs it, each trial a real train.py (end-to-end tests)."""
    return run_script("search_hyperparams.py", *search_args(parent, data_dir, *args))


def dry_run(parent, *args):
    """{trial folder name: values} as listed by --dry_run."""
    result = run_in_process("search_hyperparams.py", "--parent_dir", parent, "--dry_run", *args)
    assert result.returncode == 0, result.stderr
    *lines, summary = result.stdout.splitlines()
    assert summary == f"{len(lines)} trials (dry run: nothing was run)"
    trials = (line.split("  ", 1) for line in lines)
    return {Path(folder).name: ast.literal_eval(values) for folder, values in trials}


def read_json(path):
    return json.loads(path.read_text())


def epochs_done(trial):
    path = trial / "metrics_eval_last_weights.json"
    return read_json(path)["epoch"] if path.exists() else 0


def weight_files(*trials):
    """{checkpoint file: modification time}: any retraining or rewrite changes it."""
    return {str(path): path.stat().st_mtime_ns for trial in trials for path in sorted(trial.glob("*_weights/*"))}


# A --launcher: appends the command it is given to a record file (one JSON list a line), then runs it.
RECORDING_WRAPPER = """
import json, os, sys
record, then_run, command = sys.argv[1], sys.argv[2] == "run", sys.argv[3:]
with open(record, "a") as f:
    f.write(json.dumps(command) + "\\n")
if then_run:
    os.execv(command[0], command)
"""


def recording_launcher(tmp_path, record, then_run=True):
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(RECORDING_WRAPPER)
    return shlex.join([sys.executable, str(wrapper), str(record), "run" if then_run else "record_only"])


def launched(record):
    return [json.loads(line) for line in record.read_text().splitlines()]


def model_dir_of(command):
    return command[command.index("--model_dir") + 1]


def running_processes_mentioning(text):
    """Command lines of the live processes whose arguments contain `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # the process ended while we looked
        if any(text in arg for arg in args):
            found.append(" ".join(args))
    return found


# Mistakes in search.json


@pytest.mark.parametrize(
    "space, expected",
    [
        (None, ["search.json is missing", '"learning_rate"', '"distribution"']),
        ('{\n    "learning_rate": [0.01,]\n}', ["search.json is not valid JSON", "line 2, column"]),
        ({"learning_rat": [0.01]}, ["'learning_rat' is not a hyperparameter", "learning_rate"]),
        ({"learning_rate": []}, ["the list of values for 'learning_rate' is empty"]),
        (
            {"learning_rate": {"distribution": "log_uniform", "low": 0, "high": 0.1}},
            ["'learning_rate': low of log_uniform"],
        ),
        ({"num_channels": {"distribution": "int_uniform", "low": 1.5, "high": 8.5}}, ["'num_channels': low and high"]),
        ({"batch_size": [16, 0]}, ["batch_size = 0 is not valid"]),
        ({"model_version": ["base_model", "no_such_model"]}, ['model_version = "no_such_model" is not valid']),
        ('{"learning_rate": [0.01], "note": "\xe9t\xe9"}'.encode("latin-1"), ["search.json is not UTF-8"]),
    ],
    ids=[
        "missing",
        "malformed",
        "unknown_key",
        "empty_list",
        "log_uniform_from_zero",
        "int_uniform_of_floats",
        "invalid_value",
        "unknown_network",
        "not_utf8",
    ],
)
def test_search_json_mistake_is_a_clear_error(tmp_path, space, expected):
    parent = make_search(tmp_path / "search", space)

    result = run_in_process("search_hyperparams.py", "--parent_dir", parent, "--dry_run")

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr
    assert not [p for p in parent.iterdir() if p.is_dir()], "no trial folder may be created"


# Which trials a search.json gives


def test_dry_run_lists_every_grid_combination_and_creates_nothing(tmp_path):
    parent = make_search(tmp_path / "search", {"learning_rate": [0.01, 0.02], "batch_size": [8, 16]})

    trials = dry_run(parent)

    assert trials == {
        "learning_rate_0.01-batch_size_8": {"learning_rate": 0.01, "batch_size": 8},
        "learning_rate_0.01-batch_size_16": {"learning_rate": 0.01, "batch_size": 16},
        "learning_rate_0.02-batch_size_8": {"learning_rate": 0.02, "batch_size": 8},
        "learning_rate_0.02-batch_size_16": {"learning_rate": 0.02, "batch_size": 16},
    }
    assert sorted(p.name for p in parent.iterdir()) == ["params.json", "search.json"]


def test_every_trial_gets_a_folder_of_its_own_with_a_name_any_file_system_takes(tmp_path):
    # Values that differ only in characters a folder name cannot hold, and many keys at once
    caches = ["/tmp/cache/a b", "/tmp/cache/ab", "/tmp/cache/a/b"]
    space = {key: [value] for key, value in tiny_params(image_size=32, num_epochs=2).items() if key != "num_labels"}
    space["cache"] = caches
    parent = make_search(tmp_path / "search", space)

    trials = dry_run(parent)

    assert sorted(values["cache"] for values in trials.values()) == sorted(caches)
    assert all(len(name) < 160 and re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in trials)


def test_random_search_draws_valid_values_the_same_way_each_time(tmp_path):
    space = {
        "learning_rate": LOG_UNIFORM_LR,
        "num_channels": {"distribution": "int_uniform", "low": 2, "high": 5},
        "use_batch_norm": {"distribution": "choice", "values": [True, False]},
    }
    parent = make_search(tmp_path / "search", space)

    trials = dry_run(parent, "--num_trials", "5")

    assert len(trials) == 5
    for values in trials.values():
        assert 1e-4 <= values["learning_rate"] <= 1e-1
        assert values["num_channels"] in {2, 3, 4, 5}
        assert values["use_batch_norm"] in {True, False}
    assert len({values["learning_rate"] for values in trials.values()}) == 5
    assert dry_run(parent, "--num_trials", "5") == trials, "the same seed must give the same trials"

    make_search(parent, space, seed=1)
    assert dry_run(parent, "--num_trials", "5") != trials, "another seed in params.json draws other trials"


# Running trials


def test_grid_search_trains_every_trial_and_a_rerun_skips_them(tmp_path, built_dataset, trainer):
    # Two jobs at once, each trial started by a --launcher, in a folder whose name has a space
    parent = make_search(tmp_path / "my search", {"learning_rate": [0.01, 0.02]}, num_epochs=1)
    trials = [parent / "learning_rate_0.01", parent / "learning_rate_0.02"]
    record = tmp_path / "launched.jsonl"
    launcher = recording_launcher(tmp_path, record)

    result = trainer.run(
        "search_hyperparams.py", *search_args(parent, built_dataset, "--jobs", 2, "--launcher", launcher)
    )

    assert result.returncode == 0, result.stderr
    assert "Search finished: 2 done, 0 skipped (finished before), 0 failed" in result.stderr
    for trial, other, learning_rate in zip(trials, reversed(trials), (0.01, 0.02)):
        assert read_json(trial / "params.json") == tiny_params(num_epochs=1, learning_rate=learning_rate)
        assert 0.0 <= read_json(trial / "metrics_eval_best_weights.json")["accuracy"] <= 1.0
        output = (trial / "output.log").read_text()
        assert f"Done. Weights, metrics and summaries are in {trial}" in output and str(other) not in output
    assert "2 done" in (parent / "search.log").read_text()
    commands = launched(record)  # each with its arguments intact
    assert sorted(model_dir_of(command) for command in commands) == list(map(str, trials))
    assert all(command[:2] == [sys.executable, str(trainer.scripts / "train.py")] for command in commands)

    table = trainer.run("synthesize_results.py", "--parent_dir", parent, "--split", "test")
    assert table.stdout.count("not evaluated") == 2 and "unfinished" not in table.stdout

    # A rerun trains nothing again; with --evaluate, it evaluates each trial on test
    weights_before = weight_files(*trials)
    rerun = trainer.run("search_hyperparams.py", *search_args(parent, built_dataset, "--evaluate"))

    assert rerun.returncode == 0, rerun.stderr
    assert "Search finished: 0 done, 2 skipped (finished before), 0 failed" in rerun.stderr
    assert weight_files(*trials) == weights_before
    for trial in trials:
        assert 0.0 <= read_json(trial / "metrics_test_best_weights.json")["accuracy"] <= 1.0
    table = trainer.run("synthesize_results.py", "--parent_dir", parent, "--split", "test")
    assert "not evaluated" not in table.stdout and table.stdout.count("learning_rate_0.0") == 2


def test_failed_trial_is_reported_and_the_others_still_run(tmp_path, built_dataset, trainer):
    # The data is 16x16 pixels: the trial with image_size 32 stops with an error
    parent = make_search(tmp_path / "search", {"image_size": [16, 32]}, num_epochs=1)
    good, bad = parent / "image_size_16", parent / "image_size_32"

    result = trainer.run("search_hyperparams.py", *search_args(parent, built_dataset))

    assert result.returncode == 1
    assert (good / "metrics_eval_best_weights.json").exists()
    assert not (bad / "last_weights").exists()
    for report in (result.stderr, (parent / "search.log").read_text()):
        assert "Search finished: 1 done, 0 skipped (finished before), 1 failed" in report
        assert f"Trial {bad.name} failed" in report
        assert "is 16x16 pixels, but image_size = 32" in report  # the trial's own message
        assert f"- failed: {bad}" in report
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "launcher, expected",
    [
        ("/nonexistent/srun", "/nonexistent/srun is not a command"),
        ("srun --job-name='abc", "cannot be read as a command"),
    ],
    ids=["missing_program", "unbalanced_quote"],
)
@pytest.mark.parametrize("sampler", ["grid", "tpe"])
def test_a_launcher_that_cannot_start_is_refused_before_any_trial(tmp_path, built_dataset, launcher, expected, sampler):
    parent = make_search(tmp_path / "search", {"learning_rate": [0.01, 0.02]}, num_epochs=1)

    args = search_args(parent, built_dataset, "--launcher", launcher, "--sampler", sampler, "--num_trials", "1")
    result = run_in_process("search_hyperparams.py", *args)

    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert expected in result.stderr
    assert not [path for path in parent.iterdir() if path.is_dir()], "no trial may start"
    assert not (parent / "optuna_journal.log").exists(), "no study trial may be left running"


def test_a_failed_trials_message_is_reported_alone_among_another_processs_lines(tmp_path, built_dataset, stand_in):
    # After a kill -9 of a search, its train.py can go on and write into the trial's output.log:
    # the stand-in's message comes in the middle of such progress lines, on one of them.
    parent = make_search(tmp_path / "search", {"learning_rate": [0.01]}, num_epochs=3)
    message = "Another train.py is writing into the trial's folder right now."

    result = search(parent, built_dataset, env={"STUB_ERROR": message})

    assert result.returncode == 1, result.stderr
    reason = result.stderr.split("failed (exit 2):\n")[1].splitlines()
    assert reason[0].strip() == f"Error: {message}", result.stderr
    assert not reason[1].startswith("    "), "the message alone, not the other process's lines"


@pytest.mark.slow
def test_a_trial_refused_by_a_train_py_still_running_in_its_folder_says_so(tmp_path, built_dataset):
    # After a kill -9 of a search, its train.py can go on; the search run again must report the
    # lock, not the other process's progress lines, which land in the same output.log.
    parent = make_search(tmp_path / "search", {"learning_rate": [0.01]}, num_epochs=100000)
    trial = parent / "learning_rate_0.01"
    trial.mkdir()
    (trial / "params.json").write_text((parent / "params.json").read_text().replace("0.001", "0.01"))
    assert json.loads((trial / "params.json").read_text())["learning_rate"] == 0.01
    command = [sys.executable, str(REPO / "train.py"), "--model_dir", str(trial), "--data_dir", str(built_dataset)]
    with open(trial / "output.log", "a") as output:
        orphan = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for((trial / "last_weights").exists, orphan, 180, "the orphan's first epoch")
        result = search_for_real(parent, built_dataset)
    finally:
        orphan.kill()
        orphan.wait()

    assert result.returncode == 1, result.stderr
    reason = result.stderr.split("failed (exit 2):\n")[1].splitlines()
    assert reason[0].strip().startswith("Error: Another train.py is writing into"), result.stderr
    assert not reason[1].startswith("    "), "the message alone, not the other process's lines"


def test_rerun_resumes_a_trial_whose_own_num_epochs_is_not_reached(tmp_path, built_dataset):
    # Both trials have trained 1 epoch; only the one that asks for 3 epochs is unfinished.
    parent = make_search(tmp_path / "search", {"num_epochs": [1, 3]}, num_epochs=1)
    for epochs in (1, 3):
        trial = parent / f"num_epochs_{epochs}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps(tiny_params(num_epochs=epochs)))
        (trial / "metrics_eval_last_weights.json").write_text(json.dumps({"accuracy": 0.5, "loss": 1.0, "epoch": 1}))
    record = tmp_path / "launched.jsonl"

    # The launcher only records what it is given: nothing trains, so the trial it ran is not done.
    result = search(parent, built_dataset, "--launcher", recording_launcher(tmp_path, record, then_run=False))

    assert result.returncode == 1, result.stderr
    assert "Search finished: 0 done, 1 skipped (finished before), 1 failed" in result.stderr
    assert "its run.json does not say it trained" in result.stderr
    assert [model_dir_of(c) for c in launched(record)] == [str(parent / "num_epochs_3")]


# Interrupting a search, then resuming it with the same command


def wait_for(condition, process, timeout, what):
    """Polls `condition` until it holds; fails if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the search ended (exit {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)


def press_ctrl_c_when(condition, monkeypatch):
    """The next search run in this process meets Ctrl-C once condition() holds, where a user's Ctrl-C
    (or SIGTERM) reaches it: in its main thread, as it waits for its trials."""

    def as_completed(futures):
        while not condition():
            assert not all(future.done() for future in futures), "the trials ended before the Ctrl-C"
            time.sleep(0.01)
        monkeypatch.setattr(runner, "as_completed", concurrent.futures.as_completed)  # once
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "as_completed", as_completed)


def test_interrupted_search_stops_its_trials_and_the_same_command_resumes_it(
    tmp_path, built_dataset, stand_in, monkeypatch
):
    # Trial 2's stand-in trains its first epoch, then no further until it is stopped; Ctrl-C comes
    # once that epoch is saved.
    parent = make_search(tmp_path / "search", {"learning_rate": [0.01, 0.02]}, num_epochs=3)
    first, second = parent / "learning_rate_0.01", parent / "learning_rate_0.02"
    args = search_args(parent, built_dataset, "--jobs", "1")
    press_ctrl_c_when((second / "metrics_eval_best_weights.json").exists, monkeypatch)

    stopped = run_in_process("search_hyperparams.py", *args, env={"STUB_HOLD_IN": second.name})

    assert stopped.returncode == 130, stopped.stderr
    assert "run the same command again to resume it" in stopped.stderr
    assert epochs_done(first) == 3
    assert epochs_done(second) == 1, "trial 2 must have been stopped before its last epoch"
    assert running_processes_mentioning(str(second)) == [], "an interrupted search must stop its trials"
    assert "Stopped after 1 epochs" in (second / "train.log").read_text(), "stopped cleanly, by the search"

    first_weights = weight_files(first)
    rerun = run_in_process("search_hyperparams.py", *args)

    assert rerun.returncode == 0, rerun.stderr
    assert "Search finished: 1 done, 1 skipped (finished before), 0 failed" in rerun.stderr
    assert weight_files(first) == first_weights
    assert "Restored" in (second / "train.log").read_text()
    assert epochs_done(second) == 3

    results = run_in_process("synthesize_results.py", "--parent_dir", parent)
    assert results.returncode == 0, results.stderr
    assert first.name in results.stdout and second.name in results.stdout
    assert "unfinished" not in results.stdout


@pytest.mark.slow
def test_a_real_search_interrupted_stops_its_train_py_and_the_same_command_resumes_it(tmp_path, built_dataset):
    # Long epochs (48 steps): trial 2 is still training when the SIGTERM reaches it, however busy the machine.
    parent = make_search(tmp_path / "search", {"learning_rate": [0.01, 0.02]}, num_epochs=3, batch_size=2)
    first, second = parent / "learning_rate_0.01", parent / "learning_rate_0.02"
    args = search_args(parent, built_dataset, "--jobs", "1")

    with open(tmp_path / "search.out", "w") as out:
        command = [sys.executable, str(REPO / "search_hyperparams.py"), *args]
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            # Stop the search once trial 2 has saved all of its first epoch (the best weights last).
            best_saved = second / "metrics_eval_best_weights.json"
            wait_for(best_saved.exists, process, 180, "trial 2's first epoch")
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = (tmp_path / "search.out").read_text()

    assert process.returncode != 0
    assert "run the same command again to resume it" in output
    assert epochs_done(first) == 3
    assert 1 <= epochs_done(second) < 3, "trial 2 must have been stopped before its last epoch"
    assert running_processes_mentioning(str(second)) == [], "an interrupted search must stop its trials"
    train_log_size = (second / "train.log").stat().st_size
    time.sleep(1)
    assert (second / "train.log").stat().st_size == train_log_size

    first_weights = weight_files(first)
    rerun = run_script("search_hyperparams.py", *args)

    assert rerun.returncode == 0, rerun.stderr
    assert "Search finished: 1 done, 1 skipped (finished before), 0 failed" in rerun.stderr
    assert weight_files(first) == first_weights
    assert "Restored" in (second / "train.log").read_text()
    assert epochs_done(second) == 3

    results = run_script("synthesize_results.py", "--parent_dir", parent)
    assert results.returncode == 0, results.stderr
    assert first.name in results.stdout and second.name in results.stdout
    assert "unfinished" not in results.stdout


# train.py, stopped by SIGTERM right after an epoch's last_weights and metrics are saved.
STOP_AFTER_LAST_WEIGHTS = """
import os, runpy, signal, sys
sys.argv = sys.argv[2:]  # [python, train.py, ...] -> [train.py, ...]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
import model.utils.checkpoints
save = model.utils.checkpoints.save_json
def save_then_stop(values, path):
    save(values, path)
    if path.name == "metrics_eval_last_weights.json":
        os.kill(os.getpid(), signal.SIGTERM)
model.utils.checkpoints.save_json = save_then_stop
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_trial_stopped_right_after_saving_last_weights_gets_its_best_weights_on_rerun(tmp_path, built_dataset):
    parent = make_search(tmp_path / "search", {"learning_rate": [0.01]}, num_epochs=1)
    trial = parent / "learning_rate_0.01"
    stopper = tmp_path / "stop_after_last_weights.py"
    stopper.write_text(STOP_AFTER_LAST_WEIGHTS)

    stopped = search_for_real(parent, built_dataset, "--launcher", shlex.join([sys.executable, str(stopper)]))
    assert stopped.returncode == 1 and "Interrupted." in stopped.stderr
    rerun = search_for_real(parent, built_dataset)

    assert rerun.returncode == 0, rerun.stderr
    assert (trial / "best_weights").is_dir(), rerun.stderr
    assert (trial / "metrics_eval_best_weights.json").exists()
