"""Aggregate the results of all experiments under a folder into one table.

Every folder below PARENT_DIR with a params.json (and no search.json) is an experiment. Prints a
markdown table of them, best first by --metric: the hyperparameters that differ between them,
then the metrics of their best weights; saves it as PARENT_DIR/results.md and results.csv, and
shows each Optuna study found. Details: docs/experiments-and-search.md.

Example:
    python synthesize_results.py --parent_dir experiments --split test
"""

import model.utils.interrupts  # noqa: F401  (first: a Ctrl-C from here on ends the script quietly)

# isort: split
import argparse
import logging
import math
from pathlib import Path

from model.utils.errors import UserError, run_main
from model.utils.files import check_output, load_json, refuse_special, require_folder, save_csv, write_text_atomic
from model.utils.params import LOWER_IS_BETTER
from model.utils.run_folder import JOURNAL_NAME, run_status

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--parent_dir", default="experiments", help="Folder to search for experiments")
parser.add_argument("--metric", default="accuracy", help="Metric to sort by (loss sorts lowest first)")
parser.add_argument("--split", default="eval", choices=["eval", "test"], help="Dev (eval) or test metrics")
parser.add_argument(
    "--storage", help="Database URL or journal file of an Optuna study to show (PARENT_DIR's journals are found)"
)


def read_json_or_warn(path):
    """The JSON object in `path`, or None with a warning naming the file if it is unreadable."""
    try:
        return load_json(path)
    except UserError as error:
        logging.warning(f"Warning: skipping {error}")
        return None


def find_experiments(parent_dir, split):
    """[(name, params, metrics or why there are none, pruned)] for every experiment folder below
    parent_dir. The metrics are the numbers of the metrics file (not the per-class results)."""
    experiments = []
    for params_path in sorted(parent_dir.rglob("params.json")):
        folder = params_path.parent
        if (folder / "search.json").exists():
            continue
        # params_used.json holds what the run actually used, --param overrides included.
        used_path = folder / "params_used.json"
        params = read_json_or_warn(used_path if used_path.exists() else params_path)
        if params is None:
            continue
        metrics_path = folder / f"metrics_{split}_best_weights.json"
        metrics = read_json_or_warn(metrics_path) if metrics_path.exists() else None
        if metrics is not None:
            metrics = numbers_of(metrics, metrics_path)
        elif split == "test" and (folder / "metrics_eval_best_weights.json").exists():
            metrics = "not evaluated"  # trained: evaluate.py (or search_hyperparams.py --evaluate) makes them
        else:
            metrics = run_status(folder) or "not trained"  # running, interrupted, failed...
        name = folder.relative_to(parent_dir).as_posix()  # "." for parent_dir itself
        # A TPE search's trial.json says whether it stopped the trial early
        trial = read_json_or_warn(folder / "trial.json") if (folder / "trial.json").exists() else None
        pruned = trial is not None and trial.get("state") == "pruned"
        if pruned:
            name += f" (pruned after epoch {trial.get('pruned_at_epoch')})"
        experiments.append((name, params, metrics, pruned))
    return experiments


def numbers_of(metrics, path):
    """The metrics that are finite numbers; any other (text, Infinity, NaN) is left blank, with a warning."""
    numbers = {key: value for key, value in metrics.items() if type(value) in (int, float) and math.isfinite(value)}
    if odd := [key for key in metrics if key not in numbers and key not in ("per_class", "confusion_matrix")]:
        logging.warning(f"Warning: {path}: {', '.join(odd)} is not a finite number: left blank")
    return numbers


def differing_keys(all_params):
    """The hyperparameters given different values by the experiments. A key an experiment leaves
    out (a params.json not trained yet, which takes the defaults) does not count as different."""
    keys = sorted({key for params in all_params for key in params})
    return [key for key in keys if len({repr(params[key]) for params in all_params if key in params}) > 1]


def make_rows(experiments, metric):
    """Header and rows of the table: finished experiments best first, then pruned, then the others."""
    hyperparameters = differing_keys([params for _, params, _, _ in experiments])
    finished = [e for e in experiments if isinstance(e[2], dict)]
    metric_names = sorted({key for _, _, metrics, _ in finished for key in metrics}) or [metric]
    if finished and metric not in metric_names:
        raise UserError(f"No metric '{metric}' in the results; --metric can be one of {', '.join(metric_names)}.")

    def rank(experiment):  # best first; pruned trials, and experiments that lack the metric, go last
        value = experiment[2].get(metric)
        return (experiment[3], value is None, 0 if value is None else (value if metric in LOWER_IS_BETTER else -value))

    header = ["experiment", *hyperparameters, *metric_names]
    rows = []
    for name, params, metrics, _ in sorted(finished, key=rank) + [e for e in experiments if e not in finished]:
        cells = [_format(metrics.get(m, "")) for m in metric_names] if isinstance(metrics, dict) else [metrics]
        cells += [""] * (len(metric_names) - len(cells))
        rows.append([name, *(_format(params.get(k, ""), ".4g") for k in hyperparameters), *cells])
    return header, rows


def _format(value, spec=".4f"):
    return format(value, spec) if isinstance(value, float) else value


def to_markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    args = parser.parse_args(argv)
    parent_dir = Path(args.parent_dir)
    require_folder(parent_dir, "Give --parent_dir the folder of the experiments, such as experiments.")
    if args.storage and "://" not in args.storage:  # a journal file, read: checked before the work
        refuse_special(args.storage)
        if not Path(args.storage).is_file():
            raise UserError(f"--storage {args.storage}: no such journal file. Check the path.")

    # Gather every experiment's hyperparameters and metrics
    experiments = find_experiments(parent_dir, args.split)
    if not experiments:
        raise UserError(f"No experiments (folders with a params.json) under {parent_dir}.")

    # Build the table, save it as markdown and CSV, and show it
    header, rows = make_rows(experiments, args.metric)
    table = to_markdown(header, rows)
    name = "results" if args.split == "eval" else f"results_{args.split}"
    for path in (parent_dir / f"{name}.md", parent_dir / f"{name}.csv"):
        check_output(path)  # both, before either is written
    write_text_atomic(table, parent_dir / f"{name}.md")
    save_csv([header, *rows], parent_dir / f"{name}.csv")
    print(table)
    print(f"Saved {parent_dir / name}.md and {parent_dir / name}.csv")

    # TPE searches: each study's best trial, and its plots
    if args.storage or any(parent_dir.rglob(JOURNAL_NAME)):
        try:
            from search import tpe  # optional: only where a TPE search ran
        except UserError as error:
            logging.warning(f"Not showing the Optuna studies: {error}")
            return
        tpe.summarize_studies(parent_dir, args.storage)


if __name__ == "__main__":
    run_main(main)
