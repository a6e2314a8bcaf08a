"""Shared fixtures: tiny datasets and experiments written into pytest's tmp_path.

Everything is generated here, in code: the tests download nothing and need no demo data.
"""

import contextlib
import ctypes
import io
import json
import logging
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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


def train_experiment(model_dir, data_dir, **params):
    """Trains a new experiment folder holding tiny_params(**params) on data_dir with train.py;
    returns the finished process."""
    model_dir.mkdir()
    (model_dir / "params.json").write_text(json.dumps(tiny_params(**params), indent=4))
    result = run_script("train.py", "--model_dir", model_dir, "--data_dir", data_dir)
    assert result.returncode == 0, result.stderr
    return result


def train_losses(model_dir):
    """The train loss of each epoch, read from the run's train.log."""
    log = (model_dir / "train.log").read_text()
    return [float(line.split("loss: ")[1].split()[0]) for line in log.splitlines() if "Train metrics" in line]


def run_script(script, *args, timeout=300, env=None, as_user=False):
    """Runs one of the repository's scripts as a user would, returning the finished process.

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


def run_in_process(script, *args):
    """Runs a script as a user would, but in this process: for the runs that stop before any
    training (a mistake, a dry run), so that each test does not pay for starting TensorFlow.
    Returns the finished "process" (its exit status, and what it printed)."""
    argv, sigterm, stdout, stderr = sys.argv, signal.getsignal(signal.SIGTERM), io.StringIO(), io.StringIO()
    sys.argv = [str(REPO / script), *map(str, args)]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_path(str(REPO / script), run_name="__main__")
        returncode = 0
    except SystemExit as end:
        returncode = end.code
    finally:
        sys.argv = argv
        signal.signal(signal.SIGTERM, sigterm)
        for handler in list(logging.getLogger().handlers):  # what set_logger added
            logging.getLogger().removeHandler(handler)
            handler.close()
        if "tensorflow" in sys.modules:  # a run that stopped after choosing mixed precision
            sys.modules["tensorflow"].keras.mixed_precision.set_global_policy("float32")
    return subprocess.CompletedProcess([script, *args], returncode, stdout.getvalue(), stderr.getvalue())


def drop_root_powers():
    """Runs in the child before it starts the script: as root, gives up the capabilities that
    ignore file permissions, so that a read-only folder is read-only to the script, as to a user."""
    if os.geteuid() == 0:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
            if prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone once the script starts
                raise OSError(ctypes.get_errno(), "cannot drop root's capabilities")
