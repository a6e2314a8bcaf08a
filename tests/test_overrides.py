"""train.py --param KEY=VALUE: the run uses and records the change; params.json is never touched."""

import csv
import json

import pytest
from conftest import run_in_process, tiny_params


def read_json(path):
    return json.loads(path.read_text())


def make_experiment(folder, **params):
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(tiny_params(**params), indent=4))
    return folder


def train(model_dir, data_dir, *overrides):
    params = [arg for override in overrides for arg in ("--param", override)]
    return run_in_process("train.py", "--model_dir", model_dir, "--data_dir", data_dir, *params)


def test_overrides_are_used_and_recorded_and_params_json_is_unchanged(tmp_path, built_dataset):
    # params.json names a model that does not exist: the run only works if the override is used.
    model_dir = make_experiment(tmp_path / "experiment", num_epochs=1, model_version="no_such_model")
    params_json = (model_dir / "params.json").read_text()

    result = train(model_dir, built_dataset, "learning_rate=0.05", "use_random_flip=false", "model_version=base_model")

    assert result.returncode == 0, result.stderr
    # Values are read as JSON (a number, a boolean); model_version is not JSON, so it stays a string.
    changes = {"learning_rate": 0.05, "use_random_flip": False, "model_version": "base_model"}
    used = read_json(model_dir / "params_used.json")
    assert {key: used[key] for key in json.loads(params_json)} == {**json.loads(params_json), **changes}
    assert (model_dir / "params.json").read_text() == params_json
    assert "Hyperparameters changed for this run: learning_rate=0.05" in (model_dir / "train.log").read_text()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("learing_rate=0.1", "Did you mean 'learning_rate'?"),
        ("learning_rate", "expected KEY=VALUE"),
    ],
    ids=["misspelt_key", "no_equals_sign"],
)
def test_bad_override_is_a_clear_error_before_anything_is_written(model_dir, built_dataset, override, expected):
    result = run_in_process("train.py", "--model_dir", model_dir, "--data_dir", built_dataset, "--param", override)

    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in model_dir.iterdir()) == ["params.json"]


def test_results_table_shows_the_overridden_value(tmp_path, built_dataset):
    parent = tmp_path / "experiments"
    plain = make_experiment(parent / "plain", num_epochs=1, learning_rate=0.001)
    changed = make_experiment(parent / "changed", num_epochs=1, learning_rate=0.001)
    assert train(plain, built_dataset).returncode == 0
    assert train(changed, built_dataset, "learning_rate=0.05").returncode == 0

    result = run_in_process("synthesize_results.py", "--parent_dir", parent)

    assert result.returncode == 0, result.stderr
    with open(parent / "results.csv", newline="") as f:
        table = {row["experiment"]: row for row in csv.DictReader(f)}
    assert table["plain"]["learning_rate"] == "0.001"
    assert table["changed"]["learning_rate"] == "0.05"
