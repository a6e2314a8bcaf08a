"""Opening an MLflow store for tracking (model/utils/tracking.py), checked before a script does its work:
MLflow installed, a server that answers, a database file that can be written, an experiment not deleted,
artifacts that can be written. MLflow itself is imported only when tracking is on."""

import logging
import os
import socket
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlsplit

from model.utils.errors import UserError
from model.utils.files import wait_for_lock

INSTALL = "pip install -r requirements-tracking.txt"
# MLflow waits 120 s for an answer and retries 7 times: a server that went away would stall a run for minutes
PATIENCE = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
CHECK_URI = (
    "Check the URI (a local store: sqlite:///mlflow.db; a server: http://HOST:PORT, started), or leave out "
    "--tracking_uri and unset MLFLOW_TRACKING_URI to run without MLflow."
)


def open_store(uri, parent_id=None):
    """(an MlflowClient of the store at uri, the id of the experiment to log into), checked."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise UserError(
            f"MLflow tracking is on (tracking URI {uri}), but MLflow is not installed: {INSTALL}, "
            "or leave out --tracking_uri and unset MLFLOW_TRACKING_URI."
        ) from None
    for name in ("mlflow", "urllib3"):  # not their notes on new tables, nor each retry
        logging.getLogger(name).setLevel(logging.ERROR)
    for name, value in PATIENCE.items():
        os.environ.setdefault(name, value)  # the user's own setting wins
    database = check_address(uri)
    # A new database is made by the first process that opens it: others wait (two at once would break it)
    with wait_for_lock(database) if database else nullcontext():
        try:
            client = MlflowClient(uri)
            experiment = experiment_of(client, parent_id)
        except UserError:
            raise
        except Exception as error:  # MLflow's or the database's: the URI is what to check
            message = f"The MLflow tracking store {uri} cannot be used: {reason_of(error)}. {CHECK_URI}"
            raise UserError(message) from None
    artifacts = artifact_folder(experiment.artifact_location)
    if artifacts and (folder := unwritable(artifacts)):
        raise UserError(
            f"MLflow keeps the artifacts of {uri} in {artifacts}, but {folder} cannot be written. Check its "
            "permissions, or set MLFLOW_EXPERIMENT_NAME to a new experiment, made from a folder you can write."
        )
    return client, experiment.experiment_id


def check_address(uri):
    """Stops at once on a server that does not answer, and on a local database that cannot be one; returns
    the local database file, if the store is one."""
    if uri.startswith(("http://", "https://")):
        try:
            address = urlsplit(uri)
            port = address.port or (443 if address.scheme == "https" else 80)
            socket.create_connection((address.hostname, port), 10).close()
        except (OSError, ValueError) as error:  # refused, no such host, or a port or address that is not one
            reason = getattr(error, "strerror", None) or error
            raise UserError(f"The MLflow tracking server {uri} cannot be reached: {reason}. {CHECK_URI}") from None
    if not uri.lower().startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url  # MLflow's SQL stores read their URI so

    try:
        database = make_url(uri).database
    except Exception as error:
        raise UserError(f"The MLflow tracking store {uri} cannot be used: {reason_of(error)}. {CHECK_URI}") from None
    if not database or database.startswith((":memory:", "file::memory:")) or "mode=memory" in uri:
        raise UserError(f"{uri} is a store in memory, lost when the script ends. {CHECK_URI}")
    path = Path(database)
    if path.is_dir():
        raise UserError(f"The MLflow tracking store {uri} is a folder, not a database file. {CHECK_URI}")
    if folder := unwritable(path) or unwritable(path.absolute().parent):  # SQLite writes its journal there
        raise UserError(f"The MLflow tracking store {uri} cannot be written: {folder} is not writable. {CHECK_URI}")
    return path


def unwritable(path):
    """What stops path from being written: itself, or the nearest folder it would be made in (MLflow makes
    the folders it lacks), which must be a folder; None if nothing does."""
    existing = next(folder for folder in [path, *path.absolute().parents] if folder.exists())
    if existing != path and not existing.is_dir():  # a file where a folder would have to be made
        return existing
    return None if os.access(existing, os.W_OK) else existing


def artifact_folder(location):
    """The local folder of an experiment's artifacts, or None if they are kept elsewhere (a server's)."""
    address = urlsplit(location)
    return Path(address.path) if address.scheme in ("", "file") else None


def reason_of(error):
    """MLflow's message, in its first sentence; in the template's words where MLflow's would mislead."""
    text = str(error).strip() or type(error).__name__
    if "unsupported URI" in text:  # MLflow says it of its model registry, which the user never asked for
        return "MLflow knows no store of that kind (sqlite, postgresql, mysql, mssql, http, https, databricks)"
    if "filesystem tracking backend" in text:
        return "MLflow no longer takes a folder as a store: give a database file, such as sqlite:///mlflow.db"
    return text.splitlines()[0].split(". ")[0].rstrip(".")[:300]


def experiment_of(client, parent_id):
    """The MLflow experiment to log into: the parent run's, else MLFLOW_EXPERIMENT_NAME's (made if new)."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
    if parent_id:
        experiment = client.get_experiment(client.get_run(parent_id).info.experiment_id)
        name = experiment.name
    elif client.get_experiment_by_name(name) is None:
        try:
            client.create_experiment(name)
        except Exception:
            if client.get_experiment_by_name(name) is None:  # not made by another process meanwhile
                raise
    experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage != "active":
        raise UserError(
            f"The MLflow experiment {name} was deleted from {client.tracking_uri}: restore it (mlflow experiments "
            "restore), or set MLFLOW_EXPERIMENT_NAME to another name."
        )
    return experiment
