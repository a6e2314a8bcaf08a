"""Distributed training on one CPU: "mirrored" over this process's one device (fast tier), over
two logical CPU devices and "multi_worker" over two local processes (end-to-end tier: devices and
clusters are set before TensorFlow starts, in processes of their own)."""

import json
import os
import socket
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import REPO, run_in_process, run_script, tiny_params, train_losses

# Runs train.py with the machine's CPU split into two logical devices, as if it had two GPUs.
TWO_DEVICES = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


NO_AUGMENTATION = {"use_random_flip": False, "random_brightness": 0, "random_saturation": 0}


def train_command(model_dir, data_dir, *args, two_devices=False):
    launcher = ["-c", TWO_DEVICES] if two_devices else []
    command = [sys.executable, *launcher, str(REPO / "train.py"), "--model_dir", str(model_dir)]
    return command + ["--data_dir", str(data_dir), *map(str, args)]


def train(model_dir, data_dir, *args, two_devices=False):
    command = train_command(model_dir, data_dir, *args, two_devices=two_devices)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def experiment(tmp_path, name, **changes):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(tiny_params(**{"num_epochs": 3, **changes})))
    return folder


def steps_done(model_dir):
    prefix = tf.train.latest_checkpoint(str(model_dir / "last_weights"))
    return int(tf.train.load_variable(prefix, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def test_mirrored_on_one_device_trains_like_the_default_strategy(trained_once, tmp_path):
    # The same updates through MirroredStrategy's code: its variables, distributed datasets and
    # reduced losses. Without batch norm nor random augmentation, as below.
    same = dict(use_batch_norm=False, learning_rate=0.01, deterministic=True, **NO_AUGMENTATION)
    default = experiment(tmp_path, "default", **same)
    mirrored = experiment(tmp_path, "mirrored", distribution="mirrored", **same)

    results = [
        run_in_process("train.py", "--model_dir", run, "--data_dir", trained_once.data_dir)
        for run in (default, mirrored)
    ]

    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "on 1 replica(s)" in result.stderr
    assert steps_done(default) == steps_done(mirrored) == 3 * 6
    assert train_losses(mirrored)[-1] < train_losses(mirrored)[0]
    assert train_losses(mirrored) == pytest.approx(train_losses(default), rel=0.01)
    default_dev = json.loads((default / "metrics_eval_last_weights.json").read_text())
    mirrored_dev = json.loads((mirrored / "metrics_eval_last_weights.json").read_text())
    assert mirrored_dev["loss"] == pytest.approx(default_dev["loss"], rel=0.01)
    assert default_dev["accuracy"] >= 0.5


@pytest.mark.slow
def test_mirrored_over_two_devices_trains_like_one_device(built_dataset, tmp_path):
    # Without batch norm, which normalizes over each replica's share of the batch, nor random
    # augmentation, the two runs compute the same updates, up to the order of float additions.
    # A learning rate at which the tiny network learns: at chance level, rounding flips guesses.
    same = dict(use_batch_norm=False, learning_rate=0.01, deterministic=True, **NO_AUGMENTATION)
    one = experiment(tmp_path, "one_device", **same)
    two = experiment(tmp_path, "two_devices", distribution="mirrored", **same)

    single = train(one, built_dataset)
    mirrored = train(two, built_dataset, two_devices=True)

    assert single.returncode == 0, single.stderr[-3000:]
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    assert "on 2 replica(s)" in mirrored.stderr
    assert "on 1 replica(s)" in single.stderr
    # batch_size is the global batch: 96 images / 16 = 6 steps per epoch on both
    assert steps_done(one) == steps_done(two) == 3 * 6
    single_losses, mirrored_losses = train_losses(one), train_losses(two)
    assert mirrored_losses[-1] < mirrored_losses[0]
    assert mirrored_losses == pytest.approx(single_losses, rel=0.01)
    single_dev = json.loads((one / "metrics_eval_last_weights.json").read_text())
    mirrored_dev = json.loads((two / "metrics_eval_last_weights.json").read_text())
    assert mirrored_dev["loss"] == pytest.approx(single_dev["loss"], rel=0.01)
    assert single_dev["accuracy"] >= 0.5
    # A rounding difference can still flip an image whose two best classes are close
    assert abs(mirrored_dev["accuracy"] - single_dev["accuracy"]) <= 2 / 24 + 1e-6


@pytest.mark.slow
def test_a_mirrored_run_resumes(built_dataset, tmp_path):
    two = experiment(tmp_path, "two_devices", distribution="mirrored")
    assert train(two, built_dataset, "--param", "num_epochs=1", two_devices=True).returncode == 0

    resumed = train(two, built_dataset, "--restore_from", two / "last_weights", two_devices=True)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 epochs done" in resumed.stderr
    assert steps_done(two) == 3 * 6


# "multi_worker": two local processes on loopback ports play two machines


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(model_dir, data_dir, *args, count=2):
    """Runs `count` train.py processes that form one cluster; returns (process, stderr) of each."""
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(count)]}
    workers = []
    for index in range(count):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        # Output goes to files, not pipes: a worker blocked on a full pipe would stall the cluster.
        output = model_dir.parent / f"worker_{index}.out"
        with open(output, "w") as file:
            command = train_command(model_dir, data_dir, "--param", "distribution=multi_worker", *args)
            env = {**os.environ, "TF_CONFIG": tf_config}
            workers.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=file, stderr=file), output))
    for worker, _ in workers:
        worker.wait(timeout=300)
    return [(worker, output.read_text()) for worker, output in workers]


@pytest.mark.slow  # two clusters of two processes: about 35 s
def test_two_workers_train_one_experiment_and_leave_one_checkpoint(built_dataset, tmp_path):
    model_dir = experiment(tmp_path, "cluster", num_epochs=2)

    results = start_workers(model_dir, built_dataset)

    for worker, stderr in results:
        assert worker.returncode == 0, stderr[-3000:]
        assert "on 2 replica(s)" in stderr
    # Both workers took part in the same steps: the same aggregated metrics, epoch by epoch
    chief_log, other_log = (stderr for _, stderr in results)
    epoch_lines = [[line for line in log.splitlines() if "metrics:" in line] for log in (chief_log, other_log)]
    without_times = [[line.split(" (")[0] for line in lines] for lines in epoch_lines]
    assert len(without_times[0]) == 4 and without_times[0] == without_times[1]  # train + eval, 2 epochs
    # Only the chief (worker 0) wrote into the experiment folder; the other's folder is gone
    assert f"Done. Weights, metrics and summaries are in {model_dir}" in chief_log
    other_folder = other_log.split("Done. Weights, metrics and summaries are in ")[1].split()[0]
    assert not os.path.exists(other_folder)
    checkpoints = sorted(path.name for path in (model_dir / "last_weights").glob("*.index"))
    assert checkpoints == ["ckpt-1.index", "ckpt-2.index"]
    # batch_size is the global batch: 96 images / 16 = 6 steps per epoch, shared by the workers
    assert steps_done(model_dir) == 2 * 6
    assert json.loads((model_dir / "metrics_eval_last_weights.json").read_text())["epoch"] == 2
    # One consistent checkpoint: evaluate.py restores it on one device
    evaluated = run_script("evaluate.py", "--model_dir", model_dir, "--data_dir", built_dataset)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]

    # The cluster resumes from the chief's checkpoint, for exactly one more epoch
    resume = ["--restore_from", model_dir / "last_weights", "--param", "num_epochs=3"]
    resumed = start_workers(model_dir, built_dataset, *resume)

    for worker, stderr in resumed:
        assert worker.returncode == 0, stderr[-3000:]
        assert f"Restored {model_dir / 'last_weights' / 'ckpt-2'}: 2 epochs done" in stderr
    assert steps_done(model_dir) == 3 * 6


def test_multi_worker_without_tf_config_says_what_is_missing(built_dataset, tmp_path, monkeypatch):
    model_dir = experiment(tmp_path, "cluster", distribution="multi_worker")
    monkeypatch.delenv("TF_CONFIG", raising=False)

    result = run_in_process("train.py", "--model_dir", model_dir, "--data_dir", built_dataset)

    assert result.returncode == 2
    assert "TF_CONFIG" in result.stderr and "Traceback" not in result.stderr
