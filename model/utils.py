"""General utilities: hyperparameters, logging, JSON files, user errors.

Nothing here imports TensorFlow, so build_dataset.py and error messages stay fast.
"""

import difflib
import json
import logging
import multiprocessing
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm


class UserError(Exception):
    """A mistake in the user's input: shown as one clear message, without a traceback."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: usually a learning rate that is too high."""


class MissingHyperparameter(UserError, AttributeError):
    """A key missing from params.json; an AttributeError too, so hasattr() and getattr() work."""


def run_main(main):
    """Call `main()`; turn a UserError into a message on stderr and exit status 2.

    SIGTERM (sent by `kill`, job schedulers and pre-emption) stops a script the same way as
    Ctrl-C does, so both get the same clean exit.
    """
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        main()
    except UserError as error:
        if _logs_to_console():  # set_logger ran: the message also goes into the run's log
            logging.error("Error: %s", error)
        else:
            print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)


def worker_pool(processes):
    """A multiprocessing Pool whose workers leave Ctrl-C and SIGTERM to the main process.

    Without this, every worker prints its own KeyboardInterrupt traceback when the user
    presses Ctrl-C, or when the pool shuts its workers down with SIGTERM.
    """
    return multiprocessing.Pool(processes, initializer=_default_signal_handlers)


def _default_signal_handlers():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _logs_to_console():
    return any(isinstance(h, TqdmHandler) for h in logging.getLogger().handlers)


class Params:
    """Hyperparameters loaded from a JSON file.

    Example:
    ```
    params = Params(json_path)
    print(params.learning_rate)
    params.learning_rate = 0.5  # change the value of learning_rate in params
    ```
    """

    def __init__(self, json_path):
        self.update(json_path)

    def save(self, json_path):
        """Saves parameters to a JSON file (atomically)."""
        save_dict_to_json(self.__dict__, json_path)

    def update(self, json_path):
        """Loads parameters from a JSON file, on top of the current ones."""
        self.__dict__.update(load_json(json_path))

    @property
    def dict(self):
        """Gives dict-like access to Params: `params.dict['learning_rate']`."""
        return self.__dict__

    def __getattr__(self, name):
        # Only called when `name` is not a loaded hyperparameter.
        if name.startswith("_"):
            raise AttributeError(name)
        raise MissingHyperparameter(
            f"The hyperparameter '{name}' is missing from params.json. Add it "
            "(experiments/base_model/params.json lists every key with a working value)."
        )

    def __getitem__(self, key):
        return self.__dict__[key]

    def __contains__(self, key):
        return key in self.__dict__

    def __repr__(self):
        return f"Params({self.__dict__})"


# Every hyperparameter params.json may hold: its type, the values that make sense, and an
# example for the error message. When your model needs a new hyperparameter, add it here
# too: then a typo in its name is caught instead of being silently ignored.
HYPERPARAMETERS = {
    "model_version": (str, None, "the name of a network in MODELS (model/model_fn.py), such as base_model"),
    "learning_rate": (float, lambda v: v > 0, "a positive number such as 1e-3"),
    "batch_size": (int, lambda v: v >= 1, "a whole number of at least 1, such as 32"),
    "num_epochs": (int, lambda v: v >= 1, "a whole number of at least 1, such as 10"),
    "num_channels": (int, lambda v: v >= 1, "a whole number of at least 1, such as 16"),
    "use_batch_norm": (bool, None, "true or false"),
    "bn_momentum": (float, lambda v: 0 <= v < 1, "a number from 0 to below 1, such as 0.9"),
    "image_size": (int, lambda v: v >= 1, "the side of the images in pixels, such as 64"),
    "use_random_flip": (bool, None, "true or false"),
    "num_labels": (int, lambda v: v >= 2, "the number of classes, at least 2"),
    "save_summary_steps": (int, lambda v: v >= 1, "a whole number of steps, such as 5"),
    "seed": (int, None, "a whole number such as 230"),
    "deterministic": (bool, None, "true or false"),
    "cache": (
        str,
        lambda v: v in ("memory", "none") or "/" in v,  # a folder is written with a /, so typos are caught
        '"memory", "none", or a folder on a fast local disk written with a /, such as "/tmp" or "./cache"',
    ),
    "mixed_precision": (bool, None, "true or false (true pays off on GPUs only)"),
    "jit_compile": (bool, None, "true or false (true pays off on GPUs only)"),
    "overfit_batches": (int, lambda v: v >= 0, "0 (off), or a number of batches to learn by heart, such as 1"),
    "distribution": (
        str,
        lambda v: v in ("none", "mirrored", "multi_worker"),
        '"none", "mirrored" (all GPUs of this machine) or "multi_worker" (machines described by TF_CONFIG)',
    ),
}
# Hyperparameters that params.json may leave out, and the value they then take.
DEFAULTS = {
    "model_version": "base_model",
    "deterministic": False,
    "cache": "memory",
    "mixed_precision": False,
    "jit_compile": False,
    "distribution": "none",
    "overfit_batches": 0,
}


def check_params(params, source):
    """Stops with a clear message on an unknown, missing, mistyped or out-of-range hyperparameter."""
    for key in params.dict:
        if key not in HYPERPARAMETERS:
            suggestion = closest_key(key, HYPERPARAMETERS)
            hint = f"Did you mean '{suggestion}'? " if suggestion else ""
            raise UserError(
                f"{source}: unknown hyperparameter '{key}'. {hint}If it is a new one, "
                "declare it in HYPERPARAMETERS in model/utils.py."
            )
    for key, (kind, is_valid, example) in HYPERPARAMETERS.items():
        if key not in params.dict:
            if key not in DEFAULTS:
                raise UserError(f"{source}: the hyperparameter '{key}' is missing. Add it, with {example}.")
            params.dict[key] = DEFAULTS[key]
        value = params.dict[key]
        if not _has_type(value, kind) or (is_valid and not is_valid(value)):
            raise UserError(f"{source}: {key} = {json.dumps(value)} is not valid: it must be {example}.")


def _has_type(value, kind):
    if isinstance(value, bool):  # in Python, True is also the integer 1
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def apply_overrides(params, overrides):
    """Applies `--param KEY=VALUE` overrides; VALUE is read as JSON, or else kept as a string."""
    for override in overrides:
        key, has_value, text = override.partition("=")
        if not has_value:
            raise UserError(f"--param {override}: expected KEY=VALUE, such as --param learning_rate=0.01.")
        if key not in HYPERPARAMETERS:
            suggestion = closest_key(key, HYPERPARAMETERS)
            hint = f" Did you mean '{suggestion}'?" if suggestion else ""
            raise UserError(
                f"--param {override}: '{key}' is not a hyperparameter.{hint} Known keys: {', '.join(HYPERPARAMETERS)}."
            )
        try:
            params.dict[key] = json.loads(text)
        except json.JSONDecodeError:
            params.dict[key] = text  # a bare word such as adam


def load_params(model_dir, overrides=(), filename="params.json"):
    """Loads and checks `model_dir/params.json`, applying any `--param KEY=VALUE` overrides."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(
            f"The experiment folder {model_dir} does not exist. Create it with a params.json, "
            "for example by copying experiments/base_model."
        )
    json_path = model_dir / filename
    if not json_path.is_file():
        raise UserError(f"No {filename} in {model_dir}. Copy one from experiments/base_model and edit it.")
    params = Params(json_path)
    apply_overrides(params, overrides)
    check_params(params, f"{json_path}{' with --param overrides' if overrides else ''}")
    return params


def load_trained_params(model_dir):
    """The hyperparameters a run in model_dir trained with: params_used.json, else params.json."""
    used = Path(model_dir) / "params_used.json"
    return load_params(model_dir, filename=used.name if used.is_file() else "params.json")


def load_class_names(model_dir, data_dir, num_labels):
    """The name of each label: from the dataset's classes.json (written by build_dataset.py),
    else the label numbers. data_dir defaults to the one the run in model_dir trained on."""
    if data_dir is None:
        run_path = Path(model_dir) / "run.json"
        data_dir = load_json(run_path).get("data", {}).get("data_dir") if run_path.is_file() else None
    classes_path = Path(data_dir) / "classes.json" if data_dir else None
    if classes_path is None or not classes_path.is_file():
        return [str(label) for label in range(num_labels)]
    names = load_json(classes_path)
    if set(names) != {str(label) for label in range(num_labels)}:
        raise UserError(
            f"{classes_path} names the labels {', '.join(names)}, but the model has num_labels = {num_labels} "
            f"(0 to {num_labels - 1}). Pass the --data_dir the model was trained on."
        )
    return [names[str(label)] for label in range(num_labels)]


# Metrics where smaller is better: results list them lowest first, searches minimise them.
LOWER_IS_BETTER = {"loss"}


def load_json(json_path):
    """Reads a JSON object from a file; a missing or malformed file is a UserError."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise UserError(f"No JSON file found at {json_path}. Check the path.")
    try:
        with open(json_path) as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{json_path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
            "Fix the file (a common cause is a trailing comma or a missing quote)."
        ) from None
    if not isinstance(content, dict):
        raise UserError(f"{json_path} must hold a JSON object ({{...}}), not {type(content).__name__}.")
    return content


def save_dict_to_json(d, json_path):
    """Saves a dict to a JSON file atomically: a reader never sees a half-written file.

    NumPy scalars and arrays (as returned by metrics) are converted to plain Python values.
    """
    write_text_atomic(json.dumps(d, indent=4, default=_to_builtin) + "\n", json_path)


def write_text_atomic(text, path):
    """Writes a text file so that it holds either the old or the new content, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: os.replace is atomic on the same file system.
    fd, tmp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0o600 would hide results from the rest of a team
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        Path(tmp_path).unlink(missing_ok=True)
        raise


def append_json_line(d, path):
    """Appends a dict to a JSON-lines file as one line, written whole.

    The line goes out in a single write to a file opened for appending, so a reader polling
    the file sees whole lines; a line cut short by a crash has no newline and is ignored by
    read_json_lines.
    """
    line = json.dumps(d, default=_to_builtin) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json_lines(path):
    """The dicts in a JSON-lines file, leaving out a last line still being written; [] if no file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]


def _to_builtin(value):
    """json.dump fallback for NumPy (and TensorFlow, via .numpy()) values."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class TqdmHandler(logging.StreamHandler):
    """Logs to the console through tqdm.write, so log lines don't break progress bars."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def set_logger(log_path):
    """Sends INFO logs to the console and to `log_path`, e.g. `model_dir/train.log`.

    Calling it twice replaces the handlers instead of adding duplicates.

    Example:
    ```
    logging.info("Starting training...")
    ```
    """
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s:%(levelname)s: %(message)s"))
    logger.addHandler(file_handler)

    console_handler = TqdmHandler()
    console_handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console_handler)


def label_from_filename(path):
    """The label of a SIGNS-style file: the integer before the first '_' (`12_IMG_5.jpg` -> 12)."""
    name = Path(path).name
    prefix = name.split("_", 1)[0]
    if "_" not in name or not prefix.isdecimal():
        raise UserError(
            f"Cannot read a label from the file name '{path}': expected '<integer label>_<name>', "
            "for example '3_IMG_4821.jpg'. Rename the file or remove it from the folder."
        )
    return int(prefix)


@contextmanager
def training_lock(folder):
    """Holds an exclusive lock on a run's folder: two runs training into one folder would
    overwrite each other's checkpoints. The lock goes with the process, however it ends."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"Another train.py is training in {folder} right now; two runs in one folder would overwrite "
                "each other's weights. Wait for it to end or stop it, or use another --model_dir."
            ) from None
        yield


def checkpoints_in(folder):
    """The checkpoint prefixes in a weights folder, newest first.

    Found from their index files, which TensorFlow writes last, rather than from the folder's
    `checkpoint` state file: a run killed just after saving may not have updated that file.
    """
    numbered = []
    for index in Path(folder).glob("ckpt-*.index"):
        number = index.name.removeprefix("ckpt-").removesuffix(".index")
        if number.isdecimal():
            numbered.append((int(number), str(index.with_suffix(""))))
    return [prefix for _, prefix in sorted(numbered, reverse=True)]


def closest_key(key, valid_keys):
    """The valid key that looks most like `key` (for 'did you mean' hints), or None."""
    matches = difflib.get_close_matches(key, list(valid_keys), n=1)
    return matches[0] if matches else None


class RunRecord:
    """Keeps MODEL_DIR/run.json: what ran, where, with which versions and data, and how it ended.

    Written when the run starts (status "running") and again when it ends, whatever the end:
    "finished", "interrupted" (Ctrl-C, SIGTERM), "diverged" or "failed". A `kill -9` leaves
    "running". Earlier runs in the same folder are kept under "previous_runs".

    Example:
    ```
    with RunRecord(model_dir) as run:
        run.record["data"] = {...}
        train(...)
    ```
    """

    def __init__(self, model_dir):
        self.path = Path(model_dir) / "run.json"
        self.record = {
            "command": shlex.join(["python", *sys.argv]),
            "status": "running",
            "start_time": _now(),
            "end_time": None,
            "host": socket.gethostname(),
            "versions": {
                "python": platform.python_version(),
                "tensorflow": metadata.version("tensorflow"),
                "keras": metadata.version("keras"),
            },
            "git": _git_state(),
            "data": None,
            "previous_runs": self._previous_runs(),
        }

    def _previous_runs(self):
        try:
            last = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [*last.pop("previous_runs", []), last]

    def __enter__(self):
        save_dict_to_json(self.record, self.path)
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None:
            self.record["status"] = "finished"
        elif issubclass(kind, KeyboardInterrupt):
            self.record["status"] = "interrupted"
        else:
            self.record["status"] = "diverged" if issubclass(kind, TrainingDiverged) else "failed"
            self.record["error"] = f"{kind.__name__}: {error}"
        self.record["end_time"] = _now()
        save_dict_to_json(self.record, self.path)
        return False  # the error, if any, goes on to run_main


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git_state():
    """The commit of the code that ran, and whether it had uncommitted changes, if under git."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout, or git is not installed
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
