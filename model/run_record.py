"""MODEL_DIR/run.json: what ran, where, with which versions and data, and how it ended."""

import json
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from model.errors import TrainingDiverged
from model.files import save_json


class RunRecord:
    """Keeps MODEL_DIR/run.json, written when the run starts (status "running") and again when
    it ends, whatever the end: "finished", "interrupted" (Ctrl-C, SIGTERM), "diverged" or
    "failed". A `kill -9` leaves "running". Earlier runs of the folder are kept in "previous_runs".

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
        save_json(self.record, self.path)
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
        save_json(self.record, self.path)
        return False  # the error, if any, goes on to run_main


def data_dir_of(model_dir):
    """The data folder the run in model_dir trained on, from its run.json (None if unknown)."""
    try:
        return json.loads((Path(model_dir) / "run.json").read_text())["data"]["data_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
