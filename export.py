"""Export a trained model for use outside this template, its preprocessing included.

Restores MODEL_DIR/best_weights (or --restore_from) and writes into MODEL_DIR/export/ (or
--output_dir) a model that takes images as they come and gives class probabilities:
  saved_model/  a SavedModel for TensorFlow Serving or tf.saved_model.load, with no Python
                code needed. Its default signature takes encoded image files (image_bytes: a
                batch of JPEG, PNG, GIF or BMP files, any size); serve_pixels takes uint8 pixels
                [batch, height, width, 3]. Both return probabilities and the class name.
  model.keras   the Keras model: uint8 pixels [batch, height, width, 3] in, probabilities out.
                Load it with keras.models.load_model after `import model.serving` (its layers
                are this template's).
  classes.json  the class name of each label.
Both resize and scale images with input_fn.preprocess, as evaluation and predict.py do.

Example:
    python export.py --model_dir experiments/base_model
    python export.py --model_dir experiments/base_model --format keras --output_dir /tmp/signs_model
"""

import argparse
import logging
import shutil
import tempfile
from functools import partial
from pathlib import Path

import model.quiet_tensorflow  # noqa: F401  (before TensorFlow: hides its start-up chatter)
from model.checkpoints import load_trained_model
from model.dataset import load_class_names
from model.errors import run_main
from model.files import refuse_link, save_json
from model.logs import set_logger
from model.run_record import data_dir_of
from model.serving import classifier, export_saved_model

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
    choices=["saved_model", "keras"],
    help="What to write (repeatable; default: both)",
)
parser.add_argument("--output_dir", help="Where to write (default MODEL_DIR/export)")
parser.add_argument("--data_dir", help="Dataset with the classes.json (default: the one the model trained on)")


def replace_atomically(write, destination):
    """Calls write(path) on a temporary path next to `destination`, then moves it into place,
    so that an interrupted export never leaves half a model where a whole one was."""
    destination = Path(destination)
    refuse_link(destination)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=f".{destination.name}.") as temporary:
        path = Path(temporary) / destination.name
        write(path)
        if destination.is_dir():
            shutil.rmtree(destination)
        path.replace(destination)


def main():
    args = parser.parse_args()
    model_dir = Path(args.model_dir)
    output_dir = Path(args.output_dir or model_dir / "export")
    formats = args.format or ["saved_model", "keras"]

    # The network with its trained weights, behind the preprocessing and a softmax
    set_logger(model_dir / "export.log", required=False)
    params, network, checkpoint_prefix = load_trained_model(model_dir, args.restore_from)
    class_names = load_class_names(args.data_dir or data_dir_of(model_dir), params.num_labels)
    model = classifier(network, params.image_size)
    logging.info(f"Exporting the weights in {checkpoint_prefix}")

    # Write each format
    output_dir.mkdir(parents=True, exist_ok=True)
    save_json(dict(enumerate(class_names)), output_dir / "classes.json")
    if "saved_model" in formats:
        write = partial(export_saved_model, model, params.image_size, class_names)
        replace_atomically(write, output_dir / "saved_model")
        logging.info(f"Saved {output_dir / 'saved_model'} (signatures: serving_default for image files, serve_pixels)")
    if "keras" in formats:
        replace_atomically(model.save, output_dir / "model.keras")
        logging.info(f"Saved {output_dir / 'model.keras'}")


if __name__ == "__main__":
    run_main(main)
