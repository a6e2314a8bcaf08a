"""The evaluation loop: the loss and metrics of a model over a dataset, and the images it gets wrong."""

from collections import defaultdict

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from model.model_fn import METRICS, loss


class Metrics:
    """The loss and every metric of model_fn.METRICS, accumulated over the batches of an epoch.
    The metrics are given the class probabilities, the loss the logits."""

    def __init__(self):
        self.loss = tf.keras.metrics.Mean()
        self.metrics = {name: make() for name, make in METRICS.items()}

    def update(self, labels, logits, losses):
        self.loss.update_state(losses)
        probabilities = tf.nn.softmax(logits)
        for metric in self.metrics.values():
            metric.update_state(labels, probabilities)

    def result(self):
        """{"loss": ..., "accuracy": ..., ...} as floats."""
        return {"loss": float(self.loss.result())} | {name: float(m.result()) for name, m in self.metrics.items()}

    def reset(self):
        for metric in (self.loss, *self.metrics.values()):
            metric.reset_state()


def make_eval_step(model, metrics, params, strategy=None):
    """A compiled step: the predicted class of each image of a batch, updating `metrics`, split
    over the strategy's replicas."""
    strategy = strategy or tf.distribute.get_strategy()

    def replica_step(images, labels):
        logits = model(images, training=False)
        metrics.update(labels, logits, loss(labels, logits, params))
        return tf.argmax(logits, axis=1, output_type=tf.int32)

    if params.jit_compile:  # as in training.make_train_step
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def eval_step(images, labels):
        return strategy.run(replica_step, args=(images, labels))

    return eval_step


def evaluate(eval_step, metrics, dataset, num_labels, desc="Evaluating", max_misclassified=0, strategy=None):
    """Runs the model once over `dataset`: returns the metrics, up to `max_misclassified` wrongly
    classified images for each predicted class (for TensorBoard: what the model confuses), and
    the confusion matrix (confusion[true class][predicted class] counts images)."""
    strategy = strategy or tf.distribute.get_strategy()
    metrics.reset()
    misclassified = defaultdict(list)
    confusion = np.zeros((num_labels, num_labels), np.int64)
    for images, labels in tqdm(dataset, desc=desc, total=num_batches(dataset), leave=False):
        predictions = eval_step(images, labels)
        labels, predictions = local_values(strategy, labels), local_values(strategy, predictions)
        np.add.at(confusion, (labels, predictions), 1)
        if max_misclassified:
            for image, label, prediction in zip(local_values(strategy, images), labels, predictions):
                if label != prediction and len(misclassified[prediction]) < max_misclassified:
                    misclassified[prediction].append(image)
    return metrics.result(), dict(misclassified), confusion


def predict(model, dataset):
    """Class probabilities for every image of a predict_input_fn dataset, and which were readable."""

    @tf.function(reduce_retracing=True)  # the last batch is smaller: one more trace, not one per size
    def probabilities(images):
        return tf.nn.softmax(model(images, training=False))

    batches = [(probabilities(images), readable) for images, readable in tqdm(dataset, desc="Predicting", leave=False)]
    return np.concatenate([p for p, _ in batches]), np.concatenate([r for _, r in batches])


def local_values(strategy, value):
    """The parts of a distributed batch held on this machine, joined into one NumPy array."""
    return np.concatenate([part.numpy() for part in strategy.experimental_local_results(value)])


def num_batches(dataset):
    """The number of batches in a dataset, or None if tf.data cannot tell (for tqdm)."""
    # A tf.data.Dataset has a cardinality() method; a distributed dataset, a property.
    cardinality = int(dataset.cardinality() if callable(dataset.cardinality) else dataset.cardinality)
    return cardinality if cardinality >= 0 else None
