"""Search hyperparameters: train one experiment per point of the search space.

PARENT_DIR holds the base params.json and a search.json naming the values to try: lists
give a grid (every combination), distributions give random search (--num_trials draws).
Each trial gets its own folder, PARENT_DIR/<key>_<value>-..., with its full params.json,
trained by a `train.py` subprocess whose output is kept in the folder's output.log.

Running the same command again skips the finished trials and resumes the unfinished ones
from their last_weights: nothing finished is retrained or overwritten.

Example:
    python search_hyperparams.py --parent_dir experiments/learning_rate
    python search_hyperparams.py --parent_dir experiments/learning_rate --jobs 2
    python search_hyperparams.py --parent_dir experiments/learning_rate --launcher "srun --ntasks=1 --gres=gpu:1"
"""

import argparse
import logging
import os
import shlex
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from model.search import (
    grid_trials,
    is_finished,
    is_grid,
    load_search_space,
    random_trials,
    run_trial,
    stop_trials,
    train_command,
    trial_name,
)
from model.utils import UserError, load_json, load_params, run_main, save_dict_to_json, set_logger

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--parent_dir", default="experiments/learning_rate", help="Folder with params.json and search.json")
parser.add_argument("--data_dir", default="data/64x64_SIGNS", help="Folder with the dataset")
parser.add_argument("--jobs", type=int, default=1, help="Trials run at the same time (they share the CPU cores)")
parser.add_argument("--launcher", default="", help='Command put in front of each trial, e.g. "srun --ntasks=1"')
parser.add_argument("--num_trials", type=int, default=10, help="Number of draws for random search")
parser.add_argument("--dry_run", action="store_true", help="List the trials and their folders without running them")


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


def main():
    args = parser.parse_args()
    parent_dir = Path(args.parent_dir)
    if args.jobs < 1 or args.num_trials < 1:
        raise UserError("--jobs and --num_trials must be at least 1.")

    # The base hyperparameters and the space to search around them
    base_params = load_params(parent_dir)
    space = load_search_space(parent_dir, base_params)
    trials = grid_trials(space) if is_grid(space) else random_trials(space, args.num_trials, base_params.seed)
    trial_dirs = {parent_dir / trial_name(values): values for values in trials}  # duplicate draws run once

    if args.dry_run:
        for trial_dir, values in trial_dirs.items():
            print(f"{trial_dir}  {values}")
        print(f"{len(trial_dirs)} trials (dry run: nothing was run)")
        return

    set_logger(parent_dir / "search.log")
    todo, skipped = [], []
    for trial_dir, values in trial_dirs.items():
        params = prepare_trial(trial_dir, base_params, values)
        (skipped if is_finished(trial_dir, params["num_epochs"]) else todo).append(trial_dir)
    logging.info(f"{len(trial_dirs)} trials in {parent_dir}: {len(skipped)} finished already, {len(todo)} to run")

    # Run the trials, args.jobs at a time, each with its share of the CPU cores
    launcher = shlex.split(args.launcher)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
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

    # Summary: what ran, what was skipped, what failed
    done = len(todo) - len(failed)
    logging.info(f"Search finished: {done} done, {len(skipped)} skipped (finished before), {len(failed)} failed")
    for trial_dir in failed:
        logging.info(f"- failed: {trial_dir} (see {trial_dir / 'output.log'})")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    run_main(main)
