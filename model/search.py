"""Hyperparameter search: the search space in search.json, one folder per trial, running them.

A trial is an ordinary experiment folder (a full params.json) trained by an ordinary
`train.py` subprocess, so everything else (resume, synthesize_results.py, TensorBoard) works
on trials unchanged.
"""

import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

from model.utils import UserError, checkpoints_in, load_json, save_dict_to_json

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"
# Where a TPE search keeps its Optuna study unless --storage says otherwise
JOURNAL_NAME = "optuna_journal.log"

SEARCH_EXAMPLE = """For a grid, give a list of values per key:
    {"learning_rate": [1e-4, 1e-3, 1e-2], "batch_size": [32, 64]}
For random search (with --num_trials), give a distribution per key:
    {"learning_rate": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-1},
     "num_channels": {"distribution": "int_uniform", "low": 8, "high": 32},
     "use_batch_norm": {"distribution": "choice", "values": [true, false]}}
Distributions: uniform, log_uniform, int_uniform (low and high included), choice."""


def load_search_space(parent_dir, base_params):
    """Reads PARENT_DIR/search.json: {key: [values]} or {key: {"distribution": ...}}."""
    path = Path(parent_dir) / "search.json"
    if not path.is_file():
        raise UserError(f"No search space: {path} is missing. Create it next to params.json.\n{SEARCH_EXAMPLE}")
    space = load_json(path)
    if not space:
        raise UserError(f"{path} is empty: name at least one hyperparameter to search.\n{SEARCH_EXAMPLE}")
    for key, values in space.items():
        if key not in base_params:
            raise UserError(
                f"{path}: '{key}' is not a hyperparameter of {Path(parent_dir) / 'params.json'} "
                f"(its keys: {', '.join(base_params.dict)}).\n{SEARCH_EXAMPLE}"
            )
        check_values(path, key, values)
    return space


def check_values(path, key, values):
    """A non-empty list, or a distribution with the fields it needs."""
    if isinstance(values, list):
        if not values:
            raise UserError(f"{path}: the list of values for '{key}' is empty.\n{SEARCH_EXAMPLE}")
        return
    kind = values.get("distribution") if isinstance(values, dict) else None
    if kind == "choice" and isinstance(values.get("values"), list) and values["values"]:
        return
    if kind in ("uniform", "log_uniform", "int_uniform"):
        low, high = values.get("low"), values.get("high")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high:
            if kind != "log_uniform" or low > 0:
                return
    raise UserError(
        f"{path}: '{key}' must be a list of values or a valid distribution, not {values}.\n{SEARCH_EXAMPLE}"
    )


def is_grid(space):
    return all(isinstance(values, list) for values in space.values())


def grid_trials(space):
    """Every combination of the listed values, as a list of {key: value} dicts."""
    keys = list(space)
    return [dict(zip(keys, combination)) for combination in itertools.product(*space.values())]


def random_trials(space, num_trials, seed):
    """num_trials draws from the distributions; the same seed gives the same trials."""
    rng = random.Random(seed)
    return [{key: sample(values, rng) for key, values in space.items()} for _ in range(num_trials)]


def sample(values, rng):
    if isinstance(values, list):
        return rng.choice(values)
    kind = values["distribution"]
    if kind == "choice":
        return rng.choice(values["values"])
    if kind == "int_uniform":
        return rng.randint(values["low"], values["high"])
    if kind == "uniform":
        return float(f"{rng.uniform(values['low'], values['high']):.4g}")
    # log_uniform: uniform in the exponent, so 1e-5..1e-4 is drawn as often as 1e-2..1e-1
    exponent = rng.uniform(math.log10(values["low"]), math.log10(values["high"]))
    return float(f"{10**exponent:.4g}")  # 4 digits: readable folder names, no loss that matters


def trial_name(values):
    """{'learning_rate': 0.001, 'batch_size': 64} -> 'learning_rate_0.001-batch_size_64'."""
    name = "-".join(f"{key}_{json.dumps(value)}" for key, value in values.items())
    # Only characters that are safe in a folder name on every OS.
    return re.sub(r"[^A-Za-z0-9._-]", "", name.replace(" ", ""))


def prepare_trial(trial_dir, base_params, values):
    """Writes the trial's full params.json, refusing to change the one of an earlier trial."""
    params = {**base_params.dict, **values}
    params_path = trial_dir / "params.json"
    if params_path.exists() and load_json(params_path) != params:
        raise UserError(
            f"{params_path} exists with other hyperparameters than this search gives it. "
            "Move that folder away, or restore the search.json and params.json that made it."
        )
    save_dict_to_json(params, params_path)
    return params


def is_finished(trial_dir, num_epochs):
    """Whether the trial trained all its epochs (its last metrics say so)."""
    metrics_path = Path(trial_dir) / "metrics_eval_last_weights.json"
    try:
        return json.loads(metrics_path.read_text()).get("epoch", 0) >= num_epochs
    except (OSError, ValueError):
        return False


def train_command(trial_dir, data_dir, launcher):
    """The argument list that trains one trial, resuming it if it has weights already."""
    command = [*launcher, sys.executable, str(TRAIN_SCRIPT), "--model_dir", str(trial_dir), "--data_dir", str(data_dir)]
    if checkpoints_in(Path(trial_dir) / "last_weights"):
        command += ["--restore_from", str(Path(trial_dir) / "last_weights")]
    return command


# The trial processes running now, so that an interrupted search can stop them.
RUNNING = set()
STOPPING = threading.Event()


def stop_trials():
    """Asks every running trial to stop (train.py then exits cleanly) and waits for them."""
    STOPPING.set()
    for process in list(RUNNING):
        process.terminate()
    for process in list(RUNNING):
        process.wait()


def run_trial(command, trial_dir, threads, watch=None):
    """Runs one trial to the end; returns (exit status, last lines of its output).

    `watch`, if given, is called about once a second while the trial runs; when it returns
    True, the trial is asked to stop (SIGTERM: train.py stops cleanly between two steps).
    """
    # Share the cores between concurrent trials instead of letting each one take them all.
    env = {
        **os.environ,
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(min(threads, 2)),
        "OMP_NUM_THREADS": str(threads),
    }
    output_path = Path(trial_dir) / "output.log"
    with open(output_path, "a") as output:
        if STOPPING.is_set():  # the search was interrupted while this trial was starting
            return 130, ["not started: the search was interrupted"]
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        RUNNING.add(process)
        while (returncode := poll(process, timeout=1.0)) is None:
            if watch is not None and watch():
                process.terminate()
                watch = None
        RUNNING.discard(process)
    # Progress bars redraw with '\r': split on it too, so the tail holds whole messages.
    lines = output_path.read_text(errors="replace").replace("\r", "\n").splitlines()
    return returncode, [line for line in lines if line.strip()][-6:]


def poll(process, timeout):
    """The process's exit status, or None if it is still running after `timeout` seconds."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
