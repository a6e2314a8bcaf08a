"""A real TensorBoard over a finished search: what its HParams, scalars and images dashboards show.
End-to-end tier: a search with real train.py trials, then a TensorBoard server."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import run_script, tiny_params, write_signs_split

pytestmark = pytest.mark.slow

LEARNING_RATES = (0.01, 0.02)
TRIALS = [f"learning_rate_{lr}" for lr in LEARNING_RATES]
# What the HParams dashboard asks for by default: sessions of any status.
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 2-trial learning-rate search, trained for 1 epoch on a tiny dataset; shared by the tests."""
    root = tmp_path_factory.mktemp("tensorboard")
    rng = np.random.default_rng(0)
    write_signs_split(root / "data" / "train_signs", 48, rng, size=(16, 16))
    write_signs_split(root / "data" / "dev_signs", 12, rng, start=1000, size=(16, 16))
    parent = root / "search"
    parent.mkdir()
    (parent / "params.json").write_text(json.dumps(tiny_params(num_epochs=1)))
    (parent / "search.json").write_text(json.dumps({"learning_rate": list(LEARNING_RATES)}))
    result = run_script("search_hyperparams.py", "--parent_dir", parent, "--data_dir", root / "data")
    assert result.returncode == 0, result.stderr
    return parent


@pytest.fixture(scope="module")
def tensorboard(searched):
    """The base URL of a TensorBoard server over the search, stopped after these tests."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(searched)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1", "--load_fast", "false"]
    with open(searched.parent / "tensorboard.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def fetch(url, body=None):
    """The JSON answer to a GET, or to a POST of `body` as JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def fetch_when(url, ready, body=None, timeout=60):
    """Polls `url` until its answer satisfies `ready` (the server starts, then loads the logs)."""
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        try:
            answer = fetch(url, body)
            if ready(answer):
                return answer
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.5)
    pytest.fail(f"TensorBoard's {url} never answered as expected within {timeout} s; last answer: {answer}")


def test_hparams_table_shows_each_trial_by_its_values_with_test_and_best_dev_first(searched, tensorboard):
    groups = fetch_when(
        f"{tensorboard}/data/plugin/hparams/session_groups",
        lambda answer: len(answer.get("sessionGroups", [])) == 2,
        body={"experimentName": "", "allowedStatuses": ALL_STATUSES, "startIndex": 0, "sliceSize": 100},
    )["sessionGroups"]
    experiment = fetch(f"{tensorboard}/data/plugin/hparams/experiment", {"experimentName": ""})

    # The columns: every hyperparameter, the five shown first marked so; the metrics, test and best dev first
    used = json.loads((searched / TRIALS[0] / "params_used.json").read_text())
    assert {info["name"] for info in experiment["hparamInfos"]} >= set(used) >= set(tiny_params())
    shown = {info["name"] for info in experiment["hparamInfos"] if info.get("differs")}
    assert shown == {"model_version", "learning_rate", "batch_size", "num_epochs", "optimizer"}
    metric_names = [info["name"]["tag"] for info in experiment["metricInfos"]]
    assert metric_names[:5] == [
        "test_best_weights/accuracy", "best_dev/accuracy", "test_best_weights/entity_f1", "best_dev/entity_f1",
        "test_best_weights/loss",
    ]  # fmt: skip
    assert {"dev/accuracy", "train/loss"} <= set(metric_names)

    # A row per trial, named by its value first (the column shows about 15 characters)
    assert sorted(group["name"] for group in groups) == [
        f"{lr} · {(searched / trial).resolve()}" for lr, trial in zip(LEARNING_RATES, TRIALS)
    ]
    for group in groups:
        trial = searched / f"learning_rate_{group['hparams']['learning_rate']}"
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        dev = json.loads((trial / "metrics_eval_last_weights.json").read_text())
        best_dev = json.loads((trial / "metrics_eval_best_weights.json").read_text())
        assert values["dev/accuracy"] == pytest.approx(dev["accuracy"])
        assert values["best_dev/accuracy"] == pytest.approx(best_dev["accuracy"])
        # Whole numbers as text, which the table shows as 4, not 4.0000
        assert group["hparams"]["num_channels"] == "4" and group["hparams"]["model_version"] == "base_model"
        assert len(group["sessions"]) == 1, "each trial is one run"


def test_each_trial_is_one_run_with_its_train_and_dev_curves_and_pictures(tensorboard):
    scalars = fetch_when(f"{tensorboard}/data/plugin/scalars/tags", lambda answer: set(TRIALS) <= set(answer))
    images = fetch_when(f"{tensorboard}/data/plugin/images/tags", lambda answer: set(TRIALS) <= set(answer))

    assert set(scalars) == set(TRIALS), "one run per trial, not one per folder of summaries"
    for run in TRIALS:
        assert {"train/loss", "train/accuracy", "dev/loss", "dev/accuracy", "best_dev/accuracy"} <= set(scalars[run])
        assert "train_inputs" in images[run], run
