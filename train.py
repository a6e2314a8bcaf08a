"""Train the model on the train split, evaluating on dev after every epoch.

Reads MODEL_DIR/params.json (with any --param KEY=VALUE changes) and the output of
build_dataset.py, DATA_DIR/{train,dev}/{label}_*.jpg. Writes the weights, logs, metrics and
summaries into MODEL_DIR only (RUN_OUTPUTS in model/utils/run_folder.py lists them).

Example:
    python train.py --model_dir experiments/base_model --data_dir data/64x64_SIGNS
"""

import argparse
import logging
from pathlib import Path

import model.utils.quiet_tensorflow  # noqa: F401  (before TensorFlow: hides its start-up chatter)
from model import model_fn, text_model_fn  # noqa: F401  (they declare the two tasks)
from model.training import model_spec, set_seed, train_and_evaluate
from model.utils import tracking
from model.utils.dataset import DEFAULT_DATA_DIR
from model.utils.distribute import make_strategy
from model.utils.errors import run_main
from model.utils.run_folder import data_dir_of, run_folder
from model.utils.tasks import task_of

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model_dir", default="experiments/base_model", help="Experiment folder with params.json")
parser.add_argument(
    "--data_dir", help=f"Folder with train/ and dev/ (default: the one the run trained on, else {DEFAULT_DATA_DIR})"
)
parser.add_argument(
    "--restore_from",
    help="Weights to continue from: MODEL_DIR/last_weights to resume the run, or any weights folder or prefix",
)
parser.add_argument(
    "--param",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="Change one hyperparameter of params.json for this run (repeatable): --param learning_rate=0.01",
)
parser.add_argument("--overwrite", action="store_true", help="Delete MODEL_DIR's earlier outputs and start again")
parser.add_argument("--tracking_uri", help="Log the run to this MLflow store too (default: $MLFLOW_TRACKING_URI)")
parser.add_argument("--tracking_parent", help="The MLflow run this run is a trial of (search_hyperparams.py sets it)")


def main(argv=None):
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)

    # The task (images, or text from build_vocab.py) is the data's
    data_dir = args.data_dir or data_dir_of(model_dir) or DEFAULT_DATA_DIR
    task = task_of(data_dir)

    # Load the hyperparameters from the experiment's params.json, with any --param overrides and the
    # values the data decides (a text dataset's number of tags)
    params = task.load_params(model_dir, args.param, data_dir)

    # Check the data against them, before anything is written
    splits = {split: task.list_split(data_dir, split) for split in ("train", "dev")}
    warnings = [warning for split, data in splits.items() for warning in task.check_split(*data, params, split)]
    class_names = task.class_names(data_dir, params.num_labels)
    counts = {split: len(labels) for split, (_, labels) in splits.items()}
    data = {"data_dir": str(data_dir), **counts}

    # Log to MLflow too, if asked: its store is checked now
    tracker = tracking.connect(args.tracking_uri, args.tracking_parent)

    # Choose the devices and machines to train on, before TensorFlow runs anything
    strategy = make_strategy(params.distribution)

    # Seed Python, NumPy and TensorFlow for reproducible experiments
    set_seed(params.seed, params.deterministic)

    # Set up MODEL_DIR: one run at a time, never over earlier weights, a train.log, and run.json
    # (the command, versions, data and how the run ended), and its MLflow run if tracked
    with run_folder(strategy, model_dir, args.restore_from, args.overwrite, data, tracker) as (output_dir, run):
        for warning in warnings:
            logging.warning(warning)
        if args.param:
            logging.info(f"Hyperparameters changed for this run: {', '.join(args.param)}")

        # Create the input data pipelines
        logging.info("Creating the datasets...")
        train_dataset, dev_dataset = task.train_and_dev(splits, params)
        examples = "images" if task.name == "images" else "sentences"
        logging.info(f"- {counts['train']} train and {counts['dev']} dev {examples} from {data_dir}")

        # Define the model, its variables placed by the strategy
        logging.info(f"Creating the model on {strategy.num_replicas_in_sync} replica(s)...")
        spec = model_spec(params, strategy, splits["train"][1], task)
        spec.model.summary(print_fn=lambda text, **_: logging.info(text))
        run.record["model"] = {"model_version": params.model_version, "parameters": spec.model.count_params()}

        # Train, evaluating on dev after each epoch (MLflow, if tracked, gets the hyperparameters and each
        # epoch's metrics)
        tracker.log_params(params.dict)
        logging.info(f"Starting training for {params.num_epochs} epochs")
        words = task.words and task.words(data_dir)  # to show the dev sentences it gets wrong (text)
        stopped_early = train_and_evaluate(
            spec,
            train_dataset,
            dev_dataset,
            output_dir,
            params,
            class_names,
            args.restore_from,
            words,
            on_epoch=tracker.log_history,
        )
        if stopped_early:
            run.record.update(status="stopped early", reason=stopped_early)
        logging.info(f"Done. Weights, metrics and summaries are in {output_dir}")


if __name__ == "__main__":
    run_main(main)
