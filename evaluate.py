"""Evaluate a trained model on the test split.

Restores MODEL_DIR/best_weights (or --restore_from) with the hyperparameters it trained with,
runs it over DATA_DIR/test (DATA_DIR: the data the model trained on, unless given), and writes
the metrics, each class's precision, recall and F1, and the confusion matrix into
MODEL_DIR/metrics_test_best_weights.json, evaluate.log, a PNG and TensorBoard (docs/data.md).

Example:
    python evaluate.py --model_dir experiments/base_model
"""

import argparse
import io
import logging
from pathlib import Path

import model.utils.quiet_tensorflow  # noqa: F401  (before TensorFlow: hides its start-up chatter)
from model import model_fn, text_model_fn  # noqa: F401  (they declare the two tasks)
from model.evaluation import Metrics, evaluate, make_eval_step
from model.training import format_metrics, set_seed
from model.utils import report, summaries, tracking
from model.utils.checkpoints import load_trained_model, number
from model.utils.dataset import DEFAULT_DATA_DIR, SPLITS
from model.utils.errors import NOT_WRITABLE, run_main
from model.utils.files import check_output, save_json, write_text_atomic
from model.utils.logs import set_logger
from model.utils.run_folder import data_dir_of
from model.utils.tasks import task_of

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model_dir", default="experiments/base_model", help="Experiment folder of the trained model")
parser.add_argument("--data_dir", help="Folder with test/ (default: the data the model trained on)")
parser.add_argument(
    "--restore_from",
    default="best_weights",
    help="Weights to evaluate: best_weights or last_weights in MODEL_DIR, or any weights folder or prefix",
)
parser.add_argument("--split", default="test", choices=SPLITS, help="Which split to evaluate on")
parser.add_argument("--output_dir", help="Where to write the metrics and the log (default MODEL_DIR)")
parser.add_argument("--tracking_uri", help="Log the results to this MLflow store too (default: $MLFLOW_TRACKING_URI)")


def main(argv=None):
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    output_dir = Path(args.output_dir or model_dir)

    # Log to MLflow too, if asked (into the model's run): its store is checked before anything is written
    tracker = tracking.connect(args.tracking_uri)

    # Log to the console and to evaluate.log (the console only if the folder is read-only)
    if args.output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
    set_logger(output_dir / "evaluate.log", required=bool(args.output_dir))

    # The outputs, named after the weights, checked before the work
    name = Path(args.restore_from).name if number(args.restore_from) is None else Path(args.restore_from).parent.name
    metrics_path = output_dir / f"metrics_{args.split}_{name}.json"
    picture_path = output_dir / f"confusion_matrix_{args.split}_{name}.png"
    try:
        for path in (metrics_path, picture_path):
            check_output(path)
        writable = True
    except OSError as error:  # a read-only MODEL_DIR: evaluate, and say the metrics are not saved
        if error.errno not in NOT_WRITABLE or args.output_dir:
            raise
        writable = False

    # The network with its trained weights, the hyperparameters it was trained with, and its task's data
    params, network, checkpoint_prefix = load_trained_model(model_dir, args.restore_from)
    logging.info(f"Restored weights from {checkpoint_prefix}")
    set_seed(params.seed)
    data_dir = args.data_dir or data_dir_of(model_dir) or DEFAULT_DATA_DIR
    task = task_of(data_dir)
    task.check(params, data_dir)

    # Create the input data pipeline
    inputs, labels = task.list_split(data_dir, args.split)
    task.check_split(inputs, labels, params, args.split)
    dataset = task.input_fn(False, inputs, labels, params, one_pass=True)

    # Evaluate on the whole split, and each class (for text: each tag, and each entity type)
    class_names = task.class_names(data_dir, params.num_labels)
    metrics = Metrics(task)
    step = make_eval_step(network, metrics, params)
    results, _, confusion = evaluate(step, metrics, dataset, class_names, desc=args.split.capitalize())
    logging.info(
        f"- {args.split.capitalize()} metrics on {len(labels)} {'images' if task.name == 'images' else 'sentences'} "
        f"from {data_dir}: {format_metrics(results)}"
    )
    per_class = report.per_class(confusion, class_names)
    logging.info(
        f"Per {'class' if task.name == 'images' else 'tag'}, on the {args.split} split:\n"
        f"{report.table(per_class, confusion)}"
    )
    tables = {"per_class": per_class}
    if metrics.per_kind:
        tables["per_entity_type"] = metrics.per_kind
        logging.info(f"Per entity type, on the {args.split} split:\n{report.table(metrics.per_kind)}")

    # Save them, named after the weights
    if not writable:
        logging.warning(f"Warning: {output_dir} is not writable: metrics not saved (pass --output_dir to save them)")
        return
    picture = report.picture(confusion, class_names)
    save_json(results | tables | {"confusion_matrix": confusion}, metrics_path)
    png = io.BytesIO()
    picture.save(png, format="PNG")
    write_text_atomic(png.getvalue(), picture_path)
    summaries.write_evaluation(output_dir, number(checkpoint_prefix), f"{args.split}_{name}", results, picture, tables)
    tracker.log_evaluation(model_dir, number(checkpoint_prefix), f"{args.split}_{name}", results, tables, picture)
    logging.info(f"Saved {metrics_path}, the confusion matrix as a PNG beside it, and TensorBoard summaries")


if __name__ == "__main__":
    run_main(main)
