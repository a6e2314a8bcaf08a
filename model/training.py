"""The training loop: train an epoch, evaluate on dev, save the checkpoints, metrics and summaries."""

import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from model import model_fn
from model.evaluation import Metrics, evaluate, local_values, make_eval_step, num_batches
from model.utils import checkpoints, summaries
from model.utils.errors import TrainingDiverged, UserError
from model.utils.files import load_json
from model.utils.params import LOWER_IS_BETTER, Params, build_network
from model.utils.tasks import Task

keras = tf.keras
# Misclassified dev images shown in TensorBoard per predicted class, each epoch
MAX_MISCLASSIFIED = 6


@dataclass
class ModelSpec:
    """Everything the training loop needs to know about the model."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    train_metrics: Metrics
    eval_metrics: Metrics
    strategy: tf.distribute.Strategy  # where the variables live, and so where the steps run
    params: Params  # the run's hyperparameters, which the loss may read
    task: Task  # images or text: the loss and metrics
    class_weights: tf.Tensor = None  # the weight of each class in the training loss (None: all 1)


def set_seed(seed, deterministic=False):
    """Seeds Python, NumPy and TensorFlow; `deterministic` also makes TensorFlow run deterministic
    kernels only, so that a run repeats to the last digit (they can be slower on a GPU)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def model_spec(params, strategy, train_labels=(), task=model_fn.TASK):
    """The network, optimizer and metrics of a `task` training run on examples of `train_labels`, their
    variables placed by `strategy`."""
    # Mixed precision computes in float16 and keeps the weights in float32: about 2x faster on
    # recent GPUs, much slower on CPUs. The policy applies to the layers built after it.
    keras.mixed_precision.set_global_policy("mixed_float16" if params.mixed_precision else "float32")
    if params.mixed_precision and not tf.config.list_physical_devices("GPU"):
        logging.warning("mixed_precision is on but there is no GPU: expect training to be several times slower")
    with strategy.scope():
        model = build_network(params)
        steps_per_epoch = params.overfit_batches or max(1, math.ceil(len(train_labels) / params.batch_size))
        optimizer = model_fn.optimizer(params, steps_per_epoch)
        if params.mixed_precision:
            # Scales the loss up before the gradients are taken, so that small float16 gradients
            # don't round to zero; the train step calls optimizer.scale_loss for it.
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        # The optimizer's variables are created now, in the strategy's scope, rather than in the
        # first step: so they are placed like the model's, and a checkpoint can fill them.
        optimizer.build(model.trainable_variables)
        weights = (
            class_weights(np.hstack(train_labels), params.num_labels) if params.class_weight == "balanced" else None
        )
        return ModelSpec(model, optimizer, Metrics(task), Metrics(task), strategy, params, task, weights)


def class_weights(labels, num_labels):
    """ "balanced" class weights: len(labels) / (num_labels * the images of the class), so that
    each class weighs the same in the loss (as scikit-learn's; a class without images gets 0)."""
    counts = tf.math.bincount(tf.constant(labels, tf.int32), minlength=num_labels, dtype=tf.float32)
    return tf.math.divide_no_nan(float(len(labels)), num_labels * counts)


def make_train_step(spec):
    """A compiled step: one gradient update on a global batch, split over spec.strategy's replicas."""

    def replica_step(inputs, labels):
        with tf.GradientTape() as tape:
            logits = spec.model(inputs, training=True)
            losses = spec.task.loss(labels, logits, spec.params)  # of each image, or each word
            if spec.class_weights is not None:
                losses *= tf.gather(spec.class_weights, tf.maximum(labels, 0))
            # This replica's share of the global batch's mean loss over its examples, padding (label -1)
            # left out: summed over the replicas, the gradients are those of the mean over the whole batch.
            examples = tf.reduce_sum(tf.cast(labels >= 0, losses.dtype)) * spec.strategy.num_replicas_in_sync
            loss = tf.math.divide_no_nan(tf.reduce_sum(tf.where(labels >= 0, losses, 0.0)), examples)
            scaled_loss = spec.optimizer.scale_loss(loss)  # unchanged unless mixed precision is on
        gradients = tape.gradient(scaled_loss, spec.model.trainable_variables)
        spec.optimizer.apply_gradients(zip(gradients, spec.model.trainable_variables))
        spec.train_metrics.update(labels, logits, losses)
        return loss

    if spec.params.jit_compile:
        # XLA compiles each replica's step; combining the replicas' gradients stays outside.
        # (Only then a function of its own: a nested tf.function made steps 20-50% slower.)
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function(reduce_retracing=True)  # sentences: one trace for any length, not one per batch's
    def train_step(inputs, labels):
        replica_losses = spec.strategy.run(replica_step, args=(inputs, labels))
        return spec.strategy.reduce(tf.distribute.ReduceOp.SUM, replica_losses, axis=None)

    return train_step


def train_one_epoch(spec, train_step, dataset, epoch, params, writer, stop):
    """Trains over the whole dataset once (or until a stop is requested), with a progress bar."""
    spec.train_metrics.reset()
    progress = tqdm(dataset, desc=f"Epoch {epoch}/{params.num_epochs}", total=num_batches(dataset))
    for batch, (inputs, labels) in enumerate(progress):
        loss = float(train_step(inputs, labels))
        step = int(spec.optimizer.iterations.numpy())
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"Training diverged: the loss became {loss} at epoch {epoch}, step {step}. Lower "
                "learning_rate in params.json (try 10x smaller); the epochs saved before are kept."
            )
        if batch == 0 and spec.task.name == "images":
            summaries.write_images(
                writer, step, "train_inputs", summaries.side_by_side(local_values(spec.strategy, inputs)[:4])
            )
        if step % params.save_summary_steps == 0:
            rate = float(tf.convert_to_tensor(spec.optimizer.learning_rate))  # now, as lr_schedule sets it
            summaries.write_scalars(
                writer, step, "train", {**spec.train_metrics.result(), "loss": loss, "learning_rate": rate}
            )
        progress.set_postfix(loss=f"{spec.train_metrics.loss.result():.3f}", refresh=False)
        if stop.requested:
            break
    return spec.train_metrics.result()


class StopRequest:
    """Turns Ctrl-C and SIGTERM into a request to stop at the next safe point: between two steps,
    never while a checkpoint is written. The epoch in progress is redone on resume. A second
    Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self.request) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def request(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous[signal.SIGINT])

    def __exit__(self, *exc_info):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def check_same_precision(prefix, params):
    """Stops with a clear message when a run would resume across a change of mixed_precision: the
    LossScaleOptimizer it adds saves a state that the plain optimizer cannot take, and back."""
    saved = any(name.startswith("optimizer/inner_optimizer/") for name, _ in tf.train.list_variables(prefix))
    if saved != params.mixed_precision:
        raise UserError(
            f"The weights in {prefix} were trained with mixed_precision = {str(saved).lower()}, but this run "
            f"has mixed_precision = {str(params.mixed_precision).lower()}. Resume with the setting they were "
            "trained with, or start a new run without --restore_from."
        )


def train_and_evaluate(
    spec, train_dataset, dev_dataset, model_dir, params, class_names, restore_from=None, words=None, on_epoch=None
):
    """Trains for params.num_epochs epochs in total, evaluating on dev after each one, and saves
    what RUN_OUTPUTS (model/utils/run_folder.py) lists. With restore_from, continues where it stopped.
    on_epoch() is called when history.jsonl is up to date: at the start and after each epoch (train.py
    logs the metrics to MLflow so). Returns why it stopped early, or None."""
    on_epoch = on_epoch or (lambda: None)
    model_dir = Path(model_dir)
    # The optimizer and epoch counter are saved with the model, so that a resumed run continues exactly.
    checkpoint = tf.train.Checkpoint(model=spec.model, optimizer=spec.optimizer, epoch=tf.Variable(0, dtype=tf.int64))
    history, best_epoch = checkpoints.resume(
        checkpoint, model_dir, restore_from, lambda p: check_same_precision(p, params)
    )
    if restore_from and not isinstance(spec.optimizer.learning_rate, tf.Tensor):
        spec.optimizer.learning_rate.assign(params.learning_rate)  # Keras saved the old one; params.json wins
    best = history.get(best_epoch, {}).get(params.best_metric)
    # Early stopping counts the epochs since the best one, or since this resume if it raised
    # num_epochs or the patience (the run may have stopped early: the user asks for more)
    since = max(best_epoch, int(checkpoint.epoch) if raised_limits(model_dir, params) else 0)
    managers = {
        name: tf.train.CheckpointManager(checkpoint, model_dir / name, keep) for name, keep in checkpoints.KEEP.items()
    }
    params.save(model_dir / "params_used.json")  # the hyperparameters the weights are now trained with
    writer = summaries.write_hparams(model_dir, params)  # TensorBoard's: the hyperparameters, curves and images
    if best_epoch in history:
        summaries.write_results(writer, best_epoch, "best_dev", history[best_epoch])
    # Each global batch is split over the strategy's replicas (on one device: unchanged).
    train_dataset = spec.strategy.experimental_distribute_dataset(train_dataset)
    dev_dataset = spec.strategy.experimental_distribute_dataset(dev_dataset)
    train_step = make_train_step(spec)
    eval_step = make_eval_step(spec.model, spec.eval_metrics, params, spec.strategy)

    on_epoch()
    if int(checkpoint.epoch) >= params.num_epochs:
        logging.info(f"All {params.num_epochs} epochs are done already: raise num_epochs to train more")
    stopped_early = None
    with StopRequest() as stop:
        for epoch in range(int(checkpoint.epoch) + 1, params.num_epochs + 1):
            if params.early_stopping_patience and epoch - 1 - since >= params.early_stopping_patience:
                stopped_early = (
                    f"{params.best_metric} on dev did not improve for {epoch - 1 - since} epochs after epoch "
                    f"{since} (early_stopping_patience = {params.early_stopping_patience})"
                )
                logging.info(f"Stopped early: {stopped_early}. Raise early_stopping_patience to train further.")
                break
            start = time.perf_counter()
            train = train_one_epoch(spec, train_step, train_dataset, epoch, params, writer, stop)
            if stop.requested:
                break  # an unfinished epoch is not saved: resuming redoes it
            log_metrics("Train", epoch, params, train, time.perf_counter() - start)

            dev, misclassified, _ = evaluate(
                eval_step, spec.eval_metrics, dev_dataset, class_names, "Dev", MAX_MISCLASSIFIED, spec.strategy
            )
            log_metrics("Eval", epoch, params, dev)
            step = int(spec.optimizer.iterations.numpy())
            summaries.write_scalars(writer, step, "dev", dev)
            summaries.write_misclassified(writer, step, misclassified, class_names, words)

            checkpoint.epoch.assign(epoch)
            value = dev[params.best_metric]
            is_best = best is None or (value < best if params.best_metric in LOWER_IS_BETTER else value > best)
            if is_best:
                logging.info(f"- Found new best {params.best_metric} {value:.3f}, saving best_weights")
                best, since = value, epoch
                summaries.write_results(writer, epoch, "best_dev", dev)
            record = {"epoch": epoch, **dev, **{f"train_{name}": value for name, value in train.items()}}
            checkpoints.save_epoch(model_dir, record, managers, is_best)
            on_epoch()
            if stop.requested:
                break
    writer.flush()
    if stop.requested:
        logging.info(
            f"Stopped after {int(checkpoint.epoch)} epochs. Continue with --restore_from {model_dir / 'last_weights'}"
        )
        raise KeyboardInterrupt
    return stopped_early


def raised_limits(model_dir, params):
    """Whether this run resumes one that had fewer epochs or a shorter patience (its params_used.json)."""
    earlier = model_dir / "params_used.json"
    if not earlier.is_file():
        return False
    earlier = load_json(earlier)
    patience = params.early_stopping_patience or math.inf
    return params.num_epochs > earlier.get("num_epochs", 0) or patience > (
        earlier.get("early_stopping_patience") or math.inf
    )


def log_metrics(split, epoch, params, metrics, seconds=None):
    took = f" ({seconds:.2f} s)" if seconds is not None else ""
    logging.info(f"Epoch {epoch}/{params.num_epochs} - {split} metrics: {format_metrics(metrics)}{took}")


def format_metrics(metrics):
    return " ; ".join(f"{name}: {value:05.3f}" for name, value in metrics.items())
