"""A trained model made self-contained: uint8 pixels or encoded image bytes in, class probabilities out.

export.py writes these models; they preprocess with input_fn.preprocess, the function that
evaluation and predict.py use, so they give predict.py's results wherever they are loaded.
"""

import tensorflow as tf

import model.layers  # noqa: F401  (registers the network's layers, to load a .keras file)
from model.input_fn import decode_jpeg, preprocess, resize_image

keras = tf.keras


@keras.utils.register_keras_serializable(package="template")
class Preprocess(keras.layers.Layer):
    """input_fn.preprocess as a layer: uint8 RGB images of any size -> the network's input."""

    def __init__(self, image_size, **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size

    def call(self, images):
        return preprocess(images, self.image_size)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size}


def classifier(network, image_size):
    """The network with its preprocessing and a softmax: uint8 [batch, height, width, 3] -> probabilities."""
    pixels = keras.Input(shape=(None, None, 3), dtype="uint8", name="pixels")
    logits = network(Preprocess(image_size)(pixels))
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(pixels, probabilities, name="classifier")


def decode(image_bytes):
    """An encoded JPEG, PNG, WebP, GIF or BMP file -> uint8 RGB pixels, by model/images.py's rules:
    transparent pixels composited onto white (GIF's and BMP's transparency is not read)."""
    png = tf.strings.substr(image_bytes, 0, 4) == b"\x89PNG"
    webp = tf.strings.substr(image_bytes, 8, 4) == b"WEBP"

    def composited():
        rgba = tf.cast(tf.io.decode_image(image_bytes, channels=4, expand_animations=False), tf.float32)
        alpha = rgba[..., 3:] / 255
        return tf.cast(tf.round(rgba[..., :3] * alpha + 255 * (1 - alpha)), tf.uint8)

    return tf.case(
        [
            (tf.io.is_jpeg(image_bytes), lambda: decode_jpeg(image_bytes)),  # as in training: Pillow's pixels
            (tf.logical_or(png, webp), composited),
        ],
        default=lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )


def export_saved_model(classifier, image_size, class_names, path):
    """A SavedModel for TensorFlow Serving, with two signatures:

    serving_default: image_bytes (encoded JPEG, PNG, WebP, GIF or BMP files, any size) -> probabilities, class
    serve_pixels:    pixels (uint8 [batch, height, width, 3])                           -> probabilities, class
    """
    names = tf.constant(class_names)

    def outputs(pixels):
        probabilities = classifier(pixels)
        return {"probabilities": probabilities, "class": tf.gather(names, tf.argmax(probabilities, axis=-1))}

    def decode_and_resize(image_bytes):  # images of different sizes are resized one by one, then batched
        return resize_image(decode(image_bytes), image_size)

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda image_bytes: outputs(tf.map_fn(decode_and_resize, image_bytes, fn_output_signature=tf.uint8)),
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        name="serve_pixels", fn=outputs, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="pixels")]
    )
    archive.write_out(str(path), verbose=False)
