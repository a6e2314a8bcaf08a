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


def test_hparams_dashboard_lists_every_trial_with_its_hyperparameters_and_metrics(searched, tensorboard):
    groups = fetch_when(
        f"{tensorboard}/data/plugin/hparams/session_groups",
        lambda answer: len(answer.get("sessionGroups", [])) == 2,
        body={"experimentName": "", "allowedStatuses": ALL_STATUSES, "startIndex": 0, "sliceSize": 100},
    )["sessionGroups"]
    experiment = fetch(f"{tensorboard}/data/plugin/hparams/experiment", {"experimentName": ""})

    used = json.loads((searched / TRIALS[0] / "params_used.json").read_text())
    assert {info["name"] for info in experiment["hparamInfos"]} == set(used) >= set(tiny_params())
    metric_names = [info["name"] for info in experiment["metricInfos"]]
    assert {"group": "eval_summaries", "tag": "accuracy"} in metric_names
    assert {"group": "train_summaries", "tag": "loss"} in metric_names

    assert sorted(group["hparams"]["learning_rate"] for group in groups) == list(LEARNING_RATES)
    for group in groups:
        trial = searched / f"learning_rate_{group['hparams']['learning_rate']}"
        shown = {(m["name"]["group"], m["name"]["tag"]): m["value"] for m in group["metricValues"]}
        dev_accuracy = json.loads((trial / "metrics_eval_last_weights.json").read_text())["accuracy"]
        assert shown[("eval_summaries", "accuracy")] == pytest.approx(dev_accuracy)
        assert group["hparams"]["num_channels"] == 4 and group["hparams"]["model_version"] == "base_model"
        assert len(group["sessions"]) == 1, "each trial is one run"


def test_scalars_and_images_dashboards_show_every_trials_curves_and_inputs(tensorboard):
    runs = {f"{trial}/{kind}" for trial in TRIALS for kind in ("train_summaries", "eval_summaries")}
    scalars = fetch_when(f"{tensorboard}/data/plugin/scalars/tags", lambda answer: runs <= set(answer))
    train_runs = {f"{trial}/train_summaries" for trial in TRIALS}
    images = fetch_when(f"{tensorboard}/data/plugin/images/tags", lambda answer: train_runs <= set(answer))

    for run in runs:
        assert {"loss", "accuracy"} <= set(scalars[run]), run
    for run in train_runs:
        assert "input_images" in images[run], run
