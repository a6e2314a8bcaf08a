"""The evaluation loop, and finding and restoring saved weights."""

from collections import defaultdict
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

from model.utils import UserError


def make_eval_step(spec):
    """A compiled step: predictions for one batch, updating spec.eval_metrics."""

    @tf.function
    def eval_step(images, labels):
        logits = spec.model(images, training=False)
        loss = spec.loss_fn(labels, logits)
        # Weighting by the batch size makes the mean exact when the last batch is smaller.
        spec.eval_metrics["loss"].update_state(loss, sample_weight=tf.shape(labels)[0])
        spec.eval_metrics["accuracy"].update_state(labels, logits)
        return tf.argmax(logits, axis=1, output_type=tf.int32)

    return eval_step


def evaluate(spec, eval_step, dataset, desc="Evaluating", max_misclassified=0):
    """Runs the model once over `dataset`.

    Returns the metrics as a dict of floats, and up to `max_misclassified` wrongly
    classified images for each predicted class (for TensorBoard: what the model confuses).
    """
    for metric in spec.eval_metrics.values():
        metric.reset_state()
    misclassified = defaultdict(list)
    for images, labels in tqdm(dataset, desc=desc, total=num_batches(dataset), leave=False):
        predictions = eval_step(images, labels).numpy()
        if max_misclassified:
            for image, label, prediction in zip(images.numpy(), labels.numpy(), predictions):
                if label != prediction and len(misclassified[prediction]) < max_misclassified:
                    misclassified[prediction].append(image)
    metrics = {name: float(metric.result()) for name, metric in spec.eval_metrics.items()}
    return metrics, dict(misclassified)


def num_batches(dataset):
    """The number of batches in a dataset, or None if tf.data cannot tell (for tqdm)."""
    cardinality = int(dataset.cardinality())
    return cardinality if cardinality >= 0 else None


def find_checkpoint(restore_from, model_dir):
    """Resolves --restore_from to a checkpoint prefix.

    Accepts a weights folder (`experiments/base_model/last_weights`: its latest checkpoint),
    a checkpoint prefix (`.../last_weights/ckpt-3`), or a folder name inside model_dir
    (`best_weights`).
    """
    candidates = [Path(restore_from), Path(model_dir) / restore_from]
    for path in candidates:
        if path.is_dir():
            prefix = tf.train.latest_checkpoint(str(path))
            if prefix is None:
                raise UserError(f"The folder {path} holds no checkpoint. Train first, or pick another folder.")
            return prefix
        if Path(f"{path}.index").is_file():
            return str(path)
    raise UserError(
        f"--restore_from {restore_from}: no such weights folder or checkpoint "
        f"(looked for {candidates[0]} and {candidates[1]}). "
        "Give a folder such as experiments/base_model/best_weights."
    )


def restore_model(model, checkpoint_prefix):
    """Loads only the model's weights from a training checkpoint (not the optimizer)."""
    status = tf.train.Checkpoint(model=model).restore(checkpoint_prefix)
    status.expect_partial()  # the optimizer and epoch counter in the file are not needed here
    status.assert_existing_objects_matched()
