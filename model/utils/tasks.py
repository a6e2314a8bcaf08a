"""The template's two tasks, classifying images and tagging the words of sentences, as the scripts see them.

Each task's own files register it (model/model_fn.py, model/text_model_fn.py); the data folder decides
which one a run is: build_vocab.py's output (dataset_params.json, words.txt) is text, anything else images. The
loops, checkpoints, run folders, searches and reports are the same for both."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
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
    main_metric: str = "accuracy"  # the one TensorBoard's HParams table shows first

    @property
    def metric_names(self):
        """The loss and every metric a run of this task logs, each a valid best_metric."""
        return ("loss", *self.metrics, *getattr(self.split_metrics, "names", ()))

    def load_params(self, model_dir, overrides, data_dir):
        """MODEL_DIR/params.json with the --param overrides and the values DATA_DIR decides, checked."""
        check_network = partial(self.check_network, data_dir=data_dir)
        params = load_params(model_dir, overrides, self.data_values(data_dir), check_network=check_network)
        self.check_metric(params)
        return params

    def check(self, params, data_dir):
        """Stops unless a trained model's params fit this task's data in DATA_DIR: its network, its
        best_metric, and what the data decides (for text, the vocabulary it was trained with)."""
        self.check_network(params.model_version, data_dir)
        self.check_metric(params)
        for key, value in self.data_values(data_dir).items():
            if params.dict.get(key) != value:
                raise UserError(
                    f"The model was trained on data with another {key} than {data_dir}'s. Pass the --data_dir it was "
                    "trained on (its run.json names it)."
                )

    def check_network(self, version, data_dir):
        if NETWORKS[version][0].__module__ != self.model_module and not data_dir:
            raise UserError(
                f"model_version {version} is a network for {other(self).name}: give the --data_dir it used."
            )
        if NETWORKS[version][0].__module__ != self.model_module:
            raise UserError(
                f"model_version {version} is a network for {other(self).name}, but {data_dir} holds {self.name}. "
                f"Choose a network of {self.model_module.replace('.', '/')}.py, or other data."
            )

    def check_metric(self, params):
        if params.best_metric not in self.metric_names:
            raise UserError(f"best_metric {params.best_metric} is not a metric of the {self.name} task.")


TASKS = {}


def register_task(task):
    TASKS[task.name] = task
    return task


def task_of(data_dir):
    """The task of a data folder: text if build_vocab.py built it (even in part), else images."""
    text = data_dir and any((Path(data_dir) / name).is_file() for name in ("dataset_params.json", "words.txt"))
    return TASKS["text" if text else "images"]


def other(task):
    return next(t for t in TASKS.values() if t is not task)
