"""Benchmark the template's speed on this machine, against what a user would otherwise write.

Times training, the input pipeline, evaluation, build_dataset.py, scaling with the data and
start-up on a generated dataset of 64x64 JPEGs (the figures: docs/performance.md). Each
throughput is the median of --repeats epochs after a warm-up; compared figures run their epochs
in turn, so a slow moment of a shared machine hits them alike. Prints one table, marking each
figure that misses its target.

Example:
    python benchmarks/benchmark.py --json benchmark.json
"""

import sys
from pathlib import Path

# The benchmark lives one folder down: make the template's `model` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import model.utils.quiet_tensorflow  # noqa: E402, F401  (before TensorFlow: hides its start-up chatter)

# isort: split
import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import build_dataset  # noqa: E402
from benchmarks.train_runs import REPO, scaling, startup_seconds  # noqa: E402
from demo.synthetic_signs import generate_signs  # noqa: E402
from model import model_fn  # noqa: E402
from model.evaluation import Metrics, evaluate, make_eval_step  # noqa: E402
from model.input_fn import augment, input_fn  # noqa: E402
from model.training import StopRequest, make_train_step, model_spec, train_one_epoch  # noqa: E402
from model.utils.dataset import list_split  # noqa: E402
from model.utils.params import build_network, load_params  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--num_images", type=int, default=1024, help="Images in the generated dataset")
parser.add_argument("--repeats", type=int, default=5, help="Timed epochs per figure (the median is shown)")
parser.add_argument("--scaling_images", type=int, default=2048, help="Images at 1x in the scaling figures")
parser.add_argument("--photos", type=int, default=200, help="3000x3000 photos for the build_dataset figure")
parser.add_argument("--json", help="Also write the figures to this JSON file")

# figure -> (lowest, highest) value that meets its target; None: no bound on that side
TARGETS = {
    "train_ratio_vs_keras_fit": (1.0, None),
    "pipeline_ratio_vs_training": (3.0, None),
    "files_vs_memory_ratio": (0.95, None),
    "build_dataset_speedup": (4.0, None),
    # Linear: 4x the data takes 4x the time, give or take 20%.
    **{f"epoch_time_4x_vs_1x_{cache}": (3.2, 4.8) for cache in ("memory", "none", "disk")},
    # Without a memory cache, 4x the data must not cost more than a few MB more (RSS noise).
    **{f"peak_memory_growth_4x_mb_{cache}": (None, 25) for cache in ("none", "disk")},
}


def median_seconds(run, repeats):
    """Runs `run` once to warm up, then `repeats` times; the median wall time of those."""
    return interleaved_median_seconds({"run": run}, repeats)["run"]


def interleaved_median_seconds(runs, repeats):
    """{name: median seconds} of each function in `runs`, timed in turn `repeats` times after a warm-up."""
    times = {name: [] for name in runs}
    for _ in range(repeats + 1):
        for name, run in runs.items():
            times[name].append(timed(run))
    return {name: statistics.median(values[1:]) for name, values in times.items()}  # values[0]: the warm-up


def timed(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def make_dataset(folder, num_images):
    """A train split of num_images 64x64 demo JPEGs; returns (files, labels, images in memory)."""
    generate_signs(folder, num_images, image_size=64, test_fraction=0.0)
    files, labels = list_split(folder, "train")
    return files, labels, np.stack([np.asarray(Image.open(f), np.float32) / 255 for f in files])


def template_training(params, dataset, summaries, **changes):
    """One epoch of training.py's loop (progress bar, summaries and all) on `dataset`."""
    params = copy.deepcopy(params)
    params.dict.update(changes)
    spec = model_spec(params, tf.distribute.get_strategy())
    train_step = make_train_step(spec)
    writer = tf.summary.create_file_writer(summaries)
    with StopRequest() as stop:
        return lambda: train_one_epoch(spec, train_step, dataset, 1, params, writer, stop)


def keras_fit(params, images, labels):
    """One epoch of plain Keras model.fit on the same network, data held in NumPy arrays."""
    network = build_network(params)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # the batch's mean, as fit expects
    network.compile(optimizer=tf.keras.optimizers.Adam(params.learning_rate), loss=loss, metrics=["accuracy"])
    labels = np.array(labels)
    return lambda: network.fit(images, labels, batch_size=params.batch_size, epochs=1, verbose=0)


def in_memory_dataset(params, images, labels, options):
    """The training pipeline of input_fn, with its tf.data options, but from decoded tensors, not files."""
    dataset = tf.data.Dataset.from_tensor_slices((images, np.array(labels, np.int32)))
    dataset = dataset.shuffle(len(labels)).map(lambda x, y: augment(x, y, params), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(params.batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)


def matmul_flops_per_second(size=2048, repeats=10):
    """The machine's float32 matrix-multiply rate, measured with TensorFlow."""
    a = tf.random.normal([size, size])
    matmul = tf.function(lambda a: tf.matmul(a, a))
    return 2 * size**3 / median_seconds(lambda: matmul(a).numpy(), repeats)


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
        build_dataset.build({"train": items}, folder / "built", 64, "squash", os.cpu_count())

    return timed(plain_loop) / timed(template)


def main():
    args = parser.parse_args()
    params = load_params(REPO / "experiments" / "base_model")
    tf.keras.utils.set_random_seed(params.seed)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        files, labels, images = make_dataset(Path(tmp) / "data", args.num_images)
        n = len(files)

        # 1. The template's training path against Keras model.fit, and 2. against in-memory tensors
        files_dataset = input_fn(True, files, labels, params)
        memory_dataset = in_memory_dataset(params, images, labels, files_dataset.options())
        runs = {
            "files": template_training(params, files_dataset, f"{tmp}/files"),
            "fit": keras_fit(params, images, labels),
            "memory": template_training(params, memory_dataset, f"{tmp}/memory"),
        }
        seconds = interleaved_median_seconds(runs, args.repeats)
        figures["train_images_per_s"] = n / seconds["files"]
        figures["keras_fit_images_per_s"] = n / seconds["fit"]
        figures["train_ratio_vs_keras_fit"] = seconds["fit"] / seconds["files"]
        figures["files_vs_memory_ratio"] = seconds["memory"] / seconds["files"]

        # 2. The input pipeline alone
        pipeline_s = median_seconds(lambda: list(files_dataset), args.repeats)
        figures["pipeline_images_per_s"] = n / pipeline_s
        figures["pipeline_ratio_vs_training"] = seconds["files"] / pipeline_s

        # 3. The fraction of the machine's matmul rate that training reaches
        peak = matmul_flops_per_second()
        flops = training_flops_per_image(build_network(params))
        figures["matmul_gflops"] = peak / 1e9
        figures["training_gflops_per_image"] = flops / 1e9
        figures["fraction_of_matmul_peak"] = figures["train_images_per_s"] * flops / peak

        # 4. Evaluation throughput of evaluate.py's path
        metrics = Metrics(model_fn.TASK)
        eval_step = make_eval_step(build_network(params), metrics, params)
        eval_dataset = input_fn(False, files, labels, params, one_pass=True)
        eval_s = median_seconds(
            lambda: evaluate(eval_step, metrics, eval_dataset, [str(n) for n in range(params.num_labels)]), args.repeats
        )
        figures["eval_images_per_s"] = n / eval_s

        # The accelerator knobs, on this machine (they are off by default on CPU)
        knobs = {
            "default": template_training(params, files_dataset, f"{tmp}/default"),
            "jit_compile": template_training(params, files_dataset, f"{tmp}/jit", jit_compile=True),
            "mixed_precision": template_training(params, files_dataset, f"{tmp}/mixed", mixed_precision=True),
        }
        knob_seconds = interleaved_median_seconds(knobs, max(1, args.repeats // 2))  # mixed_float16 is slow on a CPU
        figures["jit_compile_speedup"] = knob_seconds["default"] / knob_seconds["jit_compile"]
        figures["mixed_precision_speedup"] = knob_seconds["default"] / knob_seconds["mixed_precision"]

        # 5. build_dataset.py on large photos, 6. scaling and 7. start-up time
        figures["build_dataset_speedup"] = build_dataset_speedup(Path(tmp) / "build", args.photos)
        figures.update(scaling(Path(tmp) / "scaling", args.scaling_images, files[:256]))
        figures["startup_seconds"] = startup_seconds(Path(tmp) / "startup", files)

    print(f"\n{machine()}")
    print_table(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=4) + "\n")


def machine():
    """One line naming the processor, its cores, and the versions measured."""
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"model name\s*: (.*)", cpuinfo.read_text()) if cpuinfo.exists() else []
    processor = names[0] if names else platform.processor() or platform.machine()
    gpus = len(tf.config.list_physical_devices("GPU"))
    versions = f"TensorFlow {tf.__version__}, Python {platform.python_version()}"
    return f"{processor}, {os.cpu_count()} cores, {gpus} GPU(s); {versions}"


def print_table(figures):
    print("\n| figure | value | target |\n|---|---|---|")
    for name, value in figures.items():
        target = ""
        if name in TARGETS:
            low, high = TARGETS[name]
            met = (low is None or value >= low) and (high is None or value <= high)
            goal = f">= {low}" if high is None else f"<= {high}" if low is None else f"{low} to {high}"
            target = f"{goal} ({'met' if met else 'MISSED'})"
        print(f"| {name} | {value:.3g} | {target} |")


if __name__ == "__main__":
    main()
