"""The input pipeline: image files on disk -> batches of (images, labels) with tf.data.

The order of the steps follows TensorFlow's tf.data performance guide: parallel decoding,
`cache` after the expensive decode so later epochs skip it, `shuffle` before the random
augmentation so every epoch sees new variants of the same images, `prefetch` last so the
next batch is prepared while the model trains on the current one.
"""

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from model.images import UNREADABLE, read_rgb
from model.utils import UserError, label_from_filename

# What build_dataset.py writes (predict.py reads any format: model/images.py).
BUILT_IMAGE_EXTENSIONS = (".jpg", ".jpeg")
# Images shuffled together when reading a disk cache (with a memory cache: all of them).
DISK_CACHE_SHUFFLE_BUFFER = 1000


def list_split(data_dir, split):
    """Lists the images of one split and their labels: `data_dir/{split}_signs/{label}_*.jpg`.

    Used by both train.py and evaluate.py, so the two always read data the same way.
    Files are sorted, so the order (and a seeded shuffle of it) is the same on every machine.
    """
    split_dir = Path(data_dir) / f"{split}_signs"
    if not split_dir.is_dir():
        raise UserError(
            f"The {split} split is missing: no folder {split_dir}. "
            "Run build_dataset.py first, or pass --data_dir pointing at its output."
        )
    filenames = sorted(str(path) for path in split_dir.iterdir() if path.suffix.lower() in BUILT_IMAGE_EXTENSIONS)
    if not filenames:
        raise UserError(f"The {split} split is empty: no .jpg images in {split_dir}.")
    labels = [label_from_filename(name) for name in filenames]
    return filenames, labels


def _load_image(filename, label, image_size):
    """Reads a JPEG as uint8 pixels, resized only if it must be."""
    image_string = tf.io.read_file(filename)
    return resize_image(decode_jpeg(image_string), image_size), label


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


def to_float(images):
    # Also scales uint8 [0, 255] into [0, 1].
    return tf.image.convert_image_dtype(images, tf.float32)


def preprocess(images, image_size):
    """The model's input from uint8 RGB pixels of any size, one image or a batch.

    The one preprocessing function: evaluation runs it in two halves (resize_image before its
    cache, to_float after), and predict.py and the exported models call it whole.
    """
    return to_float(resize_image(images, image_size))


def augment(image, label, use_random_flip):
    """Random changes a photo of a hand could have had, applied to the training set only."""
    if use_random_flip:
        image = tf.image.random_flip_left_right(image)
    image = tf.image.random_brightness(image, max_delta=32.0 / 255.0)
    image = tf.image.random_saturation(image, lower=0.5, upper=1.5)
    # Brightness and saturation can push values out of [0, 1].
    image = tf.clip_by_value(image, 0.0, 1.0)
    return image, label


def cache(dataset, where):
    """Keeps the decoded images after the first epoch: `where` is "memory", "none" or a folder."""
    if where == "memory":
        return dataset.cache()
    if where == "none":
        return dataset
    # A folder on disk, for datasets larger than RAM. Each dataset gets a fresh sub-folder,
    # deleted when the process ends: a cache then never holds stale images, and parallel
    # runs never share one (tf.data refuses two writers of one cache file).
    Path(where).mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="tf_data_cache_", dir=where)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return dataset.cache(str(Path(folder) / "images"))


def input_fn(is_training, filenames, labels, params, one_pass=False):
    """Builds a tf.data.Dataset of (images, labels) batches.

    Args:
        is_training: shuffle and augment (training) or keep the order (evaluation).
        filenames: list of image paths, from `list_split`.
        labels: list of integer labels, one per file.
        params: Params with image_size, batch_size, use_random_flip and cache.
        one_pass: the dataset is read only once (evaluate.py), so it is not cached.
    """
    dataset = tf.data.Dataset.from_tensor_slices((filenames, tf.constant(labels, tf.int32)))
    if is_training:
        # Shuffling file names is cheap, and without a cache it is all the shuffling needed.
        dataset = dataset.shuffle(len(filenames), reshuffle_each_iteration=True)
    dataset = dataset.map(lambda f, y: _load_image(f, y, params.image_size), num_parallel_calls=tf.data.AUTOTUNE)
    # The cache holds uint8 pixels, 4x smaller than the float32 the model takes.
    where = "none" if one_pass else params.cache
    dataset = cache(dataset, where)
    if is_training and where != "none":
        # A cache replays the first epoch in its order: shuffle again, over the whole dataset
        # when it is in memory, and over a bounded buffer from disk so memory stays flat.
        buffer = len(filenames) if where == "memory" else min(len(filenames), DISK_CACHE_SHUFFLE_BUFFER)
        dataset = dataset.shuffle(buffer, reshuffle_each_iteration=True)
    # Pixels become floats in the same map as the augmentation: one more map of its own
    # halved the training speed on 2 CPU cores (see benchmarks/benchmark.py).
    if is_training:
        dataset = dataset.map(
            lambda x, y: augment(to_float(x), y, params.use_random_flip),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(lambda x, y: (to_float(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(params.batch_size).prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(pipeline_options())


def pipeline_options():
    options = tf.data.Options()
    # tf.data's autotuner made the end of every epoch wait for its background thread, for
    # longer as epochs grow (4 s after a 6 s epoch). Without it, AUTOTUNE takes fixed
    # defaults, and the pipeline still runs 10x faster than training (benchmarks/benchmark.py).
    options.autotune.enabled = False
    # In a cluster, every worker lists all the files and keeps its share of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def predict_input_fn(filenames, params):
    """Batches of (images, readable) from image files of any format, size, mode and orientation.

    Pillow reads each file as build_dataset.py does (model/images.py), then `preprocess` makes
    the model's input. An unreadable file gives a blank image and readable = False, so one bad
    file among thousands does not stop the others.
    """
    size = params.image_size

    def read(filename):
        try:
            return np.asarray(read_rgb(filename.decode(), size)), True
        except UNREADABLE:
            return np.zeros((size, size, 3), np.uint8), False

    def load(filename):
        image, readable = tf.numpy_function(read, [filename], [tf.uint8, tf.bool], stateful=False)
        image.set_shape([None, None, 3])
        readable.set_shape([])
        return preprocess(image, size), readable

    dataset = tf.data.Dataset.from_tensor_slices([str(name) for name in filenames])
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(params.batch_size).prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


def check_labels(labels, num_labels, split):
    """Stops with a clear message when the data's labels don't match params.num_labels."""
    outside = sorted({label for label in labels if not 0 <= label < num_labels})
    if outside:
        raise UserError(
            f"The {split} split has labels {outside} outside 0..{num_labels - 1}, the range "
            f"num_labels = {num_labels} in params.json allows. Set num_labels to the number of classes."
        )
    found = len(set(labels))
    if split == "train" and found != num_labels:
        raise UserError(
            f"The train split has {found} different labels but params.json says num_labels = "
            f"{num_labels}. Set num_labels to {found}, or check the data."
        )


def check_image_size(filenames, image_size):
    """Stops with a clear message when an image is not image_size x image_size pixels."""
    for filename in filenames:
        with Image.open(filename) as image:  # reads the file's header only
            width, height = image.size
        if (width, height) != (image_size, image_size):
            raise UserError(
                f"{filename} is {width}x{height} pixels, but image_size = {image_size} in params.json. "
                f"Rebuild the data with `build_dataset.py --size {image_size}`, or set image_size to the "
                "size the data was built with."
            )


def check_split(filenames, labels, params, split):
    """The checks train.py and evaluate.py run on each split before using it."""
    check_labels(labels, params.num_labels, split)
    check_image_size(filenames, params.image_size)
