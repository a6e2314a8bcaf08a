"""MLflow tracking, optional: on when --tracking_uri or MLFLOW_TRACKING_URI names a store, such as
sqlite:///mlflow.db or http://127.0.0.1:5000 (MLflow itself is imported only then).

A training run is one MLflow run: its hyperparameters, the train and dev metrics of each epoch (step =
epoch), the run folder's path as the tag run_folder, and params.json and run.json as artifacts. Its id is
kept in run.json, so that a resumed run, and evaluate.py's test metrics, go to the same MLflow run. A
search is a parent run; its trials are its child runs. The experiment is MLflow's: MLFLOW_EXPERIMENT_NAME,
else "Default"."""

import logging
import os
import socket
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlsplit

from model.utils.errors import UserError
from model.utils.files import load_json, read_json_lines
from model.utils.report import markdown

INSTALL = "pip install -r requirements-tracking.txt"
PARENT_TAG = "mlflow.parentRunId"  # what makes a run a child run in MLflow's interface
CHECK_URI = (
    "Check the URI (a local store: sqlite:///mlflow.db; a server: http://HOST:PORT, started), or leave out "
    "--tracking_uri and unset MLFLOW_TRACKING_URI to run without MLflow."
)


def connect(uri=None, parent_id=None):
    """The tracker of --tracking_uri (else MLFLOW_TRACKING_URI; without either, one that logs nothing), its
    store checked now: a missing MLflow or a store that cannot be reached stops the script before its work."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return Tracker(None)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise UserError(
            f"MLflow tracking is on (tracking URI {uri}), but MLflow is not installed: {INSTALL}, "
            "or leave out --tracking_uri and unset MLFLOW_TRACKING_URI."
        ) from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its notes on creating a new store's tables
    check_server(uri)
    try:
        client = MlflowClient(uri)
        experiment = experiment_id(client, parent_id)
    except Exception as error:  # MLflow's or the database's: the URI is what to check
        reason = first_sentence(error)
        if "unsupported URI" in reason:  # MLflow says it of its model registry, which the user never asked for
            reason = "MLflow knows no store of that kind (sqlite, postgresql, mysql, mssql, http, https, databricks)"
        raise UserError(f"The MLflow tracking store {uri} cannot be used: {reason}. {CHECK_URI}") from None
    return Tracker(client, uri, experiment, parent_id)


def check_server(uri):
    """Stops at once on a tracking server that does not answer (MLflow would retry for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        address = urlsplit(uri)
        socket.create_connection((address.hostname, address.port or {"http": 80}.get(address.scheme, 443)), 10).close()
    except (OSError, ValueError) as error:  # refused, no such host, or a port or address that is not one
        reason = getattr(error, "strerror", None) or error
        raise UserError(f"The MLflow tracking server {uri} cannot be reached: {reason}. {CHECK_URI}") from None


def first_sentence(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")[:300]


def experiment_id(client, parent_id):
    """The MLflow experiment to log into: the parent run's, else MLFLOW_EXPERIMENT_NAME's, made if new."""
    if parent_id:
        return client.get_run(parent_id).info.experiment_id
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


class Tracker:
    """Logs a run folder's work to one MLflow run; or nothing, when tracking is off (client None). Once a run
    has started, a store that fails is a warning: the run goes on, and its epochs are logged when it resumes."""

    def __init__(self, client, uri=None, experiment=None, parent_id=None):
        self.client, self.uri, self.experiment, self.parent_id = client, uri, experiment, parent_id
        self.folder, self.run_id, self.logged_epochs = None, None, 0

    def training_run(self, model_dir):
        """train.py's MLflow run: the one recorded in model_dir's run.json if any, else a new one; its id is
        yielded, for run.json. On leaving: params.json and run.json as artifacts, and how the run ended."""
        if not self.client:
            return nullcontext()
        return self._run(model_dir, "run_folder", self.recorded_run(model_dir), ("params.json", "run.json"))

    def search_run(self, parent_dir):
        """A search's parent run: the newest one tagged with parent_dir (a resumed search), else a new one."""
        if not self.client:
            return nullcontext()
        return self._run(parent_dir, "search_folder", self.tagged_run(parent_dir), ("params.json", "search.json"))

    @contextmanager
    def _run(self, folder, tag, run_id, artifacts):
        folder = Path(folder)
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self.logged_epochs = max((m.step for m in self.client.get_metric_history(run_id, "dev/loss")), default=0)
            logging.info(f"Tracking in MLflow at {self.uri}: continuing run {run_id}")
        else:
            tags = {tag: str(folder.resolve())} | ({PARENT_TAG: self.parent_id} if self.parent_id else {})
            run_id = self.client.create_run(self.experiment, tags=tags, run_name=folder.name).info.run_id
            logging.info(f"Tracking in MLflow at {self.uri}: run {run_id}")
        self.folder, self.run_id, status = folder, run_id, "FAILED"
        try:
            yield run_id
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            with self.warn_on_failure("the run's end"):
                for name in artifacts:
                    if (folder / name).is_file():
                        self.client.log_artifact(run_id, str(folder / name))
                self.client.set_terminated(run_id, status)

    def recorded_run(self, model_dir):
        """The MLflow run of model_dir's newest record in run.json that has one, if this store holds it."""
        try:
            record = load_json(Path(model_dir) / "run.json")
        except UserError:
            return None
        for entry in [record, *reversed(record.get("previous_runs", []))]:
            if isinstance(entry, dict) and entry.get("mlflow_run_id"):
                try:
                    return self.client.get_run(entry["mlflow_run_id"]).info.run_id
                except Exception:  # another store's run: this one starts its own
                    return None
        return None

    def tagged_run(self, folder):
        """The newest run of the experiment tagged with this search folder, or None."""
        path = str(Path(folder).resolve())
        quote = next((q for q in "'\"" if q not in path), None)
        if quote is None:  # a name with both quotes cannot be searched for: the search starts a new run
            return None
        query = f"tags.search_folder = {quote}{path}{quote}"
        newest = ["attributes.start_time DESC"]
        found = self.client.search_runs([self.experiment], query, order_by=newest, max_results=1)
        return found[0].info.run_id if found else None

    def log_params(self, params):
        """The hyperparameters of the run. MLflow keeps a run's first value of each: one that a resumed run
        changed is said in the log (params_used.json has it)."""
        if not self.run_id:  # not tracked, or not the chief worker of a cluster
            return
        from mlflow.entities import Param

        with self.warn_on_failure("the hyperparameters"):
            logged = self.client.get_run(self.run_id).data.params
            values = {key: str(value) for key, value in params.items()}
            if changed := sorted(key for key in values.keys() & logged.keys() if values[key] != logged[key]):
                logging.info(f"MLflow keeps the first values of {', '.join(changed)} (this run's: params_used.json)")
            new = [Param(key, value) for key, value in values.items() if key not in logged]
            for start in range(0, len(new), 100):  # MLflow takes 100 at a time
                self.client.log_batch(self.run_id, params=new[start : start + 100])

    def log_history(self):
        """The train and dev metrics of the epochs in the run folder's history.jsonl not logged yet, with
        step = epoch: train/loss, dev/accuracy, ..."""
        if not self.run_id:  # not tracked, or not the chief worker of a cluster
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        history = [r for r in read_json_lines(self.folder / "history.jsonl") if r["epoch"] > self.logged_epochs]
        metrics = [
            Metric(f"train/{name[6:]}" if name.startswith("train_") else f"dev/{name}", value, now, record["epoch"])
            for record in history
            for name, value in record.items()
            if name != "epoch"
        ]
        with self.warn_on_failure(f"the metrics of epochs {', '.join(str(r['epoch']) for r in history)}"):
            for start in range(0, len(metrics), 1000):  # MLflow takes 1000 at a time
                self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])
            self.logged_epochs = max([self.logged_epochs, *(r["epoch"] for r in history)])

    def log_evaluation(self, model_dir, step, prefix, metrics, tables, picture):
        """evaluate.py's results (such as test_best_weights/accuracy), its tables as Markdown and the
        confusion matrix, into the run recorded in model_dir's run.json (a new run if there is none)."""
        if not self.client:
            return
        from mlflow.entities import Metric

        with self.warn_on_failure("the results (they are saved in the run folder)"):
            run_id = self.recorded_run(model_dir)
            if run_id is None:
                tags = {"run_folder": str(Path(model_dir).resolve())}
                run_id = self.client.create_run(self.experiment, tags=tags, run_name=Path(model_dir).name).info.run_id
                self.client.set_terminated(run_id)
                logging.info(f"{model_dir}'s run.json records no MLflow run in this store: the results go to a new one")
            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(f"{prefix}/{k}", v, now, step) for k, v in metrics.items()])
            for name, table in tables.items():
                self.client.log_text(run_id, markdown(table), f"{prefix}/{name}.md")
            self.client.log_image(run_id, picture, f"{prefix}/confusion_matrix.png")
            logging.info(f"Logged the results to MLflow at {self.uri}: run {run_id}")

    @contextmanager
    def warn_on_failure(self, what):
        try:
            yield
        except Exception as error:
            logging.warning(f"Warning: MLflow at {self.uri} did not take {what}: {first_sentence(error)}")
