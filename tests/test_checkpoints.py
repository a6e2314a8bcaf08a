"""model/utils/checkpoints.py: finding, pruning and restoring checkpoints, skipping those a kill damaged."""

import errno
import json
import logging

import pytest
import tensorflow as tf
from conftest import tiny_params

from model import input_fn, model_fn  # noqa: F401  (they declare the hyperparameters params are checked against)
from model.utils import checkpoints
from model.utils.errors import UserError
from model.utils.params import build_network, load_params


@pytest.fixture
def saved(tmp_path):
    """last_weights with the checkpoints of epochs 1 to 4 of a tiny network: (folder, network)."""
    (tmp_path / "params.json").write_text(json.dumps(tiny_params()))
    network = build_network(load_params(tmp_path))
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=network), tmp_path / "last_weights", max_to_keep=None
    )
    for epoch in range(1, 5):  # each checkpoint's first kernel is filled with its epoch
        network.layers[1].kernel.assign(tf.fill(network.layers[1].kernel.shape, float(epoch)))
        manager.save(checkpoint_number=epoch)
    return tmp_path / "last_weights", network


def restored_epoch(network):
    return float(network.layers[1].kernel.numpy().flat[0])


def test_the_newest_readable_checkpoint_is_restored_and_the_unreadable_ones_named(saved, caplog):
    folder, network = saved
    (folder / "ckpt-4.index").write_bytes(b"garbage")  # killed while writing the index
    data = next(folder.glob("ckpt-3.data-*"))
    data.write_bytes(data.read_bytes()[:40])  # killed while writing the data

    with caplog.at_level(logging.WARNING):
        prefix = checkpoints.restore(tf.train.Checkpoint(model=network), [folder], partial=True)

    assert prefix == str(folder / "ckpt-2") and restored_epoch(network) == 2.0
    assert "ckpt-4 cannot be read" in caplog.text and "ckpt-3 cannot be read" in caplog.text


def test_a_checkpoint_deleted_while_it_is_read_gives_way_to_the_next_newest(saved):
    # What evaluate.py meets when train.py's clean-up deletes the checkpoint it is reading.
    folder, network = saved
    next(folder.glob("ckpt-4.data-*")).unlink()

    prefix = checkpoints.restore(tf.train.Checkpoint(model=network), [folder], partial=True)

    assert prefix == str(folder / "ckpt-3") and restored_epoch(network) == 3.0


def test_an_explicit_unreadable_checkpoint_is_a_user_error(saved):
    folder, network = saved
    (folder / "ckpt-4.index").write_bytes(b"garbage")

    with pytest.raises(UserError, match="ckpt-4 cannot be read"):
        checkpoints.restore(tf.train.Checkpoint(model=network), str(folder / "ckpt-4"), partial=True)


def test_prune_keeps_the_newest_up_to_an_epoch_and_clears_half_written_folders(saved):
    folder, _ = saved
    (folder / "ckpt-5_temp").mkdir()
    (folder / "ckpt-5_temp" / "part-00000-of-00001.index").write_bytes(b"half")

    checkpoints.prune(folder, newest=3, keep=2)

    assert sorted(path.name for path in folder.iterdir()) == [
        "checkpoint",
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index",
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
    ]


def test_find_takes_a_folder_a_prefix_or_the_runs_own_last_weights(saved, tmp_path):
    folder, _ = saved
    model_dir = folder.parent

    assert checkpoints.find("last_weights", model_dir) == [folder, model_dir / "best_weights"]
    assert checkpoints.find(str(folder / "ckpt-2"), model_dir) == str(folder / "ckpt-2")
    assert checkpoints.find(str(folder), tmp_path / "another_run") == [folder, model_dir / "best_weights"]
    # The run's own last_weights, before its first save: nothing to restore yet, not an error
    assert checkpoints.find("last_weights", tmp_path / "new_run") == [
        tmp_path / "new_run" / n for n in checkpoints.KEEP
    ]
    with pytest.raises(UserError, match="no such weights folder or checkpoint"):
        checkpoints.find("no_such_weights", model_dir)
    # A run not trained yet, evaluated with its default weights: the message says to train it
    with pytest.raises(UserError, match="untrained holds no best_weights yet: train it first"):
        checkpoints.find("best_weights", tmp_path / "untrained")


class FullDisk:
    """A checkpoint manager on a full disk."""

    def save(self, checkpoint_number):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")


def no_space(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failing", ["checkpoint", "history"])
def test_a_full_disk_while_saving_an_epoch_says_which_folder_and_what_is_safe(tmp_path, monkeypatch, failing):
    if failing == "history":
        monkeypatch.setattr(checkpoints, "append_json_line", no_space)
    record = {"epoch": 3, "loss": 1.0, "accuracy": 0.5}

    with pytest.raises(UserError, match=f"The disk holding {tmp_path} is full: epoch 3 could not be saved"):
        checkpoints.save_epoch(tmp_path, record, {"last_weights": FullDisk(), "best_weights": FullDisk()}, is_best=True)
