"""What a run writes into its experiment folder: the one list that `train.py --overwrite`, the
search, synthesize_results.py and `make clean` all read.

    python -m model.run_folder experiments     # deletes every run's outputs below experiments/
"""

import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from model.errors import NOT_WRITABLE, UserError
from model.files import open_for_append

# Everything a run writes into MODEL_DIR (glob patterns); params.json and search.json are the user's.
RUN_OUTPUTS = (
    "params_used.json",  # the hyperparameters the run used, --param overrides and defaults included
    "run.json",  # the command, versions, data and how the run ended
    "train.log",
    "last_weights",  # checkpoints of the last epochs
    "best_weights",  # the checkpoint of the best dev epoch
    "history.jsonl",  # one line of dev and train metrics per epoch
    "metrics_*.json",  # dev (eval) and test metrics of the weights
    "train_summaries",  # TensorBoard
    "eval_summaries",
    "events.out.tfevents.*",  # TensorBoard's HParams record of the run
    "evaluate.log",
    "predict.log",
    "export.log",
    "export",
    "output.log",  # a search's trial: train.py's console output
    "trial.json",  # a search's trial: how the search ended it
    ".lock",
)
# What a search and synthesize_results.py write into the folder above the runs.
JOURNAL_NAME = "optuna_journal.log"  # a TPE search's Optuna study, unless --storage says otherwise
SEARCH_OUTPUTS = ("search.log", "results.md", "results.csv", f"{JOURNAL_NAME}*", "*.html")


def outputs_in(folder, patterns=RUN_OUTPUTS):
    """The outputs present in a folder, links included (never followed)."""
    return sorted({path for pattern in patterns for path in Path(folder).glob(pattern)})


def remove(path):
    """Deletes a file or folder; a symbolic link is removed itself, never what it points to."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(folder):
    """Deletes the temporary files that a run killed while writing an output left (model/files.py)."""
    for pattern in RUN_OUTPUTS:
        for path in Path(folder).glob(f".{pattern}.*.tmp"):
            path.unlink(missing_ok=True)


def refuse_links(folder):
    """Stops if an output of the run is a symbolic link: training would write through it."""
    links = [path for path in outputs_in(folder) if path.is_symlink()]
    if links:
        raise UserError(
            f"{links[0]} is a symbolic link. Outputs are never written through links, so that nothing is "
            "written outside the folders given: remove it (its target stays), or add --overwrite to replace it."
        )


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
    try:
        tempfile.TemporaryFile(dir=folder).close()  # the folder is writable, not only a lock file left in it
        handle = open_for_append(Path(folder) / ".lock")
    except OSError as error:
        if error.errno not in NOT_WRITABLE:
            raise
        raise UserError(
            f"{folder} is not writable: train.py writes its weights and logs there. Use another --model_dir."
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"Another train.py is training in {folder} right now; two runs in one folder would overwrite "
                "each other's weights. Wait for it to end or stop it, or use another --model_dir."
            ) from None
        yield


def clean(root):
    """Deletes the outputs of every run and search below root; keeps params.json and search.json."""
    for params in Path(root).rglob("params.json"):
        for path in outputs_in(params.parent, RUN_OUTPUTS + SEARCH_OUTPUTS):
            remove(path)


if __name__ == "__main__":
    clean(sys.argv[1])
