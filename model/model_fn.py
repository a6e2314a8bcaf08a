"""The model: the networks, the loss, the metrics and the optimizer. This is the file to edit.

A network is a function `params -> keras.Model` returning logits. @network registers it under its name with the
hyperparameters only it uses; "model_version" in params.json picks one. Any other function here declares the
hyperparameters it reads with @hyperparameters, above it: each key, its default and its valid values, so that
params.json is checked before a run starts."""

import tensorflow as tf

from model import input_fn
from model.utils import dataset
from model.utils.errors import UserError
from model.utils.layers import BatchNormalization
from model.utils.params import at_least, choice, flag, fraction, hyperparameters, metrics, network, positive
from model.utils.tasks import Task, register_task

keras = tf.keras


@network(
    num_channels=at_least(1, 16, maximum=1024),  # channels of the first conv block; the next ones have 2x, 4x, 8x
    use_batch_norm=flag(True),
    bn_momentum=fraction(0.9, "momentum of the batch-norm moving averages", below_one=True),
)
def base_model(params):
    """The CS230 SIGNS network: four blocks of 3x3 conv -> batch norm -> ReLU -> 2x2 max-pool,
    then dense -> batch norm -> ReLU -> logits."""
    if params.image_size % 16:
        raise UserError(
            f"image_size = {params.image_size} in params.json: base_model halves the image four times, "
            "so image_size must be a multiple of 16 (such as 64). Rebuild the data with that --size."
        )
    images = keras.Input(shape=(params.image_size, params.image_size, 3), name="images")
    x = images
    for multiplier in (1, 2, 4, 8):
        # With batch norm following, the convolution's bias would be cancelled out: skip it.
        x = keras.layers.Conv2D(
            params.num_channels * multiplier, 3, padding="same", use_bias=not params.use_batch_norm
        )(x)
        x = keras.layers.MaxPooling2D(2)(batch_norm_relu(x, params.bn_momentum, params.use_batch_norm))
    x = keras.layers.Dense(params.num_channels * 8, use_bias=not params.use_batch_norm)(keras.layers.Flatten()(x))
    x = batch_norm_relu(x, params.bn_momentum, params.use_batch_norm)
    return keras.Model(images, logits(x, params), name="base_model")


@network(
    num_channels=at_least(1, 16, maximum=1024),  # channels of the first convolution; each block doubles them
    num_blocks=at_least(1, 3, maximum=12),  # residual blocks, each halving the image
    dropout_rate=fraction(0.2, "the share of features dropped before the last layer", below_one=True),
)
def resnet(params):
    """A small residual network: a 3x3 conv, residual blocks that halve the image and double the
    channels, global average pooling (so any image size works), dropout, logits."""
    images = keras.Input(shape=(params.image_size, params.image_size, 3), name="images")
    x = batch_norm_relu(keras.layers.Conv2D(params.num_channels, 3, padding="same", use_bias=False)(images))
    for block in range(params.num_blocks):
        channels = params.num_channels * 2 ** (block + 1)
        # The shortcut, a strided 1x1 conv, brings the input to the block's new size and channels.
        shortcut = keras.layers.Conv2D(channels, 1, strides=2, use_bias=False)(x)
        x = batch_norm_relu(keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False)(x))
        x = BatchNormalization(momentum=0.9)(keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x))
        x = keras.layers.ReLU()(keras.layers.Add()([shortcut, x]))
    x = keras.layers.Dropout(params.dropout_rate)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(images, logits(x, params), name="resnet")


def batch_norm_relu(x, momentum=0.9, batch_norm=True):
    if batch_norm:
        x = BatchNormalization(momentum=momentum)(x)
    return keras.layers.ReLU()(x)


def logits(x, params):
    """One logit per class; in float32 even under mixed precision, for the softmax and the loss."""
    return keras.layers.Dense(params.num_labels, name="logits", dtype="float32")(x)


def loss(labels, logits, params):
    """The loss of each image: the cross-entropy of the softmax of its logits. Training and
    evaluation both call it, so train and dev losses measure the same thing."""
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


# The metrics, by name. Training and evaluation update each with (labels, probabilities): the
# softmax of the logits, so build none with from_logits=True. They log, save, summarise and
# tabulate every one, with the loss; best_metric in params.json may name any. Add one in a line:
#   top_3_accuracy=lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=3),
METRICS = metrics(
    accuracy=keras.metrics.SparseCategoricalAccuracy,
)


@hyperparameters(
    learning_rate=positive(1e-3),
    optimizer=choice("adam", "adamw", "sgd"),
    weight_decay=positive(0.004),  # AdamW's: each step shrinks the weights by learning_rate * weight_decay
    momentum=fraction(0.9, "SGD's momentum", below_one=True),
    lr_schedule=choice("constant", "cosine", "step"),
    warmup_epochs=at_least(0, 0),  # cosine: epochs of linear warm-up from 0 to learning_rate
    lr_decay_epochs=at_least(1, 5),  # step: the rate is multiplied by lr_decay_rate every lr_decay_epochs
    lr_decay_rate=fraction(0.1, "what the step schedule multiplies the rate by"),
)
def optimizer(params, steps_per_epoch):
    """Adam, AdamW with weight decay, or SGD with momentum, at the learning rate of schedule()."""
    rate = schedule(params, steps_per_epoch)
    if params.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=params.weight_decay)
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=params.momentum)
    return keras.optimizers.Adam(rate)


def schedule(params, steps_per_epoch):
    """The learning rate at each training step, from params.learning_rate: constant; cosine decay
    to 0 at the last step, after a linear warm-up from 0 over warmup_epochs; or step decay."""
    schedules = keras.optimizers.schedules
    if params.lr_schedule == "cosine":
        warmup = params.warmup_epochs * steps_per_epoch
        decay = max(1, params.num_epochs * steps_per_epoch - warmup)
        if warmup:
            return schedules.CosineDecay(0.0, decay, warmup_target=params.learning_rate, warmup_steps=warmup)
        return schedules.CosineDecay(params.learning_rate, decay)
    if params.lr_schedule == "step":
        every = params.lr_decay_epochs * steps_per_epoch
        return schedules.ExponentialDecay(params.learning_rate, every, params.lr_decay_rate, staircase=True)
    return float(params.learning_rate)  # Keras refuses a whole number here


# The image task, as the scripts see it (the text task's is at the end of model/text_model_fn.py)
TASK = register_task(
    Task(
        "images",
        __name__,
        list_split=dataset.list_split,
        check_split=dataset.check_split,
        class_names=dataset.load_class_names,
        data_values=lambda data_dir: {},  # params.json gives num_labels; the data is checked against it
        train_and_dev=input_fn.train_and_dev,
        input_fn=input_fn.input_fn,
        loss=loss,
        metrics=METRICS,
    )
)
