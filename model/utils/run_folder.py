"""The experiment folder of a run: what the run writes there (the one list that `train.py
--overwrite`, the search, synthesize_results.py and `make clean` read), its lock, and run.json.

    python -m model.utils.run_folder experiments     # deletes every run's outputs below experiments/
"""

import logging
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from model.utils.errors import TrainingDiverged, UserError, run_main
from model.utils.files import load_json, lock_folder, refuse_special, save_json
from model.utils.logs import set_logger

# Everything a run writes into MODEL_DIR (glob patterns); params.json and search.json are the user's.
RUN_OUTPUTS = (
    "params_used.json",  # the hyperparameters the run used, --param changes and defaults included
    "run.json",  # the command, versions, data and how the run ended
    "train.log",
    "last_weights",  # checkpoints of the last epochs
    "best_weights",  # the checkpoint of the best dev epoch
    "history.jsonl",  # one line of dev and train metrics per epoch
    "metrics_*.json",  # dev (eval) and test metrics of the weights
    "confusion_matrix_*.png",  # evaluate.py's
    "events.out.tfevents.*",  # TensorBoard: the run's hyperparameters, curves, images and results
    "evaluate.log",
    "predict.log",
    "export.log",
    "export",
    "output.log",  # a search's trial: train.py's console output
    "trial.json",  # a search's trial: how the search ended it
    ".lock",
)
# What a search and synthesize_results.py write into the folder above the runs
JOURNAL_NAME = "optuna_journal.log"  # a TPE search's Optuna study, unless --storage says otherwise
SYNTHESIZED = ("results*.md", "results*.csv")  # synthesize_results.py's, in the folder it is given
SEARCH_OUTPUTS = ("search.log", *SYNTHESIZED, f"{JOURNAL_NAME}*", "*.html")


def outputs_in(folder, patterns=RUN_OUTPUTS):
    """The outputs present in a folder, links included (never followed)."""
    return sorted({path for pattern in patterns for path in Path(folder).glob(pattern)})


def remove(path):
    """Deletes a file or folder; a symbolic link is removed itself, never what it points to."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def prepare(model_dir, restore_from, overwrite):
    """Before training: refuses an earlier run's weights unless told to continue from or replace them, and
    outputs that are links or of the wrong kind (training would write through them); deletes what a kill left."""
    if overwrite:
        for path in (path for path in outputs_in(model_dir) if path.name != ".lock"):  # the lock is held by this run
            remove(path)
    elif not restore_from and outputs_in(model_dir, ("last_weights/ckpt-*", "best_weights/ckpt-*")):
        raise UserError(
            f"{model_dir} already holds weights from an earlier run. To continue it, add --restore_from "
            f"{model_dir / 'last_weights'}; to start again and delete them, add --overwrite; or use another model_dir."
        )
    for path in outputs_in(model_dir):  # never a link, nor a pipe where a file goes (named without a dot: folders)
        refuse_special(path, folder="." not in path.name)
    for pattern in RUN_OUTPUTS:  # JSON writes that a kill cut short (model/utils/files.py)
        for path in Path(model_dir).glob(f".{pattern}.*.tmp"):
            path.unlink(missing_ok=True)


@contextmanager
def run_folder(strategy, model_dir, restore_from, overwrite, data, tracker):
    """Sets up MODEL_DIR for a training run and yields (the folder this process writes into, its
    RunRecord): the lock (one run at a time), the checks before anything is written (never over an
    earlier run's weights, never through a link), the log (console and train.log), run.json, and the
    tracker's MLflow run (model/utils/tracking.py), which the other workers of a cluster leave to the chief."""
    with output_folder(strategy, model_dir) as output_dir, lock_folder(output_dir, "train.py"):
        prepare(output_dir, restore_from, overwrite)
        set_logger(output_dir / "train.log")
        chief = output_dir == Path(model_dir)
        with tracker.training_run(output_dir) if chief else nullcontext() as mlflow_run_id:
            with RunRecord(output_dir, data, mlflow_run_id) as run:
                yield output_dir, run


@contextmanager
def output_folder(strategy, model_dir):
    """The folder this process writes its run into: model_dir for the chief (the "chief" task, else
    worker 0, else the only process), a temporary folder for the other workers of a cluster, who
    must save checkpoints too (saving is a collective operation) but not into model_dir."""
    resolver = getattr(strategy, "cluster_resolver", None)
    role = (resolver.task_type, resolver.task_id) if resolver and resolver.task_type else ("chief", 0)
    has_chief = resolver is not None and "chief" in resolver.cluster_spec().as_dict()
    if role[0] == "chief" or (role == ("worker", 0) and not has_chief):
        yield Path(model_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="worker_") as folder:
            yield Path(folder)


class RunRecord:
    """Keeps MODEL_DIR/run.json: the command, host, versions, git commit, data, model and MLflow run, written
    when the run starts (status "running", which a kill -9 leaves) and when it ends: "finished", "stopped
    early" (with the reason), "interrupted", "diverged" or "failed". Earlier runs are kept in "previous_runs"."""

    def __init__(self, model_dir, data, mlflow_run_id=None):
        self.path = Path(model_dir) / "run.json"
        try:
            last = load_json(self.path)
            previous = [*last.pop("previous_runs", []), last]
        except UserError:  # none yet, or unreadable: the run starts a new record
            previous = []
        self.record = {
            "command": shlex.join(["python", *sys.argv]),
            "status": "running",
            "start_time": _now(),
            "end_time": None,
            "host": socket.gethostname(),
            "versions": {name: metadata.version(name) for name in ("tensorflow", "keras")}
            | {"python": platform.python_version()},
            "git": _git_state(),
            "data": data,
            "mlflow_run_id": mlflow_run_id,  # the run's MLflow run, if tracked (model/utils/tracking.py)
            "previous_runs": previous,
        }

    def __enter__(self):
        save_json(self.record, self.path)
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None:
            self.record["status"] = "finished" if self.record["status"] == "running" else self.record["status"]
        elif issubclass(kind, KeyboardInterrupt):
            self.record["status"] = "interrupted"
        else:
            self.record["status"] = "diverged" if issubclass(kind, TrainingDiverged) else "failed"
            self.record["error"] = f"{kind.__name__}: {error}"
        self.record["end_time"] = _now()
        try:
            save_json(self.record, self.path)
        except OSError as save_error:  # a full disk: the error that ended the run is the one to show
            logging.warning(f"Warning: {self.path} could not be updated: {save_error.strerror}")
            if kind is None:
                raise
        return False  # the error, if any, goes on to run_main


def run_status(model_dir):
    """The status in a run's run.json ("finished", "stopped early", ...), or None without one."""
    try:
        return load_json(Path(model_dir) / "run.json").get("status")
    except UserError:
        return None


def data_dir_of(model_dir):
    """The data folder the run in model_dir trained on, from its run.json (None if unknown)."""
    try:
        return load_json(Path(model_dir) / "run.json")["data"]["data_dir"]
    except (UserError, KeyError, TypeError):
        return None


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git_state():
    """The commit of the code that ran, and whether it had uncommitted changes, if under git."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        changes = ["git", "status", "--porcelain", "--untracked-files=no"]  # code changed; new run folders don't count
        status = subprocess.run(changes, cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout, or git is not installed
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def clean(root):
    """Deletes the outputs of every run and search below root; keeps params.json and search.json."""
    if not Path(root).is_dir():
        raise UserError(f"{root} is not a folder: give the folder of the experiments to clean, such as experiments.")
    for kind, patterns in (("params.json", RUN_OUTPUTS), ("search.json", SEARCH_OUTPUTS)):
        for path in (path for found in Path(root).rglob(kind) for path in outputs_in(found.parent, patterns)):
            remove(path)
    for path in outputs_in(root, SYNTHESIZED):  # synthesize_results.py's tables of everything below root
        remove(path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise UserError("Give one folder to clean: python -m model.utils.run_folder experiments")
    clean(argv[0])


if __name__ == "__main__":
    run_main(main)
