"""The training loop: train one epoch, evaluate on dev, save checkpoints, summaries, metrics."""

import json
import logging
import math
import signal
import time
from pathlib import Path

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tqdm import tqdm

from model.evaluation import (
    evaluate,
    find_checkpoint,
    latest_checkpoint,
    make_eval_step,
    num_batches,
    restore_checkpoint,
)
from model.utils import TrainingDiverged, UserError, append_json_line, save_dict_to_json

# Misclassified dev images shown in TensorBoard per predicted class, each epoch.
MAX_MISCLASSIFIED_IMAGES = 6


def set_seed(seed, deterministic=False):
    """Seeds Python's, NumPy's and TensorFlow's random generators, for reproducible runs.

    With `deterministic`, TensorFlow also runs only deterministic kernels, so that a run
    repeats to the last digit (at no visible cost on CPU; deterministic GPU kernels can be slower).
    """
    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_train_step(spec):
    """A compiled step: one gradient update on one global batch, updating spec.train_metrics.

    The batch is split over spec.strategy's replicas, each running replica_step on its part.
    """

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = spec.model(images, training=True)
            losses = spec.loss_fn(labels, logits)
            # This replica's share of the global batch's mean loss: summed over the replicas,
            # the gradients are those of the mean over the whole batch.
            loss = tf.nn.compute_average_loss(losses)
            # Unchanged unless mixed precision is on (see model_fn); apply_gradients unscales.
            scaled_loss = spec.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, spec.model.trainable_variables)
        spec.optimizer.apply_gradients(zip(gradients, spec.model.trainable_variables))
        spec.train_metrics["loss"].update_state(losses)
        spec.train_metrics["accuracy"].update_state(labels, logits)
        return loss

    if spec.jit_compile:
        # XLA compiles each replica's step; combining the replicas' gradients stays outside.
        # (Only then a function of its own: a nested tf.function made steps 20-50% slower.)
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def train_step(images, labels):
        replica_losses = spec.strategy.run(replica_step, args=(images, labels))
        return spec.strategy.reduce(tf.distribute.ReduceOp.SUM, replica_losses, axis=None)

    return train_step


def train_one_epoch(spec, train_step, dataset, epoch, params, writer, stop):
    """Trains over the whole dataset once (or until a stop is requested), with a progress bar."""
    for metric in spec.train_metrics.values():
        metric.reset_state()
    progress = tqdm(dataset, desc=f"Epoch {epoch}/{params.num_epochs}", total=num_batches(dataset))
    for batch, (images, labels) in enumerate(progress):
        loss = train_step(images, labels)
        step = int(spec.optimizer.iterations.numpy())
        if not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"Training diverged: the loss became {float(loss)} at epoch {epoch}, step {step}. "
                "Lower learning_rate in params.json (try 10x smaller). best_weights still holds the best epoch."
            )
        with writer.as_default(step=step):
            if batch == 0:
                first_replica_images = spec.strategy.experimental_local_results(images)[0]
                tf.summary.image("input_images", first_replica_images, max_outputs=4)
            if step % params.save_summary_steps == 0:
                tf.summary.scalar("loss", loss)
                tf.summary.scalar("accuracy", spec.train_metrics["accuracy"].result())
        progress.set_postfix(loss=f"{float(spec.train_metrics['loss'].result()):.3f}", refresh=False)
        if stop.requested:
            break
    return {name: float(metric.result()) for name, metric in spec.train_metrics.items()}


def write_eval_summaries(writer, step, metrics, misclassified):
    """Dev metrics of one epoch, and the images the model got wrong by predicted class."""
    with writer.as_default(step=step):
        for name, value in metrics.items():
            tf.summary.scalar(name, value)
        for predicted, images in sorted(misclassified.items()):
            tf.summary.image(f"misclassified/predicted_as_{predicted}", tf.stack(images), max_outputs=len(images))
    writer.flush()


def write_hparams(model_dir, params):
    """Records the run's hyperparameters for TensorBoard's HParams dashboard.

    The dashboard then lists this run with its train and eval scalars as metrics, so all the
    runs of a search can be compared in one table and in parallel coordinates.
    """
    # HParams takes numbers, strings and booleans; anything else is shown as JSON text.
    hparams = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in params.dict.items()}
    with tf.summary.create_file_writer(str(model_dir)).as_default():
        hp.hparams(hparams, trial_id=str(model_dir))


def save_epoch(model_dir, dev_metrics, epoch, best_accuracy, last_manager, best_manager):
    """Checkpoints the epoch into last_weights, and into best_weights if dev accuracy improved."""
    metrics = {**dev_metrics, "epoch": int(epoch)}
    # best_weights first: a run killed between the two saves resumes from the previous
    # last_weights and still finds the best accuracy so far in best_weights.
    if dev_metrics["accuracy"] > float(best_accuracy):
        logging.info(f"- Found new best accuracy {dev_metrics['accuracy']:.3f}, saving best_weights")
        best_accuracy.assign(dev_metrics["accuracy"])
        best_manager.save(checkpoint_number=int(epoch))
        save_dict_to_json(metrics, model_dir / "metrics_eval_best_weights.json")
    last_manager.save(checkpoint_number=int(epoch))
    save_dict_to_json(metrics, model_dir / "metrics_eval_last_weights.json")


def log_metrics(split, epoch, params, metrics, seconds=None):
    took = f" ({seconds:.2f} s)" if seconds is not None else ""
    logging.info(f"Epoch {epoch}/{params.num_epochs} - {split} metrics: {format_metrics(metrics)}{took}")


def format_metrics(metrics):
    return " ; ".join(f"{name}: {value:05.3f}" for name, value in metrics.items())


def saved_best_accuracy(best_weights_dir):
    """The dev accuracy recorded in a best_weights folder's checkpoint, or -1 if it has none."""
    prefix = latest_checkpoint(best_weights_dir)
    if prefix is None:
        return -1.0
    return float(tf.train.load_variable(prefix, "best_accuracy/.ATTRIBUTES/VARIABLE_VALUE"))


def check_same_precision(prefix, params):
    """Stops with a clear message when a run would resume across a change of mixed_precision.

    Mixed precision wraps the optimizer in a LossScaleOptimizer, whose saved state the plain
    optimizer cannot take, and the other way round.
    """
    saved = any(name.startswith("optimizer/inner_optimizer/") for name, _ in tf.train.list_variables(prefix))
    if saved != params.mixed_precision:
        raise UserError(
            f"The weights in {prefix} were trained with mixed_precision = {str(saved).lower()}, but "
            f"this run has mixed_precision = {str(params.mixed_precision).lower()}. Resume with the "
            "setting they were trained with, or start a new run without --restore_from."
        )


class StopRequest:
    """Turns Ctrl-C and SIGTERM into a request to stop at the next safe point.

    Stopping between two training steps, never in the middle of writing a checkpoint, keeps
    every file consistent; the epoch in progress is dropped and redone on resume. A second
    Ctrl-C stops at once.
    """

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self.request) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def request(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc_info):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train_and_evaluate(spec, train_dataset, dev_dataset, model_dir, params, restore_from=None):
    """Trains for params.num_epochs epochs in total, evaluating on dev after each one.

    Saves in model_dir: last_weights/ (the last 5 epochs), best_weights/ (best dev accuracy),
    metrics_eval_{last,best}_weights.json, history.jsonl (each epoch's dev and train metrics),
    and train_summaries/ and eval_summaries/ for TensorBoard. With restore_from, continues
    where that checkpoint stopped.
    """
    model_dir = Path(model_dir)
    epoch = tf.Variable(0, dtype=tf.int64)  # the number of epochs completed
    best_accuracy = tf.Variable(-1.0)  # below any accuracy: the first epoch is the best so far
    # The optimizer and counters are saved with the model so a resumed run continues exactly.
    checkpoint = tf.train.Checkpoint(
        model=spec.model, optimizer=spec.optimizer, epoch=epoch, best_accuracy=best_accuracy
    )
    last_manager = tf.train.CheckpointManager(checkpoint, model_dir / "last_weights", max_to_keep=5)
    best_manager = tf.train.CheckpointManager(checkpoint, model_dir / "best_weights", max_to_keep=1)

    if restore_from:
        prefix = find_checkpoint(restore_from, model_dir)
        check_same_precision(prefix, params)
        restore_checkpoint(checkpoint, prefix)
        # Keras saves the learning rate with the optimizer; params.json must win on resume.
        spec.optimizer.learning_rate.assign(params.learning_rate)
        best_accuracy.assign(max(float(best_accuracy), saved_best_accuracy(model_dir / "best_weights")))
        logging.info(f"Restored {prefix}: {int(epoch)} epochs done, best dev accuracy {float(best_accuracy):.3f}")
    else:
        logging.info("Starting from freshly initialised weights")

    # Record the hyperparameters the weights in model_dir are now trained with.
    params.save(model_dir / "params_used.json")
    write_hparams(model_dir, params)
    # Each global batch is split over the strategy's replicas (on one device: unchanged).
    train_dataset = spec.strategy.experimental_distribute_dataset(train_dataset)
    dev_dataset = spec.strategy.experimental_distribute_dataset(dev_dataset)
    train_writer = tf.summary.create_file_writer(str(model_dir / "train_summaries"))
    eval_writer = tf.summary.create_file_writer(str(model_dir / "eval_summaries"))
    train_step = make_train_step(spec)
    eval_step = make_eval_step(spec)

    if int(epoch) >= params.num_epochs:
        logging.info(f"All {params.num_epochs} epochs are done already: raise num_epochs to train more")
    with StopRequest() as stop:
        for current in range(int(epoch) + 1, params.num_epochs + 1):
            start = time.perf_counter()
            train_metrics = train_one_epoch(spec, train_step, train_dataset, current, params, train_writer, stop)
            if stop.requested:
                break  # an unfinished epoch is not saved: resuming redoes it
            log_metrics("Train", current, params, train_metrics, time.perf_counter() - start)

            dev_metrics, misclassified = evaluate(spec, eval_step, dev_dataset, "Dev", MAX_MISCLASSIFIED_IMAGES)
            log_metrics("Eval", current, params, dev_metrics)
            write_eval_summaries(eval_writer, int(spec.optimizer.iterations.numpy()), dev_metrics, misclassified)

            epoch.assign(current)
            save_epoch(model_dir, dev_metrics, epoch, best_accuracy, last_manager, best_manager)
            # One line per saved epoch, for whoever follows the run as it goes (a search's pruner)
            train_metrics = {f"train_{name}": value for name, value in train_metrics.items()}
            append_json_line({"epoch": current, **dev_metrics, **train_metrics}, model_dir / "history.jsonl")
            if stop.requested:
                break
    train_writer.flush()
    if stop.requested:
        logging.info(f"Stopped after {int(epoch)} epochs. Continue with --restore_from {model_dir / 'last_weights'}")
        raise KeyboardInterrupt
