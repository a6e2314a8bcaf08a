"""search_hyperparams.py --sampler tpe as a user runs it: a study that prunes bad trials and
keeps the best, two searches sharing one study, a dead search's trial retried, an interrupted
search resumed (also after several interrupts), clear errors, and synthesize_results.py over a study.

As in test_search.py, the fast tests run the search in the test's process with the stand-in
train.py of tests/stub_scripts (the `stand_in` and `trainer` fixtures); the end-to-end tests run
it as a user does, each trial a real train.py, some with several search processes at once."""

import json
import re
import signal
import subprocess
import sys
import time

import optuna  # optional for users, but in requirements-dev.txt: the tests need it
import pytest
from conftest import REPO, run_in_process, run_script, tiny_params
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from test_search import make_search, press_ctrl_c_when, read_json, search_args, wait_for, weight_files

from model.utils.files import append_json_line, read_json_lines

# Learning rates below 1e-5 leave the tiny model at chance (1/6) for the whole run: a bad region.
LR_WITH_BAD_REGION = {"learning_rate": {"distribution": "log_uniform", "low": 1e-7, "high": 0.05}}
# Trials of the first test's study; with the seeded draws, 2 of them fall in the bad region.
NUM_TRIALS = 4
# Learning rates that all train without diverging.
SAFE_LR = {"learning_rate": {"distribution": "log_uniform", "low": 1e-3, "high": 1e-2}}


def tpe_args(parent, data_dir, num_trials, *args):
    return search_args(parent, data_dir, "--sampler", "tpe", "--num_trials", str(num_trials), *args)


def start_search(args, output_path):
    """A search process running in the background, its stdout and stderr going to output_path."""
    with open(output_path, "w") as output:
        command = [sys.executable, str(REPO / "search_hyperparams.py"), *map(str, args)]
        return subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)


def stop(process):
    """Kills a background search that a failed assertion left running."""
    if process.poll() is None:
        process.kill()
        process.wait()


def storage_of(parent):
    return JournalStorage(JournalFileBackend(str(parent / "optuna_journal.log")))


def load_study(parent):
    """The study a search with the default --storage and --study_name keeps for parent."""
    return optuna.load_study(study_name=parent.name, storage=storage_of(parent))


def trial_folders(parent):
    return sorted(path.name for path in parent.iterdir() if path.is_dir())


def finished_lines(output):
    """{trial number: folder} of the 'Trial N (folder) finished' lines of a search's output."""
    return {int(number): folder for number, folder in re.findall(r"Trial (\d+) \((\S+)\) finished: dev", output)}


def interrupt_search(args, output_path, condition, what):
    """Starts a search, stops it with SIGTERM once condition() holds; (exit status, output)."""
    process = start_search(args, output_path)
    try:
        wait_for(condition, process, 180, what)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        stop(process)
    return process.returncode, output_path.read_text()


def epochs_saved(parent):
    """The epochs saved so far by all the trials in parent (lines of their history.jsonl)."""
    return sum(len(read_json_lines(path)) for path in parent.glob("trial_*/history.jsonl"))


def epochs_done(trial):
    path = trial / "metrics_eval_last_weights.json"
    return read_json(path)["epoch"] if path.exists() else 0


# A study from start to end


def test_tpe_study_prunes_the_bad_region_keeps_the_best_and_a_rerun_adds_nothing(tmp_path, built_dataset, trainer):
    num_epochs = 6
    parent = make_search(tmp_path / "lr_study", LR_WITH_BAD_REGION, num_epochs=num_epochs)
    args = tpe_args(parent, built_dataset, NUM_TRIALS)

    result = trainer.run("search_hyperparams.py", *args)

    assert result.returncode == 0, result.stderr
    study = load_study(parent)
    assert len(study.trials) == NUM_TRIALS
    assert trial_folders(parent) == sorted(t.user_attrs["trial_dir"] for t in study.trials)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned, "a trial stuck at chance must be pruned"
    assert len(pruned) + len(complete) == NUM_TRIALS, result.stderr
    # The seeded draws start with two good learning rates, so every trial in the bad region
    # comes after two finished trials, when the pruner may act.
    for t in study.trials:
        if t.params["learning_rate"] < 1e-5:
            assert t.state == TrialState.PRUNED, f"trial {t.number} at chance was not pruned"

    for t in study.trials:
        folder = parent / t.user_attrs["trial_dir"]
        assert folder.name.startswith(f"trial_{t.number:03d}-learning_rate_")
        assert read_json(folder / "params.json") == tiny_params(num_epochs=num_epochs, **t.params)
        record = read_json(folder / "trial.json")
        assert (record["study"], record["number"], record["params"]) == ("lr_study", t.number, t.params)
        if t.state == TrialState.PRUNED:
            assert record["state"] == "pruned"
            epoch = record["pruned_at_epoch"]
            assert 2 <= epoch <= num_epochs, "never pruned on the first, noisy epoch"
            assert f"Trial {t.number} ({folder.name}) pruned after epoch {epoch}" in result.stderr
        else:
            assert record["state"] == "complete" and record["value"] == t.value
            history = read_json_lines(folder / "history.jsonl")
            assert [line["epoch"] for line in history] == list(range(1, num_epochs + 1))
            assert history[-1]["accuracy"] == read_json(folder / "metrics_eval_last_weights.json")["accuracy"]
            assert f"Trial {t.number} ({folder.name}) finished: dev accuracy {t.value:.4f}" in result.stderr

    best = parent / study.best_trial.user_attrs["trial_dir"]
    assert read_json(best / "metrics_eval_best_weights.json")["accuracy"] == study.best_value
    assert study.best_value >= 0.5, "the best trial must have learned"
    summary = (
        f"Study 'lr_study': {NUM_TRIALS} trials: {len(complete)} complete, {len(pruned)} pruned, 0 failed, 0 running"
    )
    for report in (result.stderr, (parent / "search.log").read_text()):
        assert summary in report
        assert f"Best trial: {study.best_trial.number}, dev accuracy {study.best_value:.4f}" in report
        assert f"in {best}" in report

    # The same command again: the study holds its trials, nothing runs
    weights_before = weight_files(*(parent / name for name in trial_folders(parent)))
    rerun = trainer.run("search_hyperparams.py", *args)

    assert rerun.returncode == 0, rerun.stderr
    assert len(load_study(parent).trials) == NUM_TRIALS
    assert trial_folders(parent) == sorted(t.user_attrs["trial_dir"] for t in study.trials)
    assert weight_files(*(parent / name for name in trial_folders(parent))) == weights_before
    assert summary in rerun.stderr

    # The results: pruned trials marked and listed after the finished ones; the study's plots
    results = trainer.run("synthesize_results.py", "--parent_dir", parent)

    assert results.returncode == 0, results.stderr
    rows = [line for line in results.stdout.splitlines() if line.startswith("| trial_")]
    assert len(rows) == NUM_TRIALS
    marked = [i for i, row in enumerate(rows) if "(pruned after epoch" in row]
    assert marked == list(range(len(complete), NUM_TRIALS)), "pruned trials come after every finished one"
    for t in pruned:
        folder = t.user_attrs["trial_dir"]
        epoch = read_json(parent / folder / "trial.json")["pruned_at_epoch"]
        assert any(row.startswith(f"| {folder} (pruned after epoch {epoch}) |") for row in rows)
    assert f"Best trial: {study.best_trial.number}, dev accuracy {study.best_value:.4f}" in results.stdout
    for kind in ("history", "importances"):
        html = parent / f"lr_study_{kind}.html"
        assert html.is_file() and "plotly" in html.read_text().lower()
        assert f"Saved {html}" in results.stdout


# Several search processes on one study


def test_a_search_of_two_jobs_runs_each_trial_of_its_study_once(tmp_path, built_dataset, stand_in):
    parent = make_search(tmp_path / "shared", SAFE_LR, num_epochs=1)

    result = run_in_process(
        "search_hyperparams.py", *tpe_args(parent, built_dataset, 4, "--pruner", "none", "--jobs", "2")
    )

    assert result.returncode == 0, result.stderr
    study = load_study(parent)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.number for t in complete}) == 4
    assert all(t.user_attrs.get("not_run") for t in study.trials if t.state != TrialState.COMPLETE)
    assert trial_folders(parent) == sorted(t.user_attrs["trial_dir"] for t in complete)
    for name in trial_folders(parent):
        log = (parent / name / "train.log").read_text()
        assert log.count("starting from freshly initialised weights") == 1, f"{name} was trained twice"
        assert "Restored" not in log
    assert finished_lines(result.stderr) == {t.number: t.user_attrs["trial_dir"] for t in complete}


@pytest.mark.slow
def test_two_searches_of_two_jobs_started_together_share_the_trials_of_one_study(tmp_path, built_dataset):
    parent = make_search(tmp_path / "shared", SAFE_LR, num_epochs=1)
    args = tpe_args(parent, built_dataset, 4, "--pruner", "none", "--jobs", "2")

    processes = [start_search(args, tmp_path / f"search_{i}.out") for i in range(2)]
    try:
        for process in processes:
            process.wait(timeout=240)
    finally:
        for process in processes:
            stop(process)
    outputs = [(tmp_path / f"search_{i}.out").read_text() for i in range(2)]

    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    study = load_study(parent)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.number for t in complete}) == 4
    # A trial asked for at the very moment the other search took the last one is never run.
    assert all(t.user_attrs.get("not_run") for t in study.trials if t.state != TrialState.COMPLETE)
    assert trial_folders(parent) == sorted(t.user_attrs["trial_dir"] for t in complete)
    for name in trial_folders(parent):
        log = (parent / name / "train.log").read_text()
        assert log.count("starting from freshly initialised weights") == 1, f"{name} was trained twice"
        assert "Restored" not in log

    first, second = (finished_lines(output) for output in outputs)
    assert first and second, "each search must run trials"
    assert not first.keys() & second.keys(), "no trial may be run by both searches"
    assert {**first, **second} == {t.number: t.user_attrs["trial_dir"] for t in complete}


# A trial whose search died, and a search that was interrupted


def test_trial_of_a_dead_search_is_retried_in_its_own_folder(tmp_path, built_dataset, trainer):
    parent = make_search(tmp_path / "revived", SAFE_LR, num_epochs=2)
    # A study whose trial 0 lost its search process an hour ago, after its first epoch of two.
    study = optuna.create_study(storage=storage_of(parent), study_name="revived", direction="maximize")
    study.set_user_attr("metric", "accuracy")
    dead = study.ask()
    learning_rate = dead.suggest_float("learning_rate", 1e-3, 1e-2, log=True)
    dead.set_user_attr("trial_dir", "trial_000-dead")
    dead.set_user_attr("heartbeat", time.time() - 3600)
    folder = parent / "trial_000-dead"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(tiny_params(num_epochs=2, learning_rate=learning_rate)))
    train = [sys.executable, trainer.scripts / "train.py", "--model_dir", folder, "--data_dir", built_dataset]
    first_epoch = subprocess.run(
        [*map(str, train), "--param", "num_epochs=1"], capture_output=True, text=True, timeout=300
    )
    assert first_epoch.returncode == 0, first_epoch.stderr

    result = trainer.run("search_hyperparams.py", *tpe_args(parent, built_dataset, 1))

    assert result.returncode == 0, result.stderr
    assert "Trial 0 has had no heartbeat" in result.stderr
    trials = load_study(parent).trials
    assert trials[0].state == TrialState.FAIL
    retries = [t for t in trials if t.user_attrs.get("requeued_from") == 0]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == {"learning_rate": learning_rate}
    assert retry.user_attrs["trial_dir"] == "trial_000-dead"
    assert len(trials) == 2, "--num_trials 1: the retry is the only trial run"
    assert trial_folders(parent) == ["trial_000-dead"]
    log = (folder / "train.log").read_text()
    assert re.search(r"Restored .*: 1 epochs done", log)
    assert epochs_done(folder) == 2
    assert read_json(folder / "trial.json")["number"] == retry.number
    assert f"Trial {retry.number} (trial_000-dead) finished" in result.stderr


def test_interrupted_tpe_search_resumes_its_trial_in_the_same_folder_however_often(
    tmp_path, built_dataset, stand_in, monkeypatch
):
    num_epochs = 20
    parent = make_search(tmp_path / "stopped", SAFE_LR, num_epochs=num_epochs)
    args = tpe_args(parent, built_dataset, 2)

    # Interrupted three times, after one more epoch each time: more than a dead trial's retries.
    # The trial's stand-in trains one epoch, then no further until it is stopped.
    for _ in range(3):
        saved = epochs_saved(parent)
        press_ctrl_c_when(lambda saved=saved: epochs_saved(parent) > saved, monkeypatch)
        stopped = run_in_process("search_hyperparams.py", *args, env={"STUB_HOLD_IN": "trial_"})
        assert stopped.returncode == 130, stopped.stderr
        assert "run the same command again to resume it" in stopped.stderr
    [name] = trial_folders(parent)
    folder = parent / name
    assert epochs_done(folder) == 3, "the trial must be stopped with the search, after one more epoch each time"
    assert not (folder / "trial.json").exists()

    rerun = run_in_process("search_hyperparams.py", *args)

    assert rerun.returncode == 0, rerun.stderr
    assert "Restored" in (folder / "train.log").read_text()
    assert epochs_done(folder) == num_epochs
    trials = load_study(parent).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2, "exactly --num_trials trials, the interrupted one counted once"
    assert [t.user_attrs.get("requeued_from") for t in complete if t.user_attrs["trial_dir"] == name] == [2]
    assert len(trial_folders(parent)) == 2 and name in trial_folders(parent)
    assert "Study 'stopped': 2 trials: 2 complete, 0 pruned, 0 failed, 0 running" in rerun.stderr


@pytest.mark.slow
def test_a_real_tpe_search_interrupted_resumes_its_train_py_in_the_same_folder_however_often(tmp_path, built_dataset):
    num_epochs = 20  # an epoch takes a fraction of a second here: long enough to be caught training
    parent = make_search(tmp_path / "stopped", SAFE_LR, num_epochs=num_epochs)
    args = tpe_args(parent, built_dataset, 2)

    # Interrupted three times, after one more epoch each time: more than a dead trial's retries
    for i in range(3):
        saved = epochs_saved(parent)
        returncode, output = interrupt_search(
            args, tmp_path / f"search_{i}.out", lambda saved=saved: epochs_saved(parent) > saved, "one more epoch"
        )
        assert returncode != 0, output
        assert "run the same command again to resume it" in output
    [name] = trial_folders(parent)
    folder = parent / name
    assert 3 <= epochs_done(folder) < num_epochs, "the trial must be stopped with the search"
    assert not (folder / "trial.json").exists()

    rerun = run_script("search_hyperparams.py", *args)

    assert rerun.returncode == 0, rerun.stderr
    assert "Restored" in (folder / "train.log").read_text()
    assert epochs_done(folder) == num_epochs
    trials = load_study(parent).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2, "exactly --num_trials trials, the interrupted one counted once"
    assert [t.user_attrs.get("requeued_from") for t in complete if t.user_attrs["trial_dir"] == name] == [2]
    assert len(trial_folders(parent)) == 2 and name in trial_folders(parent)
    assert "Study 'stopped': 2 trials: 2 complete, 0 pruned, 0 failed, 0 running" in rerun.stderr


def test_results_list_a_pruned_trial_after_the_finished_ones_even_when_it_scored_higher(tmp_path):
    # A pruned trial can still score well: the pruner judged it at an early epoch.
    for number, (name, accuracy, state) in enumerate(
        [("trial_000-a", 0.5, "complete"), ("trial_001-b", 0.9, "pruned"), ("trial_002-c", 0.7, "complete")]
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(tiny_params(learning_rate=accuracy / 100)))
        (folder / "metrics_eval_best_weights.json").write_text(json.dumps({"accuracy": accuracy, "epoch": 2}))
        record = {"study": "s", "number": number, "params": {}, "state": state}
        record |= {"pruned_at_epoch": 2} if state == "pruned" else {"value": accuracy}
        (folder / "trial.json").write_text(json.dumps(record))

    result = run_in_process("synthesize_results.py", "--parent_dir", tmp_path)

    assert result.returncode == 0, result.stderr
    rows = [
        line.split(" | ")[0].removeprefix("| ") for line in result.stdout.splitlines() if line.startswith("| trial_")
    ]
    assert rows == ["trial_002-c", "trial_000-a", "trial_001-b (pruned after epoch 2)"]


# Clear errors, and what a dry run shows


def test_tpe_without_optuna_says_how_to_install_it(tmp_path, monkeypatch):
    parent = make_search(tmp_path / "search", SAFE_LR)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError, as if not installed
    monkeypatch.delitem(sys.modules, "search.tpe", raising=False)  # imported again, without it

    result = run_in_process("search_hyperparams.py", *tpe_args(parent, tmp_path / "data", 2))

    assert result.returncode == 2, result.stderr
    assert "pip install -r requirements-search.txt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (parent / "optuna_journal.log").exists()


def test_tpe_dry_run_shows_the_space_and_creates_nothing(tmp_path):
    parent = make_search(tmp_path / "search", SAFE_LR)

    result = run_in_process(
        "search_hyperparams.py", "--parent_dir", parent, "--sampler", "tpe", "--num_trials", 7, "--dry_run"
    )

    assert result.returncode == 0, result.stderr
    assert "7 trials" in result.stdout
    assert "learning_rate: {'distribution': 'log_uniform', 'low': 0.001, 'high': 0.01}" in result.stdout
    assert sorted(p.name for p in parent.iterdir()) == ["params.json", "search.json"]


def test_grid_over_a_distribution_is_a_clear_error(tmp_path):
    parent = make_search(tmp_path / "search", SAFE_LR)

    result = run_in_process("search_hyperparams.py", "--parent_dir", parent, "--sampler", "grid", "--dry_run")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(parent / "search.json") in result.stderr and "--sampler tpe" in result.stderr


def test_a_folder_in_the_way_stops_the_search_and_its_trial_runs_once_moved(tmp_path, built_dataset, trainer):
    parent = make_search(tmp_path / "blocked", SAFE_LR, num_epochs=1)
    args = tpe_args(parent, built_dataset, 1)
    # A folder left over from an earlier study, under the name the same seeded draw gives
    assert trainer.run("search_hyperparams.py", *args).returncode == 0
    (parent / "optuna_journal.log").unlink()
    [name] = trial_folders(parent)
    (parent / name / "params.json").write_text(json.dumps(tiny_params(learning_rate=0.5)))

    blocked = trainer.run("search_hyperparams.py", *args)

    assert blocked.returncode == 2 and "Traceback" not in blocked.stderr
    assert f"{parent / name / 'params.json'} exists with other hyperparameters" in blocked.stderr
    assert not [t for t in load_study(parent).trials if t.state == TrialState.RUNNING], "no trial left running"

    (parent / name).rename(tmp_path / "moved_away")
    rerun = trainer.run("search_hyperparams.py", *args)

    assert rerun.returncode == 0, rerun.stderr
    assert [t.user_attrs["trial_dir"] for t in load_study(parent).trials if t.state == TrialState.COMPLETE] == [name]


def test_a_storage_that_cannot_be_opened_is_a_clear_error(tmp_path, built_dataset):
    parent = make_search(tmp_path / "search", SAFE_LR)
    url = f"sqlite:///{tmp_path}/no/such/folder/study.db"

    result = run_in_process("search_hyperparams.py", *tpe_args(parent, built_dataset, 1, "--storage", url))

    assert result.returncode == 2
    assert f"Cannot open the study in {url}" in result.stderr and "Traceback" not in result.stderr
    assert not list(parent.glob("trial_*"))


def test_another_metric_for_an_existing_study_is_a_clear_error(tmp_path, built_dataset):
    # The search optimises best_metric: here the loss, for a study that maximised the accuracy
    parent = make_search(tmp_path / "search", SAFE_LR, best_metric="loss")
    study = optuna.create_study(storage=storage_of(parent), study_name="search", direction="maximize")
    study.set_user_attr("metric", "accuracy")

    result = run_in_process("search_hyperparams.py", *tpe_args(parent, built_dataset, 1))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "set best_metric to accuracy" in result.stderr
    assert trial_folders(parent) == []
    assert load_study(parent).trials == []


# The JSON-lines file a trial's pruner follows


def test_json_lines_leave_out_a_line_still_being_written(tmp_path):
    path = tmp_path / "history.jsonl"
    assert read_json_lines(path) == []

    append_json_line({"epoch": 1, "accuracy": 0.5}, path)
    append_json_line({"epoch": 2, "accuracy": 0.75}, path)
    with open(path, "a") as f:
        f.write('{"epoch": 3, "accur')  # a writer midway through its line

    assert read_json_lines(path) == [{"epoch": 1, "accuracy": 0.5}, {"epoch": 2, "accuracy": 0.75}]

    with open(path, "a") as f:
        f.write('acy": 1.0}\n')
    assert read_json_lines(path)[-1] == {"epoch": 3, "accuracy": 1.0}
