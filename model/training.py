"""The training loop: train an epoch, evaluate on dev, save checkpoints, metrics and summaries."""

import errno
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

from model import checkpoints, model_fn, summaries
from model.errors import TrainingDiverged, UserError
from model.evaluation import Metrics, evaluate, local_values, make_eval_step, num_batches
from model.files import append_json_line, read_json_lines, save_json, write_json_lines
from model.params import LOWER_IS_BETTER, build_network

keras = tf.keras
# Misclassified dev images shown in TensorBoard per predicted class, each epoch.
MAX_MISCLASSIFIED_IMAGES = 6


@dataclass
class ModelSpec:
    """Everything the training loop needs to know about the model."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    train_metrics: Metrics
    eval_metrics: Metrics
    strategy: tf.distribute.Strategy  # where the variables live, and so where the steps run
    jit_compile: bool = False  # compile the train and eval steps with XLA


def set_seed(seed, deterministic=False):
    """Seeds Python's, NumPy's and TensorFlow's random generators, for reproducible runs.

    With `deterministic`, TensorFlow also runs only deterministic kernels, so that a run
    repeats to the last digit (at no visible cost on CPU; deterministic GPU kernels can be slower).
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def model_spec(params, strategy):
    """The network, optimizer and metrics of a training run, their variables placed by `strategy`."""
    # Mixed precision computes in float16 and keeps the weights in float32: about 2x faster
    # on recent GPUs, much slower on CPUs. The policy applies to the layers built after it.
    keras.mixed_precision.set_global_policy("mixed_float16" if params.mixed_precision else "float32")
    if params.mixed_precision and not tf.config.list_physical_devices("GPU"):
        logging.warning("mixed_precision is on but there is no GPU: expect training to be several times slower")
    with strategy.scope():
        model = build_network(params)
        optimizer = model_fn.optimizer(params)
        if params.mixed_precision:
            # Scales the loss up before the gradients are taken, so small float16 gradients
            # don't round to zero; the train step calls optimizer.scale_loss for it.
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        # The optimizer's variables are created now, in the strategy's scope, rather than in the
        # first step: so they are placed like the model's and a checkpoint can fill them.
        optimizer.build(model.trainable_variables)
        return ModelSpec(model, optimizer, Metrics(), Metrics(), strategy, params.jit_compile)


def make_train_step(spec):
    """A compiled step: one gradient update on one global batch, updating spec.train_metrics.

    The batch is split over spec.strategy's replicas, each running replica_step on its part.
    """

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = spec.model(images, training=True)
            losses = model_fn.per_image_loss(labels, logits)
            # This replica's share of the global batch's mean loss: summed over the replicas,
            # the gradients are those of the mean over the whole batch.
            loss = tf.nn.compute_average_loss(losses)
            # Unchanged unless mixed precision is on (see model_spec); apply_gradients unscales.
            scaled_loss = spec.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, spec.model.trainable_variables)
        spec.optimizer.apply_gradients(zip(gradients, spec.model.trainable_variables))
        spec.train_metrics.update(labels, logits, losses)
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
    spec.train_metrics.reset()
    progress = tqdm(dataset, desc=f"Epoch {epoch}/{params.num_epochs}", total=num_batches(dataset))
    for batch, (images, labels) in enumerate(progress):
        loss = float(train_step(images, labels))
        step = int(spec.optimizer.iterations.numpy())
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"Training diverged: the loss became {loss} at epoch {epoch}, step {step}. Lower "
                "learning_rate in params.json (try 10x smaller). best_weights still holds the best epoch."
            )
        if batch == 0:
            summaries.write_images(writer, step, "input_images", local_values(spec.strategy, images)[:4])
        if step % params.save_summary_steps == 0:
            summaries.write_scalars(writer, step, {**spec.train_metrics.result(), "loss": loss})
        progress.set_postfix(loss=f"{spec.train_metrics.loss.result():.3f}", refresh=False)
        if stop.requested:
            break
    return spec.train_metrics.result()


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


def is_better(value, best, metric):
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def resume(checkpoint, model_dir, restore_from, params):
    """Restores the checkpoint to continue from, and makes the run's files agree with it.

    Returns the history (one record per epoch done) and the best weights' epoch. The epoch
    records written before a kill that the checkpoint does not hold are dropped, to be redone.
    """
    last, best = model_dir / "last_weights", model_dir / "best_weights"
    prefix = None
    if restore_from:
        source = checkpoints.find(restore_from, model_dir)
        prefix = checkpoints.restore(checkpoint, source, check=lambda prefix: check_same_precision(prefix, params))
        if prefix is None:
            logging.info(f"{source[0]} holds no checkpoint yet: starting from freshly initialised weights")
    epoch = int(checkpoint.epoch)
    best_prefix = next((p for p in checkpoints.checkpoints_in(best) if checkpoints.is_readable(p)), None)
    best_epoch = checkpoints.number(best_prefix) if best_prefix else None
    checkpoints.prune(last, epoch, checkpoints.KEEP["last_weights"])
    checkpoints.prune(best, best_epoch or 0, checkpoints.KEEP["best_weights"])
    history = {record["epoch"]: record for record in read_json_lines(model_dir / "history.jsonl")}
    history = [history[e] for e in sorted(history) if e <= epoch]
    write_json_lines(history, model_dir / "history.jsonl")
    by_epoch = {record["epoch"]: dev_metrics(record) for record in history}
    for name, at in (("last_weights", epoch), ("best_weights", best_epoch)):
        if at in by_epoch:
            save_json(by_epoch[at], model_dir / f"metrics_eval_{name}.json")
    if prefix:
        logging.info(
            f"Restored {prefix}: {epoch} epochs done, best dev {params.best_metric} so far at epoch {best_epoch}"
        )
    else:
        logging.info("Starting from freshly initialised weights")
    return by_epoch, best_epoch


def dev_metrics(record):
    """The dev metrics and epoch of a history record (without the train_ ones)."""
    return {key: value for key, value in record.items() if not key.startswith("train_")}


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


def save_epoch(model_dir, record, managers, is_best):
    """Saves an epoch: its history record, then best_weights if it is the best, then last_weights.

    In this order, a kill at any point leaves the newest checkpoint, in last_weights or
    best_weights, and a history that resume() trims to it.
    """
    epoch, metrics = record["epoch"], dev_metrics(record)
    try:
        append_json_line(record, model_dir / "history.jsonl")
        for name in ("best_weights", "last_weights") if is_best else ("last_weights",):
            managers[name].save(checkpoint_number=epoch)
            checkpoints.prune(model_dir / name, epoch, checkpoints.KEEP[name])
            save_json(metrics, model_dir / f"metrics_eval_{name}.json")
    except (OSError, tf.errors.ResourceExhaustedError) as error:
        if getattr(error, "errno", errno.ENOSPC) not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(
            f"The disk holding {model_dir} is full: epoch {epoch} could not be saved (the epochs before it are). "
            f"Free some space, then continue with --restore_from {model_dir / 'last_weights'}."
        ) from None


def train_and_evaluate(spec, train_dataset, dev_dataset, model_dir, params, restore_from=None):
    """Trains for params.num_epochs epochs in total, evaluating on dev after each one.

    Saves in model_dir: last_weights/ (the last 5 epochs), best_weights/ (the best dev epoch by
    params.best_metric), metrics_eval_{last,best}_weights.json, history.jsonl (each epoch's dev
    and train metrics), and train_summaries/ and eval_summaries/ for TensorBoard. With
    restore_from, continues where that checkpoint stopped.
    """
    model_dir = Path(model_dir)
    # The optimizer and epoch counter are saved with the model, so a resumed run continues exactly.
    checkpoint = tf.train.Checkpoint(model=spec.model, optimizer=spec.optimizer, epoch=tf.Variable(0, dtype=tf.int64))
    history, best_epoch = resume(checkpoint, model_dir, restore_from, params)
    if restore_from and not isinstance(spec.optimizer.learning_rate, tf.Tensor):
        # Keras saves the learning rate with the optimizer; params.json must win on resume.
        spec.optimizer.learning_rate.assign(params.learning_rate)
    best = history.get(best_epoch, {}).get(params.best_metric)
    managers = {
        name: tf.train.CheckpointManager(checkpoint, model_dir / name, max_to_keep=keep)
        for name, keep in checkpoints.KEEP.items()
    }
    # Record the hyperparameters the weights in model_dir are now trained with.
    params.save(model_dir / "params_used.json")
    summaries.write_hparams(model_dir, params)
    # Each global batch is split over the strategy's replicas (on one device: unchanged).
    train_dataset = spec.strategy.experimental_distribute_dataset(train_dataset)
    dev_dataset = spec.strategy.experimental_distribute_dataset(dev_dataset)
    train_writer = tf.summary.create_file_writer(str(model_dir / "train_summaries"))
    eval_writer = tf.summary.create_file_writer(str(model_dir / "eval_summaries"))
    train_step = make_train_step(spec)
    eval_step = make_eval_step(spec.model, spec.eval_metrics, spec.strategy, spec.jit_compile)

    if int(checkpoint.epoch) >= params.num_epochs:
        logging.info(f"All {params.num_epochs} epochs are done already: raise num_epochs to train more")
    with StopRequest() as stop:
        for epoch in range(int(checkpoint.epoch) + 1, params.num_epochs + 1):
            start = time.perf_counter()
            train_metrics = train_one_epoch(spec, train_step, train_dataset, epoch, params, train_writer, stop)
            if stop.requested:
                break  # an unfinished epoch is not saved: resuming redoes it
            log_metrics("Train", epoch, params, train_metrics, time.perf_counter() - start)

            dev, misclassified = evaluate(
                eval_step, spec.eval_metrics, dev_dataset, "Dev", MAX_MISCLASSIFIED_IMAGES, spec.strategy
            )
            log_metrics("Eval", epoch, params, dev)
            step = int(spec.optimizer.iterations.numpy())
            summaries.write_scalars(eval_writer, step, dev)
            summaries.write_misclassified(eval_writer, step, misclassified)

            checkpoint.epoch.assign(epoch)
            is_best = is_better(dev[params.best_metric], best, params.best_metric)
            if is_best:
                logging.info(
                    f"- Found new best {params.best_metric} {dev[params.best_metric]:.3f}, saving best_weights"
                )
                best = dev[params.best_metric]
            record = {"epoch": epoch, **dev, **{f"train_{name}": value for name, value in train_metrics.items()}}
            save_epoch(model_dir, record, managers, is_best)
            if stop.requested:
                break
    train_writer.flush()
    if stop.requested:
        logging.info(
            f"Stopped after {int(checkpoint.epoch)} epochs. Continue with --restore_from {model_dir / 'last_weights'}"
        )
        raise KeyboardInterrupt


def log_metrics(split, epoch, params, metrics, seconds=None):
    took = f" ({seconds:.2f} s)" if seconds is not None else ""
    logging.info(f"Epoch {epoch}/{params.num_epochs} - {split} metrics: {format_metrics(metrics)}{took}")


def format_metrics(metrics):
    return " ; ".join(f"{name}: {value:05.3f}" for name, value in metrics.items())
