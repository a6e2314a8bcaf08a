"""Train the model on the train split, evaluating on dev after every epoch.

Reads the hyperparameters from MODEL_DIR/params.json (with any --param KEY=VALUE changes)
and writes everything the run produces into MODEL_DIR: params_used.json (the hyperparameters
actually used), train.log, last_weights/, best_weights/, metrics_eval_*.json, history.jsonl
(one line of metrics per epoch) and TensorBoard summaries. The data is the output of
build_dataset.py: DATA_DIR/{train,dev}_signs/{label}_*.jpg

Example:
    python train.py --model_dir experiments/base_model --data_dir data/64x64_SIGNS
    python train.py --model_dir experiments/lr_test --param learning_rate=0.01 --param num_epochs=3
"""

import argparse
import logging
import shutil
from pathlib import Path

import model.quiet_tensorflow  # noqa: F401  (before TensorFlow: hides its start-up chatter)
from model.distribute import make_strategy, output_folder
from model.input_fn import check_split, input_fn, list_split
from model.model_fn import model_fn
from model.training import set_seed, train_and_evaluate
from model.utils import RunRecord, UserError, checkpoints_in, load_params, run_main, set_logger, training_lock

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model_dir", default="experiments/base_model", help="Experiment folder with params.json")
parser.add_argument("--data_dir", default="data/64x64_SIGNS", help="Folder with train_signs/ and dev_signs/")
parser.add_argument(
    "--restore_from",
    help="Weights to continue from: a folder such as MODEL_DIR/last_weights, or a checkpoint prefix",
)
parser.add_argument(
    "--param",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="Change one hyperparameter of params.json for this run (repeatable): --param learning_rate=0.01",
)
parser.add_argument("--overwrite", action="store_true", help="Delete MODEL_DIR's earlier weights and start again")

# What a run writes into MODEL_DIR, removed by --overwrite.
RUN_OUTPUTS = [
    "params_used.json",
    "run.json",
    "last_weights",
    "best_weights",
    "train_summaries",
    "eval_summaries",
    "metrics_eval_last_weights.json",
    "metrics_eval_best_weights.json",
    "history.jsonl",
]


def remove_stale_temporaries(model_dir):
    """Deletes the temporary files that a run killed in the middle of writing an output left."""
    for name in RUN_OUTPUTS:
        for path in model_dir.glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)


def check_not_overwriting(model_dir, restore_from, overwrite):
    """Refuses to train over earlier weights unless told to continue from or replace them."""
    has_weights = any(checkpoints_in(model_dir / name) for name in ("last_weights", "best_weights"))
    if has_weights and not restore_from and not overwrite:
        raise UserError(
            f"{model_dir} already holds weights from an earlier run. To continue it, add "
            f"--restore_from {model_dir / 'last_weights'}; to start again and delete them, add "
            "--overwrite; or use another --model_dir."
        )
    if overwrite:
        for name in RUN_OUTPUTS:
            path = model_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def make_datasets(data_dir, params):
    """The train and dev pipelines, after checking the data against params; with the number of
    images in each split."""
    train_files, train_labels = list_split(data_dir, "train")
    dev_files, dev_labels = list_split(data_dir, "dev")
    check_split(train_files, train_labels, params, "train")
    check_split(dev_files, dev_labels, params, "dev")
    counts = {"train": len(train_files), "dev": len(dev_files)}
    if params.overfit_batches:
        # Debug mode: learn the same few batches by heart, and evaluate on them. A new model
        # that cannot drive this loss near zero has a bug.
        logging.info(f"Debug mode: overfitting {params.overfit_batches} train batch(es)")
        batches = input_fn(False, train_files, train_labels, params, one_pass=True)
        batches = batches.take(params.overfit_batches).cache()
        return batches, batches, counts
    train_dataset = input_fn(True, train_files, train_labels, params)
    dev_dataset = input_fn(False, dev_files, dev_labels, params)
    return train_dataset, dev_dataset, counts


def main():
    args = parser.parse_args()
    model_dir = Path(args.model_dir)

    # Load the hyperparameters from the experiment's params.json, with any --param overrides
    params = load_params(model_dir, args.param)

    # Choose the devices and machines to train on, before TensorFlow runs anything
    strategy = make_strategy(params.distribution)

    # Seed Python, NumPy and TensorFlow for reproducible experiments
    set_seed(params.seed, params.deterministic)

    # In a cluster, only the chief writes into MODEL_DIR: the others write to a temporary folder.
    # Only one run at a time trains in a folder.
    with output_folder(strategy, model_dir) as output_dir, training_lock(output_dir):
        # Never train over the weights of an earlier run by accident
        check_not_overwriting(output_dir, args.restore_from, args.overwrite)
        remove_stale_temporaries(output_dir)

        # Log to the console and to MODEL_DIR/train.log
        set_logger(output_dir / "train.log")
        if args.param:
            logging.info(f"Hyperparameters changed for this run: {', '.join(args.param)}")

        # run.json records the command, versions, data and how the run ended
        with RunRecord(output_dir) as run:
            # Create the input data pipelines
            logging.info("Creating the datasets...")
            train_dataset, dev_dataset, counts = make_datasets(args.data_dir, params)
            logging.info(f"- {counts['train']} train and {counts['dev']} dev images from {args.data_dir}")
            run.record["data"] = {"data_dir": str(args.data_dir), **counts}

            # Define the model, its variables placed by the strategy
            logging.info(f"Creating the model on {strategy.num_replicas_in_sync} replica(s)...")
            with strategy.scope():
                spec = model_fn(params)

            # Train, evaluating on dev after each epoch
            logging.info(f"Starting training for {params.num_epochs} epochs")
            train_and_evaluate(spec, train_dataset, dev_dataset, output_dir, params, args.restore_from)
            logging.info(f"Done. Weights, metrics and summaries are in {output_dir}")


if __name__ == "__main__":
    run_main(main)
