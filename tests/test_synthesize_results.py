"""synthesize_results.py over hand-written experiment folders: the table's rows, columns and files
(run in the test's process)."""

import csv
import json

import pytest
from conftest import run_in_process

BASE_PARAMS = {"learning_rate": 0.001, "batch_size": 32, "num_epochs": 10}


def write_experiment(folder, metrics=None, split="eval", **params):
    """An experiment folder with params.json and, if given, its best-weights metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps({**BASE_PARAMS, **params}))
    if metrics is not None:
        (folder / f"metrics_{split}_best_weights.json").write_text(json.dumps(metrics))
    return folder


def metrics(accuracy, loss=1.0):
    return {"accuracy": accuracy, "loss": loss, "epoch": 10}


def synthesize(parent, *args):
    return run_in_process("synthesize_results.py", "--parent_dir", parent, *args)


def read_csv(parent, name="results.csv"):
    """(header, rows) of parent/results.csv (or another table)."""
    with open(parent / name, newline="") as f:
        header, *rows = csv.reader(f)
    return header, rows


def column(parent, name, table="results.csv"):
    header, rows = read_csv(parent, table)
    return [row[header.index(name)] for row in rows]


def test_experiments_are_listed_best_accuracy_first(tmp_path):
    for name, accuracy in (("a", 0.5), ("b", 0.9), ("c", 0.7)):
        write_experiment(tmp_path / name, metrics(accuracy), learning_rate=accuracy / 100)

    result = synthesize(tmp_path)

    assert result.returncode == 0, result.stderr
    assert column(tmp_path, "experiment") == ["b", "c", "a"]
    assert column(tmp_path, "accuracy") == ["0.9000", "0.7000", "0.5000"]


def test_metric_loss_is_sorted_lowest_first(tmp_path):
    for name, loss in (("a", 0.3), ("b", 0.1), ("c", 0.2)):
        write_experiment(tmp_path / name, metrics(0.5, loss), learning_rate=loss)

    result = synthesize(tmp_path, "--metric", "loss")

    assert result.returncode == 0, result.stderr
    assert column(tmp_path, "experiment") == ["b", "c", "a"]


def test_only_hyperparameters_that_differ_are_columns(tmp_path):
    write_experiment(tmp_path / "lr_small", metrics(0.5), learning_rate=0.01)
    write_experiment(tmp_path / "lr_large", metrics(0.6), learning_rate=0.02)

    assert synthesize(tmp_path).returncode == 0

    header, rows = read_csv(tmp_path)
    assert header == ["experiment", "learning_rate", "accuracy", "epoch", "loss"]
    assert rows == [["lr_large", "0.02", "0.6000", "10", "1.0000"], ["lr_small", "0.01", "0.5000", "10", "1.0000"]]


def test_defaults_filled_in_by_a_run_are_not_differences(tmp_path):
    # A trained run's params_used.json holds every default; an untrained params.json leaves them out.
    trained = write_experiment(tmp_path / "trained", metrics(0.5), use_random_flip=True)
    (trained / "params_used.json").write_text(json.dumps({**BASE_PARAMS, "use_random_flip": True, "momentum": 0.9}))
    write_experiment(tmp_path / "untrained", use_random_flip=False)

    assert synthesize(tmp_path).returncode == 0

    header, _ = read_csv(tmp_path)
    assert header == ["experiment", "use_random_flip", "accuracy", "epoch", "loss"]


def test_unfinished_experiments_come_after_finished_ones(tmp_path):
    write_experiment(tmp_path / "a", metrics(0.5), learning_rate=0.01)
    write_experiment(tmp_path / "b", None, learning_rate=0.02)
    write_experiment(tmp_path / "c", metrics(0.9), learning_rate=0.03)

    result = synthesize(tmp_path)

    assert result.returncode == 0, result.stderr
    assert column(tmp_path, "experiment") == ["c", "a", "b"]
    assert column(tmp_path, "accuracy") == ["0.9000", "0.5000", "not trained"]


def test_table_still_lines_up_when_no_experiment_has_finished(tmp_path):
    # A search whose first trials are still training.
    write_experiment(tmp_path / "a", None, learning_rate=0.01)
    write_experiment(tmp_path / "b", None, learning_rate=0.02)
    (tmp_path / "a" / "run.json").write_text(json.dumps({"status": "running"}))

    result = synthesize(tmp_path)

    assert result.returncode == 0, result.stderr
    header, rows = read_csv(tmp_path)
    assert [row[0] for row in rows] == ["a", "b"]
    assert [row[-1] for row in rows] == ["running", "not trained"]  # a status, never a number
    assert all(len(row) == len(header) for row in rows), f"{header} vs {rows}"


@pytest.mark.parametrize("corrupt_file", ["metrics_eval_best_weights.json", "params.json"])
def test_corrupt_json_is_a_warning_naming_the_file(tmp_path, corrupt_file):
    write_experiment(tmp_path / "good", metrics(0.5), learning_rate=0.01)
    broken = write_experiment(tmp_path / "broken", metrics(0.9), learning_rate=0.02)
    (broken / corrupt_file).write_text('{"accuracy": 0.9,')

    result = synthesize(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Warning" in result.stderr and str(broken / corrupt_file) in result.stderr
    assert "Traceback" not in result.stderr
    assert column(tmp_path, "experiment")[0] == "good"


def test_search_template_is_not_an_experiment_but_its_trials_are(tmp_path):
    template = write_experiment(tmp_path / "lr_search")
    (template / "search.json").write_text(json.dumps({"learning_rate": [0.01, 0.02]}))
    write_experiment(template / "learning_rate_0.01", metrics(0.5), learning_rate=0.01)
    write_experiment(template / "learning_rate_0.02", metrics(0.7), learning_rate=0.02)

    result = synthesize(tmp_path)

    assert result.returncode == 0, result.stderr
    assert column(tmp_path, "experiment") == ["lr_search/learning_rate_0.02", "lr_search/learning_rate_0.01"]
    assert "unfinished" not in result.stdout


def test_printed_table_markdown_and_csv_agree(tmp_path):
    write_experiment(tmp_path / "a", metrics(0.5, 0.25), learning_rate=0.01, use_batch_norm=False)
    write_experiment(tmp_path / "b", metrics(0.75, 0.5), learning_rate=0.02, use_batch_norm=True)

    result = synthesize(tmp_path)

    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "results.md").read_text()
    assert markdown in result.stdout
    header_line, separator, *row_lines = markdown.splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in [header_line, *row_lines]]
    header, rows = read_csv(tmp_path)
    assert cells == [header, *rows]
    assert separator == "|" + "---|" * len(header)
    assert rows[0] == ["b", "0.02", "True", "0.7500", "10", "0.5000"]


def test_split_test_uses_the_test_metrics(tmp_path):
    # Dev prefers a, test prefers b: the order shows which file was read.
    for name, dev, test in (("a", 0.9, 0.4), ("b", 0.6, 0.8)):
        write_experiment(tmp_path / name, metrics(dev), learning_rate=dev)
        write_experiment(tmp_path / name, metrics(test), split="test", learning_rate=dev)

    synthesize(tmp_path)  # the dev table, which the test table must not replace
    result = synthesize(tmp_path, "--split", "test")

    assert result.returncode == 0, result.stderr
    assert column(tmp_path, "experiment", "results_test.csv") == ["b", "a"]
    assert column(tmp_path, "accuracy", "results_test.csv") == ["0.8000", "0.4000"]
    assert column(tmp_path, "accuracy") == ["0.9000", "0.6000"]


def test_unknown_metric_is_an_error_listing_the_metrics(tmp_path):
    write_experiment(tmp_path / "a", metrics(0.5))

    result = synthesize(tmp_path, "--metric", "f1")

    assert result.returncode == 2
    assert "'f1'" in result.stderr and "accuracy, epoch, loss" in result.stderr
    assert "Traceback" not in result.stderr


def test_experiment_without_the_sort_metric_is_no_crash(tmp_path):
    # A metric added to model_fn.py later: the older experiments do not have it.
    write_experiment(tmp_path / "old", metrics(0.5), learning_rate=0.01)
    write_experiment(tmp_path / "new", {**metrics(0.7), "top2_accuracy": 0.9}, learning_rate=0.02)

    result = synthesize(tmp_path, "--metric", "top2_accuracy")

    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2)


def test_missing_parent_dir_is_a_clear_error(tmp_path):
    result = synthesize(tmp_path / "no_such_folder")

    assert result.returncode == 2
    assert str(tmp_path / "no_such_folder") in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
