"""Model-based search with Optuna: TPE chooses each trial from the earlier ones, a pruner stops bad ones.

Optuna is optional (requirements-search.txt): only `search_hyperparams.py --sampler tpe` and
synthesize_results.py import this file. While a trial trains, the search reports the dev metrics
that train.py appends to its history.jsonl to the study, and stops the trial when the pruner finds
it behind. The study lives in a storage that every search process can share (a journal file, safe
on a shared file system, or a database): running the search again, anywhere, continues it."""

import logging
import time
import warnings

from model.utils.errors import UserError
from model.utils.files import load_json, read_json_lines, refuse_special, save_json, write_text_atomic
from model.utils.params import LOWER_IS_BETTER
from model.utils.run_folder import JOURNAL_NAME
from search.runner import STOPPING, Trial
from search.space import four_digits, suggest, trial_name

try:
    import optuna
    from optuna.pruners import MedianPruner, NopPruner
    from optuna.samplers import TPESampler
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna.trial import TrialState
except ImportError:
    raise UserError(
        "--sampler tpe needs Optuna, an optional package of the template. "
        "Install it with: pip install -r requirements-search.txt"
    ) from None

# TPE draws its first trials at random, then near the best trials so far.
RANDOM_STARTUP_TRIALS = 4
# A running trial's search process records a heartbeat every HEARTBEAT_SECONDS; a trial silent for
# STALE_SECONDS lost that process (killed, or its machine died): it is queued again, at most MAX_RETRIES times.
HEARTBEAT_SECONDS = 10
STALE_SECONDS = 60
MAX_RETRIES = 2


def open_storage(storage):
    """A database URL as it is, a file as Optuna's journal (file locks: safe for many processes)."""
    storage = str(storage)
    if "://" in storage:
        return storage
    refuse_special(storage)  # a pipe would hang the journal's reader, and a link lead outside the folders given
    return JournalStorage(JournalFileBackend(storage))


class Study:
    """The trials of an Optuna study, for search.runner: `next` asks the study, `tell` answers it."""

    def __init__(self, parent_dir, storage, study_name, space, params, num_trials, pruner):
        self.parent_dir, self.space, self.seed, self.total = parent_dir, space, params.seed, num_trials
        self.metric = params.best_metric
        self.study = open_study(storage or parent_dir / JOURNAL_NAME, study_name, self.metric, pruner)
        requeue_stale_trials(self.study)
        used = used_trials(self.study)
        self.done = min(sum(t.state.is_finished() for t in used), num_trials)
        logging.info(f"Study '{study_name}': {len(used)} of {num_trials} trials run or running already")

    def next(self):
        """The next trial (its values, folder and pruning watcher); None once the study has them all."""
        study = self.study
        requeue_stale_trials(study)
        if len(used_trials(study)) >= self.total:
            return None
        trial = study.ask()  # a trial queued again comes first, with its values
        trial.set_user_attr("heartbeat", time.time())
        # Seeding by trial number makes a study repeatable, and parallel searches draw differently.
        study.sampler = TPESampler(seed=self.seed + trial.number, n_startup_trials=RANDOM_STARTUP_TRIALS)
        values = suggest(trial, self.space)
        name = trial.user_attrs.get("trial_dir")  # queued again: resume its folder
        if name is None:
            if sum(t.number < trial.number for t in used_trials(study)) >= self.total:
                trial.set_user_attr("not_run", True)  # another search process took the last trial meanwhile
                study.tell(trial, state=TrialState.FAIL)
                return None
            name = f"trial_{trial.number:03d}-{trial_name({key: four_digits(v) for key, v in values.items()})}"
            trial.set_user_attr("trial_dir", name)
        watch = Watcher(trial, self.parent_dir / name / "history.jsonl", self.metric)
        return Trial(self.parent_dir / name, values, watch, trial.number)

    def tell(self, trial, returncode, reason):
        """Tells the study how a trial ended, and writes it in the trial's trial.json."""
        trial.watch()  # the epochs written since its last call
        record = {"study": self.study.study_name, "number": trial.number, "params": trial.values}
        if returncode is None or (returncode != 0 and STOPPING.is_set()):
            requeue(self.study, trial.number, died=False)  # its folder was in the way, or the search stopped
            return
        if trial.watch.pruned_at_epoch is not None:
            self.study.tell(trial.number, state=TrialState.PRUNED)
            record |= {"state": "pruned", "pruned_at_epoch": trial.watch.pruned_at_epoch}
            logging.info(f"Trial {trial.number} ({trial.folder.name}) pruned after epoch {trial.watch.pruned_at_epoch}")
        elif returncode == 0:
            value = load_json(trial.folder / "metrics_eval_best_weights.json")[self.metric]
            self.study.tell(trial.number, value)
            record |= {"state": "complete", "value": value}
            logging.info(f"Trial {trial.number} ({trial.folder.name}) finished: dev {self.metric} {value:.4f}")
        else:
            self.study.tell(trial.number, state=TrialState.FAIL)
            record |= {"state": "failed"}
            logging.error(
                f"Trial {trial.number} ({trial.folder.name}) failed (exit {returncode}):\n    " + "\n    ".join(reason)
            )
        save_json(record, trial.folder / "trial.json")

    def summary(self):
        return describe(self.study, self.parent_dir)

    @property
    def failed(self):  # this search's, and those of earlier ones: a study that failed never ends in success
        return sum(trial.state == TrialState.FAIL for trial in used_trials(self.study))


def open_study(storage, study_name, metric, pruner):
    """Creates the study, or loads it when an earlier or a parallel search created it."""
    optuna.logging.disable_default_handler()  # Optuna's warnings go to search.log like ours
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Stop a trial whose dev metric is worse than the median of the finished trials at the same
    # epoch, once two trials have finished; never on its first epoch, which is noisy.
    pruner = MedianPruner(n_startup_trials=2, n_warmup_steps=2) if pruner == "median" else NopPruner()
    goal = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    try:
        study = optuna.create_study(
            storage=open_storage(storage), study_name=study_name, direction=goal, pruner=pruner, load_if_exists=True
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
            f"Study '{study_name}' optimises dev {study_metric}, not {metric}: set best_metric to {study_metric} "
            "in params.json, or use another --study_name for a new study."
        )
    return study


def used_trials(study):
    """The trials that count against --num_trials: not those queued again, nor those waiting."""
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get("requeued_from") for t in trials}
    ran = (t for t in trials if t.state != TrialState.WAITING and "not_run" not in t.user_attrs)
    return [t for t in ran if t.number not in requeued]


def requeue(study, number, died):
    """Fails a trial that did not finish and queues a copy of it, which resumes its folder: at most
    MAX_RETRIES times if its search process died (the trial may be what kills it), always if interrupted."""
    try:
        study.tell(number, state=TrialState.FAIL)
    except (ValueError, RuntimeError):
        return  # it finished meanwhile, or another search process requeued it first
    trial = study.get_trials(deepcopy=False)[number]
    retries = trial.user_attrs.get("retries", 0) + died
    if retries <= MAX_RETRIES:
        attrs = {"requeued_from": number, "retries": retries, "trial_dir": trial.user_attrs.get("trial_dir")}
        study.enqueue_trial(trial.params, user_attrs=attrs)


def requeue_stale_trials(study):
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if now - t.user_attrs.get("heartbeat", t.datetime_start.timestamp()) > STALE_SECONDS:
            logging.warning(f"Trial {t.number} has had no heartbeat for {STALE_SECONDS} s: queued again")
            requeue(study, t.number, died=True)


class Watcher:
    """Follows a running trial: sends heartbeats, reports each new epoch, decides on pruning."""

    def __init__(self, trial, history_path, metric):
        self.trial, self.history_path, self.metric = trial, history_path, metric
        self.epochs_reported, self.last_heartbeat, self.pruned_at_epoch = 0, 0.0, None

    def __call__(self):
        """True when the trial should stop."""
        if self.pruned_at_epoch is not None:
            return True
        if time.time() - self.last_heartbeat > HEARTBEAT_SECONDS:
            self.trial.set_user_attr("heartbeat", time.time())
            self.last_heartbeat = time.time()
        for record in (r for r in read_json_lines(self.history_path) if r["epoch"] > self.epochs_reported):
            self.trial.report(record[self.metric], step=record["epoch"])
            self.epochs_reported = record["epoch"]
            if self.trial.should_prune():
                self.pruned_at_epoch = record["epoch"]
                return True
        return False


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
        values = {key: four_digits(v) for key, v in best.params.items()}
        lines.append(
            f"Best trial: {best.number}, dev {metric} {best.value:.4f} with {values}, "
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
