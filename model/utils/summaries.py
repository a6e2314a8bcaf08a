"""TensorBoard: MODEL_DIR/train_summaries and eval_summaries hold the curves and images of training and
dev; the event files in MODEL_DIR itself hold the run's hyperparameters, best dev metrics (best_dev/...)
and evaluate.py's results (test_best_weights/...), for the HParams dashboard, which lists every run."""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from model.utils.report import markdown
from model.utils.run_folder import remove


def write_hparams(model_dir, params):
    """Records the run's hyperparameters for HParams, replacing an earlier record and its results (their
    weights are being trained further); returns the writer of the run's best dev metrics."""
    for stale in Path(model_dir).glob("events.out.tfevents.*"):
        remove(stale)
    # HParams takes numbers, strings and booleans; anything else is shown as JSON text.
    hparams = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in params.dict.items()}
    writer = tf.summary.create_file_writer(str(model_dir))
    with writer.as_default():
        hp.hparams(hparams, trial_id=str(model_dir))
    return writer


def write_results(writer, step, prefix, metrics):
    """Scalars such as best_dev/accuracy, which HParams shows as the run's metrics."""
    write_scalars(writer, step, {f"{prefix}/{name}": value for name, value in metrics.items() if name != "epoch"})
    writer.flush()


def write_evaluation(model_dir, epoch, prefix, metrics, confusion_picture, tables):
    """evaluate.py's results in the run's HParams row, its confusion matrix as an image, and its
    per-class (per-tag, per-entity-type) tables as text."""
    writer = tf.summary.create_file_writer(str(model_dir))
    write_images(writer, epoch, f"{prefix}/confusion_matrix", np.asarray(confusion_picture)[None])
    with writer.as_default(step=epoch):
        for name, table in tables.items():
            tf.summary.text(f"{prefix}/{name}", markdown(table))
    write_results(writer, epoch, prefix, metrics)


def write_scalars(writer, step, values):
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)


def write_images(writer, step, name, images):
    with writer.as_default(step=step):
        tf.summary.image(name, images, max_outputs=len(images))


def write_misclassified(writer, step, misclassified, class_names, words=None):
    """The dev images the model got wrong, grouped by the class it predicted; or the dev sentences with a
    wrong tag, each wrong word in bold with its predicted and true tags."""
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
            write_images(writer, step, f"misclassified/predicted_as_{class_names[predicted]}", tf.stack(images))
    writer.flush()
