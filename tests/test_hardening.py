"""The rules that close whole classes of faults, each shown across the scripts it covers.

Every case runs in the test's process and stops before any training, so a class costs seconds:
outputs replace only regular files and never wait on a pipe; a build never loses the dataset it
replaces; a value is checked where it is loaded; a failure is never reported as a success; and the
message names the path the user gave.
"""

import errno
import json
import os
import shutil
import socket
import subprocess

import pytest
from conftest import REPO, run_in_process, tiny_params, write_built_dataset, write_raw_signs
from PIL import Image


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("Error:") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def data(tmp_path):
    return write_built_dataset(tmp_path / "data")


@pytest.fixture
def experiment(tmp_path):
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(tiny_params()))
    return folder


# A. Outputs replace only regular files, are checked before the work, and never hang the script


def make_socket(path):
    here = os.getcwd()
    os.chdir(path.parent)  # a relative name: a socket's path may not pass 107 characters
    try:
        socket.socket(socket.AF_UNIX).bind(path.name)
    finally:
        os.chdir(here)


SPECIAL_FILES = {
    "fifo": os.mkfifo,
    "socket": make_socket,
    "link": lambda path: path.symlink_to(path.parent / "elsewhere"),
    "folder": os.mkdir,
    "file": lambda path: path.write_text("notes"),
}
# (script, its arguments, the output they name) for every kind of output a script opens
OUTPUTS = {
    "predict --output": ("predict.py", ["--model_dir", "{experiment}", "{data}/test", "--output", "{out}"], "p.csv"),
    "train.log": ("train.py", ["--model_dir", "{experiment}", "--data_dir", "{data}"], "experiment/train.log"),
    "evaluate metrics": ("evaluate.py", ["--model_dir", "{experiment}"], "experiment/metrics_test_best_weights.json"),
    "build_dataset.log": (
        "build_dataset.py",
        ["--data_dir", "{raw}", "--output_dir", "{tmp}/out"],
        "out/build_dataset.log",
    ),
    "results.md": ("synthesize_results.py", ["--parent_dir", "{tmp}"], "results.md"),
    "results.csv": ("synthesize_results.py", ["--parent_dir", "{tmp}"], "results.csv"),
    "run.json": ("train.py", ["--model_dir", "{experiment}", "--data_dir", "{data}"], "experiment/run.json"),
    "classes.json": ("build_dataset.py", ["--data_dir", "{raw}", "--output_dir", "{tmp}/out"], "out/classes.json"),
    "model.keras": ("export.py", ["--model_dir", "{experiment}", "--output_dir", "{tmp}/out"], "out/model.keras"),
    "words.txt": ("build_vocab.py", ["--data_dir", "{corpus}", "--output_dir", "{tmp}/out"], "out/words.txt"),
    "build_vocab.log": (
        "build_vocab.py",
        ["--data_dir", "{corpus}", "--output_dir", "{tmp}/out"],
        "out/build_vocab.log",
    ),
}
# The same for outputs that are folders, where a file is of the wrong kind too
FOLDER_OUTPUTS = {
    "export's folder": ("export.py", ["--model_dir", "{experiment}", "--output_dir", "{out}"], "exported"),
    "saved_model": ("export.py", ["--model_dir", "{experiment}", "--output_dir", "{tmp}/out"], "out/saved_model"),
    "a split": ("build_dataset.py", ["--data_dir", "{raw}", "--output_dir", "{tmp}/out"], "out/train"),
    "a text split": ("build_vocab.py", ["--data_dir", "{corpus}", "--output_dir", "{tmp}/out"], "out/dev"),
}


CASES = [(OUTPUTS[output], kind) for output in OUTPUTS for kind in SPECIAL_FILES if kind != "file"]
CASES += [(FOLDER_OUTPUTS[output], kind) for output in FOLDER_OUTPUTS for kind in ("fifo", "socket", "link", "file")]


@pytest.mark.parametrize("output, kind", CASES, ids=[f"{output[2]}-{kind}" for output, kind in CASES])
def test_an_output_of_the_wrong_kind_is_refused_before_the_work_and_left_as_it_was(
    tmp_path, data, experiment, output, kind
):
    script, args, name = output
    raw = write_raw_signs(tmp_path / "SIGNS", num_train=12, num_test=6)
    (tmp_path / "corpus").mkdir()
    for split in ("train", "dev", "test"):
        (tmp_path / "corpus" / f"{split}.txt").write_text("Mr. O\nKalan B-PER\nleft O\n\n")
    (tmp_path / "out").mkdir()
    out = tmp_path / name
    SPECIAL_FILES[kind](out)
    before = os.lstat(out)
    values = {
        "experiment": experiment,
        "data": data,
        "out": out,
        "raw": raw,
        "tmp": tmp_path,
        "corpus": tmp_path / "corpus",
    }

    result = run_in_process(script, *(arg.format(**values) for arg in args))

    assert_user_error(result, str(out))
    assert "remove" not in result.stderr  # what is there may be the system's: the fix is another path
    after = os.lstat(out)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)  # not replaced, not followed
    assert not (tmp_path / "elsewhere").exists()


def test_the_atomic_write_never_renames_over_a_special_file_even_when_it_appears_during_the_work(tmp_path, monkeypatch):
    from model.utils.errors import UserError
    from model.utils.files import write_text_atomic

    path = tmp_path / "p.csv"
    real_fsync = os.fsync

    def fifo_appears(fd):  # another process puts a pipe where the output goes, mid-write
        real_fsync(fd)
        os.mkfifo(path)

    monkeypatch.setattr(os, "fsync", fifo_appears)
    with pytest.raises(UserError, match="p.csv is a device, pipe or socket"):
        write_text_atomic("image,class_1\n", path)
    monkeypatch.undo()
    assert path.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


# B. A build never replaces the dataset it had with a partial one


def files_of(folder):
    kept = (p for p in folder.rglob("*") if p.is_file() and p.name not in (".lock", "build_dataset.log"))
    return {p.relative_to(folder): p.read_bytes() for p in kept}


def build(raw, out, *args):
    return run_in_process("build_dataset.py", "--data_dir", raw, "--output_dir", out, "--size", "16", *args)


def test_a_build_that_cannot_finish_leaves_the_earlier_dataset_whole(tmp_path, monkeypatch):
    raw = write_raw_signs(tmp_path / "SIGNS", num_train=30, num_test=6)
    out = tmp_path / "out"
    assert build(raw, out, "--workers", "1").returncode == 0
    earlier = files_of(out)

    # A disk that fills up during the rebuild: a write error is never taken for an unreadable image.
    writes = []

    def save_until_full(image, destination, *args, **kwargs):
        writes.append(destination)
        if len(writes) > 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(destination))
        return real_save(image, destination, *args, **kwargs)

    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", save_until_full)  # the workers are forked: they see it too
    full = build(raw, out, "--workers", "1", "--seed", "7")
    monkeypatch.undo()
    assert_user_error(full, "The disk is full", str(out))
    assert ".building" not in full.stderr
    assert files_of(out) == earlier

    # Another build of the same folder, still running: refused, not interleaved.
    from model.utils.files import lock_folder

    with lock_folder(out, "build_dataset.py"):
        concurrent = build(raw, out, "--seed", "7")
    assert_user_error(concurrent, "Another build_dataset.py is writing into", str(out))
    assert files_of(out) == earlier


def huge_label(raw):
    (raw / "train_signs" / "99999999999999999999_IMG_4.png").write_bytes(b"")  # would ask for 10^20 classes


def only_test_signs(raw):
    for path in (raw / "train_signs").iterdir():
        path.unlink()
    (raw / "train_signs").rmdir()


def one_class(raw):
    for path in [*(raw / "train_signs").iterdir(), *(raw / "test_signs").iterdir()]:
        if not path.name.startswith("0_"):
            path.unlink()


@pytest.mark.parametrize(
    "make, args, words",
    [
        (huge_label, [], "below 1000000"),
        (only_test_signs, [], "no train split"),
        (one_class, [], "needs images of 2 classes"),
        (lambda raw: None, ["--test_fraction", "0.9", "--dev_fraction", "0.9"], "No train images are left"),
    ],
    ids=["huge label", "no train", "one class", "nothing left to train"],
)
def test_a_build_that_fails_on_its_input_leaves_none_of_the_folders_it_made(tmp_path, make, args, words):
    raw = write_raw_signs(tmp_path / "SIGNS", num_train=12, num_test=6)
    make(raw)

    result = build(raw, tmp_path / "new" / "out", *args)

    assert_user_error(result, words)
    assert not (tmp_path / "new").exists()


def test_any_name_and_any_split_size_builds_with_a_word_on_what_is_missing(tmp_path):
    raw = tmp_path / "photos"
    for label, colour in enumerate(("red", "green")):
        (raw / f"class_{label}").mkdir(parents=True)
        Image.new("RGB", (20, 20), colour).save(raw / f"class_{label}" / f"{'x' * 240}.jpg")

    result = build(raw, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out" / "train").iterdir())) == 2  # one per class, its long name cut short
    assert "Warning: the test split is empty" in result.stderr and "Warning: the dev split is empty" in result.stderr


# C. Every value is checked where it is loaded: type, range and encoding


@pytest.mark.parametrize(
    "change, words",
    [
        ({"cache": "/tmp/\ud800"}, "is not valid UTF-8"),
        ({"image_size": 100_000_000}, "image_size = 100000000 is not valid"),
        ({"num_labels": 10**20}, "from 2 to 1000000"),
        ({"learning_rate": float("inf")}, "learning_rate = Infinity is not valid"),
    ],
    ids=["lone surrogate", "huge image size", "huge num_labels", "infinite learning rate"],
)
def test_params_json_values_are_refused_where_loaded(tmp_path, data, experiment, change, words):
    (experiment / "params.json").write_text(json.dumps(tiny_params(**change)))

    assert_user_error(run_in_process("train.py", "--model_dir", experiment, "--data_dir", data), words)


def test_params_json_nested_too_deep_and_with_a_byte_order_mark(tmp_path, data, experiment):
    (experiment / "params.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_user_error(run_in_process("train.py", "--model_dir", experiment, "--data_dir", data), "nests")

    (experiment / "params.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(tiny_params(num_channels=0)).encode())
    result = run_in_process("train.py", "--model_dir", experiment, "--data_dir", data)
    assert_user_error(result, "num_channels = 0")  # read past the byte-order mark, to the real mistake


def test_a_whole_learning_rate_builds_the_optimizer_of_every_schedule(tmp_path, experiment):
    import tensorflow as tf

    from model import model_fn
    from model.utils.params import load_params

    for schedule in ("constant", "cosine", "step"):
        (experiment / "params.json").write_text(json.dumps(tiny_params(learning_rate=1, lr_schedule=schedule)))
        weight = tf.Variable(1.0)
        optimizer = model_fn.optimizer(load_params(experiment), steps_per_epoch=3)
        optimizer.apply_gradients([(tf.constant(1.0), weight)])
        assert float(weight) < 1.0, schedule


@pytest.mark.parametrize(
    "script, args",
    [
        ("train.py", ["--model_dir", "{tmp}/\udcff"]),
        ("build_dataset.py", ["--data_dir", "{raw}", "--output_dir", "{tmp}/\udcff"]),
        ("build_dataset.py", ["--data_dir", "{raw}", "--output_dir", "{tmp}/out", "--size", "100000000"]),
    ],
    ids=["non-UTF-8 model_dir", "non-UTF-8 output_dir", "huge size"],
)
def test_command_line_values_are_refused_before_anything_is_written(tmp_path, script, args):
    raw = write_raw_signs(tmp_path / "SIGNS", num_train=12, num_test=6)
    before = sorted(tmp_path.iterdir())

    result = run_in_process(script, *(arg.format(tmp=tmp_path, raw=raw) for arg in args))

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("build_json", [{"size": "big", "resize": "zoom"}, {"size": -5}, {"size": True}])
def test_a_build_json_that_build_dataset_never_writes_is_refused(data, build_json):
    (data / "build.json").write_text(json.dumps(build_json))
    from model.utils.dataset import resize_mode
    from model.utils.errors import UserError

    with pytest.raises(UserError, match="build.json is not one that build_dataset.py writes"):
        resize_mode(data)


def test_names_read_from_disk_that_are_not_utf8_are_refused(tmp_path, data, experiment):
    (data / "classes.json").write_text('{"0": "\\ud800", "1": "b", "2": "c", "3": "d", "4": "e", "5": "f"}')
    assert_user_error(run_in_process("train.py", "--model_dir", experiment, "--data_dir", data), "the class name")

    (data / "classes.json").unlink()
    (data / "train" / "0_IMG_train0.jpg").rename(os.fsdecode(bytes(data / "train") + b"/0_\xff.jpg"))
    assert_user_error(run_in_process("train.py", "--model_dir", experiment, "--data_dir", data), "not valid UTF-8")


def test_a_wrong_label_never_gets_a_suggestion_the_checks_refuse(tmp_path, data, experiment):
    (data / "train" / "5_IMG_train5.jpg").rename(data / "train" / "999999_IMG_x.jpg")

    result = run_in_process("train.py", "--model_dir", experiment, "--data_dir", data)

    assert_user_error(result, "Set num_labels to 1000000")
    (data / "train" / "999999_IMG_x.jpg").rename(data / "train" / "1000000_IMG_x.jpg")
    assert_user_error(run_in_process("train.py", "--model_dir", experiment, "--data_dir", data), "below 1000000")


@pytest.mark.parametrize(
    "classes, words",
    [
        (
            {"0": "a", "1": "b", "2": "c", "3": "d", "4": "e", "7": "f"},
            "must name every label from 0 up, but lacks 5, 6",
        ),
        ({"zero": "a", "1": "b"}, "'zero' is not a label"),
        ({"0": "a", "1": "b", "2": "c"}, "or for a new model set num_labels to 3"),
    ],
)
def test_a_classes_json_that_does_not_fit_says_what_to_fix(data, experiment, classes, words):
    (data / "classes.json").write_text(json.dumps(classes))

    result = run_in_process("train.py", "--model_dir", experiment, "--data_dir", data)

    assert_user_error(result, words)
    assert not (experiment / "run.json").exists()


# D. A failure is never reported as a success


def search_folder(tmp_path, space, **params):
    parent = tmp_path / "search"
    parent.mkdir()
    (parent / "params.json").write_text(json.dumps(tiny_params(**params)))
    (parent / "search.json").write_text(json.dumps(space))
    return parent


@pytest.mark.parametrize(
    "space, args, words",
    [
        (
            {"num_channels": {"distribution": "uniform", "low": 2, "high": 8}},
            ["--dry_run"],
            'takes whole numbers: give it "int_uniform"',
        ),
        (
            {"learning_rate": [0.1] * 10, "batch_size": list(range(1, 101)), "seed": list(range(100))},
            ["--dry_run"],
            "more than 10000",
        ),
        ({"num_blocks": [1, 2]}, ["--dry_run"], "not used by model_version base_model"),
        ({"learning_rate": [0.01]}, ["--data_dir", "{tmp}/no_data"], "no_data/train does not exist"),
        ({"learning_rate": [0.01]}, ["--data_dir", "{data}"], "but image_size = 32"),
        ({"image_size": [16]}, ["--data_dir", "{tmp}/no_test", "--evaluate"], "no_test/test does not exist"),
        (
            {"learning_rate": {"distribution": "uniform", "low": 0.1, "hihg": 1}},
            ["--dry_run"],
            "takes high and low, not hihg",
        ),
        (
            {"learning_rate": {"distribution": "uniform", "low": 0.1, "high": 0.001}},
            ["--dry_run"],
            "low (0.1) must be below",
        ),
        (
            {"learning_rate": {"distribution": "log_uniform", "low": 0, "high": 1}},
            ["--dry_run"],
            "must be above 0, not 0",
        ),
        (
            {"num_channels": {"distribution": "int_uniform", "low": 4, "high": 8.5}},
            ["--dry_run"],
            "must be whole numbers",
        ),
        ({"learning_rate": {"distribution": "uniform", "low": 0.1, "high": float("inf")}}, ["--dry_run"], "Infinity"),
        ({"num_blocks": [1, 2], "model_version": ["base_model", "resnett"]}, ["--dry_run"], '"resnett"'),
    ],
    ids=[
        "uniform on a whole number",
        "a huge grid",
        "a key the network does not use",
        "missing data",
        "data of another size",
        "no test split to evaluate on",
        "a misspelt field",
        "bounds the wrong way round",
        "a log scale from 0",
        "a fractional bound of whole numbers",
        "an infinite bound",
        "an unknown network",
    ],
)
def test_a_search_that_cannot_run_stops_before_its_first_trial(tmp_path, data, space, args, words):
    parent = search_folder(tmp_path, space, image_size=32)
    shutil.rmtree(write_built_dataset(tmp_path / "no_test", num_test=0) / "test")

    result = run_in_process(
        "search_hyperparams.py", "--parent_dir", parent, *(arg.format(tmp=tmp_path, data=data) for arg in args)
    )

    assert_user_error(result, words)
    assert [p.name for p in parent.iterdir()] in (["params.json", "search.json"], ["search.json", "params.json"])


def test_a_second_search_in_the_same_folder_is_refused(tmp_path, data):
    from model.utils.files import lock_folder

    parent = search_folder(tmp_path, {"learning_rate": [0.01, 0.02]})

    with lock_folder(parent, "search_hyperparams.py"):  # a search running there
        result = run_in_process("search_hyperparams.py", "--parent_dir", parent, "--data_dir", data)

    assert_user_error(result, "Another search_hyperparams.py is writing into")
    assert not [p for p in parent.iterdir() if p.is_dir()]  # no trial started


@pytest.mark.parametrize(
    "script, make",
    [("search_hyperparams.py", os.mkfifo), ("synthesize_results.py", os.mkfifo), ("synthesize_results.py", None)],
    ids=["search, a pipe", "summary, a pipe", "summary, missing"],
)
def test_a_storage_that_is_no_journal_file_is_named_and_never_waited_on(tmp_path, data, script, make):
    parent = search_folder(tmp_path, {"learning_rate": {"distribution": "log_uniform", "low": 0.001, "high": 0.1}})
    storage = tmp_path / "journal.log"
    if make:
        make(storage)
    args = ["--parent_dir", parent, "--data_dir", data, "--sampler", "tpe", "--num_trials", "1"]

    result = run_in_process(
        script, *(args if script == "search_hyperparams.py" else ["--parent_dir", tmp_path]), "--storage", storage
    )

    assert_user_error(result, str(storage))
    assert bool(make) == storage.exists()  # a summary never makes a journal


def test_a_trial_whose_launcher_trains_nothing_is_failed_not_done(tmp_path, data):
    parent = search_folder(tmp_path, {"learning_rate": [0.01, 0.02]})

    result = run_in_process("search_hyperparams.py", "--parent_dir", parent, "--data_dir", data, "--launcher", "true")

    assert result.returncode == 1
    assert "Search finished: 0 done, 0 skipped (finished before), 2 failed" in result.stderr
    assert "its run.json does not say it trained" in result.stderr


def test_restoring_from_a_folder_without_weights_is_an_error_not_a_fresh_start(tmp_path, data, experiment):
    (tmp_path / "empty").mkdir()

    result = run_in_process(
        "train.py", "--model_dir", experiment, "--data_dir", data, "--restore_from", tmp_path / "empty"
    )

    assert_user_error(result, "holds no checkpoint")
    assert not list((experiment / "last_weights").glob("ckpt-*"))


@pytest.mark.parametrize("cut", [0, 0.6], ids=["empty", "cut short"])
def test_an_unreadable_image_in_a_built_split_is_named(tmp_path, data, experiment, cut):
    image = data / "train" / "0_IMG_train0.jpg"
    image.write_bytes(image.read_bytes()[: int(cut * image.stat().st_size)])

    result = run_in_process("train.py", "--model_dir", experiment, "--data_dir", data)

    assert_user_error(result, "0_IMG_train0.jpg is not an image that can be read")


def test_results_that_are_not_finite_numbers_are_left_blank_with_a_warning(tmp_path):
    for name, accuracy in (("good", 0.5), ("odd", "Infinity"), ("text", '"high"')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.json").write_text(json.dumps({"learning_rate": 0.001}))
        (tmp_path / name / "metrics_eval_best_weights.json").write_text(f'{{"accuracy": {accuracy}, "loss": 1.0}}')

    result = run_in_process("synthesize_results.py", "--parent_dir", tmp_path)

    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "experiment" not in line]
    assert rows[0].startswith("| good | 0.5000")
    assert "odd" in result.stderr and "text" in result.stderr and "not a finite number" in result.stderr


# E. Messages say what is wrong with the path given


@pytest.mark.parametrize("make", ["file", "missing"])
def test_a_folder_argument_says_whether_it_is_missing_or_a_file(tmp_path, make):
    path = tmp_path / "experiment"
    if make == "file":
        path.write_text("")

    result = run_in_process("train.py", "--model_dir", path)

    assert_user_error(result, f"{path} {'is not a folder' if make == 'file' else 'does not exist'}")


@pytest.mark.parametrize("make", [os.mkdir, os.mkfifo], ids=["folder", "fifo"])
def test_an_input_file_of_the_wrong_kind_is_named_as_such(tmp_path, make):
    (tmp_path / "experiment").mkdir()
    make(tmp_path / "experiment" / "params.json")

    result = run_in_process("train.py", "--model_dir", tmp_path / "experiment")

    assert_user_error(result, "params.json is a", "not a file")


# F. What a new user trips over


def test_evaluate_outputs_are_ignored_by_git():
    outputs = ("x/confusion_matrix_test_best_weights.png", "x/metrics_test_best_weights.json", "results_test.md")
    for path in (f"experiments/{output}" for output in outputs):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, path


def test_a_build_into_a_file_names_the_file(tmp_path):
    raw = write_raw_signs(tmp_path / "SIGNS", num_train=12, num_test=6)
    (tmp_path / "afile").write_text("notes")

    result = build(raw, tmp_path / "afile")

    assert_user_error(result, f"{tmp_path / 'afile'} is not a folder")
    assert (tmp_path / "afile").read_text() == "notes"


def test_synthesize_results_checks_both_tables_before_writing_either(tmp_path, experiment):
    (tmp_path / "results.md").write_text("the earlier table")
    os.mkfifo(tmp_path / "results.csv")

    assert_user_error(run_in_process("synthesize_results.py", "--parent_dir", tmp_path), "results.csv")
    assert (tmp_path / "results.md").read_text() == "the earlier table"
