"""Running a search: one folder and one train.py subprocess per trial, `jobs` trials at a time. Every
sampler hands out trials (`next`) and hears how each ended (`tell`). A trial is an ordinary experiment
folder trained by train.py, so resuming, synthesize_results.py and TensorBoard work on trials unchanged."""

import logging
import os
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from model.utils.errors import UserError
from model.utils.files import load_json, open_regular, refuse_special, save_json
from model.utils.run_folder import run_status

# The trial processes running now, so that an interrupted search can stop them.
RUNNING = set()
STOPPING = threading.Event()


@dataclass
class Trial:
    folder: Path
    values: dict  # the hyperparameters this trial sets
    watch: Callable = None  # called about once a second while it trains; True stops it (pruning)
    number: int = None  # its number in an Optuna study


def prepare_trial(trial_dir, base_params, values):
    """Writes the trial's params.json (the search's, with the trial's values), refusing to change
    the one of an earlier trial."""
    params = {**base_params, **values}
    path = Path(trial_dir) / "params.json"
    refuse_special(trial_dir, folder=True)  # a trial never trains through a link, into another folder
    if path.exists() and load_json(path) != params:
        raise UserError(
            f"{path} exists with other hyperparameters than this search gives it. "
            "Move that folder away, or restore the search.json and params.json that made it."
        )
    save_json(params, path)


def run_search(sampler, base_params, train_command, jobs, threads):
    """Runs the sampler's trials, `jobs` at a time, until it has none left: each in a folder with
    base_params and the trial's values, trained by train_command with --model_dir that folder.
    Ctrl-C or SIGTERM stops the running trials (they resume when the search runs again)."""
    lock = threading.Lock()  # one thread at a time asks the sampler for a trial
    progress = tqdm(total=sampler.total, initial=sampler.done, desc="Trials", unit="trial")

    def work():
        while not STOPPING.is_set():
            with lock:
                trial = sampler.next()
            if trial is None:
                return
            try:
                prepare_trial(trial.folder, base_params, trial.values)
            except UserError:  # a folder in the way: the trial runs once the user has moved it
                sampler.tell(trial, None, [])
                raise
            folder = trial.folder
            command = [*train_command, "--model_dir", str(folder), "--restore_from", str(folder / "last_weights")]
            returncode, reason = run_trial(command, folder, threads, trial.watch)
            if returncode == 0 and run_status(folder) not in ("finished", "stopped early"):
                returncode, reason = 1, ["exited 0, but its run.json does not say it trained: check --launcher"]
            sampler.tell(trial, returncode, reason)
            progress.update()

    with ThreadPoolExecutor(jobs) as pool:
        futures = []
        try:  # a stop that lands while the workers start is handled too
            futures += [pool.submit(work) for _ in range(jobs)]
            for future in as_completed(futures):
                future.result()
        except BaseException as error:  # Ctrl-C, SIGTERM, or a trial folder in the way
            STOPPING.set()  # every running trial is asked to stop (train.py then exits cleanly), and waited for
            for process in list(RUNNING):
                process.terminate()
            for process in list(RUNNING):
                process.wait()
            if isinstance(error, KeyboardInterrupt):
                logging.info("Search interrupted: run the same command again to resume it")
            raise
    progress.close()


def run_trial(command, trial_dir, threads, watch=None):
    """Runs one trial to the end; returns its exit status and why it failed (lines of its output).
    When `watch` returns True, the trial is asked to stop (SIGTERM: train.py stops between two steps)."""
    # Share the cores between concurrent trials instead of letting each one take them all.
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    env["TF_NUM_INTEROP_THREADS"] = str(min(threads, 2))
    output_path = Path(trial_dir) / "output.log"
    with open_regular(output_path, append=True) as output:
        start = output.tell()  # this run's output begins here (an earlier one's is above)
        if STOPPING.is_set():  # the search was interrupted while this trial was starting
            return 130, ["not started: the search was interrupted"]
        try:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        except OSError as error:
            return 127, [f"{command[0]} cannot be started: {error.strerror}"]
        RUNNING.add(process)
        if STOPPING.is_set():  # the stop came while it was starting: it missed the terminate() of the others
            process.terminate()
        while (returncode := process.poll()) is None:
            if watch is not None and watch():
                process.terminate()
                watch = None
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1.0)
        RUNNING.discard(process)
    with open(output_path, errors="replace") as output:
        output.seek(start)
        # Progress bars redraw with '\r': split on it too, so that lines are whole messages.
        lines = [line for line in output.read().replace("\r", "\n").splitlines() if line.strip()]
    # train.py's own message if it stopped on one: another process writing into output.log (an
    # earlier search's train.py still running) can put its lines around it, even on its line.
    errors = [line[line.index("Error: ") :] for line in lines if "Error: " in line]
    return returncode, errors[-1:] or lines[-6:]


def is_finished(trial_dir, num_epochs):
    """Whether a trial trained all its epochs (its last metrics say so), or stopped early."""
    if run_status(trial_dir) == "stopped early":
        return True
    try:
        return load_json(Path(trial_dir) / "metrics_eval_last_weights.json").get("epoch", 0) >= num_epochs
    except UserError:
        return False


class Planned:
    """Grid or random search: the trials are known in advance; each runs unless it finished."""

    def __init__(self, trials, num_epochs):
        self.trials = trials
        self.todo = [
            folder for folder, values in trials.items() if not is_finished(folder, values.get("num_epochs", num_epochs))
        ]
        self.total, self.done = len(trials), len(trials) - len(self.todo)
        self.ran, self.failed = 0, {}
        logging.info(f"{self.total} trials: {self.done} finished already, {len(self.todo)} to run")

    def next(self):
        if not self.todo:
            return None
        folder = self.todo.pop(0)
        return Trial(folder, self.trials[folder])

    def tell(self, trial, returncode, reason):
        self.ran += 1
        if returncode not in (0, None) and not STOPPING.is_set():
            self.failed[trial.folder] = reason
            logging.error(f"Trial {trial.folder.name} failed (exit {returncode}):\n    " + "\n    ".join(reason))

    def summary(self):
        done, failed = self.ran - len(self.failed), len(self.failed)
        lines = [f"Search finished: {done} done, {self.done} skipped (finished before), {failed} failed"]
        return lines + [f"- failed: {folder} (see {folder / 'output.log'})" for folder in self.failed]
