"""Saved weights: finding, saving, restoring and comparing checkpoints, and loading a trained model.
A training checkpoint (model, optimizer, epoch counter) is named after its epoch (ckpt-7). A kill -9 can
leave one half written: readers skip it for the newest that reads whole, and the next save deletes it."""

import errno
import logging
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from model.utils.errors import UserError
from model.utils.files import append_json_line, read_json_lines, save_json, write_json_lines
from model.utils.params import build_network, load_trained_params

# Checkpoints kept in each weights folder
KEEP = {"last_weights": 5, "best_weights": 1}


def checkpoints_in(*folders):
    """The checkpoint prefixes in weights folders, newest (highest epoch) first; found from their
    index files, not from TensorFlow's `checkpoint` file, which a kill may have left behind."""
    found = [(number(i), str(i.with_suffix(""))) for folder in folders for i in Path(folder).glob("ckpt-*.index")]
    return [prefix for n, prefix in sorted(found, reverse=True) if n is not None]


def number(prefix):
    """The epoch of a checkpoint: '.../ckpt-7' -> 7 (None if it is not named so)."""
    digits = Path(prefix).name.removeprefix("ckpt-").split(".")[0]
    return int(digits) if digits.isdecimal() else None


def is_readable(prefix):
    """Whether every value of a checkpoint can be read (a truncated or garbled one cannot)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        return all(reader.get_tensor(name) is not None for name in reader.get_variable_to_shape_map())
    except Exception:
        return False


def prune(folder, newest, keep):
    """Leaves in a weights folder the `keep` newest checkpoints up to epoch `newest`: the older
    ones, the newer ones (a kill's leftovers) and TensorFlow's half-written *_temp folders go."""
    kept = sorted({number(p) for p in checkpoints_in(folder) if number(p) <= newest}, reverse=True)[:keep]
    for path in Path(folder).glob("ckpt-*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif number(path.name) not in kept:
            path.unlink(missing_ok=True)


def find(restore_from, model_dir):
    """--restore_from (a weights folder, a folder name inside model_dir, or a prefix .../ckpt-3) as a prefix
    (a str), or as the weights folders to take the newest from. A run's last_weights stands for both its
    folders: a kill between the two saves of an epoch can leave its newest checkpoint in best_weights."""
    model_dir = Path(model_dir)
    for path in (Path(restore_from), model_dir / restore_from):
        own = path.resolve() == (model_dir / "last_weights").resolve()  # there even before the first save
        if path.name == "last_weights" and (own or path.is_dir()):
            return [path, path.parent / "best_weights"]
        if path.is_dir():
            return [path]
        if Path(f"{path}.index").is_file():
            return str(path)
    if str(restore_from) in KEEP:  # a run's own weights folder: the run is not trained yet
        raise UserError(
            f"{model_dir} holds no {restore_from} yet: train it first (python train.py --model_dir {model_dir}), "
            "or give other weights with --restore_from."
        )
    raise UserError(
        f"--restore_from {restore_from}: no such weights folder or checkpoint (looked for {restore_from} "
        f"and {model_dir / restore_from}). Give a folder such as {model_dir / 'best_weights'}."
    )


def restore(checkpoint, source, partial=False, check=None):
    """Restores `checkpoint` from `source` (a prefix, or folders: their newest readable checkpoint); returns
    the prefix restored, or None if the folders hold none. An unreadable checkpoint of a folder is skipped
    with a warning (also one that a run still training deletes while it is read); `check(prefix)` may
    refuse one. `partial`: the checkpoint may hold more than `checkpoint` (a training one holds the optimizer too)."""
    tried = set()
    while candidates := [source] if isinstance(source, str) else [p for p in checkpoints_in(*source) if p not in tried]:
        prefix = candidates[0]
        tried.add(prefix)
        try:
            compare_with_network(prefix, checkpoint.model)
            if check:
                check(prefix)
            status = checkpoint.restore(prefix)
            status.expect_partial() if partial else status.assert_existing_objects_matched()
            return prefix
        except UserError:
            raise
        except AssertionError as error:  # it lacks part of what `checkpoint` holds
            raise UserError(f"{prefix} is not a training checkpoint of this template ({error}).") from None
        except Exception as error:
            if isinstance(source, str):
                raise UserError(
                    f"The checkpoint {prefix} cannot be read ({type(error).__name__}): pick another."
                ) from None
            logging.warning(f"Warning: {prefix} cannot be read ({type(error).__name__}): trying the next newest")
    return None


def load_trained_model(model_dir, restore_from="best_weights"):
    """(params, network with its trained weights, checkpoint prefix) of the run in model_dir, built
    with the hyperparameters it trained with: what evaluate.py, predict.py and export.py use."""
    params = load_trained_params(model_dir)
    network = build_network(params)
    source = find(restore_from, model_dir)
    prefix = restore(tf.train.Checkpoint(model=network), source, partial=True)
    if prefix is None:
        raise UserError(
            f"{', '.join(map(str, source))} holds no checkpoint. Train first, or pick another --restore_from."
        )
    return params, network, prefix


def resume(checkpoint, model_dir, restore_from, check):
    """Restores the checkpoint a run continues from, and makes the run's files agree with it: the
    epochs of the history missing from the checkpoint (written before a kill) are dropped, for the
    run to redo, and the metrics files rewritten. Returns {epoch: dev metrics} and the best epoch."""
    source = find(restore_from, model_dir) if restore_from else None
    prefix = restore(checkpoint, source, check=check) if restore_from else None
    if restore_from and prefix is None and Path(source[0]).resolve() != (model_dir / "last_weights").resolve():
        raise UserError(
            f"--restore_from {restore_from} holds no checkpoint. Give a folder with one, such as another run's "
            "last_weights, or leave out --restore_from to start from fresh weights."
        )
    epoch = int(checkpoint.epoch)
    best_epoch = next((number(p) for p in checkpoints_in(model_dir / "best_weights") if is_readable(p)), 0)
    prune(model_dir / "last_weights", epoch, KEEP["last_weights"])
    prune(model_dir / "best_weights", best_epoch, KEEP["best_weights"])
    history = {record["epoch"]: record for record in read_json_lines(model_dir / "history.jsonl")}
    history = [history[e] for e in sorted(history) if e <= epoch]
    write_json_lines(history, model_dir / "history.jsonl")
    dev = {record["epoch"]: dev_metrics(record) for record in history}
    for name, at in (("last_weights", epoch), ("best_weights", best_epoch)):
        if at in dev:
            save_json(dev[at], model_dir / f"metrics_eval_{name}.json")
    if prefix:
        logging.info(f"Restored {prefix}: {epoch} epochs done")
    elif restore_from:
        logging.info(f"{restore_from} holds no checkpoint yet: starting from freshly initialised weights")
    else:
        logging.info("Starting from freshly initialised weights")
    return dev, best_epoch


def dev_metrics(record):
    """The dev metrics and epoch of a history record (without the train_ ones)."""
    return {key: value for key, value in record.items() if not key.startswith("train_")}


def save_epoch(model_dir, record, managers, is_best):
    """Saves an epoch: its history record, then best_weights if it is the best, then last_weights, so that a
    kill at any point leaves the newest checkpoint in one of them, and a history that resume() trims to it."""
    epoch = record["epoch"]
    try:
        append_json_line(record, model_dir / "history.jsonl")
        for name in ("best_weights", "last_weights") if is_best else ("last_weights",):
            managers[name].save(checkpoint_number=epoch)
            prune(model_dir / name, epoch, KEEP[name])
            save_json(dev_metrics(record), model_dir / f"metrics_eval_{name}.json")
    except (OSError, tf.errors.ResourceExhaustedError) as error:
        if getattr(error, "errno", errno.ENOSPC) not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(
            f"The disk holding {model_dir} is full: epoch {epoch} could not be saved (the epochs before it "
            f"are). Free some space, then continue with --restore_from {model_dir / 'last_weights'}."
        ) from None


def compare_with_network(prefix, network):
    """Stops with a clear message when the network saved in a checkpoint is not `network`."""
    saved = saved_network(prefix)
    with tempfile.TemporaryDirectory() as folder:  # the network's variables, named as a checkpoint names them
        current = saved_network(tf.train.Checkpoint(model=network).write(f"{folder}/ckpt"))
    differences = [
        f"{name} is {saved.get(name, 'absent')} in the weights but {current.get(name, 'absent')} in the network"
        for name in sorted(saved.keys() | current.keys(), key=lambda name: (int(name.split()[1]), name))
        if saved.get(name) != current.get(name)
    ]
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise UserError(
            f"The weights in {prefix} do not fit the network built from params.json: the architecture "
            f"changed since they were saved. {len(differences)} variable(s) differ: {shown}. Use the "
            "hyperparameters those weights were trained with (see the run's params_used.json), or "
            "train from scratch without --restore_from."
        )


def saved_network(prefix):
    """{'layer 5 kernel': shape} for each variable of the network saved in a checkpoint. A
    checkpoint stores each variable once, under the first path that reaches it (often through
    the optimizer), so we follow the object graph from model/_operations instead."""
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))

    def child(node, name):  # the id of a node's child called `name`, or None (a checkpoint of something else)
        children = graph.nodes[node].children if node is not None else []
        return next((c.node_id for c in children if c.local_name == name), None)

    operations = child(child(0, "model"), "_operations")
    return {
        f"layer {layer.local_name} {attribute.local_name.lstrip('_')}": shapes[value.checkpoint_key]
        for layer in (graph.nodes[operations].children if operations is not None else [])
        for attribute in graph.nodes[layer.node_id].children
        for value in graph.nodes[attribute.node_id].attributes
        if value.name == "VARIABLE_VALUE"  # Keras 3 stores the kernel as _kernel: the "_" goes
    }
