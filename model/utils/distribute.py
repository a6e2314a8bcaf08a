"""Where training runs: one device, all GPUs of this machine, or several machines. The `distribution`
hyperparameter picks a tf.distribute strategy; the training loop runs the same under each.
`batch_size` is the global batch: each step splits it over the replicas."""

import json
import os

import tensorflow as tf

from model.utils.errors import UserError


def make_strategy(distribution):
    """The strategy that params.distribution names; call it before TensorFlow runs anything, as
    MultiWorkerMirroredStrategy must come first."""
    if distribution == "mirrored":
        # All GPUs of this machine; without GPUs, every logical CPU device (one, unless the CPU
        # was split into several, as the tests do to try this on one CPU).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if distribution == "multi_worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()  # the cluster, and this machine's role, from TF_CONFIG
    return tf.distribute.get_strategy()  # the default strategy: this one device


def check_tf_config(text):
    """Stops with a clear message unless TF_CONFIG names the cluster and this machine's place in it."""
    if text is None:
        raise UserError(
            'distribution = "multi_worker" needs the TF_CONFIG environment variable, which names every '
            "machine of the cluster and this one's role (see docs/scaling-out.md)."
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
            f"{len(machines)} {role}(s), numbered from 0. Set each machine's index (see docs/scaling-out.md)."
        )
