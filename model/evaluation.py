"""The evaluation loop, and finding and restoring saved weights."""

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2
from tqdm import tqdm

from model.utils import UserError, checkpoints_in


def make_eval_step(spec):
    """A compiled step: predictions for one batch, updating spec.eval_metrics.

    The batch is split over spec.strategy's replicas, each running replica_step on its part.
    """

    def replica_step(images, labels):
        logits = spec.model(images, training=False)
        spec.eval_metrics["loss"].update_state(spec.loss_fn(labels, logits))
        spec.eval_metrics["accuracy"].update_state(labels, logits)
        return tf.argmax(logits, axis=1, output_type=tf.int32)

    if spec.jit_compile:  # as in make_train_step
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def eval_step(images, labels):
        return spec.strategy.run(replica_step, args=(images, labels))

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
        predictions = eval_step(images, labels)
        if max_misclassified:
            batch = zip(*(local_values(spec.strategy, value) for value in (images, labels, predictions)))
            for image, label, prediction in batch:
                if label != prediction and len(misclassified[prediction]) < max_misclassified:
                    misclassified[prediction].append(image)
    metrics = {name: float(metric.result()) for name, metric in spec.eval_metrics.items()}
    return metrics, dict(misclassified)


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


def latest_checkpoint(folder):
    """The newest checkpoint in a weights folder that can be read, or None.

    A run killed in the middle of saving can leave the newest one unreadable: skip it.
    """
    for prefix in checkpoints_in(folder):
        try:
            tf.train.load_checkpoint(prefix)
            return prefix
        except tf.errors.OpError:
            continue
    return None


def find_checkpoint(restore_from, model_dir):
    """Resolves --restore_from to a checkpoint prefix.

    Accepts a weights folder (`experiments/base_model/last_weights`: its latest checkpoint),
    a checkpoint prefix (`.../last_weights/ckpt-3`), or a folder name inside model_dir
    (`best_weights`).
    """
    candidates = [Path(restore_from), Path(model_dir) / restore_from]
    for path in candidates:
        if path.is_dir():
            prefix = latest_checkpoint(path)
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
    status = restore_checkpoint(tf.train.Checkpoint(model=model), checkpoint_prefix)
    status.expect_partial()  # the optimizer and epoch counter in the file are not needed here


def restore_checkpoint(checkpoint, checkpoint_prefix):
    """Restores a tf.train.Checkpoint, after checking that the saved network is checkpoint.model's."""
    # Compare first: a failed restore would leave half-restored variables behind.
    saved, current = saved_model_variables(checkpoint_prefix), current_model_variables(checkpoint.model)
    differences = compare_variables(saved, current)
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise UserError(
            f"The weights in {checkpoint_prefix} do not fit the network built from params.json: the "
            f"architecture changed since they were saved. {len(differences)} variable(s) differ: {shown}. "
            "Use the hyperparameters those weights were trained with (see the run's params_used.json), "
            "or train from scratch without --restore_from."
        )
    status = checkpoint.restore(checkpoint_prefix)
    status.assert_existing_objects_matched()
    return status


def saved_model_variables(checkpoint_prefix):
    """{'layer 5 kernel': shape} for each variable of the network saved in a checkpoint.

    A checkpoint stores each variable once, under the first path that reaches it (often
    through the optimizer), so we follow the object graph from model/_operations instead.
    """
    reader = tf.train.load_checkpoint(checkpoint_prefix)
    shapes = reader.get_variable_to_shape_map()
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))

    def child(node_id, name):
        """The id of the child called `name` of a node, or None (a checkpoint of something else)."""
        if node_id is None:
            return None
        return next((c.node_id for c in graph.nodes[node_id].children if c.local_name == name), None)

    operations = child(child(0, "model"), "_operations")
    variables = {}
    for layer in graph.nodes[operations].children if operations is not None else []:
        for attribute in graph.nodes[layer.node_id].children:
            for value in graph.nodes[attribute.node_id].attributes:
                if value.name == "VARIABLE_VALUE":
                    name = attribute.local_name.lstrip("_")  # Keras 3 stores the kernel as _kernel
                    variables[f"layer {layer.local_name} {name}"] = shapes[value.checkpoint_key]
    return variables


def current_model_variables(model):
    """{'layer 5 kernel': shape} for each variable of a network, as a checkpoint would name it."""
    with tempfile.TemporaryDirectory() as folder:
        return saved_model_variables(tf.train.Checkpoint(model=model).write(f"{folder}/ckpt"))


def compare_variables(saved, current):
    """Human-readable differences between two {name: shape} dicts."""

    def number(name):  # sort 'layer 10' after 'layer 9'
        return int(name.split()[1]), name

    return [
        f"{name} is {saved.get(name, 'absent')} in the weights but {current.get(name, 'absent')} in the network"
        for name in sorted(saved.keys() | current.keys(), key=number)
        if saved.get(name) != current.get(name)
    ]
