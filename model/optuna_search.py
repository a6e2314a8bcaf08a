"""Model-based hyperparameter search with Optuna: TPE chooses each trial, a pruner stops bad ones.

Optuna is optional (requirements-search.txt): only `search_hyperparams.py --sampler tpe`
imports this file. A trial is still an ordinary experiment folder, PARENT_DIR/trial_<number>-...,
trained by an ordinary train.py subprocess. While it trains, the search reads the dev metrics
that train.py appends to the folder's history.jsonl after each epoch and reports them to the
study; when the pruner finds the trial behind the earlier ones at the same epoch, the search
stops it (train.py exits cleanly) and records it as pruned in the folder's trial.json.

The study lives in a storage that every search process can share: by default the journal file
PARENT_DIR/optuna_journal.log (safe for several processes, also on a shared file system), or
a database URL. Running the search again, here or on other machines, continues the same study.
"""

import logging
import shlex
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

from model.search import JOURNAL_NAME, STOPPING, prepare_trial, run_trial, stop_trials, train_command, trial_name
from model.utils import LOWER_IS_BETTER, UserError, load_json, read_json_lines, save_dict_to_json, write_text_atomic

try:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna.trial import TrialState
except ImportError:
    raise UserError(
        "--sampler tpe needs Optuna, an optional package of the template. "
        "Install it with: pip install -r requirements-search.txt"
    ) from None

# TPE draws its first trials at random, then near the best trials so far.
RANDOM_STARTUP_TRIALS = 4
# A running trial's search process records a heartbeat every HEARTBEAT_SECONDS. A trial silent
# for STALE_SECONDS lost its search process (killed, or its machine died): it is queued again,
# to resume from its last_weights, at most MAX_RETRIES times.
HEARTBEAT_SECONDS = 10
STALE_SECONDS = 60
MAX_RETRIES = 2


def open_storage(storage):
    """A database URL as it is, a file as Optuna's journal (file locks: safe for many processes)."""
    storage = str(storage)
    return storage if "://" in storage else JournalStorage(JournalFileBackend(storage))


def open_study(parent_dir, storage, study_name, metric, pruner):
    """Creates the study, or loads it when an earlier or a parallel search created it."""
    optuna.logging.disable_default_handler()  # Optuna's warnings go to search.log like ours
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if pruner == "median":
        # Stop a trial whose dev metric is worse than the median of the finished trials at the
        # same epoch, once two trials have finished; never on its first epoch, which is noisy.
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    else:
        pruner = optuna.pruners.NopPruner()
    direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    storage = storage or parent_dir / JOURNAL_NAME
    try:
        study = optuna.create_study(
            storage=open_storage(storage),
            study_name=study_name,
            direction=direction,
            pruner=pruner,
            load_if_exists=True,
        )
    except ImportError:  # a database URL whose driver is not installed
        raise UserError(
            f"--storage {storage}: the database's Python driver is missing. For PostgreSQL: "
            "pip install psycopg2-binary; for MySQL: pip install pymysql."
        ) from None
    except Exception as error:  # a database that cannot be reached, a journal that cannot be written
        raise UserError(f"Cannot open the study in {storage}: {error}") from None
    study_metric = study.user_attrs.get("metric")
    if study_metric is None:
        study.set_user_attr("metric", metric)
    elif study_metric != metric:
        raise UserError(
            f"Study '{study_name}' optimises dev {study_metric}, not {metric}: "
            f"use --metric {study_metric}, or another --study_name for a new study."
        )
    return study


def used_trials(study):
    """The trials that count against --num_trials: not those queued again, nor those waiting."""
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get("requeued_from") for t in trials}
    return [
        t
        for t in trials
        if t.state != TrialState.WAITING and t.number not in requeued and "not_run" not in t.user_attrs
    ]


def requeue(study, number, died):
    """Fails a trial that did not finish and queues a copy of it, which resumes its folder.

    A trial whose search process died is queued again at most MAX_RETRIES times (it may be
    what kills it); one that was interrupted, always.
    """
    try:
        study.tell(number, state=TrialState.FAIL)
    except (ValueError, RuntimeError):
        return  # it finished meanwhile, or another search process requeued it first
    trial = study.get_trials(deepcopy=False)[number]
    retries = trial.user_attrs.get("retries", 0) + died
    if retries <= MAX_RETRIES:
        attrs = {"requeued_from": number, "retries": retries}
        if "trial_dir" in trial.user_attrs:
            attrs["trial_dir"] = trial.user_attrs["trial_dir"]
        study.enqueue_trial(trial.params, user_attrs=attrs)


def requeue_stale_trials(study):
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if now - t.user_attrs.get("heartbeat", t.datetime_start.timestamp()) > STALE_SECONDS:
            logging.warning(f"Trial {t.number} has had no heartbeat for {STALE_SECONDS} s: queued again")
            requeue(study, t.number, died=True)


def suggest(trial, key, values):
    """The study's value for one key of search.json."""
    if isinstance(values, list):
        return trial.suggest_categorical(key, values)
    kind = values["distribution"]
    if kind == "choice":
        return trial.suggest_categorical(key, values["values"])
    if kind == "int_uniform":
        return trial.suggest_int(key, values["low"], values["high"])
    return trial.suggest_float(key, values["low"], values["high"], log=kind == "log_uniform")


def ask(study, space, seed, num_trials):
    """The next trial, its values and its folder name; None once the study has num_trials trials."""
    requeue_stale_trials(study)
    if len(used_trials(study)) >= num_trials:
        return None
    trial = study.ask()  # a trial queued again comes first, with its values
    trial.set_user_attr("heartbeat", time.time())
    # Seeding by trial number makes a study repeatable, and parallel searches draw differently.
    study.sampler = optuna.samplers.TPESampler(seed=seed + trial.number, n_startup_trials=RANDOM_STARTUP_TRIALS)
    values = {key: suggest(trial, key, spec) for key, spec in space.items()}
    if "trial_dir" in trial.user_attrs:  # queued again: resume its folder
        return trial, values, trial.user_attrs["trial_dir"]
    if sum(t.number < trial.number for t in used_trials(study)) >= num_trials:
        # Another search process took the last trial at the same moment.
        trial.set_user_attr("not_run", True)
        study.tell(trial, state=TrialState.FAIL)
        return None
    short = {key: float(f"{value:.4g}") if isinstance(value, float) else value for key, value in values.items()}
    name = f"trial_{trial.number:03d}-{trial_name(short)}"
    trial.set_user_attr("trial_dir", name)
    return trial, values, name


class TrialWatcher:
    """Follows a running trial: sends heartbeats, reports each new epoch, decides on pruning."""

    def __init__(self, trial, history_path, metric):
        self.trial, self.history_path, self.metric = trial, history_path, metric
        self.epochs_reported = 0
        self.last_heartbeat = 0.0
        self.pruned_at_epoch = None

    def __call__(self):
        """True when the trial should stop."""
        if self.pruned_at_epoch is not None:
            return True
        if time.time() - self.last_heartbeat > HEARTBEAT_SECONDS:
            self.trial.set_user_attr("heartbeat", time.time())
            self.last_heartbeat = time.time()
        for record in read_json_lines(self.history_path):
            if record["epoch"] <= self.epochs_reported:
                continue
            self.trial.report(record[self.metric], step=record["epoch"])
            self.epochs_reported = record["epoch"]
            if self.trial.should_prune():
                self.pruned_at_epoch = record["epoch"]
                return True
        return False


def run_and_tell(study, trial, values, trial_dir, base_params, args, threads):
    """Trains one trial and tells the study how it ended; returns its state."""
    try:
        prepare_trial(trial_dir, base_params, values)
    except UserError:  # a folder in the way: the trial runs once the user has moved it
        requeue(study, trial.number, died=False)
        raise
    watcher = TrialWatcher(trial, trial_dir / "history.jsonl", args.metric)
    command = train_command(trial_dir, args.data_dir, shlex.split(args.launcher))
    returncode, tail = run_trial(command, trial_dir, threads, watch=watcher)
    watcher()  # the epochs written since the last call
    record = {"study": study.study_name, "number": trial.number, "params": values}
    if watcher.pruned_at_epoch is not None:
        study.tell(trial, state=TrialState.PRUNED)
        record |= {"state": "pruned", "pruned_at_epoch": watcher.pruned_at_epoch}
        logging.info(f"Trial {trial.number} ({trial_dir.name}) pruned after epoch {watcher.pruned_at_epoch}")
    elif returncode == 0:
        value = load_json(trial_dir / "metrics_eval_best_weights.json")[args.metric]
        study.tell(trial, value)
        record |= {"state": "complete", "value": value}
        logging.info(f"Trial {trial.number} ({trial_dir.name}) finished: dev {args.metric} {value:.4f}")
    elif STOPPING.is_set():  # the search was interrupted: the trial resumes when it runs again
        requeue(study, trial.number, died=False)
        return "interrupted"
    else:
        study.tell(trial, state=TrialState.FAIL)
        record |= {"state": "failed"}
        logging.error(
            f"Trial {trial.number} ({trial_dir.name}) failed (exit {returncode}):\n    " + "\n    ".join(tail)
        )
    save_dict_to_json(record, trial_dir / "trial.json")
    return record["state"]


def run_study(study, space, base_params, parent_dir, args, threads):
    """Runs trials, args.jobs at a time, until the study holds args.num_trials; returns their states."""
    lock = threading.Lock()  # one thread at a time counts the trials and asks for the next
    done_before = sum(t.state.is_finished() for t in used_trials(study))
    progress = tqdm(total=args.num_trials, initial=min(done_before, args.num_trials), desc="Trials", unit="trial")
    states = []

    def work():
        while not STOPPING.is_set():
            with lock:
                next_trial = ask(study, space, base_params.seed, args.num_trials)
            if next_trial is None:
                return
            trial, values, name = next_trial
            states.append(run_and_tell(study, trial, values, parent_dir / name, base_params, args, threads))
            progress.update()

    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(work) for _ in range(args.jobs)]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException as error:  # Ctrl-C, SIGTERM, or a trial folder in the way (UserError)
            # Start no new trial, stop the running ones; they are queued again in the study.
            stop_trials()
            if isinstance(error, KeyboardInterrupt):
                logging.info("Search interrupted: run the same command again to resume it")
            raise
    progress.close()
    return states


def describe(study, parent_dir):
    """Lines on a study's trials and its best one."""
    trials = used_trials(study)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    lines = [
        f"Study '{study.study_name}': {len(trials)} trials: {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running"
    ]
    if counts[TrialState.COMPLETE]:
        best = study.best_trial
        metric = study.user_attrs.get("metric", "metric")
        lines.append(
            f"Best trial: {best.number}, dev {metric} {best.value:.4f} with {best.params}, "
            f"in {parent_dir / best.user_attrs['trial_dir']}"
        )
    return lines


def summarize_studies(parent_dir, storage=None):
    """Prints every study under parent_dir (or in `storage`) and saves its plots into its folder."""
    journals = [storage] if storage else sorted(parent_dir.rglob(JOURNAL_NAME))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for journal in journals:
        folder = parent_dir if storage else journal.parent
        opened = open_storage(journal)  # a journal is read once, whatever the number of studies in it
        for name in optuna.get_all_study_names(opened):
            study = optuna.load_study(study_name=name, storage=opened)
            print("\n".join(describe(study, folder)))
            save_plots(study, folder)


def save_plots(study, folder):
    """Optuna's optimisation history and hyperparameter importances, as HTML (needs plotly)."""
    if not optuna.visualization.is_available():
        print("(pip install plotly to also get the study's plots)")
        return
    plots = {"history": optuna.visualization.plot_optimization_history}
    if sum(t.state == TrialState.COMPLETE for t in study.trials) >= 2:  # importances compare trials
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        plots["importances"] = lambda study: optuna.visualization.plot_param_importances(study, evaluator=evaluator)
    for kind, plot in plots.items():
        path = folder / f"{study.study_name}_{kind}.html"
        with warnings.catch_warnings():  # warnings on few trials, which the plot shows anyway
            warnings.simplefilter("ignore")
            write_text_atomic(plot(study).to_html(), path)
        print(f"Saved {path}")
