"""Search hyperparameters: train one experiment per point of the search space.

PARENT_DIR holds the base params.json and a search.json naming the values to try: lists
give a grid (every combination), distributions give random search (--num_trials draws).
With --sampler tpe, Optuna chooses each trial from the results of the earlier ones and stops
trials that fall behind (optional: pip install -r requirements-search.txt).
Each trial gets its own folder in PARENT_DIR with its full params.json, trained by a
`train.py` subprocess whose output is kept in the folder's output.log.

Running the same command again skips the finished trials and resumes the unfinished ones
from their last_weights: nothing finished is retrained or overwritten.

Example:
    python search_hyperparams.py --parent_dir experiments/learning_rate
    python search_hyperparams.py --parent_dir experiments/learning_rate --jobs 2
    python search_hyperparams.py --parent_dir experiments/learning_rate --launcher "srun --ntasks=1 --gres=gpu:1"
    python search_hyperparams.py --parent_dir experiments/learning_rate --sampler tpe --num_trials 20
"""

import argparse
import logging
import os
import shlex
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from model.search import (
    JOURNAL_NAME,
    grid_trials,
    is_finished,
    is_grid,
    load_search_space,
    prepare_trial,
    random_trials,
    run_trial,
    stop_trials,
    train_command,
    trial_name,
)
from model.utils import UserError, load_params, run_main, set_logger

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
    "--metric", choices=["accuracy", "loss"], default="accuracy", help="TPE: the dev metric to optimise"
)
parser.add_argument(
    "--storage", help="TPE: database URL or journal file of the study (default PARENT_DIR/optuna_journal.log)"
)
parser.add_argument("--study_name", help="TPE: name of the study in the storage (default: PARENT_DIR's name)")
parser.add_argument("--dry_run", action="store_true", help="List the trials and their folders without running them")


def search_with_optuna(args, parent_dir, base_params, space, threads):
    """TPE search: Optuna chooses every trial from the results so far (model/optuna_search.py)."""
    from model import optuna_search  # Optuna is optional: imported only when asked for

    study = optuna_search.open_study(
        parent_dir, args.storage, args.study_name or parent_dir.name, args.metric, args.pruner
    )
    optuna_search.requeue_stale_trials(study)
    already = len(optuna_search.used_trials(study))
    logging.info(f"Study '{study.study_name}': {already} of {args.num_trials} trials run or running already")
    states = optuna_search.run_study(study, space, base_params, parent_dir, args, threads)
    for line in optuna_search.describe(study, parent_dir):
        logging.info(line)
    return states.count("failed")


def search_planned(args, parent_dir, trial_dirs, base_params, threads):
    """Grid or random search: the trials are known in advance; each runs unless it finished."""
    todo, skipped = [], []
    for trial_dir, values in trial_dirs.items():
        params = prepare_trial(trial_dir, base_params, values)
        (skipped if is_finished(trial_dir, params["num_epochs"]) else todo).append(trial_dir)
    logging.info(f"{len(trial_dirs)} trials in {parent_dir}: {len(skipped)} finished already, {len(todo)} to run")

    launcher = shlex.split(args.launcher)
    failed = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        commands = {trial_dir: train_command(trial_dir, args.data_dir, launcher) for trial_dir in todo}
        futures = {pool.submit(run_trial, commands[d], d, threads): d for d in todo}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="Trials", unit="trial"):
                returncode, tail = future.result()
                if returncode != 0:
                    failed[futures[future]] = tail
                    logging.error(
                        f"Trial {futures[future].name} failed (exit {returncode}):\n    " + "\n    ".join(tail)
                    )
        except KeyboardInterrupt:
            # Start no new trial and stop the running ones; the same command resumes them later.
            pool.shutdown(wait=False, cancel_futures=True)
            stop_trials()
            logging.info("Search interrupted: run the same command again to resume it")
            raise

    done = len(todo) - len(failed)
    logging.info(f"Search finished: {done} done, {len(skipped)} skipped (finished before), {len(failed)} failed")
    for trial_dir in failed:
        logging.info(f"- failed: {trial_dir} (see {trial_dir / 'output.log'})")
    return len(failed)


def print_dry_run(args, parent_dir, trial_dirs, space):
    if trial_dirs is None:
        storage = args.storage or parent_dir / JOURNAL_NAME
        print(f"TPE chooses each trial as the search runs: {args.num_trials} trials in {storage}, over")
        for key, values in space.items():
            print(f"  {key}: {values}")
    else:
        for trial_dir, values in trial_dirs.items():
            print(f"{trial_dir}  {values}")
        print(f"{len(trial_dirs)} trials (dry run: nothing was run)")


def main():
    args = parser.parse_args()
    parent_dir = Path(args.parent_dir)
    if args.jobs < 1 or args.num_trials < 1:
        raise UserError("--jobs and --num_trials must be at least 1.")

    # The base hyperparameters and the space to search around them
    base_params = load_params(parent_dir)
    space = load_search_space(parent_dir, base_params)
    sampler = args.sampler or ("grid" if is_grid(space) else "random")
    if sampler == "grid" and not is_grid(space):
        raise UserError(
            f"A grid needs a list of values for every key of {parent_dir / 'search.json'}; "
            "with distributions, use --sampler random or --sampler tpe."
        )

    # The trials, unless TPE chooses them as it goes
    trial_dirs = None
    if sampler != "tpe":
        trials = grid_trials(space) if sampler == "grid" else random_trials(space, args.num_trials, base_params.seed)
        trial_dirs = {parent_dir / trial_name(values): values for values in trials}  # duplicate draws run once
    if args.dry_run:
        print_dry_run(args, parent_dir, trial_dirs, space)
        return

    # Run the trials, args.jobs at a time, each with its share of the CPU cores
    set_logger(parent_dir / "search.log")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if sampler == "tpe":
        failed = search_with_optuna(args, parent_dir, base_params, space, threads)
    else:
        failed = search_planned(args, parent_dir, trial_dirs, base_params, threads)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    run_main(main)
