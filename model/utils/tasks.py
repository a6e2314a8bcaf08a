"""The template's two tasks, classifying images and tagging the words of sentences, as the scripts see them.

Each task's own files register it (model/model_fn.py, model/text_model_fn.py); the data folder decides
which one a run is: build_vocab.py's output (dataset_params.json) is text, anything else images. The
loops, checkpoints, run folders, searches and reports are the same for both."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.utils.errors import UserError
from model.utils.params import NETWORKS, load_params


@dataclass(frozen=True)
class Task:
    name: str  # "images" or "text"
    model_module: str  # the file that declares its networks, loss and metrics
    list_split: Callable  # (data_dir, split) -> (inputs, labels): labels a list, one item per example
    check_split: Callable  # (inputs, labels, params, split) -> warnings; stops on data the model cannot take
    class_names: Callable  # (data_dir, num_labels) -> the name of each label
    data_values: Callable  # data_dir -> {hyperparameter: value} that the data decides, such as num_labels
    train_and_dev: Callable  # ({"train": split, "dev": split}, params) -> the two tf.data pipelines
    input_fn: Callable  # (is_training, inputs, labels, params, one_pass) -> a tf.data pipeline
    loss: Callable  # (labels, logits, params) -> the loss of each example (each token, for text)
    metrics: dict  # name -> a function making a Keras metric, updated with (labels, probabilities)
    # (true label sequences, predicted ones, label names) -> ({name: value}, {kind: per-kind results}):
    # metrics of a whole split that no running average gives, such as entity F1
    split_metrics: Callable = None
    words: Callable = None  # data_dir -> the vocabulary, to show the dev sentences a model gets wrong

    def load_params(self, model_dir, overrides, data_dir):
        """MODEL_DIR/params.json with the --param overrides and the values DATA_DIR decides, checked."""
        params = load_params(model_dir, overrides, self.data_values(data_dir))
        self.check(params, data_dir)
        return params

    def check(self, params, data_dir):
        """Stops if the network or best_metric of params belongs to the other task."""
        if NETWORKS[params.model_version][0].__module__ != self.model_module:
            raise UserError(
                f"model_version {params.model_version} is a network for {other(self).name}, but {data_dir} holds "
                f"{self.name} data. Choose a network of {self.model_module.replace('.', '/')}.py, or other data."
            )
        if params.best_metric not in ("loss", *self.metrics, *getattr(self.split_metrics, "names", ())):
            raise UserError(f"best_metric {params.best_metric} is not a metric of the {self.name} task.")


TASKS = {}


def register_task(task):
    TASKS[task.name] = task
    return task


def task_of(data_dir):
    """The task of a data folder: text if build_vocab.py built it, else images."""
    return TASKS["text" if data_dir and (Path(data_dir) / "dataset_params.json").is_file() else "images"]


def other(task):
    return next(t for t in TASKS.values() if t is not task)
