"""model/model_fn.py: every network's shapes and layers, the loss, that it can learn, mixed precision and XLA."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_params

from model import input_fn, model_fn  # noqa: F401  (input_fn declares the augmentation's hyperparameters)
from model.evaluation import make_eval_step
from model.training import make_train_step, model_spec
from model.utils.layers import BatchNormalization
from model.utils.params import NETWORKS, build_network, load_params

NETWORK_NAMES = sorted(NETWORKS)


def make_params(folder, **overrides):
    (folder / "params.json").write_text(json.dumps(tiny_params(**overrides)))
    return load_params(folder)


def default_strategy():
    return tf.distribute.get_strategy()


def random_batch(batch_size, image_size, num_labels, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype(np.float32)
    labels = (np.arange(batch_size) % num_labels).astype(np.int32)
    return tf.constant(images), tf.constant(labels)


def layers_of_type(model, layer_type):
    return [layer for layer in model.layers if isinstance(layer, layer_type)]


@pytest.mark.parametrize("version", NETWORK_NAMES)
@pytest.mark.parametrize("image_size", [16, 64])
@pytest.mark.parametrize("num_labels", [2, 6, 11])
def test_model_maps_images_to_one_logit_per_label(tmp_path, num_labels, image_size, version):
    network = build_network(make_params(tmp_path, num_labels=num_labels, image_size=image_size, model_version=version))
    images, _ = random_batch(5, image_size, num_labels)

    logits = network(images, training=False)

    assert logits.shape == (5, num_labels)


@pytest.mark.parametrize("version", NETWORK_NAMES)
def test_loss_at_initialisation_is_finite_and_near_chance(tmp_path, version):
    tf.keras.utils.set_random_seed(0)
    network = build_network(make_params(tmp_path, model_version=version))
    images, labels = random_batch(32, 16, 6)

    losses = model_fn.loss(labels, network(images, training=False), make_params(tmp_path, model_version=version))

    assert losses.shape == (32,)  # one per image: the train step averages them
    loss = np.mean(losses.numpy())
    assert np.isfinite(loss)
    assert 0.5 * np.log(6) < loss < 3 * np.log(6)  # an untrained model guesses: about log(6)


def test_base_model_without_batch_norm_has_no_batch_norm_layers(tmp_path):
    network = build_network(make_params(tmp_path, use_batch_norm=False))

    assert layers_of_type(network, tf.keras.layers.BatchNormalization) == []
    assert all(layer.use_bias for layer in layers_of_type(network, tf.keras.layers.Conv2D))


def test_base_model_batch_norm_layers_use_bn_momentum(tmp_path):
    network = build_network(make_params(tmp_path, use_batch_norm=True, bn_momentum=0.7))

    batch_norms = layers_of_type(network, tf.keras.layers.BatchNormalization)

    assert len(batch_norms) == 5  # after each of the four convolutions and the dense layer
    assert [layer.momentum for layer in batch_norms] == [0.7] * 5


def test_base_model_conv_channels_double_at_each_block(tmp_path):
    network = build_network(make_params(tmp_path, num_channels=3))

    convs = layers_of_type(network, tf.keras.layers.Conv2D)

    assert [layer.filters for layer in convs] == [3, 6, 12, 24]


def test_resnet_has_its_blocks_and_pools_any_image_size(tmp_path):
    network = build_network(make_params(tmp_path, model_version="resnet", num_blocks=2, num_channels=4, image_size=24))

    assert len(layers_of_type(network, tf.keras.layers.Add)) == 2
    assert max(layer.filters for layer in layers_of_type(network, tf.keras.layers.Conv2D)) == 16  # 4 x 2 x 2
    assert network(random_batch(3, 24, 6)[0]).shape == (3, 6)


@pytest.mark.parametrize("version", NETWORK_NAMES)
def test_model_overfits_one_batch(tmp_path, version):
    tf.keras.utils.set_random_seed(0)
    spec = model_spec(make_params(tmp_path, model_version=version, learning_rate=0.01), default_strategy())
    images, labels = random_batch(16, 16, 6)
    before = [w.numpy().copy() for w in spec.model.trainable_weights]
    train_step = make_train_step(spec)

    losses = [float(train_step(images, labels)) for _ in range(20)]

    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, spec.model.trainable_weights)]
    assert all(changed), "every trainable weight should move in training"
    assert losses[-1] < losses[0] / 2, f"loss went from {losses[0]:.3f} to {losses[-1]:.3f}"


# mixed_precision and jit_compile


@pytest.fixture(autouse=True)
def float32_policy_afterwards():
    """model_spec sets Keras' global dtype policy; put it back so no later test builds in float16."""
    yield
    tf.keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("version", NETWORK_NAMES)
def test_mixed_precision_computes_in_float16_and_keeps_float32_weights_and_logits(tmp_path, version):
    spec = model_spec(make_params(tmp_path, mixed_precision=True, model_version=version), default_strategy())
    images, _ = random_batch(4, 16, 6)

    logits = spec.model(images, training=False)

    convs = layers_of_type(spec.model, tf.keras.layers.Conv2D)
    assert {layer.compute_dtype for layer in convs} == {"float16"}
    assert {layer.kernel.dtype for layer in convs} == {"float32"}
    # (Dropout's random seed is an integer variable)
    assert {variable.dtype for variable in spec.model.variables if "int" not in variable.dtype} == {"float32"}
    assert logits.dtype == tf.float32
    assert isinstance(spec.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)


def test_without_mixed_precision_everything_is_float32(tmp_path):
    model_spec(make_params(tmp_path, mixed_precision=True), default_strategy())  # an earlier run in the same process
    spec = model_spec(make_params(tmp_path, mixed_precision=False), default_strategy())

    assert {layer.compute_dtype for layer in spec.model.layers} == {"float32"}
    assert not isinstance(spec.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)


@pytest.mark.parametrize("version", NETWORK_NAMES)
def test_model_learns_with_mixed_precision(tmp_path, version):
    tf.keras.utils.set_random_seed(0)
    params = make_params(tmp_path, mixed_precision=True, model_version=version, learning_rate=0.01)
    spec = model_spec(params, default_strategy())
    train_step = make_train_step(spec)
    images, labels = random_batch(16, 16, 6)

    losses = [float(train_step(images, labels)) for _ in range(10)]

    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] / 2, f"loss went from {losses[0]:.3f} to {losses[-1]:.3f}"


# XLA fuses and reorders float operations: the same numbers up to rounding. Measured over six
# seeds: 1e-6 apart at most in float32, 1e-3 in mixed precision (float16 keeps ~3 digits).
@pytest.mark.parametrize(
    "mixed_precision, rtol",
    [pytest.param(False, 1e-4, id="float32"), pytest.param(True, 1e-2, id="mixed_precision", marks=pytest.mark.slow)],
)
def test_jit_compile_trains_and_evaluates_like_without_it(tmp_path, mixed_precision, rtol):
    tf.keras.utils.set_random_seed(0)
    images, labels = random_batch(16, 16, 6)
    plain = model_spec(make_params(tmp_path, mixed_precision=mixed_precision, jit_compile=False), default_strategy())
    xla = model_spec(make_params(tmp_path, mixed_precision=mixed_precision, jit_compile=True), default_strategy())
    xla.model.set_weights(plain.model.get_weights())
    plain_step, xla_step = make_train_step(plain), make_train_step(xla)

    # Three steps: the later losses also depend on the gradients and updates of the first.
    plain_losses = [float(plain_step(images, labels)) for _ in range(3)]
    xla_losses = [float(xla_step(images, labels)) for _ in range(3)]
    make_eval_step(plain.model, plain.eval_metrics, plain.params)(images, labels)
    make_eval_step(xla.model, xla.eval_metrics, xla.params)(images, labels)

    np.testing.assert_allclose(xla_losses, plain_losses, rtol=rtol)
    assert plain_losses[2] < plain_losses[0]
    np.testing.assert_allclose(xla.eval_metrics.result()["loss"], plain.eval_metrics.result()["loss"], rtol=rtol)
    # The step really is compiled by XLA (else this test would compare a function with itself).
    assert compiled_by_xla(xla_step, images, labels)
    assert not compiled_by_xla(plain_step, images, labels)


def compiled_by_xla(step, images, labels):
    """Whether the step, or a function it calls (the per-replica step), must be compiled by XLA."""
    graph = step.get_concrete_function(images, labels).graph.as_graph_def()
    return any(function.attr["_XlaMustCompile"].b for function in graph.library.function)


# The fused BatchNormalization


@pytest.mark.parametrize("shape", [(32, 8, 8, 4), (32, 16)], ids=["after a conv", "after a dense layer"])
def test_fused_batch_norm_computes_what_keras_batch_norm_does(shape):
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, shape).astype(np.float32))
    ours, keras_own = BatchNormalization(momentum=0.9), tf.keras.layers.BatchNormalization(momentum=0.9)

    for _ in range(3):  # three training steps: the moving averages move too
        np.testing.assert_allclose(ours(x, training=True), keras_own(x, training=True), atol=1e-5)

    assert [v.name for v in ours.weights] == [v.name for v in keras_own.weights]  # same checkpoints
    np.testing.assert_allclose(ours.moving_mean, keras_own.moving_mean, rtol=1e-5)
    # The fused kernel averages the unbiased batch variance (n / (n - 1) times Keras'), as
    # Keras 2's fused batch norm did: at most 1/31 apart for a batch of 32.
    np.testing.assert_allclose(ours.moving_variance, keras_own.moving_variance, rtol=1 / 31)
    assert not np.allclose(ours.moving_variance, 1.0)  # they did move
    np.testing.assert_allclose(ours(x, training=False), keras_own(x, training=False), atol=0.1)


def test_a_frozen_fused_batch_norm_keeps_its_moving_averages():
    layer = BatchNormalization()
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (8, 4, 4, 2)).astype(np.float32))
    layer(x, training=False)  # builds it
    layer.trainable = False

    layer(x, training=True)

    np.testing.assert_array_equal(layer.moving_mean, [0.0, 0.0])
