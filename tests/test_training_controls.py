"""The training controls of params.json: learning-rate schedules, early stopping, the optimizer
and class weights; and the debug mode's batch. train.py runs in the test's process, except in
the end-to-end test (marked slow), which kills it."""

import json
import math
import signal

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_in_process, run_script, tiny_params
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_interruptions import signal_in_epoch, start_training, wait_for

from model import model_fn
from model.input_fn import stratified_sample, train_and_dev
from model.training import class_weights, make_train_step, model_spec
from model.utils.dataset import list_split
from model.utils.params import load_params


def make_params(folder, **overrides):
    (folder / "params.json").write_text(json.dumps(tiny_params(**overrides)))
    return load_params(folder)


def rate_at(schedule, step):
    return float(schedule(step)) if callable(schedule) else schedule


# Learning-rate schedules


def test_constant_schedule_keeps_the_learning_rate(tmp_path):
    schedule = model_fn.schedule(make_params(tmp_path, learning_rate=0.01), steps_per_epoch=10)
    assert [rate_at(schedule, step) for step in (0, 5, 19)] == [0.01, 0.01, 0.01]


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero(tmp_path):
    params = make_params(tmp_path, learning_rate=0.1, lr_schedule="cosine", warmup_epochs=1, num_epochs=3)
    schedule = model_fn.schedule(params, steps_per_epoch=10)  # 10 steps of warm-up, then 20 of decay

    assert rate_at(schedule, 0) == pytest.approx(0.0)
    assert rate_at(schedule, 5) == pytest.approx(0.05)
    assert rate_at(schedule, 10) == pytest.approx(0.1)
    assert rate_at(schedule, 20) == pytest.approx(0.05)  # half way through the decay: cos(pi / 2)
    assert rate_at(schedule, 30) == pytest.approx(0.0, abs=1e-9)


def test_cosine_schedule_without_warm_up_starts_at_the_learning_rate(tmp_path):
    params = make_params(tmp_path, learning_rate=0.1, lr_schedule="cosine", num_epochs=2)
    schedule = model_fn.schedule(params, steps_per_epoch=10)
    assert rate_at(schedule, 0) == pytest.approx(0.1)
    assert rate_at(schedule, 10) == pytest.approx(0.05)


def test_step_schedule_multiplies_the_rate_every_lr_decay_epochs(tmp_path):
    params = make_params(tmp_path, learning_rate=0.1, lr_schedule="step", lr_decay_epochs=2, lr_decay_rate=0.5)
    schedule = model_fn.schedule(params, steps_per_epoch=10)
    rates = [rate_at(schedule, step) for step in (0, 19, 20, 39, 40)]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def learning_rates(model_dir):
    """{step: learning rate} of the train summaries (the last value written for each step)."""
    events = EventAccumulator(str(model_dir), size_guidance={"tensors": 0})
    events.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("train/learning_rate")}


def test_a_run_stopped_and_resumed_continues_the_schedule_where_it_stopped(trained_once, tmp_path, monkeypatch):
    schedule = dict(lr_schedule="cosine", warmup_epochs=1, num_epochs=4, save_summary_steps=1, batch_size=8)
    rates = {}
    for name in ("uninterrupted", "interrupted"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(tiny_params(**schedule)))
        if name == "interrupted":  # stopped (SIGTERM) in its third epoch, then resumed
            with monkeypatch.context() as patch:
                signal_in_epoch(folder, 3, signal.SIGTERM, patch)
                stopped = run_in_process("train.py", "--model_dir", folder, "--data_dir", trained_once.data_dir)
            assert stopped.returncode == 130, stopped.stderr
        args = ("--restore_from", folder / "last_weights") if name == "interrupted" else ()
        result = run_in_process("train.py", "--model_dir", folder, "--data_dir", trained_once.data_dir, *args)
        assert result.returncode == 0, result.stderr
        rates[name] = learning_rates(folder)

    assert len(rates["uninterrupted"]) == 4 * 12  # 96 images in batches of 8, every step
    assert rates["interrupted"] == pytest.approx(rates["uninterrupted"])
    assert rates["uninterrupted"][1] < rates["uninterrupted"][12] > rates["uninterrupted"][48]  # warm-up, decay


@pytest.mark.slow
def test_a_resumed_run_continues_the_schedule_where_it_stopped(built_dataset, tmp_path):
    schedule = dict(lr_schedule="cosine", warmup_epochs=1, num_epochs=4, save_summary_steps=1, batch_size=8)
    rates = {}
    for name in ("uninterrupted", "interrupted"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(tiny_params(**schedule)))
        if name == "interrupted":  # killed after its second epoch is saved, then resumed
            process = start_training(folder, built_dataset)
            wait_for(folder / "last_weights" / "ckpt-2.index", process)
            process.send_signal(signal.SIGKILL)
            process.wait()
        args = ("--restore_from", folder / "last_weights") if name == "interrupted" else ()
        result = run_script("train.py", "--model_dir", folder, "--data_dir", built_dataset, *args)
        assert result.returncode == 0, result.stderr
        rates[name] = learning_rates(folder)

    assert len(rates["uninterrupted"]) == 4 * 12  # 96 images in batches of 8, every step
    assert rates["interrupted"] == pytest.approx(rates["uninterrupted"])
    assert rates["uninterrupted"][1] < rates["uninterrupted"][12] > rates["uninterrupted"][48]  # warm-up, decay


# Early stopping


def train(model_dir, data_dir, *params, resume=False):
    args = [arg for param in params for arg in ("--param", param)]
    args += ["--restore_from", model_dir / "last_weights"] if resume else []
    return run_in_process("train.py", "--model_dir", model_dir, "--data_dir", data_dir, *args)


# Without batch norm and with a learning rate of ~0, the network never changes: nor does its dev accuracy.
FROZEN = ("use_batch_norm=false", "learning_rate=1e-30", "num_epochs=8")


def test_early_stopping_stops_after_patience_epochs_without_improvement(trained_once, model_dir):
    built_dataset = trained_once.data_dir
    result = train(model_dir, built_dataset, *FROZEN, "early_stopping_patience=2")

    assert result.returncode == 0, result.stderr
    history = [json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in history] == [1, 2, 3]  # best at 1, then 2 epochs without progress
    assert "Stopped early: accuracy on dev did not improve for 2 epochs after epoch 1" in result.stderr
    run = json.loads((model_dir / "run.json").read_text())
    assert run["status"] == "stopped early" and "did not improve for 2 epochs" in run["reason"]

    # Resuming trains no further, unless the patience (or num_epochs) is raised
    resumed = train(model_dir, built_dataset, *FROZEN, "early_stopping_patience=2", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "Train metrics" not in resumed.stderr and "Stopped early" in resumed.stderr
    raised = train(model_dir, built_dataset, *FROZEN, "early_stopping_patience=3", resume=True)
    assert raised.returncode == 0, raised.stderr
    assert "Epoch 4/8 - Train metrics" in raised.stderr and "Epoch 6/8 - Train" in raised.stderr
    assert "Epoch 7/8 - Train" not in raised.stderr  # 3 more epochs without progress


def test_early_stopping_is_off_by_default(trained_once, model_dir):
    result = train(model_dir, trained_once.data_dir, *FROZEN[:2], "num_epochs=4")
    assert result.returncode == 0, result.stderr
    assert len((model_dir / "history.jsonl").read_text().splitlines()) == 4
    assert json.loads((model_dir / "run.json").read_text())["status"] == "finished"


# The optimizer


@pytest.mark.parametrize(
    "name, kind", [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD")], ids=["adam", "adamw", "sgd"]
)
def test_optimizer_is_the_one_params_json_names(tmp_path, name, kind):
    optimizer = model_fn.optimizer(make_params(tmp_path, optimizer=name, momentum=0.8), steps_per_epoch=1)
    assert type(optimizer).__name__ == kind
    if name == "sgd":
        assert optimizer.momentum == 0.8


def test_adamw_shrinks_the_weights_by_learning_rate_times_weight_decay(tmp_path):
    params = make_params(tmp_path, optimizer="adamw", learning_rate=0.1, weight_decay=0.5)
    optimizer = model_fn.optimizer(params, steps_per_epoch=1)
    weight = tf.Variable([2.0, -4.0])

    optimizer.apply_gradients([(tf.zeros(2), weight)])  # a zero gradient: Adam's step is 0, the decay is not

    assert weight.numpy() == pytest.approx([2.0 * (1 - 0.1 * 0.5), -4.0 * (1 - 0.1 * 0.5)])


# Class weights


def test_balanced_class_weights_weigh_each_class_alike():
    weights = class_weights([0, 0, 0, 1, 2, 2], num_labels=4).numpy()
    # 6 images / (4 classes x images of the class); the class without images gets 0
    assert weights == pytest.approx([6 / 12, 6 / 4, 6 / 8, 0.0])


def test_class_weights_change_the_training_loss_as_computed_by_hand(tmp_path):
    labels = np.array([0, 0, 0, 1], np.int32)
    images = tf.random.stateless_uniform((4, 16, 16, 3), seed=(1, 2))
    losses = {}
    for weighting in ("none", "balanced"):
        params = make_params(tmp_path, class_weight=weighting, learning_rate=1e-30, num_labels=2)
        tf.keras.utils.set_random_seed(0)
        spec = model_spec(params, tf.distribute.get_strategy(), labels.tolist())
        per_image = model_fn.loss(labels, spec.model(images, training=True), params).numpy()
        losses[weighting] = (float(make_train_step(spec)(images, labels)), per_image)

    plain, per_image = losses["none"]
    assert plain == pytest.approx(per_image.mean(), rel=1e-4)
    weighted, per_image = losses["balanced"]
    weights = np.array([4 / 6, 4 / 6, 4 / 6, 4 / 2])  # 4 images / (2 classes x 3 or 1 images)
    assert weighted == pytest.approx((per_image * weights).mean(), rel=1e-4)
    assert not math.isclose(weighted, plain, rel_tol=1e-3)


# The debug mode's batch


def test_the_overfit_batch_is_seeded_and_drawn_from_every_class():
    filenames = [f"{label}_IMG_{i}.jpg" for label in range(3) for i in range(10)]  # in name order: by class
    labels = [label for label in range(3) for _ in range(10)]

    files, chosen = stratified_sample(filenames, labels, 6, seed=230)

    assert sorted(chosen) == [0, 0, 1, 1, 2, 2] and chosen[:3] == [0, 1, 2]
    assert (files, chosen) == stratified_sample(filenames, labels, 6, seed=230)
    assert files != stratified_sample(filenames, labels, 6, seed=231)[0]


def test_the_debug_mode_batch_holds_every_class(trained_once, tmp_path):
    # The first 16 files in name order are all of class 0: the batch must not be them.
    splits = {split: list_split(trained_once.data_dir, split) for split in ("train", "dev")}
    batches, _ = train_and_dev(splits, make_params(tmp_path, overfit_batches=1, batch_size=12))
    [(_, labels)] = list(batches)
    assert sorted(labels.numpy()) == [label for label in range(6) for _ in range(2)]
