"""Every user mistake gets one clear message and exit status 2, never a traceback.

Each case is the command a user would type after making the mistake, run in the test's process.
"""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_in_process, tiny_params, write_signs_split


def write_params(model_dir, params):
    (model_dir / "params.json").write_text(json.dumps(params))


def without(key):
    params = tiny_params()
    del params[key]
    return params


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("Error:") == 1
    for fragment in fragments:
        assert fragment in result.stderr


def train(model_dir, data_dir, *args):
    return run_in_process("train.py", "--model_dir", model_dir, "--data_dir", data_dir, *args)


# (case name, params.json content, what the message must say)
BAD_PARAMS = [
    ("invalid JSON", '{"learning_rate": 0.1,,}', ["not valid JSON", "line 1, column 23"]),
    ("missing num_labels", without("num_labels"), ["'num_labels' is missing"]),
    ("wrong type", tiny_params(batch_size="32"), ['batch_size = "32" is not valid', "whole number"]),
    ("negative learning rate", tiny_params(learning_rate=-0.1), ["learning_rate = -0.1", "positive"]),
    ("batch_size 0", tiny_params(batch_size=0), ["batch_size = 0", "a whole number from 1 to"]),
    ("typo in a key", {**without("learning_rate"), "learing_rate": 1e-3}, ["'learing_rate'", "'learning_rate'"]),
    ("unknown model_version", tiny_params(model_version="resnet50"), ["resnet50", "base_model"]),
    ("typo in cache", tiny_params(cache="memroy"), ['cache = "memroy" is not valid', '"memory", "none"']),
]


@pytest.mark.parametrize("params, fragments", [case[1:] for case in BAD_PARAMS], ids=[c[0] for c in BAD_PARAMS])
def test_bad_params_json(built_dataset, model_dir, params, fragments):
    (model_dir / "params.json").write_text(params if isinstance(params, str) else json.dumps(params))

    result = train(model_dir, built_dataset)

    assert_user_error(result, "params.json", *fragments)
    assert not (model_dir / "last_weights").exists()


def test_missing_model_dir(built_dataset, tmp_path):
    assert_user_error(train(tmp_path / "no_such_experiment", built_dataset), "no_such_experiment", "does not exist")


def test_missing_params_json(built_dataset, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(train(tmp_path / "empty", built_dataset), "No params.json", "experiments/base_model")


def test_image_size_the_network_cannot_take(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "dev"):
        write_signs_split(tmp_path / "data20" / split, 12, rng, size=(20, 20))
    write_params(model_dir, tiny_params(image_size=20))

    assert_user_error(train(model_dir, tmp_path / "data20"), "image_size = 20", "multiple of 16")


def test_image_size_differs_from_the_data(built_dataset, model_dir):
    write_params(model_dir, tiny_params(image_size=32))
    assert_user_error(train(model_dir, built_dataset), "is 16x16 pixels, but image_size = 32", "--size 32")


def test_missing_data_dir(model_dir, tmp_path):
    assert_user_error(train(model_dir, tmp_path / "no_data"), "train split is missing", "build_dataset.py")


def test_empty_split(built_dataset, model_dir):
    shutil.rmtree(built_dataset / "dev")
    (built_dataset / "dev").mkdir()
    assert_user_error(train(model_dir, built_dataset), "dev split is empty", str(built_dataset / "dev"))


def test_labels_outside_num_labels(built_dataset, model_dir):
    shutil.copy(built_dataset / "train" / "0_IMG_train0.jpg", built_dataset / "train" / "7_IMG_x.jpg")
    assert_user_error(train(model_dir, built_dataset), "labels [7] outside 0..5", "num_labels")


def test_missing_restore_from(built_dataset, model_dir):
    result = train(model_dir, built_dataset, "--restore_from", "no_such_weights")
    assert_user_error(result, "--restore_from no_such_weights", "no such weights folder")


def test_evaluate_before_training(built_dataset, model_dir):
    result = run_in_process("evaluate.py", "--model_dir", model_dir, "--data_dir", built_dataset)
    assert_user_error(result, "holds no best_weights yet: train it first (python train.py --model_dir")


def test_checkpoint_of_another_architecture(trained, trained_once):
    model_dir, built_dataset = trained, trained_once.data_dir  # trained with tiny_params()
    write_params(model_dir, tiny_params(num_channels=8, num_epochs=3))

    result = train(model_dir, built_dataset, "--restore_from", "last_weights")

    assert_user_error(
        result, "do not fit the network", "layer 1 kernel is [3, 3, 3, 4] in the weights but [3, 3, 3, 8]"
    )
    evaluate = run_in_process("evaluate.py", "--model_dir", model_dir, "--data_dir", built_dataset)
    assert evaluate.returncode == 0, "evaluate.py must use the hyperparameters the weights were trained with"


def test_checkpoint_without_a_model(built_dataset, model_dir, tmp_path):
    # Any TensorFlow checkpoint that is not a training checkpoint of this template.
    tf.train.Checkpoint(step=tf.Variable(1)).write(str(tmp_path / "other" / "ckpt"))

    result = train(model_dir, built_dataset, "--restore_from", tmp_path / "other" / "ckpt")

    assert_user_error(result, "do not fit the network", "absent in the weights")


def test_resuming_across_a_change_of_mixed_precision(built_dataset, model_dir):
    assert train(model_dir, built_dataset, "--param", "mixed_precision=true", "--param", "num_epochs=1").returncode == 0
    last_weights = model_dir / "last_weights"
    resume = ("--restore_from", last_weights, "--param", "num_epochs=2")

    result = train(model_dir, built_dataset, *resume)

    assert_user_error(result, str(last_weights), "with mixed_precision = true", "this run has mixed_precision = false")
    # The refused run left the weights as they were: resuming with their setting continues them.
    resumed = train(model_dir, built_dataset, *resume, "--param", "mixed_precision=true")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 epochs done" in resumed.stderr
