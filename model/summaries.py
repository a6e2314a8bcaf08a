"""TensorBoard: each run's scalars, images and hyperparameters.

MODEL_DIR/train_summaries and MODEL_DIR/eval_summaries hold the curves and images of training
and of the dev evaluations; an event file in MODEL_DIR itself holds the run's hyperparameters
for the HParams dashboard, which lists every run with them and its metrics.
"""

import json
from pathlib import Path

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from model.run_folder import remove


def write_hparams(model_dir, params):
    """Records the run's hyperparameters for TensorBoard's HParams dashboard, replacing an earlier record."""
    for stale in Path(model_dir).glob("events.out.tfevents.*"):
        remove(stale)
    # HParams takes numbers, strings and booleans; anything else is shown as JSON text.
    hparams = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in params.dict.items()}
    with tf.summary.create_file_writer(str(model_dir)).as_default():
        hp.hparams(hparams, trial_id=str(model_dir))


def write_scalars(writer, step, values):
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)


def write_images(writer, step, name, images):
    with writer.as_default(step=step):
        tf.summary.image(name, images, max_outputs=len(images))


def write_misclassified(writer, step, misclassified):
    """The dev images the model got wrong, grouped by the class it predicted."""
    for predicted, images in sorted(misclassified.items()):
        write_images(writer, step, f"misclassified/predicted_as_{predicted}", tf.stack(images))
    writer.flush()
