"""model/model_fn.py: the network's shapes and layers, its loss, and that it can learn."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_params

from model.model_fn import model_fn
from model.utils import Params, UserError


def make_params(folder, **overrides):
    path = folder / "params.json"
    path.write_text(json.dumps(tiny_params(**overrides)))
    return Params(path)


def random_batch(batch_size, image_size, num_labels, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype(np.float32)
    labels = (np.arange(batch_size) % num_labels).astype(np.int32)
    return tf.constant(images), tf.constant(labels)


def layers_of_type(model, layer_type):
    return [layer for layer in model.layers if isinstance(layer, layer_type)]


@pytest.mark.parametrize("image_size", [16, 64])
@pytest.mark.parametrize("num_labels", [2, 6, 11])
def test_model_maps_images_to_one_logit_per_label(tmp_path, num_labels, image_size):
    spec = model_fn(make_params(tmp_path, num_labels=num_labels, image_size=image_size))
    images, _ = random_batch(5, image_size, num_labels)

    logits = spec.model(images, training=False)

    assert logits.shape == (5, num_labels)


def test_loss_at_initialisation_is_finite_and_near_chance(tmp_path):
    tf.keras.utils.set_random_seed(0)
    spec = model_fn(make_params(tmp_path))
    images, labels = random_batch(32, 16, 6)

    loss = spec.loss_fn(labels, spec.model(images, training=False))

    assert loss.shape == ()
    assert np.isfinite(loss.numpy())
    assert 0.5 * np.log(6) < loss.numpy() < 3 * np.log(6)  # an untrained model guesses: about log(6)


def test_without_batch_norm_there_are_no_batch_norm_layers(tmp_path):
    spec = model_fn(make_params(tmp_path, use_batch_norm=False))

    assert layers_of_type(spec.model, tf.keras.layers.BatchNormalization) == []
    assert all(layer.use_bias for layer in layers_of_type(spec.model, tf.keras.layers.Conv2D))


def test_batch_norm_layers_use_bn_momentum(tmp_path):
    spec = model_fn(make_params(tmp_path, use_batch_norm=True, bn_momentum=0.7))

    batch_norms = layers_of_type(spec.model, tf.keras.layers.BatchNormalization)

    assert len(batch_norms) == 5  # after each of the four convolutions and the dense layer
    assert [layer.momentum for layer in batch_norms] == [0.7] * 5


def test_conv_channels_double_at_each_block(tmp_path):
    spec = model_fn(make_params(tmp_path, num_channels=3))

    convs = layers_of_type(spec.model, tf.keras.layers.Conv2D)

    assert [layer.filters for layer in convs] == [3, 6, 12, 24]


def test_unknown_model_version_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError, match="Unknown model_version 'resnet9000'.*Known versions: base_model"):
        model_fn(make_params(tmp_path, model_version="resnet9000"))


def test_model_overfits_one_batch(tmp_path):
    tf.keras.utils.set_random_seed(0)
    spec = model_fn(make_params(tmp_path))
    images, labels = random_batch(16, 16, 6)
    before = [w.numpy().copy() for w in spec.model.trainable_weights]

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = spec.loss_fn(labels, spec.model(images, training=True))
        grads = tape.gradient(loss, spec.model.trainable_weights)
        spec.optimizer.apply_gradients(zip(grads, spec.model.trainable_weights))
        return loss

    losses = [train_step().numpy() for _ in range(20)]

    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, spec.model.trainable_weights)]
    assert all(changed), "every trainable weight should move in training"
    assert losses[-1] < losses[0] / 2, f"loss went from {losses[0]:.3f} to {losses[-1]:.3f}"
