"""The model: the networks, the loss, the metrics and the optimizer. This is the file to edit.

A network is a function `params -> keras.Model` that returns logits. @network registers it under
its name, with the hyperparameters only it uses (default, valid values); "model_version" in
params.json picks one. Every network's logits feed the same loss, metrics and optimizer below.
"""

import tensorflow as tf

from model.errors import UserError
from model.layers import BatchNormalization
from model.params import Hyperparameter, at_least, network, true_or_false

keras = tf.keras


@network(
    num_channels=at_least(1, 16),  # channels of the first conv block; the next ones have 2x, 4x, 8x
    use_batch_norm=true_or_false(True),
    bn_momentum=Hyperparameter(0.9, "a number from 0 to below 1, such as 0.9", lambda v: 0 <= v < 1),
)
def base_model(params):
    """The CS230 SIGNS network: four blocks of 3x3 conv -> batch norm -> ReLU -> 2x2 max-pool,
    then dense -> batch norm -> ReLU -> logits."""
    if params.image_size % 16:
        raise UserError(
            f"image_size = {params.image_size} in params.json: base_model halves the image four "
            "times, so image_size must be a multiple of 16 (such as 64). Rebuild the data with that --size."
        )
    images = keras.Input(shape=(params.image_size, params.image_size, 3), name="images")
    x = images
    for multiplier in (1, 2, 4, 8):
        # With batch norm following, the convolution's bias would be cancelled out: skip it.
        x = keras.layers.Conv2D(
            params.num_channels * multiplier, 3, padding="same", use_bias=not params.use_batch_norm
        )(x)
        x = batch_norm_relu(x, params.bn_momentum, params.use_batch_norm)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(params.num_channels * 8, use_bias=not params.use_batch_norm)(x)
    x = batch_norm_relu(x, params.bn_momentum, params.use_batch_norm)
    return keras.Model(images, logits(x, params), name="base_model")


@network(
    num_channels=at_least(1, 16),  # channels of the stem; each block doubles them
    num_blocks=at_least(1, 3),  # residual blocks, each halving the image
    dropout_rate=Hyperparameter(0.2, "a number from 0 to below 1, such as 0.2", lambda v: 0 <= v < 1),
)
def resnet(params):
    """A small residual network: a 3x3 conv stem, then residual blocks that halve the image and
    double the channels, global average pooling (any image size), dropout and logits."""
    images = keras.Input(shape=(params.image_size, params.image_size, 3), name="images")
    x = keras.layers.Conv2D(params.num_channels, 3, padding="same", use_bias=False)(images)
    x = batch_norm_relu(x)
    for block in range(params.num_blocks):
        channels = params.num_channels * 2 ** (block + 1)
        # The shortcut is a strided 1x1 conv, to the block's new size and channels.
        shortcut = keras.layers.Conv2D(channels, 1, strides=2, use_bias=False)(x)
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False)(x)
        x = batch_norm_relu(x)
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
        x = BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(keras.layers.Add()([shortcut, x]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(params.dropout_rate)(x)
    return keras.Model(images, logits(x, params), name="resnet")


def batch_norm_relu(x, momentum=0.9, batch_norm=True):
    """Batch normalization (if asked for), then ReLU."""
    if batch_norm:
        x = BatchNormalization(momentum=momentum)(x)
    return keras.layers.ReLU()(x)


def logits(x, params):
    """One logit per class; in float32 even under mixed precision, for the softmax and the loss."""
    return keras.layers.Dense(params.num_labels, name="logits", dtype="float32")(x)


def per_image_loss(labels, logits):
    """The loss of each image: the cross-entropy of the softmax of its logits."""
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


# The metrics, by name: each is updated with (labels, class probabilities) in training and in
# evaluation, then logged, saved in the metrics files, summarised and tabulated. The loss is
# always there too. Add one in one line, for example
#   "top_3_accuracy": lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=3),
METRICS = {
    "accuracy": keras.metrics.SparseCategoricalAccuracy,
}


def optimizer(params):
    """Adam, with params.learning_rate."""
    return keras.optimizers.Adam(learning_rate=params.learning_rate)
