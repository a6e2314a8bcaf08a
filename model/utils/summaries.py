"""TensorBoard: every run is one folder, MODEL_DIR, whose event files hold its hyperparameters (for the
HParams table) and its curves: train/... each few steps, dev/... each epoch, best_dev/... at each new best
epoch, and evaluate.py's results (test_best_weights/...). The images are the confusion matrices, the dev
images the model gets wrong and a train batch, named to be listed in this order. docs/experiments-and-search.md
says what each view shows."""

import json

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import plugin_data_pb2

from model.utils.params import DECLARED, NETWORKS
from model.utils.report import markdown
from model.utils.tasks import TASKS

# The hyperparameters the HParams table shows before any is ticked (it shows 5, the others alphabetically)
SHOWN_HPARAMS = ("model_version", "learning_rate", "batch_size", "num_epochs", "optimizer")
# The metric columns of the HParams table, by the prefix of their scalars, in the order they are shown
RESULTS = {"test_best_weights": "test", "best_dev": "best dev", "dev": "dev, last epoch", "train": "train, last epoch"}


def write_hparams(model_dir, params):
    """Records the run's hyperparameters for HParams, and the table's columns; returns the run's writer. A
    resumed run writes its curves into a new event file beside the earlier ones: TensorBoard shows them as
    one, the steps it redoes replacing the earlier ones."""
    writer = tf.summary.create_file_writer(str(model_dir))
    with writer.as_default():
        hp.hparams({key: shown(value) for key, value in params.dict.items()}, trial_id=trial_name(model_dir, params))
        write_columns()
    return writer


def shown(value):
    """A hyperparameter as HParams takes it (numbers, strings and booleans): a whole number as text, or the
    table would write 32 as 32.000 (it writes every number with 5 digits); anything else as JSON text."""
    if isinstance(value, (bool, float, str)):
        return value
    return str(value) if isinstance(value, int) else json.dumps(value)


def trial_name(model_dir, params):
    """The run's name in the HParams table, whose narrow first column shows about 15 characters: what sets it
    apart first, a search trial's values ("0.01 · ...") or the folder's name ("base_model · ..."), then the
    folder's path, which keeps every run in a row of its own (one name is one row)."""
    try:
        searched = json.loads((model_dir.parent / "search.json").read_text())
        values = ", ".join(str(params.dict.get(key)) for key in searched)
    except (OSError, ValueError, TypeError, AttributeError):
        values = model_dir.name
    return f"{values} · {model_dir.resolve()}"


def write_columns():
    """The HParams table's columns, the same for every run of every task (TensorBoard takes one run's for all
    runs): each task's main metric on test and best dev, shown first, then the others; and every
    hyperparameter, SHOWN_HPARAMS first (marked as the ones that differ, which the table lists first)."""
    names = [(task.main_metric, task.metric_names) for task in TASKS.values()]
    first = [(prefix, main) for main, _ in names for prefix in ("test_best_weights", "best_dev")]
    rest = [(prefix, name) for prefix in RESULTS for _, metric_names in names for name in metric_names]
    metrics = [
        hp.Metric(f"{p}/{name}", display_name=f"{name} ({RESULTS[p]})") for p, name in dict.fromkeys(first + rest)
    ]
    keys = sorted({*DECLARED, *(key for _, declared in NETWORKS.values() for key in declared)})
    summary = hp.hparams_config_pb([hp.HParam(key) for key in keys], metrics)
    plugin_data = summary.value[0].metadata.plugin_data
    content = plugin_data_pb2.HParamsPluginData.FromString(plugin_data.content)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in SHOWN_HPARAMS
    plugin_data.content = content.SerializeToString()
    tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)


def write_results(writer, step, prefix, metrics):
    """Scalars such as best_dev/accuracy, which HParams shows as the run's metrics."""
    write_scalars(writer, step, prefix, {name: value for name, value in metrics.items() if name != "epoch"})
    writer.flush()


def write_evaluation(model_dir, epoch, prefix, metrics, confusion_picture, tables):
    """evaluate.py's results in the run's HParams row, its confusion matrix as an image, and its
    per-class (per-tag, per-entity-type) tables as text."""
    writer = tf.summary.create_file_writer(str(model_dir))
    write_images(writer, epoch, f"confusion_matrix/{prefix}", np.asarray(confusion_picture)[None])
    with writer.as_default(step=epoch):
        for name, table in tables.items():
            tf.summary.text(f"{prefix}/{name}", markdown(table))
    write_results(writer, epoch, prefix, metrics)


def write_scalars(writer, step, prefix, values):
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(f"{prefix}/{name}", value)


def write_images(writer, step, name, images):
    with writer.as_default(step=step):
        tf.summary.image(name, images, max_outputs=len(images))


def write_misclassified(writer, step, misclassified, class_names, words=None):
    """The dev images the model got wrong, side by side in one picture for each class it predicted; or the
    dev sentences with a wrong tag, each wrong word in bold with its predicted and true tags."""
    if isinstance(misclassified, list):  # sentences: (word ids, true tags, predicted tags); <unk>: unseen in train
        lines = [
            " ".join(
                words[w] if t == p else f"**{words[w]}** ({class_names[p]}, not {class_names[t]})"
                for w, t, p in zip(*s)
            )
            for s in misclassified
        ]
        with writer.as_default(step=step):
            tf.summary.text("misclassified/sentences", "\n\n".join(lines) or "(none)")
    else:
        for predicted, images in sorted(misclassified.items()):
            write_images(writer, step, f"misclassified/predicted_as_{class_names[predicted]}", side_by_side(images))
    writer.flush()


def side_by_side(images):
    """One picture of a few images, left to right: one card in TensorBoard, rather than one per image."""
    return tf.concat(list(images), axis=1)[None]
