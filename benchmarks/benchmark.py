"""Benchmark the template's speed on this machine, against what a user would otherwise write.

Everything runs in this one process on a generated dataset of 64x64 JPEGs, so the figures
compare like with like; each is the median of --repeats timed epochs, after a warm-up epoch
(which compiles the steps and fills the cache). Prints one table; --json PATH also saves it.

Measured so far:
  1. training throughput of the template's real path (input_fn from JPEG files, model_fn's
     network, training.py's epoch loop) against Keras model.fit on in-memory NumPy arrays;
  2. input_fn alone against training, and training from files against in-memory tensors;
  3. the fraction of the machine's float32 matmul rate that the training step reaches;
  4. evaluation throughput of evaluate.py's path;
  5. build_dataset.py on large photos against a plain sequential Pillow loop;
  7. start-up: seconds from `python train.py` to the end of its first training step.

Example:
    python benchmarks/benchmark.py --json benchmark.json
"""

import sys
from pathlib import Path

# The benchmark lives one folder down: make the template's `model` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import model.quiet_tensorflow  # noqa: E402, F401  (before TensorFlow: hides its start-up chatter)

# isort: split
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import build_dataset  # noqa: E402
from model.evaluation import evaluate, make_eval_step  # noqa: E402
from model.input_fn import augment, input_fn, list_split  # noqa: E402
from model.model_fn import model_fn  # noqa: E402
from model.synthetic_signs import generate_signs  # noqa: E402
from model.training import StopRequest, make_train_step, train_one_epoch  # noqa: E402
from model.utils import Params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--num_images", type=int, default=1024, help="Images in the generated dataset")
parser.add_argument("--repeats", type=int, default=3, help="Timed epochs per figure (the median is shown)")
parser.add_argument("--photos", type=int, default=200, help="3000x3000 photos for the build_dataset figure")
parser.add_argument("--json", help="Also write the figures to this JSON file")

# figure -> (target, True if the figure must be at least the target, False if at most)
TARGETS = {
    "train_ratio_vs_keras_fit": (1.0, True),
    "pipeline_ratio_vs_training": (3.0, True),
    "files_vs_memory_ratio": (0.95, True),
    "build_dataset_speedup": (4.0, True),
}


def median_seconds(run, repeats):
    """Runs `run` once to warm up, then `repeats` times; the median wall time of those."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_dataset(folder, num_images):
    """A train split of num_images 64x64 demo JPEGs; returns (files, labels, images in memory)."""
    generate_signs(folder, num_images, image_size=64, test_fraction=0.0)
    files, labels = list_split(folder, "train")
    images = np.stack([np.asarray(Image.open(f), np.float32) / 255 for f in files])
    return files, labels, images


def template_training(params, dataset, summaries):
    """One epoch of training.py's loop (progress bar, summaries and all) on `dataset`."""
    spec = model_fn(params)
    train_step = make_train_step(spec)
    writer = tf.summary.create_file_writer(summaries)
    with StopRequest() as stop:
        return lambda: train_one_epoch(spec, train_step, dataset, 1, params, writer, stop)


def keras_fit(params, images, labels):
    """One epoch of plain Keras model.fit on the same network, data held in NumPy arrays."""
    spec = model_fn(params)
    spec.model.compile(optimizer=spec.optimizer, loss=spec.loss_fn, metrics=["accuracy"])
    labels = np.array(labels)
    return lambda: spec.model.fit(images, labels, batch_size=params.batch_size, epochs=1, verbose=0)


def in_memory_dataset(params, images, labels):
    """The training pipeline of input_fn, but from decoded tensors instead of JPEG files."""
    dataset = tf.data.Dataset.from_tensor_slices((images, np.array(labels, np.int32)))
    dataset = dataset.shuffle(len(labels)).map(
        lambda x, y: augment(x, y, params.use_random_flip), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.batch(params.batch_size).prefetch(tf.data.AUTOTUNE)


def matmul_flops_per_second(size=2048, repeats=10):
    """The machine's float32 matrix-multiply rate, measured with TensorFlow."""
    a = tf.random.normal([size, size])
    matmul = tf.function(lambda a: tf.matmul(a, a))
    seconds = median_seconds(lambda: matmul(a).numpy(), repeats)
    return 2 * size**3 / seconds


def training_flops_per_image(keras_model):
    """Multiply-adds of the forward pass of convolutions and dense layers, x2 for FLOPs, x3
    for training (the backward pass costs about twice the forward pass)."""
    flops = 0
    for layer in keras_model.layers:
        if isinstance(layer, tf.keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_height, kernel_width, in_channels, _ = layer.kernel.shape
            flops += 2 * height * width * kernel_height * kernel_width * in_channels * out_channels
        elif isinstance(layer, tf.keras.layers.Dense):
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return 3 * flops


def timed(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def write_photos(folder, num_photos, size=3000):
    """Large JPEGs that compress like photos: smooth shapes plus a little sensor noise."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(num_photos):
        small = Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8))
        photo = np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), np.int16)
        photo = np.clip(photo + rng.integers(-8, 8, photo.shape), 0, 255).astype(np.uint8)
        Image.fromarray(photo).save(folder / f"{i % 6}_IMG_{i}.jpg", quality=90)
    return sorted(folder.iterdir())


def build_dataset_speedup(folder, num_photos):
    """build_dataset.py's resizing (JPEG draft mode, all cores) against the original's loop."""
    photos = write_photos(folder / "photos", num_photos)
    (folder / "plain").mkdir()

    def plain_loop():  # what the original build_dataset.py did: full decode, one core
        for path in photos:
            Image.open(path).resize((64, 64), Image.Resampling.BILINEAR).save(folder / "plain" / path.name)

    def template():
        items = [(path, 0, path.stem) for path in photos]
        build_dataset.build({"train": items}, folder / "built", 64, os.cpu_count())

    return timed(plain_loop) / timed(template)


def startup_seconds(folder, files):
    """Seconds from launching `python train.py` to the end of its first training step."""
    data_dir, model_dir = folder / "data", folder / "experiment"
    for split in ("train", "dev"):
        (data_dir / f"{split}_signs").mkdir(parents=True)
        for path in files[:64]:
            (data_dir / f"{split}_signs" / Path(path).name).symlink_to(path)
    model_dir.mkdir()
    params = json.loads((REPO / "experiments" / "base_model" / "params.json").read_text())
    (model_dir / "params.json").write_text(json.dumps({**params, "num_epochs": 1}))
    command = [sys.executable, str(REPO / "train.py"), "--model_dir", str(model_dir), "--data_dir", str(data_dir)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    output = ""
    # tqdm redraws the bar once the first step is done: "Epoch 1/1:  50%|... | 1/2".
    while not re.search(r"\|\s*[1-9]\d*/\d+", output) and process.poll() is None:
        output += process.stderr.read(1)
    seconds = time.perf_counter() - start
    process.kill()
    process.wait()
    return seconds


def main():
    args = parser.parse_args()
    params = Params(REPO / "experiments" / "base_model" / "params.json")
    tf.keras.utils.set_random_seed(params.seed)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        files, labels, images = make_dataset(Path(tmp) / "data", args.num_images)
        n = len(files)

        # 1. The template's training path against Keras model.fit
        files_dataset = input_fn(True, files, labels, params)
        train_s = median_seconds(template_training(params, files_dataset, f"{tmp}/files"), args.repeats)
        fit_s = median_seconds(keras_fit(params, images, labels), args.repeats)
        figures["train_images_per_s"] = n / train_s
        figures["keras_fit_images_per_s"] = n / fit_s
        figures["train_ratio_vs_keras_fit"] = fit_s / train_s

        # 2. The input pipeline alone, and training from in-memory tensors
        pipeline_s = median_seconds(lambda: [batch for batch in files_dataset], args.repeats)
        figures["pipeline_images_per_s"] = n / pipeline_s
        figures["pipeline_ratio_vs_training"] = train_s / pipeline_s
        memory_dataset = in_memory_dataset(params, images, labels)
        memory_s = median_seconds(template_training(params, memory_dataset, f"{tmp}/memory"), args.repeats)
        figures["files_vs_memory_ratio"] = memory_s / train_s

        # 3. The fraction of the machine's matmul rate that training reaches
        peak = matmul_flops_per_second()
        flops = training_flops_per_image(model_fn(params).model)
        figures["matmul_gflops"] = peak / 1e9
        figures["training_gflops_per_image"] = flops / 1e9
        figures["fraction_of_matmul_peak"] = figures["train_images_per_s"] * flops / peak

        # 4. Evaluation throughput of evaluate.py's path
        spec = model_fn(params)
        eval_step = make_eval_step(spec)
        eval_dataset = input_fn(False, files, labels, params)
        eval_s = median_seconds(lambda: evaluate(spec, eval_step, eval_dataset), args.repeats)
        figures["eval_images_per_s"] = n / eval_s

        # 5. build_dataset.py on large photos, and 7. start-up time
        figures["build_dataset_speedup"] = build_dataset_speedup(Path(tmp) / "build", args.photos)
        figures["startup_seconds"] = startup_seconds(Path(tmp) / "startup", files)

    print_table(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=4) + "\n")


def print_table(figures):
    print("\n| figure | value | target |\n|---|---|---|")
    for name, value in figures.items():
        target = ""
        if name in TARGETS:
            goal, at_least = TARGETS[name]
            met = value >= goal if at_least else value <= goal
            target = f"{'>=' if at_least else '<='} {goal} ({'met' if met else 'MISSED'})"
        print(f"| {name} | {value:.3g} | {target} |")


if __name__ == "__main__":
    main()
