"""Shared fixtures: tiny datasets and experiments written into pytest's tmp_path, and the two ways
to run a script.

- run_in_process: the script's main(argv) in the test's process, through run_main as a user's
  command runs it (exit status, messages, files). The fast tier, `make test`, runs scripts so.
- run_script: a new Python process, exactly as a user types the command. The end-to-end tier
  (tests marked `slow`, run by `make test-all`) adds those, with kills, full disks and servers.

Everything is generated here, in code: the tests download nothing and need no demo data.
"""

import contextlib
import ctypes
import importlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model.utils.errors import run_main  # noqa: E402  (once the repository is importable)

# Each class is a colour, with noise: learnable in a few epochs, so tests can check learning.
CLASS_COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200), (40, 200, 200)]


def write_image(path, label, rng, size=(40, 48)):
    """A noisy image whose dominant colour tells its label."""
    pixels = np.array(CLASS_COLOURS[label], np.float32) + rng.normal(0, 25, (*size, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=95)


def write_signs_split(folder, num_images, rng, num_labels=6, start=0, size=(40, 48)):
    """num_images SIGNS-style files `{label}_IMG_{id}.jpg`, labels cycling over num_labels."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        label = i % num_labels
        write_image(folder / f"{label}_IMG_{start + i}.jpg", label, rng, size)


def write_raw_signs(root, num_train=60, num_test=12):
    """A raw dataset in the SIGNS layout at root/train_signs and root/test_signs (48x40 images)."""
    rng = np.random.default_rng(0)
    write_signs_split(root / "train_signs", num_train, rng)
    write_signs_split(root / "test_signs", num_test, rng, start=1000)
    return root


@pytest.fixture
def raw_signs(tmp_path):
    """A raw dataset in the SIGNS layout: 60 train and 12 test images of 48x40 pixels."""
    return write_raw_signs(tmp_path / "SIGNS")


def write_built_dataset(root, seed=1, num_test=24):
    """A dataset as build_dataset.py writes it: {train,dev,test}/{label}_IMG_*.jpg, 16x16 JPEGs
    with labels 0 to 5 in turn (96 train and 24 dev images)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", 96), ("dev", 24), ("test", num_test)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            write_image(root / split / f"{i % 6}_IMG_{split}{i}.jpg", i % 6, rng, size=(16, 16))
    return root


@pytest.fixture
def built_dataset(tmp_path):
    """The tiny built dataset, in this test's own folder: for the tests that change it."""
    return write_built_dataset(tmp_path / "16x16_SIGNS")


def tiny_params(**overrides):
    """The shipped base_model params, shrunk so a run takes seconds."""
    params = json.loads((REPO / "experiments/base_model/params.json").read_text())
    params.update(image_size=16, num_channels=4, batch_size=16, num_epochs=2, save_summary_steps=2)
    params.update(overrides)
    return params


@pytest.fixture
def model_dir(tmp_path):
    """An experiment folder holding a tiny params.json."""
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(tiny_params(), indent=4))
    return folder


def train_losses(model_dir):
    """The train loss of each epoch, read from the run's train.log."""
    log = (model_dir / "train.log").read_text()
    return [float(line.split("loss: ")[1].split()[0]) for line in log.splitlines() if "Train metrics" in line]


# Running the scripts


def run_in_process(script, *args, env=None):
    """Runs a script as `python SCRIPT ARGS` would, but in this process: its main(argv) through
    run_main, as its `__main__` block does. Returns the finished "process" (exit status, and what
    it printed on stdout and stderr).

    The script's module is imported once per test process; each call starts from what a new
    process has (no logging handlers, the default signal handlers, float32 layers, TensorFlow's
    ops as chosen, cwd the repository, env added to the environment), and puts back afterwards
    what the run changed, so that the next test is not affected.
    """
    module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    argv = [str(arg) for arg in args]
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    saved_argv, saved_cwd, saved_environ = sys.argv, os.getcwd(), dict(os.environ)
    saved_tensorflow = tensorflow_state()
    stdout, stderr = io.StringIO(), io.StringIO()
    for handler in saved_handlers:  # pytest's own: a new process has none, and logging.basicConfig acts
        root.removeHandler(handler)
    sys.argv = [str(REPO / script), *argv]  # what run.json records as the command
    os.chdir(REPO)
    os.environ.update({key: str(value) for key, value in (env or {}).items()})
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            run_main(module.main, argv)
        returncode = 0
    except SystemExit as end:
        returncode = end.code if isinstance(end.code, int) else 0 if end.code is None else 1
        if isinstance(end.code, str):
            stderr.write(f"{end.code}\n")
    finally:
        for handler in list(root.handlers):  # what the script's set_logger added
            root.removeHandler(handler)
            handler.close()
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environ)
        restore_tensorflow_state(saved_tensorflow)
        if "search.runner" in sys.modules:  # an interrupted search leaves its stop flag set
            sys.modules["search.runner"].STOPPING.clear()
            sys.modules["search.runner"].RUNNING.clear()
    return subprocess.CompletedProcess([script, *argv], returncode, stdout.getvalue(), stderr.getvalue())


def tensorflow_state():
    """Keras' dtype policy and whether TensorFlow's ops are deterministic (None before TensorFlow is
    imported): what `mixed_precision` and `deterministic` change for the rest of a process."""
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.framework import config  # op determinism can only be turned off here

    return sys.modules["tensorflow"].keras.mixed_precision.global_policy().name, config.is_op_determinism_enabled()


def restore_tensorflow_state(saved):
    if "tensorflow" not in sys.modules:
        return
    from tensorflow.python.framework import config

    policy, deterministic = saved or ("float32", False)
    sys.modules["tensorflow"].keras.mixed_precision.set_global_policy(policy)
    if config.is_op_determinism_enabled() != deterministic:
        (config.enable_op_determinism if deterministic else config.disable_op_determinism)()


def run_script(script, *args, timeout=300, env=None, as_user=False):
    """Runs one of the repository's scripts as a user would, in a new process; returns it finished.

    env: variables to add; as_user: without the powers that let root ignore file permissions.
    """
    return subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=drop_root_powers if as_user else None,
    )


def drop_root_powers():
    """Runs in the child before it starts the script: as root, gives up the capabilities that
    ignore file permissions, so that a read-only folder is read-only to the script, as to a user."""
    if os.geteuid() == 0:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
            if prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone once the script starts
                raise OSError(ctypes.get_errno(), "cannot drop root's capabilities")


# Trained experiments


def write_experiment(model_dir, **params):
    """A new experiment folder holding tiny_params(**params)."""
    model_dir.mkdir(parents=True)
    (model_dir / "params.json").write_text(json.dumps(tiny_params(**params), indent=4))
    return model_dir


def train_in_process(model_dir, data_dir, **params):
    """Trains a new experiment folder holding tiny_params(**params) on data_dir with train.py, in
    this process; returns the finished run (its stderr holds the console's story)."""
    result = run_in_process("train.py", "--model_dir", write_experiment(model_dir, **params), "--data_dir", data_dir)
    assert result.returncode == 0, result.stderr
    return result


def train_experiment(model_dir, data_dir, **params):
    """The same as train_in_process, with train.py started as a user starts it (end-to-end tests)."""
    result = run_script("train.py", "--model_dir", write_experiment(model_dir, **params), "--data_dir", data_dir)
    assert result.returncode == 0, result.stderr
    return result


@dataclass
class Trained:
    model_dir: Path
    data_dir: Path
    result: subprocess.CompletedProcess  # train.py's: exit status, and the console's story


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory):
    """The one tiny experiment of the session (of each test process, with pytest-xdist): tiny_params()
    trained for 2 epochs in this process on the tiny built dataset. Tests only read it, and its data;
    a test that changes the experiment takes a copy (`trained`), so that nothing is trained twice."""
    root = tmp_path_factory.mktemp("trained_once")
    data_dir = write_built_dataset(root / "16x16_SIGNS")
    return Trained(root / "experiment", data_dir, train_in_process(root / "experiment", data_dir))


@pytest.fixture
def trained(trained_once, tmp_path):
    """A copy of the session's trained experiment, in this test's folder, to change; its data is
    the session's (run.json names it, so evaluate.py and a resume find it)."""
    return Path(shutil.copytree(trained_once.model_dir, tmp_path / "experiment"))


# Searches


STUBS = Path(__file__).parent / "stub_scripts"


@dataclass
class Trainer:
    scripts: Path  # the folder of the train.py and evaluate.py that the trials of a search run
    run: Callable  # runs a script: run_in_process or run_script


@pytest.fixture
def stand_in(monkeypatch):
    """Trials trained by the stand-in train.py of tests/stub_scripts, which writes what train.py
    writes in a fraction of a second and without TensorFlow, in a search run in the test's process."""
    import search_hyperparams

    # search_hyperparams.py starts the train.py and evaluate.py beside it: here, the stand-ins
    monkeypatch.setattr(search_hyperparams, "__file__", str(STUBS / "search_hyperparams.py"))
    return Trainer(STUBS, run_in_process)


@pytest.fixture(params=["stand_in", pytest.param("train_py", marks=pytest.mark.slow)])
def trainer(request):
    """How a search's trials train, for the tests that hold for both: by the stand-in (fast tier),
    or by the real train.py, in a search run as a user runs it (end-to-end tier)."""
    return Trainer(REPO, run_script) if request.param == "train_py" else request.getfixturevalue("stand_in")
