"""Accuracy yardstick: does the template cost you anything on your data, against a plain Keras fit?

Builds DATA_DIR unless it is built already: images (class folders, SIGNS) with build_dataset.py, a
named-entity corpus (CoNLL files train.txt, dev.txt, test.txt, or CS230 sentences and labels) with
build_vocab.py. Then, for each seed, trains the template (train.py, then evaluate.py) and a plain Keras
model.fit of the same network on the same files, and prints the mean and range of their dev and test
scores, accuracy for images and entity F1 for text, at the epoch of the best dev score (docs/performance.md).

Example:
    python benchmarks/yardstick.py --data_dir data/my_photos --seeds 3
    python benchmarks/yardstick.py --data_dir data/my_conll_corpus --seeds 3 --param num_epochs=5
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

SPLITS = ("train", "dev", "test")
# For each task: the file its build writes last, the score compared, and the experiment unless --experiment
BUILT = {"images": "classes.json", "text": "dataset_params.json"}
SCORE = {"images": "accuracy", "text": "entity_f1"}
EXPERIMENT = {"images": ROOT / "experiments/base_model", "text": ROOT / "experiments/ner_base"}


def run(*command):
    subprocess.run([sys.executable, *map(str, command)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def built(data_dir, work_dir, size):
    """A built dataset folder: data_dir itself if build_dataset.py or build_vocab.py wrote it, else its build."""
    if (data_dir / "train").is_dir() and any((data_dir / name).is_file() for name in BUILT.values()):
        return data_dir
    output = work_dir / "data"
    text = any(data_dir.glob("train.*")) or (data_dir / "train/sentences.txt").is_file()  # build_vocab.py's layouts
    if not (output / BUILT["text" if text else "images"]).is_file():
        build = ["build_vocab.py"] if text else ["build_dataset.py", "--size", size]
        run(*build, "--data_dir", data_dir, "--output_dir", output)
    return output


def template(data, model_dir, overrides, score):
    """(dev score of the best weights, their test score) of train.py + evaluate.py."""
    changes = [word for override in overrides for word in ("--param", override)]
    run("train.py", "--model_dir", model_dir, "--data_dir", data, *changes, "--overwrite")
    run("evaluate.py", "--model_dir", model_dir, "--data_dir", data)

    def best_weights(split):
        return json.loads((model_dir / f"metrics_{split}_best_weights.json").read_text())[score]

    return best_weights("eval"), best_weights("test")


def keras_fit(data, task, params, weights):
    """(best dev score, test score at that epoch) of a plain model.fit of the same network. Sentences come in
    the template's padded batches, the padding (tag -1) weighing 0 in the loss as Keras users mask it, and a
    callback adds dev entity F1 to the logs each epoch, for ModelCheckpoint to keep the best weights by."""
    import numpy as np
    import tensorflow as tf

    from model.model_fn import optimizer
    from model.utils.params import build_network

    tf.keras.utils.set_random_seed(params.seed)  # before the data: it seeds the shuffling of sentences too
    network = build_network(params)
    if task.name == "images":
        (x, y), dev, test = (image_arrays(data, split) for split in SPLITS)
        fit = {"x": x, "y": y, "batch_size": params.batch_size, "validation_data": dev}
        steps_per_epoch, metrics, callbacks = math.ceil(len(y) / params.batch_size), ["accuracy"], []

        def score(split):
            return network.evaluate(*split, verbose=0, return_dict=True)["accuracy"]
    else:
        train, dev, test = (task.input_fn(split == "train", *task.list_split(data, split), params) for split in SPLITS)
        # input_fn shuffles the sentences: Keras cannot shuffle a tf.data.Dataset, and warns if asked to
        fit = {"x": train.map(lambda x, y: (x, tf.maximum(y, 0), tf.cast(y >= 0, tf.float32))), "shuffle": False}
        steps_per_epoch, metrics = len(train), []
        names = np.array(task.class_names(data, params.num_labels))

        def score(split):
            return entity_f1(network, split, names)

        def log_dev_f1(epoch, logs):  # ModelCheckpoint, after this callback, reads the logs
            logs["val_entity_f1"] = score(dev)

        callbacks = [tf.keras.callbacks.LambdaCallback(on_epoch_end=log_dev_f1)]

    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    network.compile(optimizer(params, steps_per_epoch), loss, metrics=metrics)
    best = tf.keras.callbacks.ModelCheckpoint(
        str(weights), monitor=f"val_{SCORE[task.name]}", mode="max", save_best_only=True, save_weights_only=True
    )
    history = network.fit(**fit, epochs=params.num_epochs, verbose=0, callbacks=[*callbacks, best])
    network.load_weights(best.filepath)
    return max(history.history[best.monitor]), score(test)


def image_arrays(data, split):
    """(images, labels) of a split in NumPy arrays, decoded as the template decodes them."""
    import numpy as np
    import tensorflow as tf

    from model.utils.dataset import list_split

    files, labels = list_split(data, split)
    images = [tf.io.decode_jpeg(tf.io.read_file(f), channels=3, dct_method="INTEGER_ACCURATE") for f in files]
    return np.stack(images).astype(np.float32) / 255, np.array(labels)


def entity_f1(network, batches, names):
    """conlleval's entity F1 of the network's tags over padded batches of (features, tag ids)."""
    from model.utils import conlleval

    true, predicted = [], []
    for features, tags in batches:
        for sentence, guesses in zip(tags.numpy(), network.predict_on_batch(features).argmax(-1)):
            true.append(names[sentence[sentence >= 0]])
            predicted.append(names[guesses[sentence >= 0]])
    return conlleval.scores(true, predicted)[0]["entity_f1"]


def summary(name, results):
    def spread(values):
        return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    dev, test, seconds = zip(*results)
    return f"| {name} | {spread(dev)} | {spread(test)} | {statistics.mean(seconds):.0f} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="Images, a CoNLL corpus, or a built dataset")
    parser.add_argument("--experiment", type=Path, help="Its params.json (default: base_model, ner_base for text)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="A change for both runs")
    parser.add_argument("--seeds", type=int, default=3, help="Runs of each, with seeds 230, 231, ...")
    parser.add_argument("--size", type=int, default=64, help="Image size to build the data at")
    parser.add_argument("--work_dir", type=Path, default=ROOT / "experiments/yardstick", help="Where runs go")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = built(args.data_dir.resolve(), work, args.size)

    import model.utils.quiet_tensorflow  # noqa: F401
    from model import model_fn, text_model_fn  # noqa: F401  (they declare the two tasks)
    from model.utils.tasks import task_of

    task = task_of(data)
    experiment, score = args.experiment or EXPERIMENT[task.name], SCORE[task.name]
    model_dir = work / "template"
    model_dir.mkdir(exist_ok=True)
    settings = json.loads((experiment / "params.json").read_text())
    if task.name == "images":  # a text dataset gives train.py its number of tags itself
        settings["num_labels"] = len(json.loads((data / "classes.json").read_text()))
    (model_dir / "params.json").write_text(json.dumps(settings, indent=4))
    ours, theirs = [], []
    for seed in range(230, 230 + args.seeds):
        overrides = [f"seed={seed}", *args.param]
        start = time.perf_counter()
        ours.append((*template(data, model_dir, overrides, score), time.perf_counter() - start))
        start = time.perf_counter()
        params = task.load_params(model_dir, overrides, data)
        theirs.append((*keras_fit(data, task, params, work / "keras.weights.h5"), time.perf_counter() - start))
        print(
            f"seed {seed}: template dev/test {ours[-1][0]:.3f}/{ours[-1][1]:.3f}, "
            f"Keras fit {theirs[-1][0]:.3f}/{theirs[-1][1]:.3f}",
            flush=True,
        )
    print(f"\n{data}: {args.seeds} seed(s), {params.num_epochs} epochs; mean (range)\n")
    print(f"| | dev {score} | test {score} | seconds per run |\n|---|---|---|---|")
    print(summary(f"template, {experiment.name}, best weights", ours))
    print(summary("Keras model.fit, best-dev epoch", theirs))


if __name__ == "__main__":
    main()
