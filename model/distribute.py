"""Where training runs: one device, all GPUs of this machine, or several machines.

The `distribution` hyperparameter picks a tf.distribute strategy; the training loop runs
the same under each. `batch_size` is the global batch: each step splits it over the replicas.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path

import tensorflow as tf

from model.errors import UserError


def make_strategy(distribution):
    """The tf.distribute strategy named by params.distribution ("none", "mirrored", "multi_worker").

    Call it first thing: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    """
    if distribution == "mirrored":
        # All GPUs of this machine; without GPUs, every logical CPU device (one, unless the CPU
        # was split into several, as the tests do to try this on one CPU).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if distribution == "multi_worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        # The cluster (addresses, this worker's index) is read from TF_CONFIG.
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()  # the default strategy: this one device


def check_tf_config(text):
    """Stops with a clear message unless TF_CONFIG names the cluster and this machine's place in it."""
    if text is None:
        raise UserError(
            'distribution = "multi_worker" needs the TF_CONFIG environment variable, which names every '
            "machine of the cluster and this one's role (see README, Scaling out)."
        )
    try:
        config = json.loads(text)
        role, index = config["task"]["type"], config["task"]["index"]
        machines = config["cluster"][role]
    except (ValueError, KeyError, TypeError) as error:
        example = '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'
        raise UserError(
            f"TF_CONFIG cannot be used ({type(error).__name__}: {error}); it looks like {example}."
        ) from None
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(machines):
        raise UserError(
            f"TF_CONFIG gives this machine the task index {json.dumps(index)}, but its cluster lists "
            f"{len(machines)} {role}(s), numbered from 0. Set each machine's index (see README, Scaling out)."
        )


def is_chief(strategy):
    """True for the one process that writes checkpoints, summaries, metrics and logs.

    Without a cluster that is this process; in a cluster, the "chief" task if there is one,
    else worker 0.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


@contextlib.contextmanager
def output_folder(strategy, model_dir):
    """The folder this process writes its run into: model_dir, or a temporary one.

    Every worker of a cluster must save checkpoints (saving is a collective operation), but
    only the chief's may land in model_dir; the others' go to a folder deleted at the end.
    """
    if is_chief(strategy):
        yield Path(model_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="worker_") as folder:
            yield Path(folder)
