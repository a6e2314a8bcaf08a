"""The input pipeline: image files -> batches of (images, labels), with tf.data.

The order of the steps follows TensorFlow's tf.data performance guide: parallel decoding, `cache` after the expensive
decode so later epochs skip it, `shuffle` before the random augmentation so every epoch sees new variants of the same
images, `prefetch` last so the next batch is prepared while the model trains on the current one."""

import atexit
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from model.utils.images import UNREADABLE, read_rgb
from model.utils.params import flag, fraction, hyperparameters

keras = tf.keras
# Images shuffled together when reading a disk cache (with a memory cache: all of them)
DISK_CACHE_SHUFFLE_BUFFER = 1000


@hyperparameters(
    use_random_flip=flag(False),
    random_brightness=fraction(0.125, "the largest change of brightness"),
    random_saturation=fraction(0.5, "saturation is multiplied by 1 - it to 1 + it"),
)
def augment(image, label, params):
    """The random changes made to a training image (never to an evaluation one), its values in
    [0, 1]. Each has a hyperparameter, its strength; 0 or false turns it off. To add one, declare
    its hyperparameter above and apply it below."""
    if params.use_random_flip:
        image = tf.image.random_flip_left_right(image)
    if params.random_brightness:
        image = tf.image.random_brightness(image, params.random_brightness)
    if params.random_saturation:
        image = tf.image.random_saturation(image, 1 - params.random_saturation, 1 + params.random_saturation)
    return tf.clip_by_value(image, 0.0, 1.0), label  # brightness and saturation can leave [0, 1]


def decode_jpeg(image_string):
    """JPEG bytes -> uint8 RGB pixels, the very pixels Pillow decodes (and so predict.py)."""
    # decode_jpeg rather than decode_image: decode_image can return a 4-D GIF tensor whose
    # shape is unknown, which breaks the static shapes resize and batching rely on.
    # INTEGER_ACCURATE: TensorFlow's default, faster method differs from Pillow's by up to 17
    # grey levels, enough to change a few test predictions.
    return tf.io.decode_jpeg(image_string, channels=3, dct_method="INTEGER_ACCURATE")


def resize_image(images, image_size):
    """uint8 RGB pixels, one image or a batch, of any size -> image_size x image_size, uint8."""
    already_sized = tf.reduce_all(tf.shape(images)[-3:-1] == [image_size, image_size])
    resized = tf.cond(
        already_sized,
        lambda: images,
        # Antialiased, so that shrinking a large photo averages its pixels as Pillow's resize
        # in build_dataset.py does, instead of sampling a few of them.
        lambda: tf.saturate_cast(tf.round(tf.image.resize(images, [image_size, image_size], antialias=True)), tf.uint8),
    )
    resized.set_shape(images.shape[:-3] + [image_size, image_size, 3])
    return resized


def square(images, mode):
    """uint8 RGB pixels, one image or a batch, made square as images.square does with Pillow."""
    if mode == "squash":
        return images
    height, width = tf.shape(images)[-3], tf.shape(images)[-2]
    if mode == "crop":
        side = tf.minimum(height, width)
        return tf.image.crop_to_bounding_box(images, (height - side) // 2, (width - side) // 2, side, side)
    side = tf.maximum(height, width)
    return tf.image.pad_to_bounding_box(images, (side - height) // 2, (side - width) // 2, side, side)


def to_float(images):
    return tf.image.convert_image_dtype(images, tf.float32)  # also scales [0, 255] into [0, 1]


def preprocess(images, image_size, resize="squash"):
    """The model's input from uint8 RGB pixels of any size, one image or a batch: the one
    preprocessing function, which evaluation runs in two halves (resize before its cache, floats
    after; its images are square already), and predict.py and the exported models whole, with the
    resize mode of the data the model trained on."""
    return to_float(resize_image(square(images, resize), image_size))


def cache(dataset, where):
    """Keeps the decoded images after the first epoch: `where` is "memory", "none" or a folder."""
    if where == "memory":
        return dataset.cache()
    if where == "none":
        return dataset
    # A folder on disk, for datasets larger than RAM. Each dataset gets a fresh sub-folder,
    # deleted when the process ends: a cache then never holds stale images, and parallel runs
    # never share one (tf.data refuses two writers of one cache file).
    Path(where).mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="tf_data_cache_", dir=where)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return dataset.cache(str(Path(folder) / "images"))


def input_fn(is_training, filenames, labels, params, one_pass=False):
    """A tf.data.Dataset of (images, labels) batches from JPEG files (model.utils.dataset.list_split).

    Training shuffles and augments; evaluation keeps the order. `one_pass`: the dataset is
    read once (evaluate.py), so it is not cached.
    """
    dataset = tf.data.Dataset.from_tensor_slices((filenames, tf.constant(labels, tf.int32)))
    if is_training:  # shuffling file names is cheap, and without a cache all the shuffling needed
        dataset = dataset.shuffle(len(filenames), reshuffle_each_iteration=True)

    def load(filename, label):
        return resize_image(decode_jpeg(tf.io.read_file(filename)), params.image_size), label

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    where = "none" if one_pass else params.cache
    dataset = cache(dataset, where)  # uint8 pixels: 4x smaller than the float32 the model takes
    if is_training and where != "none":
        # A cache replays the first epoch in its order: shuffle again, over the whole dataset in
        # memory, and over a bounded buffer from disk so that memory stays flat.
        buffer = len(filenames) if where == "memory" else min(len(filenames), DISK_CACHE_SHUFFLE_BUFFER)
        dataset = dataset.shuffle(buffer, reshuffle_each_iteration=True)
    # Pixels become floats in the same map as the augmentation: one more map of its own
    # halved the training speed on 2 CPU cores (see benchmarks/benchmark.py).
    if is_training:
        dataset = dataset.map(lambda x, y: augment(to_float(x), y, params), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(lambda x, y: (to_float(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(params.batch_size).prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


def train_and_dev(splits, params):
    """train.py's pipelines, from {"train": (filenames, labels), "dev": (filenames, labels)}."""
    if params.overfit_batches:
        # Debug mode: learn the same few batches by heart, and evaluate on them. A new model
        # that cannot drive this loss near zero has a bug. The images are drawn from every
        # class in turn, so that a model that ignores its input cannot pass.
        logging.info(f"Debug mode: overfitting {params.overfit_batches} train batch(es)")
        files, labels = stratified_sample(*splits["train"], params.overfit_batches * params.batch_size, params.seed)
        batches = input_fn(False, files, labels, params, one_pass=True).cache()
        return batches, batches
    return input_fn(True, *splits["train"], params), input_fn(False, *splits["dev"], params)


def stratified_sample(filenames, labels, size, seed):
    """`size` files drawn at random (seeded) from each class in turn: classes alternate in every batch."""
    rng = np.random.default_rng(seed)
    by_class = [list(rng.permutation(np.flatnonzero(np.array(labels) == label))) for label in sorted(set(labels))]
    chosen = []
    while len(chosen) < min(size, len(labels)):
        chosen += [indices.pop() for indices in by_class if indices][: size - len(chosen)]
    return [filenames[i] for i in chosen], [labels[i] for i in chosen]


def pipeline_options():
    options = tf.data.Options()
    # tf.data's autotuner made the end of every epoch wait for its background thread, for
    # longer as epochs grow (4 s after a 6 s epoch). Without it, AUTOTUNE takes fixed
    # defaults, and the pipeline still runs 10x faster than training (benchmarks/benchmark.py).
    options.autotune.enabled = False
    # In a cluster, every worker lists all the files and keeps its share of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def predict_input_fn(filenames, params, resize="squash"):
    """Batches of (images, readable) from image files of any format, size, mode and orientation,
    read by Pillow as build_dataset.py reads them. An unreadable file gives a blank image and
    readable = False, so that one bad file among thousands does not stop the others."""
    size = params.image_size

    def read(filename):
        try:
            image, warning = read_rgb(filename.decode(), size)
        except UNREADABLE:
            return np.zeros((size, size, 3), np.uint8), False
        if warning:
            logging.warning(f"Warning: {warning}")
        return np.asarray(image), True

    def load(filename):
        image, readable = tf.numpy_function(read, [filename], [tf.uint8, tf.bool], stateful=False)
        image.set_shape([None, None, 3])
        readable.set_shape([])
        return preprocess(image, size, resize), readable

    dataset = tf.data.Dataset.from_tensor_slices([str(name) for name in filenames])
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(params.batch_size).prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


@keras.utils.register_keras_serializable(package="template")
class Preprocess(keras.layers.Layer):
    """preprocess as a layer, for the exported Keras model (export.py)."""

    def __init__(self, image_size, resize="squash", **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.resize = image_size, resize

    def call(self, images):
        return preprocess(images, self.image_size, self.resize)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "resize": self.resize}
