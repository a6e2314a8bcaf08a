"""model/utils.py: params, JSON files, logging, labels from file names, user errors."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from model.utils import (
    Params,
    UserError,
    closest_key,
    label_from_filename,
    load_json,
    load_params,
    save_dict_to_json,
    set_logger,
    write_text_atomic,
)


def write_json(path, content):
    path.write_text(json.dumps(content))
    return path


def leftover_files(folder, keep):
    """Files in folder other than `keep`: a temporary file left behind would show up here."""
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


@pytest.fixture
def restore_root_logger():
    """set_logger changes the root logger for the whole process: put it back afterwards."""
    logger = logging.getLogger()
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(level)


# Params


def test_params_gives_attribute_and_dict_access(tmp_path):
    params = Params(write_json(tmp_path / "params.json", {"learning_rate": 0.01, "batch_size": 32}))

    assert params.learning_rate == 0.01
    assert params.dict["batch_size"] == 32
    assert params["batch_size"] == 32
    assert "learning_rate" in params


def test_params_update_overrides_and_adds_keys(tmp_path):
    params = Params(write_json(tmp_path / "a.json", {"learning_rate": 0.01, "batch_size": 32}))

    params.update(write_json(tmp_path / "b.json", {"learning_rate": 0.5, "num_epochs": 3}))

    assert params.dict == {"learning_rate": 0.5, "batch_size": 32, "num_epochs": 3}


def test_params_saved_then_reloaded_are_equal(tmp_path):
    params = Params(write_json(tmp_path / "params.json", {"learning_rate": 0.01, "use_batch_norm": True}))
    params.batch_size = 8

    params.save(tmp_path / "saved.json")

    assert Params(tmp_path / "saved.json").dict == {"learning_rate": 0.01, "use_batch_norm": True, "batch_size": 8}


def test_missing_hyperparameter_is_a_user_error_naming_it(tmp_path):
    params = Params(write_json(tmp_path / "params.json", {"learning_rate": 0.01}))

    with pytest.raises(UserError, match="'num_epochs'"):
        _ = params.num_epochs


def test_load_params_on_a_missing_folder_names_it(tmp_path):
    missing = tmp_path / "no_such_experiment"

    with pytest.raises(UserError, match="no_such_experiment"):
        load_params(missing)


def test_load_params_on_a_folder_without_params_json_names_it(tmp_path):
    folder = tmp_path / "empty_experiment"
    folder.mkdir()

    with pytest.raises(UserError, match="No params.json in .*empty_experiment"):
        load_params(folder)


def test_load_params_reads_params_json(model_dir):
    assert load_params(model_dir).image_size == 16


# JSON files


def test_malformed_json_error_gives_line_and_column(tmp_path):
    path = tmp_path / "params.json"
    path.write_text('{\n    "learning_rate": 0.01,\n}\n')  # trailing comma

    with pytest.raises(UserError, match=r"params.json is not valid JSON: .* line 3, column 1"):
        load_json(path)


def test_json_list_instead_of_object_is_a_user_error(tmp_path):
    path = write_json(tmp_path / "params.json", [1, 2, 3])

    with pytest.raises(UserError, match="must hold a JSON object"):
        load_json(path)


def test_missing_json_file_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(UserError, match="nowhere.json"):
        load_json(tmp_path / "nowhere.json")


def test_save_dict_to_json_writes_numpy_scalars_as_plain_json(tmp_path):
    path = tmp_path / "metrics.json"

    save_dict_to_json({"accuracy": np.float32(0.5), "steps": np.int64(7)}, path)

    assert json.loads(path.read_text()) == {"accuracy": 0.5, "steps": 7}
    assert "numpy" not in path.read_text()
    assert leftover_files(tmp_path, keep="metrics.json") == []


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    save_dict_to_json({"accuracy": 0.5}, path)

    with pytest.raises(TypeError, match="not JSON serializable"):
        save_dict_to_json({"accuracy": 0.9, "oops": object()}, path)

    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert leftover_files(tmp_path, keep="metrics.json") == []


def test_write_failing_midway_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old content")

    with pytest.raises(UnicodeEncodeError):
        write_text_atomic("new content \udc80", path)  # a lone surrogate cannot be encoded

    assert path.read_text() == "old content"
    assert leftover_files(tmp_path, keep="metrics.json") == []


# Logging


def test_set_logger_writes_messages_to_the_log_file(tmp_path, restore_root_logger):
    log_path = tmp_path / "train.log"

    set_logger(log_path)
    logging.info("epoch 1 done")

    assert "epoch 1 done" in log_path.read_text()


def test_set_logger_twice_does_not_duplicate_lines(tmp_path, restore_root_logger):
    log_path = tmp_path / "train.log"

    set_logger(log_path)
    set_logger(log_path)
    logging.info("only once please")

    assert log_path.read_text().count("only once please") == 1


# Labels and hints


@pytest.mark.parametrize(
    "name, label",
    [("3_IMG_1.jpg", 3), ("12_IMG_5.jpg", 12), ("0007_x.jpg", 7), ("data/train_signs/5_IMG_2.jpg", 5)],
)
def test_label_from_filename_reads_the_integer_prefix(name, label):
    assert label_from_filename(name) == label


@pytest.mark.parametrize("name", ["IMG_1.jpg", "a_1.jpg", "3.jpg", "²_IMG_1.jpg"])
def test_label_from_filename_rejects_names_without_a_label(name):
    with pytest.raises(UserError, match=name):
        label_from_filename(name)


def test_closest_key_suggests_the_intended_hyperparameter():
    keys = ["learning_rate", "batch_size", "num_epochs"]

    assert closest_key("learing_rate", keys) == "learning_rate"
    assert closest_key("zzz", keys) is None


# run_main


def test_run_main_shows_a_user_error_as_one_message_and_exit_status_2():
    script = (
        "from model.utils import UserError, run_main\n"
        "def main():\n"
        "    raise UserError('The data folder data/NOPE does not exist.')\n"
        "run_main(main)\n"
    )

    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "Error: The data folder data/NOPE does not exist." in result.stderr
    assert "Traceback" not in result.stderr
