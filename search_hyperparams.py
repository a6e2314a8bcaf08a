"""Search hyperparameters: train one experiment per point of the search space.

PARENT_DIR holds the base params.json and a search.json naming the values to try: lists give a
grid, distributions a random search (--num_trials draws), or Optuna's TPE with --sampler tpe.
Each trial is a folder in PARENT_DIR, trained by a train.py subprocess. Running the same command
again skips the finished trials and resumes the others. Details: docs/experiments-and-search.md.

Example:
    python search_hyperparams.py --parent_dir experiments/learning_rate
"""

import argparse
import logging
import os
import shlex
import shutil
import sys
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import model.utils.quiet_tensorflow  # noqa: F401  (before TensorFlow: hides its start-up chatter)
from model import model_fn, text_model_fn  # noqa: F401  (they declare the hyperparameters search.json may set)
from model.utils import tracking
from model.utils.errors import UserError, run_main
from model.utils.files import load_json, lock_folder
from model.utils.logs import set_logger
from model.utils.run_folder import run_status
from model.utils.tasks import task_of
from search.runner import Planned, run_search, run_trial
from search.space import MAX_TRIALS, grid_trials, load_search_space, random_trials, trial_name

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--parent_dir", default="experiments/learning_rate", help="Folder with params.json and search.json")
parser.add_argument("--data_dir", default="data/64x64_SIGNS", help="Folder with the dataset")
parser.add_argument("--jobs", type=int, default=1, help="Trials run at the same time (they share the CPU cores)")
parser.add_argument("--launcher", default="", help='Command put in front of each trial, e.g. "srun --ntasks=1"')
parser.add_argument("--num_trials", type=int, default=10, help="Number of trials for random and TPE search")
parser.add_argument(
    "--sampler",
    choices=["grid", "random", "tpe"],
    help="How to choose the trials (default: grid if search.json gives only lists, else random)",
)
parser.add_argument("--pruner", choices=["median", "none"], default="median", help="TPE: stop trials that fall behind")
parser.add_argument(
    "--storage", help="TPE: database URL or journal file of the study (default PARENT_DIR/optuna_journal.log)"
)
parser.add_argument("--study_name", help="TPE: name of the study in the storage (default: PARENT_DIR's name)")
parser.add_argument("--evaluate", action="store_true", help="Evaluate each finished trial's best weights on test")
parser.add_argument(
    "--tracking_uri", help="Log the search and its trials to this MLflow store (default: $MLFLOW_TRACKING_URI)"
)
parser.add_argument("--dry_run", action="store_true", help="List the trials and their folders without running them")


def launcher_prefix(launcher):
    """The --launcher words, checked: a launcher that cannot start is found before any trial starts."""
    try:
        words = shlex.split(launcher)
    except ValueError as error:
        raise UserError(f'--launcher "{launcher}" cannot be read as a command: {error}.') from None
    if words and shutil.which(words[0]) is None:
        raise UserError(f"--launcher: {words[0]} is not a command that can be run here. Check its name and PATH.")
    return words


def print_dry_run(trials, space, num_trials):
    if trials is None:
        print(f"TPE chooses {num_trials} trials as the search runs, over:")
        for key, spec in space.items():
            print(f"  {key}: {spec}")
    else:
        for folder, values in trials.items():
            print(f"{folder}  {values}")
        print(f"{len(trials)} trials (dry run: nothing was run)")


def main(argv=None):
    args = parser.parse_args(argv)
    parent_dir = Path(args.parent_dir)
    if not (1 <= args.jobs <= 256 and 1 <= args.num_trials <= MAX_TRIALS):
        raise UserError(f"--jobs must be from 1 to 256, and --num_trials from 1 to {MAX_TRIALS}.")

    # The base hyperparameters, the space to search around them, and how to choose the trials
    task = task_of(args.data_dir)
    params = task.load_params(parent_dir, (), args.data_dir)
    space, is_grid = load_search_space(parent_dir, params.model_version)
    if decided := sorted(space.keys() & task.data_values(args.data_dir).keys()):
        raise UserError(
            f"{parent_dir / 'search.json'}: the data decides {', '.join(decided)}: remove it from the search."
        )
    method = args.sampler or ("grid" if is_grid else "random")
    if method == "grid" and not is_grid:
        raise UserError(
            f"A grid needs a list of values for every key of {parent_dir / 'search.json'}; "
            "with distributions, use --sampler random or --sampler tpe."
        )
    # The trials, unless TPE chooses them as it goes (duplicate random draws run once)
    trials = None
    if method != "tpe":
        drawn = grid_trials(space) if method == "grid" else random_trials(space, args.num_trials, params.seed)
        trials = {parent_dir / trial_name(values): values for values in drawn}
    if args.dry_run:
        print_dry_run(trials, space, args.num_trials)
        return
    if method == "tpe":
        from search.tpe import Study  # Optuna is optional: imported only when asked for

        name = args.study_name or parent_dir.name
        sampler = partial(Study, parent_dir, args.storage, name, space, params, args.num_trials, args.pruner)
    else:
        sampler = partial(Planned, trials, params.num_epochs)
    for split in ("train", "dev", "test")[: 3 if args.evaluate else 2]:  # checked before the first trial starts
        data = task.list_split(args.data_dir, split)
        if not space.keys() & {"image_size", "num_labels"}:  # else each trial checks it with its own
            task.check_split(*data, params, split)

    # A launcher that cannot start, or an MLflow store that cannot be used, stops us here, before anything is written
    launcher = launcher_prefix(args.launcher)
    tracker = tracking.connect(args.tracking_uri)

    # One grid or random search at a time in PARENT_DIR (TPE searches share it: their study hands out the
    # trials); it logs to the console and to PARENT_DIR/search.log
    with lock_folder(parent_dir, "search_hyperparams.py") if method != "tpe" else nullcontext():
        set_logger(parent_dir / "search.log")
        run_trials(args, parent_dir, sampler, launcher, tracker)


def run_trials(args, parent_dir, make_sampler, launcher, tracker):
    """Runs the trials of the sampler that `make_sampler` makes, then evaluates them if asked; exits 1 if any failed."""
    sampler = make_sampler()

    # Run the trials, args.jobs at a time, each with its share of the CPU cores (and, if tracked, as child runs
    # of the search's MLflow run)
    with tracker.search_run(parent_dir) as parent_run:
        tracked = ["--tracking_uri", tracker.uri] if parent_run else []
        if tracker.uri and not parent_run:  # the store failed since it was checked: the trials run without it
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        train = [sys.executable, str(Path(__file__).parent / "train.py"), "--data_dir", args.data_dir, *tracked]
        train_command = [*launcher, *train, *(["--tracking_parent", parent_run] if parent_run else [])]
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        run_search(sampler, load_json(parent_dir / "params.json"), train_command, args.jobs, threads)
        for line in sampler.summary():
            logging.info(line)
        evaluations_failed = args.evaluate and evaluate_trials(
            parent_dir, [*launcher, sys.executable, str(Path(__file__).parent / "evaluate.py"), *tracked]
        )
    if sampler.failed or evaluations_failed:
        raise SystemExit(1)


def evaluate_trials(parent_dir, evaluate_command):
    """Evaluates on test each trial that finished training and has no test metrics yet; returns how many failed."""
    failed = 0
    for folder in sorted(path.parent for path in parent_dir.glob("*/run.json")):
        trained = run_status(folder) in ("finished", "stopped early")
        if not trained or (folder / "metrics_test_best_weights.json").exists():
            continue
        returncode, reason = run_trial([*evaluate_command, "--model_dir", str(folder)], folder, threads=os.cpu_count())
        if returncode == 0:
            logging.info(f"Evaluated {folder.name} on test")
        else:
            logging.error(f"Evaluating {folder.name} failed (exit {returncode}):\n    " + "\n    ".join(reason))
            failed += 1
    return failed


if __name__ == "__main__":
    run_main(main)
