"""Faults a hostile user, a full disk or an odd file brings: each is one clear message and exit
status 2, or handled, never a traceback; nothing is lost, and nothing is written outside the
folders given. (Kills and damaged checkpoints: test_interruptions.py.)

The fast tests run the scripts in the test's process and inject the faults where they arise (a
file that cannot be read, a disk that fills up); the end-to-end tests (marked slow) meet them
for real: a user without root's powers, a small file system that fills up.
"""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, run_in_process, run_script, tiny_params, write_image
from PIL import Image

from model.utils import run_folder


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("Error:") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def train(model_dir, data_dir, *args):
    return run_in_process("train.py", "--model_dir", model_dir, "--data_dir", data_dir, *args)


def train_as_user(model_dir, data_dir, *args, **kwargs):
    return run_script("train.py", "--model_dir", model_dir, "--data_dir", data_dir, *args, **kwargs)


@pytest.fixture
def run_copy(trained, trained_once):
    """A copy of the session's trained run, to change, and its data: (model_dir, data_dir)."""
    return trained, trained_once.data_dir


# Mistakes in the files a user writes


@pytest.mark.parametrize("content", [b'{"learning_rate": 0.01, "name": "\xe9t\xe9"}', b"\xff\xfe{\x00}\x00"])
def test_params_json_that_is_not_utf8(model_dir, trained_once, content):
    (model_dir / "params.json").write_bytes(content)
    result = train(model_dir, trained_once.data_dir)
    assert_user_error(result, "params.json is not UTF-8 text", "Save it as UTF-8")


def test_params_json_that_cannot_be_read(model_dir, trained_once, monkeypatch):
    refuse(monkeypatch, "open", model_dir, lambda path, *_: path == model_dir / "params.json")
    assert_user_error(train(model_dir, trained_once.data_dir), "Cannot read", "params.json")


@pytest.mark.slow
def test_params_json_that_its_user_cannot_read(model_dir, trained_once):
    (model_dir / "params.json").chmod(0)
    result = train_as_user(model_dir, trained_once.data_dir, as_user=True)
    assert_user_error(result, "Cannot read", "params.json")


def test_a_gap_in_the_labels_follows_one_rule(model_dir, tmp_path):
    # Labels 0..5 and 9: num_labels 10 trains, naming the classes without images; 7 says to set 10.
    rng = np.random.default_rng(0)
    for split in ("train", "dev"):
        (tmp_path / "gap" / split).mkdir(parents=True)
        for i in range(14):
            label = [0, 1, 2, 3, 4, 5, 9][i % 7]
            write_image(tmp_path / "gap" / split / f"{label}_IMG_{i}.jpg", label % 6, rng, size=(16, 16))

    gap = ["--model_dir", model_dir, "--data_dir", tmp_path / "gap"]
    refusal = run_in_process("train.py", *gap, "--param", "num_labels=7")
    trained = run_in_process("train.py", *gap, "--param", "num_labels=10", "--param", "num_epochs=1")

    assert_user_error(refusal, "labels [9] outside 0..6", "Set num_labels to 10")
    assert trained.returncode == 0, trained.stderr
    assert "no images of label(s) [6, 7, 8]" in (model_dir / "train.log").read_text()


def test_tf_config_with_a_task_outside_its_cluster(model_dir, trained_once, monkeypatch):
    cluster = {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 2}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    args = ["--model_dir", model_dir, "--data_dir", trained_once.data_dir, "--param", "distribution=multi_worker"]
    result = run_in_process("train.py", *args)
    assert_user_error(result, "task index 2", "lists 2 worker(s), numbered from 0")
    assert not (model_dir / "last_weights").exists()


def test_evaluate_split_takes_only_split_names(run_copy, tmp_path):
    model_dir, data_dir = run_copy
    result = run_in_process("evaluate.py", "--model_dir", model_dir, "--split", f"/../../../..{tmp_path}/elsewhere")
    assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*elsewhere*"))


# A folder the user may read but not write: a model shared with them


def refuse(monkeypatch, what, path, test, error=errno.EACCES):
    """Makes os.`what` fail for the paths where test(path) holds, as the system fails it."""
    call = getattr(os, what)

    def refusing(name, *args, **kwargs):
        if isinstance(name, (str, bytes, os.PathLike)) and test(Path(os.fsdecode(name)), *args):
            raise OSError(error, os.strerror(error), os.fsdecode(name))
        return call(name, *args, **kwargs)

    monkeypatch.setattr(os, what, refusing)


def test_a_folder_that_cannot_be_written_is_evaluated_and_used_but_not_trained(run_copy, tmp_path, monkeypatch):
    # The system refuses, as in a folder the user may read but not write, every file opened to be
    # written in the experiment; and the listing of a folder of photos that cannot be read.
    model_dir, data_dir = run_copy
    files_before = sorted(path.name for path in model_dir.iterdir())
    photos = shutil.copytree(data_dir / "test", tmp_path / "photos")
    shutil.copytree(data_dir / "test", photos / "private")
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT  # a file in the folder, or an unnamed one (O_TMPFILE) in it
    refuse(monkeypatch, "open", model_dir, lambda path, flags, *_: model_dir in (path, path.parent) and flags & writes)
    refuse(monkeypatch, "scandir", photos, lambda path: path == photos / "private")

    evaluated = run_in_process("evaluate.py", "--model_dir", model_dir)
    saved_elsewhere = run_in_process("evaluate.py", "--model_dir", model_dir, "--output_dir", tmp_path / "out")
    predicted = run_in_process("predict.py", "--model_dir", model_dir, photos)
    resumed = train(model_dir, data_dir, "--restore_from", model_dir / "last_weights")

    for result in (evaluated, saved_elsewhere, predicted):
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "Test metrics on 24 images" in evaluated.stderr and "not writable" in evaluated.stderr
    assert json.loads((tmp_path / "out" / "metrics_test_best_weights.json").read_text())["accuracy"] >= 0
    assert "Predicted 24 images" in predicted.stderr and f"skipped {photos / 'private'}" in predicted.stderr
    assert_user_error(resumed, f"{model_dir} is not writable")
    assert sorted(path.name for path in model_dir.iterdir()) == files_before


@pytest.mark.slow
def test_a_read_only_experiment_is_evaluated_and_used_but_not_trained(run_copy, tmp_path):
    model_dir, data_dir = run_copy
    files_before = sorted(path.name for path in model_dir.iterdir())
    photos = shutil.copytree(data_dir / "test", tmp_path / "photos")  # with a folder the user cannot read
    shutil.copytree(data_dir / "test", photos / "private")
    (photos / "private").chmod(0)
    model_dir.chmod(0o555)
    try:
        evaluated = run_script("evaluate.py", "--model_dir", model_dir, as_user=True)
        saved_elsewhere = run_script(
            "evaluate.py", "--model_dir", model_dir, "--output_dir", tmp_path / "out", as_user=True
        )
        predicted = run_script("predict.py", "--model_dir", model_dir, photos, as_user=True)
        resumed = train_as_user(model_dir, data_dir, "--restore_from", model_dir / "last_weights", as_user=True)
    finally:
        model_dir.chmod(0o755)
        (photos / "private").chmod(0o755)

    for result in (evaluated, saved_elsewhere, predicted):
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "Test metrics on 24 images" in evaluated.stderr and "not writable" in evaluated.stderr
    assert json.loads((tmp_path / "out" / "metrics_test_best_weights.json").read_text())["accuracy"] >= 0
    assert "Predicted 24 images" in predicted.stderr and f"skipped {photos / 'private'}" in predicted.stderr
    assert_user_error(resumed, f"{model_dir} is not writable")
    assert sorted(path.name for path in model_dir.iterdir()) == files_before


# Outputs never go through a symbolic link, nor outside the folders given


@pytest.mark.parametrize("name", ["train.log", "history.jsonl", "last_weights", "metrics_eval_best_weights.json"])
def test_an_output_that_is_a_link_is_refused_and_its_target_untouched(run_copy, tmp_path, name):
    model_dir, data_dir = run_copy
    target = tmp_path / "elsewhere"
    shutil.move(model_dir / name, target)
    (model_dir / name).symlink_to(target)
    before = target.read_bytes() if target.is_file() else sorted(p.name for p in target.iterdir())

    resume = ["--restore_from", model_dir / "last_weights", "--param", "num_epochs=3"]
    result = run_in_process("train.py", "--model_dir", model_dir, "--data_dir", data_dir, *resume)

    assert_user_error(result, f"{model_dir / name} is a symbolic link")
    assert (target.read_bytes() if target.is_file() else sorted(p.name for p in target.iterdir())) == before


def test_overwrite_removes_a_link_not_its_target(run_copy, tmp_path):
    model_dir, data_dir = run_copy
    shutil.move(model_dir / "last_weights", tmp_path / "kept")
    (model_dir / "last_weights").symlink_to(tmp_path / "kept")
    kept = sorted(path.name for path in (tmp_path / "kept").iterdir())

    result = train(model_dir, data_dir, "--overwrite")

    assert result.returncode == 0, result.stderr
    assert not (model_dir / "last_weights").is_symlink() and (model_dir / "last_weights" / "ckpt-2.index").exists()
    assert sorted(path.name for path in (tmp_path / "kept").iterdir()) == kept


def test_export_onto_a_link_is_refused(run_copy, tmp_path):
    model_dir, _ = run_copy
    (tmp_path / "served").mkdir()
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "saved_model").symlink_to(tmp_path / "served")

    result = run_in_process("export.py", "--model_dir", model_dir, "--output_dir", tmp_path / "export")

    assert_user_error(result, "saved_model is a symbolic link")
    assert list((tmp_path / "served").iterdir()) == []


def test_build_dataset_onto_a_linked_split_folder_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "raw" / name).mkdir(parents=True)
        for i in range(5):
            write_image(tmp_path / "raw" / name / f"{i}.jpg", i % 2, rng)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.jpg").write_bytes(b"someone else's")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train").symlink_to(tmp_path / "elsewhere")

    result = run_in_process("build_dataset.py", "--data_dir", tmp_path / "raw", "--output_dir", tmp_path / "out")

    assert_user_error(result, f"{tmp_path / 'out' / 'train'} is a symbolic link")
    assert [path.name for path in (tmp_path / "elsewhere").iterdir()] == ["keep.jpg"]


def test_json_outputs_follow_the_umask(model_dir, trained_once):
    umask = os.umask(0o027)  # the process's, as `umask 027` in the user's shell
    try:
        result = train(model_dir, trained_once.data_dir)
    finally:
        os.umask(umask)

    assert result.returncode == 0, result.stderr
    for name in ("run.json", "params_used.json", "metrics_eval_last_weights.json", "history.jsonl", "train.log"):
        assert stat.S_IMODE((model_dir / name).stat().st_mode) == 0o640, name


# A full disk: the run stops with a message, and resumes once there is room


def test_a_disk_full_in_a_later_epoch_stops_training_clearly_and_the_run_resumes(model_dir, trained_once, monkeypatch):
    # The disk fills up as epoch 3's checkpoint is written; once space is freed, the same
    # command with --restore_from continues the run.
    save = tf.train.CheckpointManager.save

    def save_until_full(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number >= 3:
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
        return save(manager, checkpoint_number=checkpoint_number, **kwargs)

    with monkeypatch.context() as disk:
        disk.setattr(tf.train.CheckpointManager, "save", save_until_full)
        full = train(model_dir, trained_once.data_dir, "--param", "num_epochs=30")
    freed = train(
        model_dir, trained_once.data_dir, "--restore_from", model_dir / "last_weights", "--param", "num_epochs=5"
    )

    assert_user_error(full, "is full: epoch 3 could not be saved (the epochs before it are)", "--restore_from")
    assert freed.returncode == 0, freed.stderr
    assert "Epoch 5/5 - Eval metrics" in freed.stderr and "2 epochs done" in freed.stderr
    history = [json.loads(line)["epoch"] for line in (model_dir / "history.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3, 4, 5]
    assert len(list((model_dir / "best_weights").glob("ckpt-*"))) == 2  # one checkpoint: .index, .data


def test_a_disk_full_before_the_first_checkpoint_names_the_file_and_the_run_resumes(
    model_dir, trained_once, monkeypatch
):
    # The first write of the run, its run.json, finds the disk full.
    def no_space(values, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with monkeypatch.context() as disk:
        disk.setattr(run_folder, "save_json", no_space)
        full = train(model_dir, trained_once.data_dir)
    freed = train(
        model_dir, trained_once.data_dir, "--restore_from", model_dir / "last_weights", "--param", "num_epochs=5"
    )

    assert_user_error(full, f"The disk is full: {model_dir / 'run.json'} could not be written", "--restore_from")
    assert freed.returncode == 0, freed.stderr
    assert (
        "holds no checkpoint yet: starting from freshly" in freed.stderr and "Epoch 5/5 - Eval metrics" in freed.stderr
    )
    history = [json.loads(line)["epoch"] for line in (model_dir / "history.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3, 4, 5]
    assert len(list((model_dir / "best_weights").glob("ckpt-*"))) == 2  # one checkpoint: .index, .data


FULL_DISK = """
set -u
mount -t tmpfs -o size=12m tmpfs "$1" || exit 99
cp -r "$2" "$1/run"
head -c "$7" /dev/zero > "$1/ballast"
"$3" "$4" --model_dir "$1/run" --data_dir "$5" --param num_epochs=30 2> "$6/full.err"
echo $? > "$6/full.status"
rm "$1/ballast"
resume="--restore_from $1/run/last_weights --param num_epochs=5"
"$3" "$4" --model_dir "$1/run" --data_dir "$5" $resume 2> "$6/freed.err"
echo $? > "$6/freed.status"
cp -r "$1/run" "$6/run"
"""


@pytest.fixture(scope="module")
def full_disk_data(tmp_path_factory):
    """The data the full-disk runs train on (48 train, 12 dev images): the ballast sizes below are
    measured for the outputs of runs on it."""
    root = tmp_path_factory.mktemp("full_disk_data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("dev", 12), ("test", 12)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            write_image(root / split / f"{i % 6}_IMG_{split}{i}.jpg", i % 6, rng, size=(16, 16))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("ballast", ["9M", "12270K"], ids=["in_a_later_epoch", "before_the_first_checkpoint"])
def test_a_full_disk_stops_training_clearly_and_the_run_resumes_once_space_is_freed(
    model_dir, full_disk_data, tmp_path, ballast
):
    # The experiment on a 12 MB file system mounted in a namespace of its own, most of it taken
    # by a ballast file: a few epochs' checkpoints fit (or none), then the disk is full.
    # Deleting the ballast frees space, and the same command with --restore_from continues the run.
    (model_dir / "params.json").write_text(json.dumps(tiny_params(num_channels=16)))
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare to mount a small file system")
    (tmp_path / "disk").mkdir()
    arguments = [tmp_path / "disk", model_dir, sys.executable, REPO / "train.py", full_disk_data, tmp_path, ballast]
    namespace = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", FULL_DISK, "sh"]
    subprocess.run([*namespace, *map(str, arguments)], timeout=600)
    if not (tmp_path / "full.status").exists():
        pytest.skip("this machine does not allow mounting a file system in a user namespace")
    full, freed = ((tmp_path / f"{name}.err").read_text() for name in ("full", "freed"))

    assert (tmp_path / "full.status").read_text().strip() == "2" and "Traceback" not in full
    [message] = [line for line in full.splitlines() if line.startswith("Error:")]
    if ballast == "9M":
        assert "is full: epoch" in message and "could not be saved (the epochs before it are)" in message
    else:  # the first write that fails, a log, a summary or run.json, is named
        assert "The disk is full:" in message and f"{tmp_path}/disk/run/" in message
    assert "--restore_from" in message
    assert (tmp_path / "freed.status").read_text().strip() == "0", freed
    assert "Epoch 5/5 - Eval metrics" in freed
    assert ("epochs done" if ballast == "9M" else "holds no checkpoint yet: starting from freshly") in freed
    history = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3, 4, 5]
    assert len(list((tmp_path / "run" / "best_weights").glob("ckpt-*"))) == 2  # one checkpoint: .index, .data


# Images are read by one rule everywhere: build_dataset.py, predict.py and the exported model


def test_high_bit_depth_and_float_images_keep_their_tones():
    from model.utils.images import to_rgb

    ramp = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ..., 65535
    for image in (Image.fromarray(ramp), Image.fromarray(ramp.astype(np.int32)), Image.fromarray(ramp / 65535.0)):
        assert image.mode in ("I;16", "I", "F")
        grey = np.asarray(to_rgb(image))[..., 0]
        np.testing.assert_array_equal(grey.ravel(), np.arange(256)), image.mode


@pytest.fixture
def exported(run_copy, tmp_path):
    folder = tmp_path / "exported"
    result = run_in_process("export.py", "--model_dir", run_copy[0], "--output_dir", folder, "--format", "saved_model")
    assert result.returncode == 0, result.stderr
    return folder / "saved_model"


def odd_images(folder):
    """Image files whose pixels need a rule to become 8-bit RGB: bit depth and transparency."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    (folder / "rgb16.png").write_bytes(tf.io.encode_png(tf.constant(colour)).numpy())
    (folder / "grey16.png").write_bytes(tf.io.encode_png(tf.constant(colour[..., :1])).numpy())
    rgba = np.dstack([rng.integers(0, 256, (20, 24, 3)), np.tile(np.arange(0, 240, 10), (20, 1))]).astype(np.uint8)
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(rgba).save(folder / "rgba.webp", lossless=True)
    Image.fromarray(rgba[..., 2:]).convert("LA").save(folder / "grey_alpha.png")
    return sorted(folder.iterdir())


def test_predict_and_the_saved_model_read_odd_images_alike(run_copy, exported, tmp_path):
    images = odd_images(tmp_path / "odd")
    predicted = run_in_process(
        "predict.py", "--model_dir", run_copy[0], *images, "--output", tmp_path / "p.csv", "--top_k", 6
    )
    assert predicted.returncode == 0, predicted.stderr
    with open(tmp_path / "p.csv") as f:
        rows = {line.split(",")[0]: line.strip().split(",")[1:] for line in list(f)[1:]}
    serving = tf.saved_model.load(str(exported)).signatures["serving_default"]

    for path in images:
        probabilities = serving(image_bytes=tf.constant([path.read_bytes()]))["probabilities"].numpy()[0]
        from_predict = {int(rows[str(path)][i]): float(rows[str(path)][i + 1]) for i in range(0, 12, 2)}
        np.testing.assert_allclose(
            [from_predict[label] for label in range(6)], probabilities, atol=1e-5, err_msg=path.name
        )


def test_sixteen_bit_images_are_built_with_their_tones_not_white(tmp_path):
    ramp = np.repeat(np.arange(0, 65536, 4096, dtype=np.uint16), 16).reshape(16, 16)
    for name in ("cat", "dog"):
        (tmp_path / "raw" / name).mkdir(parents=True)
        for i in range(5):
            png = tf.io.encode_png(tf.constant(np.dstack([ramp] * 3)))
            (tmp_path / "raw" / name / f"{i}.png").write_bytes(png.numpy())

    result = run_in_process(
        "build_dataset.py", "--data_dir", tmp_path / "raw", "--output_dir", tmp_path / "out", "--size", 16
    )

    assert result.returncode == 0, result.stderr
    built = np.asarray(Image.open(next((tmp_path / "out" / "train").iterdir())), np.float32)
    assert built.min() < 10 and built.max() > 230  # the ramp, 0 to 65535 -> 0 to 255


@contextmanager
def never_opened(pipe):
    """Fails if anything opens the named pipe to read it while the block runs. A reader would wait
    for a writer forever: here a writer waits for it, so the reader goes on (and the test ends)."""
    opened, done = threading.Event(), threading.Event()

    def writer():
        os.close(os.open(pipe, os.O_WRONLY))  # returns once a reader has opened the pipe
        if not done.is_set():
            opened.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        yield
    finally:
        done.set()
        os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))  # the test's own reader lets the writer go
        thread.join()
    assert not opened.is_set(), f"{pipe} was opened to be read"


def test_a_pipe_named_like_an_image_is_skipped_not_waited_on(run_copy, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "raw" / name).mkdir(parents=True)
        for i in range(5):
            write_image(tmp_path / "raw" / name / f"{i}.jpg", i % 2, rng)
    os.mkfifo(tmp_path / "raw" / "cat" / "pipe.jpg")

    with never_opened(tmp_path / "raw" / "cat" / "pipe.jpg"):
        built = run_in_process("build_dataset.py", "--data_dir", tmp_path / "raw", "--output_dir", tmp_path / "out")
        predicted = run_in_process("predict.py", "--model_dir", run_copy[0], tmp_path / "raw" / "cat" / "pipe.jpg")
        in_folder = run_in_process("predict.py", "--model_dir", run_copy[0], tmp_path / "raw" / "cat")

    assert built.returncode == 0, built.stderr
    assert f"{tmp_path / 'raw' / 'cat' / 'pipe.jpg'}: not a regular file" in built.stderr
    assert sum(len(list((tmp_path / "out" / split).iterdir())) for split in ("train", "dev", "test")) == 10
    assert_user_error(predicted, "pipe.jpg is not a regular file")
    assert in_folder.returncode == 0 and "Predicted 5 images" in in_folder.stderr
    assert f"Skipped {tmp_path / 'raw' / 'cat' / 'pipe.jpg'}: not a regular file" in in_folder.stderr


def test_a_decompression_bomb_warning_is_one_line_of_the_log(tmp_path):
    (tmp_path / "raw" / "big").mkdir(parents=True)
    (tmp_path / "raw" / "small").mkdir(parents=True)
    Image.new("L", (9500, 9500)).save(tmp_path / "raw" / "big" / "huge.png")  # over Pillow's 89.5 million pixels
    for i in range(3):
        Image.new("L", (20, 20)).save(tmp_path / "raw" / "small" / f"{i}.png")

    result = run_in_process(
        "build_dataset.py", "--data_dir", tmp_path / "raw", "--output_dir", tmp_path / "out", "--size", 16
    )

    assert result.returncode == 0, result.stderr
    assert "DecompressionBombWarning" not in result.stderr and "warnings.warn" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "huge.png" in line]
    assert len(lines) == 1 and "90250000 pixels" in lines[0] and "Read anyway" in lines[0]
    assert lines[0] in (tmp_path / "out" / "build_dataset.log").read_text()
