"""Accuracy yardstick: does the template cost you anything on your data, against a plain Keras fit?

Builds DATA_DIR with build_dataset.py (unless build_dataset.py wrote it), then, for each seed,
trains the template (train.py, then evaluate.py) and a plain Keras model.fit of the same network
on the same files, and prints the mean and range of their accuracies (docs/performance.md).

Example:
    python benchmarks/yardstick.py --data_dir data/my_photos --seeds 3
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template's `model` package, one folder up

# isort: split
import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402


def run(*command):
    subprocess.run([sys.executable, *map(str, command)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def built(data_dir, work_dir, size):
    """A built dataset folder: data_dir itself if build_dataset.py wrote it, else its build."""
    if (data_dir / "train").is_dir() and (data_dir / "classes.json").is_file():
        return data_dir
    output = work_dir / "data"
    if not (output / "classes.json").is_file():
        run("build_dataset.py", "--data_dir", data_dir, "--output_dir", output, "--size", size)
    return output


def template(data, model_dir, seed):
    """(dev accuracy of the best weights, their test accuracy) of train.py + evaluate.py."""
    run("train.py", "--model_dir", model_dir, "--data_dir", data, "--param", f"seed={seed}", "--overwrite")
    run("evaluate.py", "--model_dir", model_dir, "--data_dir", data)
    dev = json.loads((model_dir / "metrics_eval_best_weights.json").read_text())["accuracy"]
    return dev, json.loads((model_dir / "metrics_test_best_weights.json").read_text())["accuracy"]


def keras_fit(data, params, seed, weights):
    """(best dev accuracy, test accuracy at that epoch) of a plain model.fit of the same network."""
    import numpy as np
    import tensorflow as tf

    from model.model_fn import optimizer
    from model.utils.dataset import list_split
    from model.utils.params import build_network

    def arrays(split):
        files, labels = list_split(data, split)
        images = [tf.io.decode_jpeg(tf.io.read_file(f), channels=3, dct_method="INTEGER_ACCURATE") for f in files]
        return np.stack(images).astype(np.float32) / 255, np.array(labels)

    (x, y), dev, test = arrays("train"), arrays("dev"), arrays("test")
    tf.keras.utils.set_random_seed(seed)
    network = build_network(params)
    steps_per_epoch = math.ceil(len(y) / params.batch_size)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    network.compile(optimizer(params, steps_per_epoch), loss, metrics=["accuracy"])
    best = tf.keras.callbacks.ModelCheckpoint(
        str(weights), monitor="val_accuracy", save_best_only=True, save_weights_only=True
    )
    history = network.fit(x, y, params.batch_size, params.num_epochs, verbose=0, validation_data=dev, callbacks=[best])
    network.load_weights(best.filepath)
    return max(history.history["val_accuracy"]), network.evaluate(*test, verbose=0, return_dict=True)["accuracy"]


def summary(name, results):
    def spread(values):
        return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    dev, test, seconds = zip(*results)
    return f"| {name} | {spread(dev)} | {spread(test)} | {statistics.mean(seconds):.0f} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="Class folders, SIGNS, or a built dataset")
    parser.add_argument("--experiment", type=Path, default=ROOT / "experiments/base_model", help="Its params.json")
    parser.add_argument("--seeds", type=int, default=3, help="Runs of each, with seeds 230, 231, ...")
    parser.add_argument("--size", type=int, default=64, help="Image size to build the data at")
    parser.add_argument("--work_dir", type=Path, default=ROOT / "experiments/yardstick", help="Where runs go")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = built(args.data_dir.resolve(), work, args.size)
    num_labels = len(json.loads((data / "classes.json").read_text()))

    import model.utils.quiet_tensorflow  # noqa: F401
    from model.utils.params import load_params

    model_dir = work / "template"
    model_dir.mkdir(exist_ok=True)
    settings = json.loads((args.experiment / "params.json").read_text()) | {"num_labels": num_labels}
    (model_dir / "params.json").write_text(json.dumps(settings, indent=4))
    ours, theirs = [], []
    for seed in range(230, 230 + args.seeds):
        start = time.perf_counter()
        ours.append((*template(data, model_dir, seed), time.perf_counter() - start))
        start = time.perf_counter()
        params = load_params(model_dir, [f"seed={seed}"])
        theirs.append((*keras_fit(data, params, seed, work / "keras.weights.h5"), time.perf_counter() - start))
        print(
            f"seed {seed}: template dev/test {ours[-1][0]:.3f}/{ours[-1][1]:.3f}, "
            f"Keras fit {theirs[-1][0]:.3f}/{theirs[-1][1]:.3f}",
            flush=True,
        )
    print(f"\n{data}: {args.seeds} seed(s), {params.num_epochs} epochs; mean (range)\n")
    print("| | dev accuracy | test accuracy | seconds per run |\n|---|---|---|---|")
    print(summary(f"template, {args.experiment.name}, best weights", ours))
    print(summary("Keras model.fit, best-dev epoch", theirs))


if __name__ == "__main__":
    main()
