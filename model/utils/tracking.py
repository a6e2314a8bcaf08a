"""MLflow tracking, optional: on when --tracking_uri or MLFLOW_TRACKING_URI names a store, such as
sqlite:///mlflow.db or http://127.0.0.1:5000 (MLflow itself is imported only then).

A training run is one MLflow run: its hyperparameters, the train and dev metrics of each epoch (step =
epoch), the run folder's path as the tag run_folder, and params.json and run.json as artifacts. Its id is
kept in run.json, so that a resumed run, and evaluate.py's test metrics, go to the same MLflow run. A
search is a parent run; its trials are its child runs. The experiment is MLflow's: MLFLOW_EXPERIMENT_NAME,
else "Default"."""

import logging
import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from model.utils.errors import UserError
from model.utils.files import load_json, read_json_lines
from model.utils.report import markdown
from model.utils.tracking_store import open_store, reason_of

PARENT_TAG = "mlflow.parentRunId"  # what makes a run a child run in MLflow's interface


def connect(uri=None, parent_id=None):
    """The tracker of --tracking_uri (else MLFLOW_TRACKING_URI; without either, one that logs nothing), its
    store checked now (model/utils/tracking_store.py): a missing MLflow, or a store that cannot be reached or
    written, stops the script before its work."""
    uri = (uri or os.environ.get("MLFLOW_TRACKING_URI") or "").strip()
    if not uri:
        return Tracker(None)
    try:
        client, experiment = open_store(uri, parent_id)
    except UserError as error:
        if not parent_id:
            raise
        # A search's trial: the search checked the store, so it failed since, once the work had started
        logging.warning(f"Warning: {error} This trial goes on without MLflow; its folder keeps everything.")
        return Tracker(None)
    return Tracker(client, uri, experiment, parent_id)


class Tracker:
    """Logs a run folder's work to one MLflow run; or nothing, when tracking is off (client None). A store that
    fails once the work has started is one warning: the work goes on without MLflow, the run folder keeps
    everything, and a resumed run logs the epochs MLflow missed."""

    def __init__(self, client, uri=None, experiment=None, parent_id=None):
        self.client, self.uri, self.experiment, self.parent_id = client, uri, experiment, parent_id
        self.folder, self.run_id, self.logged, self.failed = None, None, {}, False  # logged: {epoch: dev loss}

    def training_run(self, model_dir):
        """train.py's MLflow run: the one recorded in model_dir's run.json if any, else a new one; its id is
        yielded, for run.json. On leaving: params.json and run.json as artifacts, and how the run ended."""
        return self._run(model_dir, "run_folder", ("params.json", "run.json")) if self.client else nullcontext()

    def search_run(self, parent_dir):
        """A search's parent run: the oldest one tagged with parent_dir (a resumed search), else a new one."""
        return self._run(parent_dir, "search_folder", ("params.json", "search.json")) if self.client else nullcontext()

    @contextmanager
    def _run(self, folder, tag, artifacts):
        self.folder = folder = Path(folder)
        self.run_id = self.call("the run's start", self.start, folder, tag)
        status = "FAILED"
        try:
            yield self.run_id
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:  # how it ended first: artifacts may go elsewhere than the store, and fail on their own
            if self.run_id:
                self.call("the run's end", self.client.set_terminated, self.run_id, status)
            for name in (name for name in artifacts if self.run_id and (folder / name).is_file()):
                self.call(name, self.client.log_artifact, self.run_id, str(folder / name))

    def start(self, folder, tag):
        """Continues the folder's run (recorded in run.json for a training run, tagged for a search), or starts one."""
        tagged = self.tagged_runs(tag, folder)
        run_id = self.recorded_run(folder) if tag == "run_folder" else next((run.info.run_id for run in tagged), None)
        for run in tagged if tag == "run_folder" else ():  # the folder's lock says that no other one still trains
            if run.info.status == "RUNNING" and run.info.run_id != run_id:
                self.client.set_terminated(run.info.run_id, "KILLED")  # one killed with kill -9, then --overwrite
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self.logged = {
                m.step: m.value
                for m in sorted(self.client.get_metric_history(run_id, "dev/loss"), key=lambda m: m.timestamp)
            }
            logging.info(f"Tracking in MLflow at {self.uri}: continuing run {run_id}")
        else:
            run_id = self.new_run(folder, tag)
            logging.info(f"Tracking in MLflow at {self.uri}: run {run_id}")
        return run_id

    def new_run(self, folder, tag):
        """A new run tagged with the folder (a child run of parent_id, if given). Two searches that start
        together in one folder may each make one: both then keep the oldest, and the other is deleted."""
        tags = {tag: str(folder.resolve())} | ({PARENT_TAG: self.parent_id} if self.parent_id else {})
        run_id = self.client.create_run(self.experiment, tags=tags, run_name=folder.name).info.run_id
        if tag == "search_folder" and (oldest := self.tagged_runs(tag, folder)[0].info.run_id) != run_id:
            self.client.delete_run(run_id)
            return oldest
        return run_id

    def recorded_run(self, model_dir):
        """The MLflow run of model_dir's newest record in run.json whose run this store holds (not deleted, and
        of this folder), or None."""
        try:
            record = load_json(Path(model_dir) / "run.json")
        except UserError:
            return None
        for entry in [record, *reversed(record.get("previous_runs", []))]:
            run_id = entry.get("mlflow_run_id") if isinstance(entry, dict) else None
            if isinstance(run_id, str) and run_id.isalnum() and self.is_folders(run_id, model_dir):
                return run_id
        return None

    def is_folders(self, run_id, folder):
        """Whether the store holds this run, not deleted, of this folder (a copied run.json names another's)."""
        try:
            run = self.client.get_run(run_id)
        except Exception as error:  # MLflow's "not found" (another store's run); a store that fails is no answer
            if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return run.info.lifecycle_stage == "active" and run.data.tags.get("run_folder") == str(Path(folder).resolve())

    def tagged_runs(self, tag, folder):
        """The runs of the experiment tagged with this folder, oldest first. (Compared here, not in MLflow's
        query language, in which a folder's name may not be writable.)"""
        path, oldest = str(Path(folder).resolve()), ["attributes.start_time ASC"]
        runs = self.client.search_runs([self.experiment], f"tags.{tag} LIKE '%'", order_by=oldest, max_results=1000)
        return [run for run in runs if run.data.tags[tag] == path]

    def log_params(self, params):
        """The hyperparameters of the run. MLflow keeps a run's first value of each: one that a resumed run
        changed is said in the log (params_used.json has it)."""
        if not self.run_id:  # not tracked, or not the chief worker of a cluster
            return
        from mlflow.entities import Param

        def log():
            logged = self.client.get_run(self.run_id).data.params
            values = {key: str(value) for key, value in params.items()}
            if changed := sorted(key for key in values.keys() & logged.keys() if values[key] != logged[key]):
                logging.info(f"MLflow keeps the first values of {', '.join(changed)} (this run's: params_used.json)")
            new = [Param(key, value) for key, value in values.items() if key not in logged]
            for start in range(0, len(new), 100):  # MLflow takes 100 at a time
                self.client.log_batch(self.run_id, params=new[start : start + 100])

        self.call("the hyperparameters", log)

    def log_history(self):
        """The train and dev metrics of the epochs in the run folder's history.jsonl that MLflow lacks, or holds
        other values of (epochs trained again), with step = epoch: train/loss, dev/accuracy, ..."""
        if not self.run_id:  # not tracked, or not the chief worker of a cluster
            return
        from mlflow.entities import Metric

        history = read_json_lines(self.folder / "history.jsonl")
        last = max((r["epoch"] for r in history), default=0)
        if any(epoch > last for epoch in self.logged):
            logging.warning(
                f"Warning: this run goes on from epoch {last}, but its MLflow run holds epochs up to "
                f"{max(self.logged)}: MLflow shows the epochs trained again beside the earlier ones"
            )
            self.logged = {epoch: loss for epoch, loss in self.logged.items() if epoch <= last}
        now = int(time.time() * 1000)
        new = [record for record in history if self.logged.get(record["epoch"]) != record["loss"]]
        metrics = [
            Metric(f"train/{name[6:]}" if name.startswith("train_") else f"dev/{name}", value, now, record["epoch"])
            for record in new
            for name, value in record.items()
            if name != "epoch"
        ]
        for start in range(0, len(metrics), 1000):  # MLflow takes 1000 at a time
            self.call("the epochs' metrics", self.client.log_batch, self.run_id, metrics[start : start + 1000])
        if not self.failed:
            self.logged.update((record["epoch"], record["loss"]) for record in new)

    def log_evaluation(self, model_dir, step, prefix, metrics, tables, picture):
        """evaluate.py's results (such as test_best_weights/accuracy), its tables as Markdown and the
        confusion matrix, into the run recorded in model_dir's run.json (else the newest tagged with it, else
        a new one)."""
        if not self.client:
            return
        from mlflow.entities import Metric

        def log():
            model_folder = Path(model_dir)
            tagged = [run.info.run_id for run in self.tagged_runs("run_folder", model_folder)]
            run_id = self.recorded_run(model_folder) or next(reversed(tagged), None)
            if run_id is None:
                run_id = self.new_run(model_folder, "run_folder")
                self.client.set_terminated(run_id)
                logging.info(f"{model_dir} has no MLflow run in this store: the results go to a new one")
            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(f"{prefix}/{k}", v, now, step) for k, v in metrics.items()])
            for name, table in tables.items():
                self.client.log_text(run_id, markdown(table), f"{prefix}/{name}.md")
            self.client.log_image(run_id, picture, f"{prefix}/confusion_matrix.png")
            logging.info(f"Logged the results to MLflow at {self.uri}: run {run_id}")

        self.call("the results (they are saved in the run folder)", log)

    def call(self, what, function, *args):
        """function(*args), unless the store failed before: its first failure is one warning, and then the
        store is left alone, rather than waited for at each epoch. Returns what function returns (None if not run)."""
        if self.failed:
            return None
        try:
            return function(*args)
        except Exception as error:
            self.failed = True
            logging.warning(
                f"Warning: MLflow at {self.uri} did not take {what}: {reason_of(error)}. Nothing more is sent to "
                "it from this run; the run folder keeps everything, and resuming the run logs the epochs it missed."
            )
            return None
