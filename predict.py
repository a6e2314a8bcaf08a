"""Predict the class of new images with a trained model.

Takes image files and folders of them (searched recursively) of any format, size and colour
mode, preprocesses them exactly as evaluation does, and prints each image's top-k classes with
their probabilities, also into MODEL_DIR/predict.log. A text model takes files of raw sentences,
one per line (- reads standard input), and prints each with its entities. Details: docs/data.md,
docs/text.md.

Examples:
    python predict.py --model_dir experiments/base_model photo.jpg --top_k 3 --output predictions.csv
    echo "Mr. Smith flew to Paris ." | python predict.py --model_dir experiments/ner_base -
"""

import argparse
import logging
import os
import sys
from pathlib import Path

import model.utils.quiet_tensorflow  # noqa: F401  (before TensorFlow: hides its start-up chatter)

# isort: split
import tensorflow as tf
from tqdm import tqdm

from model import model_fn, text_model_fn  # noqa: F401  (they declare the two tasks)
from model.evaluation import predict
from model.input_fn import predict_input_fn
from model.text_input_fn import featurizer
from model.text_model_fn import tagger
from model.utils.checkpoints import load_trained_model
from model.utils.conlleval import entities
from model.utils.dataset import load_class_names, resize_mode
from model.utils.errors import UserError, check_utf8, run_main
from model.utils.files import check_output, decode_lines, read_lines, save_csv
from model.utils.images import IMAGE_EXTENSIONS
from model.utils.logs import set_logger
from model.utils.params import load_trained_params
from model.utils.run_folder import data_dir_of
from model.utils.tasks import task_of

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument(
    "inputs", nargs="+", help="Image files or folders of images; for a text model, files of sentences or - (stdin)"
)
parser.add_argument("--model_dir", default="experiments/base_model", help="Experiment folder of the trained model")
parser.add_argument(
    "--restore_from",
    default="best_weights",
    help="Weights to use: best_weights or last_weights in MODEL_DIR, or any weights folder or prefix",
)
parser.add_argument("--top_k", type=int, default=3, help="Number of most likely classes shown per image")
parser.add_argument("--output", help="Also write the predictions to this CSV file")
parser.add_argument("--data_dir", help="Dataset with the classes.json (default: the one the model trained on)")


def list_images(paths):
    """The image files named, and those in the folders named (recursively), in a stable order; and
    the folders that could not be read."""
    files, unreadable = [], []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(
                Path(folder, name)
                for folder, _, names in os.walk(path, onerror=unreadable.append)
                for name in names
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS
            )
            for other in (p for p in found if not p.is_file()):  # a pipe or a device would block the reader
                logging.warning(f"Skipped {other}: not a regular file")
            files += [p for p in found if p.is_file()]
        elif path.is_file():
            files.append(path)  # named explicitly: tried whatever its extension
        else:
            problem = "is not a regular file" if path.exists() else "does not exist"
            raise UserError(f"{path} {problem}. Give image files or folders of images.")
    for error in unreadable:
        logging.warning(f"Warning: skipped {error.filename}: {error.strerror}, so its images are left out")
    for path in files:
        check_utf8(str(path), "The file ")
    if not files:
        raise UserError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(paths)}.")
    return files, len(unreadable)


def why_unreadable(path):
    """Why a file could not be read as an image: the file system's reason, or else its content."""
    try:
        with open(path, "rb") as f:  # a regular file: list_images left out the others
            f.read(1)
    except OSError as error:
        return f"{error.strerror}. Check its permissions"
    return "not an image that can be read (damaged, cut short, or of another kind)"


def csv_rows(predictions, k):
    rows = [["image", *(f"{column}_{rank}" for rank in range(1, k + 1) for column in ("class", "probability"))]]
    return rows + [[path, *(value for name, p in top for value in (name, f"{p:.6f}"))] for path, top in predictions]


def read_sentences(paths):
    """The non-blank lines of text files, "-" standing for standard input."""
    sentences = []
    for path in paths:
        lines = decode_lines(sys.stdin.buffer.read(), "standard input") if path == "-" else read_lines(path)
        sentences += [line for line in lines if line.strip()]
    if not sentences:
        raise UserError(f"No sentences in {', '.join(paths)}: give text files, a sentence per line.")
    return sentences


def predict_sentences(network, data_dir, params, sentences, output):
    """Tags each sentence's words; logs the sentence with its entities, and writes a CSV."""
    tag = tagger(network, featurizer(data_dir), text_model_fn.TASK.class_names(data_dir, params.num_labels))
    rows = [["sentence", "tokens", "tags", "entities"]]
    for start in tqdm(range(0, len(sentences), params.batch_size), desc="Tagging", leave=False):
        batch = tag(tf.constant(sentences[start : start + params.batch_size]))
        for sentence, tokens, tags in zip(sentences[start:], batch["tokens"].numpy(), batch["tags"].numpy()):
            tokens, tags = [t.decode() for t in tokens if t], [t.decode() for t in tags if t]
            found = sorted(entities(tags), key=lambda entity: entity[1])
            named = "; ".join(f"{kind}: {' '.join(tokens[first:end])}" for kind, first, end in found)
            logging.info(f"{sentence}\n    {named or 'no entity'}")
            rows.append([sentence, " ".join(tokens), " ".join(tags), named])
    if output:
        save_csv(rows, output)
        logging.info(f"Saved {output}")


def main(argv=None):
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    if args.top_k < 1:
        raise UserError("--top_k must be at least 1.")
    if args.output:
        check_output(args.output)  # before the work, not after it

    # The inputs, then the network with its trained weights and the hyperparameters it was trained with
    set_logger(model_dir / "predict.log", required=False)
    data_dir = args.data_dir or data_dir_of(model_dir)
    task = task_of(data_dir)
    task.check_network(load_trained_params(model_dir).model_version, data_dir)  # images or sentences to read
    if task.name == "text":
        sentences = read_sentences(args.inputs)
    else:
        files, unreadable_folders = list_images(args.inputs)
    params, network, checkpoint_prefix = load_trained_model(model_dir, args.restore_from)
    task.check(params, data_dir)
    if task.name == "text":
        logging.info(f"Tagging {len(sentences)} sentences with the weights in {checkpoint_prefix}")
        predict_sentences(network, data_dir, params, sentences, args.output)
        return
    class_names, resize = load_class_names(data_dir, params.num_labels), resize_mode(data_dir)
    logging.info(f"Predicting {len(files)} images with the weights in {checkpoint_prefix}")

    # Read, preprocess and classify the images batch by batch
    probabilities, readable = predict(network, predict_input_fn(files, params, resize))

    # Report each image's most likely classes; skip the files that are not images
    k = min(args.top_k, params.num_labels)
    predictions = []
    for path, image_probabilities, ok in zip(files, probabilities, readable):
        if not ok:
            logging.warning(f"Skipped {path}: {why_unreadable(path)}")
            continue
        best = image_probabilities.argsort()[::-1][:k]  # the k most likely classes, most likely first
        top = [(class_names[label], float(image_probabilities[label])) for label in best]
        predictions.append((path, top))
        logging.info(f"{path}: " + ", ".join(f"{name} ({p:.1%})" for name, p in top))
    logging.info(
        f"Predicted {len(predictions)} images; skipped {len(files) - len(predictions)} unreadable files "
        f"and {unreadable_folders} unreadable folders"
    )
    if args.output:
        save_csv(csv_rows(predictions, k), args.output)
        logging.info(f"Saved {args.output}")
    if not predictions:
        raise UserError("None of the files could be read as an image.")


if __name__ == "__main__":
    run_main(main)
