"""The helpers of model/: JSON files (model/utils/files.py), logging, labels from file names, run_main,
make clean."""

import contextlib
import io
import json
import logging
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import run_in_process

from model.utils.dataset import label_from_filename
from model.utils.errors import UserError, run_main
from model.utils.files import load_json, save_json, write_text_atomic
from model.utils.logs import set_logger


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


def test_save_json_writes_numpy_scalars_as_plain_json(tmp_path):
    path = tmp_path / "metrics.json"

    save_json({"accuracy": np.float32(0.5), "steps": np.int64(7)}, path)

    assert json.loads(path.read_text()) == {"accuracy": 0.5, "steps": 7}
    assert "numpy" not in path.read_text()
    assert leftover_files(tmp_path, keep="metrics.json") == []


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    save_json({"accuracy": 0.5}, path)

    with pytest.raises(TypeError, match="not JSON serializable"):
        save_json({"accuracy": 0.9, "oops": object()}, path)

    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert leftover_files(tmp_path, keep="metrics.json") == []


def test_write_failing_midway_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old content")

    with pytest.raises(UnicodeEncodeError):
        write_text_atomic("new content \ud800", path)  # a lone surrogate cannot be encoded

    assert path.read_text() == "old content"
    assert leftover_files(tmp_path, keep="metrics.json") == []


def test_an_atomic_write_onto_a_folder_names_the_folder_not_its_temporary_file(tmp_path):
    (tmp_path / "predictions.csv").mkdir()
    with pytest.raises(UserError, match=f"{tmp_path / 'predictions.csv'} is a folder, not a file"):
        write_text_atomic("image,class_1\n", tmp_path / "predictions.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]


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


# Labels


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


# run_main


def run_main_here(main):
    """run_main(main), as a script's __main__ block calls it: (exit status, what it printed on stderr)."""
    stderr, handlers = io.StringIO(), {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as end:
            run_main(main)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return end.value.code, stderr.getvalue()


def test_run_main_names_running_out_of_memory_and_the_fix():
    import tensorflow as tf

    def main(argv):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[3,3,3,2147483647]")

    returncode, stderr = run_main_here(main)

    assert returncode == 2 and "Traceback" not in stderr
    assert "Out of memory" in stderr and "Lower batch_size" in stderr


class InterruptedWhileCollected:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # the KeyboardInterrupt is raised in __del__, which Python drops


def interrupt_turned_into_another_error(argv):
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:  # as TensorFlow's context managers can, when unwinding from it
        raise RuntimeError("Exiting device scope without proper scope nesting") from None


def interrupt_swallowed_by_a_finalizer(argv):
    InterruptedWhileCollected()


@pytest.mark.parametrize("main", [interrupt_turned_into_another_error, interrupt_swallowed_by_a_finalizer])
def test_run_main_ends_as_interrupted_whatever_became_of_the_interrupt(main):
    returncode, stderr = run_main_here(main)

    assert returncode == 130
    assert stderr == "Interrupted.\n"


def test_run_main_shows_a_user_error_as_one_message_and_exit_status_2():
    def main(argv):
        raise UserError("The data folder data/NOPE does not exist.")

    returncode, stderr = run_main_here(main)

    assert returncode == 2
    assert "Error: The data folder data/NOPE does not exist." in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "make, use, words",
    [
        ("a_file", lambda: Path("a_file/metrics.json").write_text("{}"), "a part of this path is a file"),
        ("a_file", lambda: Path("a_file").mkdir(), "this is a file, where a folder is needed"),
        ("a_folder/", lambda: Path("a_folder").write_text("{}"), "this is a folder, where a file is needed"),
        ("", lambda: Path("x" * 300).write_text("{}"), "too long"),
    ],
    ids=["file_in_the_path", "file_for_a_folder", "folder_for_a_file", "name_too_long"],
)
def test_run_main_names_a_path_of_the_wrong_kind(tmp_path, monkeypatch, make, use, words):
    monkeypatch.chdir(tmp_path)
    if make.endswith("/"):
        (tmp_path / make).mkdir()
    elif make:
        (tmp_path / make).write_text("")

    returncode, stderr = run_main_here(lambda argv: use())

    assert returncode == 2, stderr
    assert stderr.count("Error:") == 1 and words in stderr and "Traceback" not in stderr


# make clean (python -m model.utils.run_folder)


def test_clean_deletes_what_runs_and_searches_wrote_and_keeps_the_rest(tmp_path):
    kept = ["run/params.json", "run/notes.html", "search/params.json", "search/search.json", "search/trial/params.json"]
    written = ["run/train.log", "run/last_weights/ckpt-1.index", "run/metrics_eval_best_weights.json"]
    written += ["search/results.md", "search/plot.html", "search/trial/output.log", "search/trial/trial.json"]
    written += ["results.md", "results_test.csv"]  # synthesize_results.py's, over all of them
    for name in kept + written:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")

    result = run_in_process("model/utils/run_folder.py", tmp_path)

    assert result.returncode == 0, result.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)


@pytest.mark.parametrize("args", [[], ["NO_SUCH_FOLDER"], ["a", "b"]])
def test_clean_without_one_existing_folder_is_refused(args):
    result = run_in_process("model/utils/run_folder.py", *args)

    assert result.returncode == 2 and result.stderr.count("Error:") == 1 and "Traceback" not in result.stderr
