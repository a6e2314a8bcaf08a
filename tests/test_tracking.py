"""MLflow tracking (--tracking_uri, MLFLOW_TRACKING_URI), read back as a user reads it: through MlflowClient,
from a real local store (SQLite) in the test's folder. A training run and its resumes are one MLflow run;
evaluate.py adds its results to it; a search is a parent run with a child run per trial; a missing MLflow
or a store that cannot be reached is one message, before anything is written."""

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_in_process, run_script, tiny_params
from mlflow import MlflowClient  # optional for users, but in requirements-dev.txt: the tests need it
from PIL import Image
from test_interruptions import signal_in_epoch, start_training, wait_for
from test_search import make_search, search_args

EXPERIMENT = "template tests"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local MLflow store in tmp_path, and an experiment whose artifacts are kept there too (MLflow's
    default, ./mlruns, would be in the repository, where the scripts run in these tests)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    client.uri = uri
    return client


def runs_of(store):
    experiment = store.get_experiment_by_name(EXPERIMENT).experiment_id
    return store.search_runs([experiment], order_by=["attributes.start_time ASC"])


def steps(store, run, key):
    return {m.step: m.value for m in store.get_metric_history(run.info.run_id, key)}


def artifacts(store, run, folder=None):
    return sorted(a.path for a in store.list_artifacts(run.info.run_id, folder))


def history(model_dir):
    return [json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines()]


def test_a_run_its_resume_and_its_evaluation_are_one_mlflow_run(tmp_path, trained_once, store, monkeypatch):
    model_dir, data_dir = tmp_path / "experiment", trained_once.data_dir
    model_dir.mkdir()
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))
    with monkeypatch.context() as patch:  # Ctrl-C in epoch 2: a stopped run
        signal_in_epoch(model_dir, 2, signal.SIGINT, patch)
        stopped = run_in_process(
            "train.py", "--model_dir", model_dir, "--data_dir", data_dir, "--tracking_uri", store.uri
        )
    assert stopped.returncode == 130, stopped.stderr
    (run,) = runs_of(store)
    assert run.info.status == "KILLED" and run.info.run_name == "experiment"
    assert list(steps(store, run, "dev/accuracy")) == [1]

    # The same command resumes it, with another num_epochs: the same MLflow run goes on
    resumed = run_in_process(
        "train.py", "--model_dir", model_dir, "--restore_from", "last_weights", "--param", "num_epochs=4",
        env={"MLFLOW_TRACKING_URI": store.uri},
    )  # fmt: skip

    assert resumed.returncode == 0, resumed.stderr
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED"
    assert json.loads((model_dir / "run.json").read_text())["mlflow_run_id"] == run.info.run_id
    assert run.data.tags["run_folder"] == str(model_dir.resolve())
    # The hyperparameters, MLflow keeping the first value of one a resume changed (the log says so)
    assert run.data.params["learning_rate"] == str(tiny_params()["learning_rate"])
    assert (
        run.data.params["num_epochs"] == "3"
        and "MLflow keeps the first values of num_epochs (this run" in resumed.stderr
    )
    # Every epoch once, step = epoch, with the values of history.jsonl
    for record in history(model_dir):
        for name, key in (("accuracy", "dev/accuracy"), ("loss", "dev/loss"), ("train_loss", "train/loss")):
            assert steps(store, run, key)[record["epoch"]] == pytest.approx(record[name])
    assert list(steps(store, run, "dev/accuracy")) == [1, 2, 3, 4]
    assert artifacts(store, run) == ["params.json", "run.json"]
    logged_record = json.loads(Path(store.download_artifacts(run.info.run_id, "run.json", str(tmp_path))).read_text())
    assert logged_record["status"] == "finished"

    # evaluate.py finds the run from the folder, and adds the test results to it
    evaluated = run_in_process("evaluate.py", "--model_dir", model_dir, "--tracking_uri", store.uri)

    assert evaluated.returncode == 0, evaluated.stderr
    (run,) = runs_of(store)
    results = json.loads((model_dir / "metrics_test_best_weights.json").read_text())
    assert run.data.metrics["test_best_weights/accuracy"] == pytest.approx(results["accuracy"])
    assert artifacts(store, run, "test_best_weights") == [
        "test_best_weights/confusion_matrix.png",
        "test_best_weights/per_class.md",
    ]
    folder = Path(store.download_artifacts(run.info.run_id, "test_best_weights", str(tmp_path)))
    assert "| precision | recall | F1 | support |" in (folder / "per_class.md").read_text()
    saved = np.asarray(Image.open(model_dir / "confusion_matrix_test_best_weights.png"))
    assert np.array_equal(np.asarray(Image.open(folder / "confusion_matrix.png")), saved)


def test_a_run_first_tracked_when_it_resumes_logs_its_earlier_epochs_too(trained, store):
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))

    result = run_in_process(
        "train.py", "--model_dir", trained, "--restore_from", "last_weights", "--tracking_uri", store.uri
    )

    assert result.returncode == 0, result.stderr
    (run,) = runs_of(store)
    assert list(steps(store, run, "dev/accuracy")) == [1, 2, 3]
    assert list(steps(store, run, "train/accuracy")) == [1, 2, 3]


def test_a_store_failing_during_training_is_one_warning_and_the_resume_logs_the_epochs_it_missed(
    tmp_path, trained_once, store, monkeypatch
):
    model_dir = tmp_path / "experiment"
    model_dir.mkdir()
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=2)))
    log_batch, tries = MlflowClient.log_batch, []

    def refuse_metrics(self, run_id, metrics=(), **kwargs):  # as a server that went away after the start
        if metrics:
            tries.append(run_id)
            raise ConnectionError("the server went away. Details follow")
        return log_batch(self, run_id, metrics=metrics, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, "log_batch", refuse_metrics)
        result = run_in_process(
            "train.py", "--model_dir", model_dir, "--data_dir", trained_once.data_dir, "--tracking_uri", store.uri
        )

    assert result.returncode == 0, result.stderr
    warning = f"Warning: MLflow at {store.uri} did not take the epochs' metrics: the server went away. Nothing more"
    assert result.stderr.count(warning) == 1 and warning in (model_dir / "train.log").read_text()
    assert len(tries) == 1, "a store that failed is not waited for again at each epoch"
    (run,) = runs_of(store)
    assert steps(store, run, "dev/accuracy") == {} and run.info.status == "RUNNING"

    resumed = run_in_process(
        "train.py", "--model_dir", model_dir, "--restore_from", "last_weights", "--param", "num_epochs=3",
        "--tracking_uri", store.uri,
    )  # fmt: skip

    assert resumed.returncode == 0, resumed.stderr
    (run,) = runs_of(store)
    assert list(steps(store, run, "dev/accuracy")) == [1, 2, 3] and run.info.status == "FINISHED"


def test_a_run_taken_back_to_an_earlier_epoch_logs_the_epochs_trained_again_and_says_so(trained, store):
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))
    first = run_in_process(
        "train.py", "--model_dir", trained, "--restore_from", "last_weights", "--tracking_uri", store.uri
    )
    assert first.returncode == 0, first.stderr

    again = run_in_process(
        "train.py", "--model_dir", trained, "--restore_from", trained / "last_weights" / "ckpt-1",
        "--tracking_uri", store.uri,
    )  # fmt: skip

    assert again.returncode == 0, again.stderr
    assert "this run goes on from epoch 1, but its MLflow run holds epochs up to 3" in again.stderr
    (run,) = runs_of(store)
    logged = [m.step for m in store.get_metric_history(run.info.run_id, "dev/accuracy")]
    assert sorted(logged) == [1, 2, 2, 3, 3]
    latest = max(store.get_metric_history(run.info.run_id, "dev/accuracy"), key=lambda m: (m.step, m.timestamp))
    assert latest.value == pytest.approx(history(trained)[-1]["accuracy"])


def test_a_run_deleted_in_mlflow_goes_on_in_a_new_one(trained, store):
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))
    store.delete_run(store.create_run(store.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id)
    (deleted,) = store.search_runs([store.get_experiment_by_name(EXPERIMENT).experiment_id], run_view_type=2)
    record = json.loads((trained / "run.json").read_text())
    (trained / "run.json").write_text(json.dumps({**record, "mlflow_run_id": deleted.info.run_id}))

    result = run_in_process(
        "train.py", "--model_dir", trained, "--restore_from", "last_weights", "--tracking_uri", store.uri
    )

    assert result.returncode == 0, result.stderr
    (run,) = runs_of(store)
    assert run.info.run_id != deleted.info.run_id and list(steps(store, run, "dev/accuracy")) == [1, 2, 3]


def test_evaluations_of_a_run_never_tracked_go_to_one_mlflow_run_of_its_folder(trained, store):
    for split in ("test", "dev"):
        result = run_in_process("evaluate.py", "--model_dir", trained, "--split", split, "--tracking_uri", store.uri)
        assert result.returncode == 0, result.stderr

    (run,) = runs_of(store)
    assert run.data.tags["run_folder"] == str(trained.resolve())
    assert {"test_best_weights/accuracy", "dev_best_weights/accuracy"} <= set(run.data.metrics)


def test_a_run_started_again_with_overwrite_is_a_new_mlflow_run_and_ends_a_killed_one(trained, store):
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=1)))
    first = run_in_process("train.py", "--model_dir", trained, "--overwrite", "--tracking_uri", store.uri)
    assert first.returncode == 0, first.stderr
    (killed,) = runs_of(store)
    store.update_run(killed.info.run_id, status="RUNNING")  # as a kill -9 leaves it

    again = run_in_process("train.py", "--model_dir", trained, "--overwrite", "--tracking_uri", store.uri)

    assert again.returncode == 0, again.stderr
    old, new = runs_of(store)
    assert old.info.run_id == killed.info.run_id and old.info.status == "KILLED"
    assert new.info.status == "FINISHED" and list(steps(store, new, "dev/accuracy")) == [1]


def test_a_copied_run_folder_starts_its_own_mlflow_run(tmp_path, trained, store):
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))
    first = run_in_process(
        "train.py", "--model_dir", trained, "--restore_from", "last_weights", "--tracking_uri", store.uri
    )
    assert first.returncode == 0, first.stderr
    copy = shutil.copytree(trained, tmp_path / "copy")
    (copy / "params.json").write_text(json.dumps(tiny_params(num_epochs=4)))

    result = run_in_process(
        "train.py", "--model_dir", copy, "--restore_from", "last_weights", "--tracking_uri", store.uri
    )

    assert result.returncode == 0, result.stderr
    original, copied = runs_of(store)
    assert list(steps(store, original, "dev/accuracy")) == [1, 2, 3]  # untouched by the copy
    assert copied.data.tags["run_folder"] == str(copy.resolve())
    assert list(steps(store, copied, "dev/accuracy")) == [1, 2, 3, 4]


def test_a_search_trial_whose_store_failed_since_the_search_began_trains_untracked(trained, store):
    parent = store.create_run(store.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id
    (trained / "params.json").write_text(json.dumps(tiny_params(num_epochs=3)))
    gone = f"http://127.0.0.1:{closed_port()}"

    result = run_in_process(
        "train.py", "--model_dir", trained, "--restore_from", "last_weights", "--tracking_uri", gone,
        "--tracking_parent", parent,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert f"Warning: The MLflow tracking server {gone} cannot be reached" in result.stderr
    assert "This trial goes on without MLflow" in result.stderr and "Epoch 3/3 - Eval metrics" in result.stderr


def test_a_run_with_tracking_off_imports_no_mlflow(trained, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importing it would fail

    result = run_in_process("train.py", "--model_dir", trained, "--restore_from", "last_weights")

    assert result.returncode == 0, result.stderr
    assert json.loads((trained / "run.json").read_text())["mlflow_run_id"] is None


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def silent_server():
    """A port that takes connections but never answers, as a server that hangs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def tracking_fault(fault, tmp_path, monkeypatch, stack):
    """(the tracking URI of a store that cannot work, what the message says of it)."""
    if fault == "no mlflow":
        monkeypatch.setitem(sys.modules, "mlflow", None)
        return "sqlite:///mlflow.db", "but MLflow is not installed: pip install -r requirements-tracking.txt"
    if fault == "no server":
        uri = f"http://127.0.0.1:{closed_port()}"
        return uri, f"The MLflow tracking server {uri} cannot be reached: Connection refused"
    if fault == "silent server":
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")  # MLflow's own setting, taken as given
        uri = stack.enter_context(silent_server())
        return uri, f"The MLflow tracking store {uri} cannot be used: "
    if fault == "in memory":
        return "sqlite://", "sqlite:// is a store in memory, lost when the script ends"
    if fault == "in memory, spelt otherwise":
        uri = "sqlite+pysqlite:///:memory:?cache=shared"
        return uri, f"{uri} is a store in memory, lost when the script ends"
    if fault == "artifacts under a file":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        (tmp_path / "a_file").write_text("")
        MlflowClient(uri).create_experiment("filed", artifact_location=(tmp_path / "a_file" / "artifacts").as_uri())
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "filed")
        return uri, f"MLflow keeps the artifacts of {uri} in {tmp_path / 'a_file' / 'artifacts'}, but"
    if fault == "a folder":
        (tmp_path / "store").mkdir()
        uri = f"sqlite:///{tmp_path / 'store'}"
        return uri, f"The MLflow tracking store {uri} is a folder, not a database file"
    if fault == "misspelt":
        return "sqllite:///mlflow.db", "MLflow knows no store of that kind"
    assert fault == "deleted experiment"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("gone", artifact_location=(tmp_path / "a").as_uri()))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "gone")
    return uri, "The MLflow experiment gone was deleted from"


FAULTS = ["no mlflow", "no server", "silent server", "in memory", "in memory, spelt otherwise", "a folder", "misspelt"]
FAULTS += ["deleted experiment", "artifacts under a file"]


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "search_hyperparams.py"])
@pytest.mark.parametrize("fault", FAULTS)
def test_tracking_that_cannot_work_is_one_message_before_anything_is_written(
    tmp_path, trained, built_dataset, script, fault, monkeypatch
):
    parent = make_search(tmp_path / "search", {"learning_rate": [0.01]})
    before = {folder: sorted(path.name for path in folder.iterdir()) for folder in (trained, parent)}
    args = {
        "train.py": ["--model_dir", trained, "--restore_from", "last_weights", "--param", "num_epochs=3"],
        "evaluate.py": ["--model_dir", trained],
        "search_hyperparams.py": search_args(parent, built_dataset),
    }[script]

    with contextlib.ExitStack() as stack:
        uri, expected = tracking_fault(fault, tmp_path, monkeypatch, stack)
        result = run_in_process(script, *args, env={"MLFLOW_TRACKING_URI": uri})

    assert result.returncode == 2 and "Traceback" not in result.stderr
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert expected in message
    named_experiment = fault in ("deleted experiment", "artifacts under a file")
    assert "MLFLOW_EXPERIMENT_NAME" in message if named_experiment else "unset MLFLOW_TRACKING_URI" in message
    assert {folder: sorted(path.name for path in folder.iterdir()) for folder in (trained, parent)} == before


def test_a_search_is_a_parent_run_with_a_child_run_per_trial_and_a_rerun_adds_none(
    tmp_path, built_dataset, stand_in, store
):
    parent = make_search(tmp_path / "lr", {"learning_rate": [0.01, 0.02]}, num_epochs=2)

    result = stand_in.run("search_hyperparams.py", *search_args(parent, built_dataset, "--tracking_uri", store.uri))

    assert result.returncode == 0, result.stderr
    assert_parent_and_children(store, parent, ["learning_rate_0.01", "learning_rate_0.02"], epochs=2)
    rerun = stand_in.run("search_hyperparams.py", *search_args(parent, built_dataset, "--tracking_uri", store.uri))
    assert rerun.returncode == 0, rerun.stderr
    assert len(runs_of(store)) == 3


def assert_parent_and_children(store, parent, trials, epochs):
    """One parent run for the search folder, and one finished child run per trial, with its epochs."""
    (search_run,) = [run for run in runs_of(store) if "search_folder" in run.data.tags]
    assert search_run.info.run_name == parent.name and search_run.data.tags["search_folder"] == str(parent.resolve())
    assert search_run.info.status == "FINISHED"
    assert artifacts(store, search_run) == ["params.json", "search.json"]
    children = [run for run in runs_of(store) if run.data.tags.get("mlflow.parentRunId") == search_run.info.run_id]
    assert sorted(run.info.run_name for run in children) == sorted(trials)
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["run_folder"] == str((parent / run.info.run_name).resolve())
        assert list(steps(store, run, "dev/accuracy")) == list(range(1, epochs + 1))
        trial_params = json.loads((parent / run.info.run_name / "params.json").read_text())
        assert run.data.params["learning_rate"] == str(trial_params["learning_rate"])
    return children


@pytest.mark.slow
def test_a_tpe_search_of_real_trials_is_a_parent_run_with_their_evaluated_child_runs(tmp_path, built_dataset, store):
    space = {"learning_rate": {"distribution": "log_uniform", "low": 1e-3, "high": 1e-2}}
    parent = make_search(tmp_path / "tpe", space, num_epochs=2)
    args = search_args(parent, built_dataset, "--sampler", "tpe", "--num_trials", 2, "--evaluate")

    result = run_script("search_hyperparams.py", *args, env={"MLFLOW_TRACKING_URI": store.uri})

    assert result.returncode == 0, result.stderr
    trials = sorted(path.parent.name for path in parent.glob("*/run.json"))
    assert len(trials) == 2
    for run in assert_parent_and_children(store, parent, trials, epochs=2):
        results = json.loads((parent / run.info.run_name / "metrics_test_best_weights.json").read_text())
        assert run.data.metrics["test_best_weights/accuracy"] == pytest.approx(results["accuracy"])


@pytest.mark.slow
def test_a_run_killed_with_kill_9_resumes_its_mlflow_run_with_each_epoch_once(
    model_dir, built_dataset, store, monkeypatch
):
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_epochs=4, batch_size=2)))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    process = start_training(model_dir, built_dataset)
    wait_for(model_dir / "last_weights" / "ckpt-1.index", process)
    process.kill()
    process.communicate()
    (killed,) = runs_of(store)
    assert killed.info.status == "RUNNING"  # kill -9 leaves no time to say more

    result = run_script("train.py", "--model_dir", model_dir, "--restore_from", "last_weights")

    assert result.returncode == 0, result.stderr
    (run,) = runs_of(store)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    for key in ("dev/loss", "train/loss"):  # each epoch once, whether the kill came before its logging or after
        assert [m.step for m in store.get_metric_history(run.info.run_id, key)] == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("read_only", ["the database's folder", "the artifacts' folder"])
def test_a_store_a_user_cannot_write_is_refused_before_anything_is_written(trained, tmp_path, read_only):
    locked = tmp_path / "locked"
    locked.mkdir()
    uri = f"sqlite:///{locked / 'mlflow.db'}" if read_only == "the database's folder" else f"sqlite:///{tmp_path}/m.db"
    MlflowClient(uri).create_experiment("locked", artifact_location=(locked / "artifacts").as_uri())
    locked.chmod(0o555)
    before = sorted(path.name for path in trained.iterdir())

    result = run_script(
        "train.py", "--model_dir", trained, "--restore_from", "last_weights", "--param", "num_epochs=3",
        env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "locked"}, as_user=True,
    )  # fmt: skip

    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    expected = "cannot be written: " if read_only == "the database's folder" else "MLflow keeps the artifacts of"
    assert expected in result.stderr and str(locked) in result.stderr
    assert sorted(path.name for path in trained.iterdir()) == before


@pytest.mark.slow
def test_three_runs_starting_together_on_a_new_database_all_log_to_it(tmp_path, built_dataset, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "together")
    folders = [tmp_path / f"run{i}" for i in range(3)]
    for folder in folders:
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(tiny_params(num_epochs=1)))
    command = [sys.executable, str(REPO / "train.py"), "--data_dir", str(built_dataset), "--tracking_uri", uri]
    processes = [
        subprocess.Popen([*command, "--model_dir", str(folder)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        for folder in folders
    ]
    errors = [process.communicate(timeout=300)[1] for process in processes]

    assert [process.returncode for process in processes] == [0, 0, 0], errors
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["run0", "run1", "run2"]
    assert all(run.info.status == "FINISHED" for run in runs)
