"""Export a trained model for use outside this template, its preprocessing included.

Restores MODEL_DIR/best_weights (or --restore_from) and writes into MODEL_DIR/export/ (or
--output_dir): saved_model/ for TensorFlow Serving (encoded image files, or uint8 pixels, in;
probabilities and class name out), model.keras (uint8 pixels in, probabilities out) and
classes.json; with --format tflite, model.tflite for phones (square uint8 pixels in). A text
model's saved_model takes raw sentences and gives each word's tag, as predict.py does; its
model.keras takes tokens. Their inputs and how to load them: docs/data.md, docs/text.md.

Example:
    python export.py --model_dir experiments/base_model
"""

import argparse
import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

import model.utils.quiet_tensorflow  # noqa: F401  (before TensorFlow: hides its start-up chatter)

# isort: split
import tensorflow as tf

from model import model_fn  # noqa: F401  (declares the networks)
from model.input_fn import Preprocess, decode_jpeg, resize_image, square
from model.text_input_fn import featurizer
from model.text_model_fn import tagger
from model.utils.checkpoints import load_trained_model
from model.utils.dataset import resize_mode
from model.utils.errors import UserError, run_main
from model.utils.files import check_output, save_json, write_text_atomic
from model.utils.logs import set_logger
from model.utils.params import MAX_IMAGE_SIZE
from model.utils.run_folder import data_dir_of
from model.utils.tasks import task_of

keras = tf.keras

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model_dir", default="experiments/base_model", help="Experiment folder of the trained model")
parser.add_argument(
    "--restore_from",
    default="best_weights",
    help="Weights to export: best_weights or last_weights in MODEL_DIR, or any weights folder or prefix",
)
parser.add_argument(
    "--format",
    action="append",
    choices=["saved_model", "keras", "tflite"],
    help="What to write (repeatable; default: saved_model and keras)",
)
parser.add_argument(
    "--tflite_size",
    type=int,
    help="tflite: the side of the square uint8 pixels it takes (default: image_size; a multiple is average-pooled)",
)
parser.add_argument("--output_dir", help="Where to write (default MODEL_DIR/export)")
parser.add_argument("--data_dir", help="Dataset with the classes.json (default: the one the model trained on)")


def classifier(network, image_size, resize):
    """The network behind its preprocessing, with a softmax: uint8 [batch, height, width, 3] -> probabilities."""
    pixels = keras.Input(shape=(None, None, 3), dtype="uint8", name="pixels")
    probabilities = keras.layers.Softmax(name="probabilities")(network(Preprocess(image_size, resize)(pixels)))
    return keras.Model(pixels, probabilities, name="classifier")


def decode(image_bytes):
    """An encoded JPEG, PNG, WebP, GIF or BMP file -> uint8 RGB pixels, by model/utils/images.py's rules:
    transparent pixels composited onto white (the transparency of GIF and BMP files is not read)."""
    png_or_webp = tf.logical_or(
        tf.strings.substr(image_bytes, 0, 4) == b"\x89PNG", tf.strings.substr(image_bytes, 8, 4) == b"WEBP"
    )

    def composited():
        rgba = tf.cast(tf.io.decode_image(image_bytes, channels=4, expand_animations=False), tf.float32)
        alpha = rgba[..., 3:] / 255
        return tf.cast(tf.round(rgba[..., :3] * alpha + 255 * (1 - alpha)), tf.uint8)

    return tf.case(
        [(tf.io.is_jpeg(image_bytes), lambda: decode_jpeg(image_bytes)), (png_or_webp, composited)],
        default=lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )


def image_endpoints(model, image_size, resize, class_names):
    """The SavedModel's signatures for images: serving_default (image_bytes, encoded image files of any
    size) and serve_pixels (uint8 pixels), each giving probabilities and class."""
    names = tf.constant(class_names)

    def outputs(pixels):
        probabilities = model(pixels)
        return {"probabilities": probabilities, "class": tf.gather(names, tf.argmax(probabilities, axis=-1))}

    def one_file(data):  # files of different sizes are decoded and resized one by one, then batched
        return resize_image(square(decode(data), resize), image_size)

    def from_bytes(image_bytes):
        return outputs(tf.map_fn(one_file, image_bytes, fn_output_signature=tf.uint8))

    return {
        "serving_default": (from_bytes, [tf.TensorSpec([None], tf.string, name="image_bytes")]),
        "serve_pixels": (outputs, [tf.TensorSpec([None, None, None, 3], tf.uint8, name="pixels")]),
    }


def write_saved_model(model, endpoints, path):
    """A SavedModel for TensorFlow Serving, with the signatures of `endpoints` ({name: (function, inputs)})."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (function, signature) in endpoints.items():
        archive.add_endpoint(name, function, input_signature=signature)
    archive.write_out(str(path), verbose=False)


def lite_classifier(network, image_size, size):
    """The network for TensorFlow Lite: square uint8 pixels [1, size, size, 3] -> probabilities. The
    antialiased resize of preprocess() is an op TensorFlow Lite lacks (ScaleAndTranslate): a whole-number
    reduction is an average pool, which is what antialiasing does there; any other size, bilinear."""
    pixels = keras.Input(shape=(size, size, 3), batch_size=1, dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1 / 255)(pixels)
    if size != image_size:
        x = (
            keras.layers.AveragePooling2D(size // image_size)(x)
            if size % image_size == 0
            else keras.layers.Resizing(image_size, image_size)(x)
        )
    return keras.Model(pixels, keras.layers.Softmax(name="probabilities")(network(x)), name="lite_classifier")


def to_tflite(model):
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints every variable it captures
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def tagger_model(network, featurize):
    """The text network behind its featurization, with a softmax: tokens [batch, length] ("" pads) -> probabilities."""
    tokens = keras.Input(shape=(None,), dtype="string", name="tokens")
    probabilities = keras.layers.Activation("softmax", name="probabilities")(network(featurize(tokens)))
    return keras.Model(tokens, probabilities, name="tagger")


def replace_atomically(write, destination):
    """Calls write(path) on a temporary path next to `destination`, then moves it into place,
    so that an interrupted export never leaves half a model where a whole one was."""
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=f".{destination.name}.") as temporary:
        path = Path(temporary) / destination.name
        write(path)
        if destination.is_dir():
            shutil.rmtree(destination)
        path.replace(destination)


def main(argv=None):
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    output_dir = Path(args.output_dir or model_dir / "export")
    formats = args.format or ["saved_model", "keras"]

    # Every output checked before the work: never through a link, never over anything but its own kind
    set_logger(model_dir / "export.log", required=False)
    check_output(output_dir, folder=True)
    for name, folder in (
        ("classes.json", False),
        ("saved_model", True),
        ("model.keras", False),
        ("model.tflite", False),
    ):
        check_output(output_dir / name, folder)
    if args.tflite_size is not None and not 1 <= args.tflite_size <= MAX_IMAGE_SIZE:
        raise UserError(f"--tflite_size {args.tflite_size} must be a whole number from 1 to {MAX_IMAGE_SIZE}.")

    # The network with its trained weights, behind the preprocessing (for text, the tokenization) and a softmax
    params, network, checkpoint_prefix = load_trained_model(model_dir, args.restore_from)
    data_dir = args.data_dir or data_dir_of(model_dir)
    task = task_of(data_dir)
    task.check(params, data_dir)
    class_names = task.class_names(data_dir, params.num_labels)
    if task.name == "text" and "tflite" in formats:
        raise UserError(
            "--format tflite is for image models: a text model's tokenization and vocabulary lookups are string "
            "operations that TensorFlow Lite's built-in ops do not cover (docs/text.md)."
        )
    if task.name == "text":  # sentences in, each word's tag out
        featurize = featurizer(data_dir)
        model = tagger_model(network, featurize)
        endpoints = {"serving_default": (tagger(network, featurize, class_names), None)}
    else:
        resize = resize_mode(data_dir)
        model = classifier(network, params.image_size, resize)
        endpoints = image_endpoints(model, params.image_size, resize, class_names)
    logging.info(f"Exporting the weights in {checkpoint_prefix}")

    # Write each format
    output_dir.mkdir(parents=True, exist_ok=True)
    save_json(dict(enumerate(class_names)), output_dir / "classes.json")
    if "saved_model" in formats:
        replace_atomically(lambda path: write_saved_model(model, endpoints, path), output_dir / "saved_model")
        logging.info(f"Saved {output_dir / 'saved_model'} (signatures: {', '.join(endpoints)})")
    if "keras" in formats:
        replace_atomically(model.save, output_dir / "model.keras")
        logging.info(f"Saved {output_dir / 'model.keras'}")
    if "tflite" in formats:
        size = args.tflite_size or params.image_size
        write_text_atomic(to_tflite(lite_classifier(network, params.image_size, size)), output_dir / "model.tflite")
        logging.info(f"Saved {output_dir / 'model.tflite'} (uint8 pixels [1, {size}, {size}, 3] in, probabilities out)")


if __name__ == "__main__":
    run_main(main)
