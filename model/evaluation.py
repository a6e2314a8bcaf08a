"""The evaluation loop: the loss and metrics of a model over a dataset, and the images it gets wrong."""

from collections import defaultdict

import numpy as np
import tensorflow as tf
from tqdm import tqdm


class Metrics:
    """The loss and every metric of a task (model_fn.METRICS, text_model_fn.METRICS), accumulated over
    the batches of an epoch, each example weighed by whether it is one: padding (label -1) never counts.
    The metrics are given the class probabilities, the loss the logits."""

    def __init__(self, task):
        self.task = task
        self.loss = tf.keras.metrics.Mean()
        self.metrics = {name: make() for name, make in task.metrics.items()}
        self.per_kind = {}  # the split metrics of each kind (entity type) at the last evaluation

    def update(self, labels, logits, losses):
        # One example per row, words and images alike: Keras would average a sentence's words first, weighing
        # each batch by its padded length
        labels, losses = tf.reshape(labels, [-1]), tf.reshape(losses, [-1])
        logits = tf.reshape(logits, [-1, tf.shape(logits)[-1]])
        weights = tf.cast(labels >= 0, tf.float32)
        self.loss.update_state(losses, sample_weight=weights)
        probabilities = tf.nn.softmax(logits)
        for metric in self.metrics.values():
            metric.update_state(tf.maximum(labels, 0), probabilities, sample_weight=weights)

    def result(self):
        """{"loss": ..., "accuracy": ..., ...} as floats."""
        return {"loss": float(self.loss.result())} | {name: float(m.result()) for name, m in self.metrics.items()}

    def split_result(self, true_sequences, predicted_sequences, label_names):
        """The task's metrics of a whole split (entity F1), from every sequence's true and predicted labels."""
        if self.task.split_metrics is None:
            return {}
        overall, self.per_kind = self.task.split_metrics(true_sequences, predicted_sequences, label_names)
        return overall

    def reset(self):
        for metric in (self.loss, *self.metrics.values()):
            metric.reset_state()


def make_eval_step(model, metrics, params, strategy=None):
    """A compiled step: the predicted class of each example of a batch (of each word, for text),
    updating `metrics`, split over the strategy's replicas."""
    strategy = strategy or tf.distribute.get_strategy()

    def replica_step(inputs, labels):
        logits = model(inputs, training=False)
        metrics.update(labels, logits, metrics.task.loss(labels, logits, params))
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    if params.jit_compile:  # as in training.make_train_step
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function(reduce_retracing=True)  # as training's step
    def eval_step(inputs, labels):
        return strategy.run(replica_step, args=(inputs, labels))

    return eval_step


def evaluate(eval_step, metrics, dataset, label_names, desc="Evaluating", max_misclassified=0, strategy=None):
    """Runs the model once over `dataset`: returns the metrics, up to `max_misclassified` wrongly
    classified images for each predicted class (for TensorBoard: what the model confuses; for text, a
    list of sentences with a wrong tag: their words, true and predicted tags), and the confusion
    matrix (confusion[true class][predicted class] counts images, or words)."""
    strategy = strategy or tf.distribute.get_strategy()
    metrics.reset()
    misclassified, sequences, sentences = defaultdict(list), [], []
    confusion = np.zeros((len(label_names), len(label_names)), np.int64)
    for inputs, labels in tqdm(dataset, desc=desc, total=num_batches(dataset), leave=False):
        predictions = eval_step(inputs, labels)
        labels, predictions = local_values(strategy, labels), local_values(strategy, predictions)
        real = labels >= 0  # not padding
        np.add.at(confusion, (labels[real], predictions[real]), 1)
        if labels.ndim == 2:  # sequences: each sentence's words, for the metrics of a whole split
            words = local_values(strategy, inputs["words"])
            for true, predicted, r, ids in zip(labels, predictions, real, words):
                sequences.append((true[r], predicted[r]))
                if len(sentences) < max_misclassified and (true[r] != predicted[r]).any():
                    sentences.append((ids[r], true[r], predicted[r]))
        elif max_misclassified:
            for image, label, prediction in zip(local_values(strategy, inputs), labels, predictions):
                if label != prediction and len(misclassified[prediction]) < max_misclassified:
                    misclassified[prediction].append(image)
    results = metrics.result()
    if sequences:
        results |= metrics.split_result(*zip(*sequences), label_names)
    return results, sentences if sequences else dict(misclassified), confusion


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
