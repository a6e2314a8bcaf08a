"""Split an image dataset into train/dev/test and resize every image to SIZE x SIZE, once.

Reads DATA_DIR in the SIGNS layout, DATA_DIR/train_signs/{label}_{name}.jpg (and test_signs/),
or one folder per class, DATA_DIR/<class name>/*.jpg (also under DATA_DIR/train/, with test/ and
val/ beside it); the splits it lacks are set aside, seeded and stratified by class. Writes
OUTPUT_DIR/{train,dev,test}/{label}_{name}.jpg, classes.json and build.json. Resizing once here
saves decoding large photos on every epoch. Layouts, options and outputs: docs/data.md.

Example:
    python build_dataset.py --data_dir data/SIGNS --output_dir data/64x64_SIGNS
"""

import model.utils.interrupts  # noqa: F401  (first: a Ctrl-C from here on ends the script quietly)

# isort: split
import argparse
import logging
import os
import re
import shutil
from collections import Counter
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from model.utils.dataset import SPLITS, label_from_filename
from model.utils.errors import UserError, run_main
from model.utils.files import build_folder, check_output, refuse_special, require_folder, save_json
from model.utils.images import RESIZE_MODES, UNREADABLE, read_rgb, square, worker_pool
from model.utils.logs import set_logger
from model.utils.params import MAX_IMAGE_SIZE
from model.utils.raw_data import read_dataset, split_stratified

# Characters of an image's name kept in its output name (file systems allow 255)
MAX_NAME = 120

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data_dir", default="data/SIGNS", help="Folder with the raw dataset")
parser.add_argument(
    "--output_dir", help="Where to write the resized dataset (default data/{SIZE}x{SIZE}_{DATA_DIR's name})"
)
parser.add_argument("--size", type=int, default=64, help="Side of the square output images, in pixels")
parser.add_argument(
    "--resize",
    choices=RESIZE_MODES,
    default="squash",
    help="How non-square images become square: stretched (squash), their centre square (crop), or padded "
    "with black (pad)",
)
parser.add_argument("--seed", type=int, default=230, help="Seed of the dev and test splits")
parser.add_argument("--dev_fraction", type=float, default=0.2, help="Share of the train images kept for dev")
parser.add_argument(
    "--test_fraction", type=float, default=0.1, help="Share set aside for test when DATA_DIR has no test set"
)
parser.add_argument("--workers", type=int, default=os.cpu_count(), help="Processes resizing images in parallel")
parser.add_argument(
    "--synthetic", type=int, metavar="N", help="First draw a demo dataset of N hand images into DATA_DIR"
)


def output_name(label, name, taken):
    """'{label}_{name}.jpg', its characters safe on every OS, short enough for any file system, unique in `taken`."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:MAX_NAME]
    candidate, n = f"{label}_{safe}.jpg", 1
    while candidate in taken:
        n += 1
        candidate = f"{label}_{safe}_{n}.jpg"
    taken.add(candidate)
    return candidate


def resize_and_save(task):
    """Resizes one image and saves it as JPEG; returns (error or None, warning or None)."""
    source, destination, size, resize = task
    try:
        image, warning = read_rgb(source, size)
    except UNREADABLE as error:
        return f"{source}: {error}", None
    # A failed write (a full disk) is no unreadable image: it stops the build, and the earlier dataset stays whole.
    square(image, resize).resize((size, size), Image.Resampling.BILINEAR).save(destination, format="JPEG", quality=95)
    return None, warning


def split_folders(output_dir, split):
    """The folders a build replaces for a split: its own, its earlier name, and last the hidden one it writes."""
    return output_dir / split, output_dir / f"{split}_signs", output_dir / f".{split}.building"


def build(splits, output_dir, size, resize, workers):
    """Writes every split's images resized into output_dir; returns the files skipped and the warnings.
    Each split is written into a hidden folder first and takes its place only once every image is
    written: an interrupted build leaves the earlier dataset whole."""
    tasks, building = [], {split: split_folders(output_dir, split)[-1] for split in splits}
    for split, items in splits.items():
        for folder in split_folders(output_dir, split):
            refuse_special(folder, folder=True)
        shutil.rmtree(building[split], ignore_errors=True)  # what an earlier build killed left
        building[split].mkdir(parents=True)
        taken = set()
        tasks += [
            (path, building[split] / output_name(label, name, taken), size, resize) for path, label, name in items
        ]
    try:
        with worker_pool(workers) as pool:
            try:
                results = list(
                    tqdm(pool.imap(resize_and_save, tasks, chunksize=8), total=len(tasks), desc="Resizing", unit="img")
                )
            except OSError as error:  # a write failed: name the folder given, not a hidden one
                error.filename = str(output_dir)
                raise
        errors = [error for error, _ in results if error]
        if not any(building["train"].glob("*.jpg")):
            raise UserError(
                f"None of the train images could be read, so {output_dir} was left as it was. Check that "
                "--data_dir holds image files:\n  " + "\n  ".join(errors[:10])
            )
        for split in splits:
            for folder in split_folders(output_dir, split)[:-1]:
                if folder.exists():
                    shutil.rmtree(folder)  # no stale images from an earlier build
            building[split].rename(output_dir / split)
    finally:
        for folder in building.values():
            shutil.rmtree(folder, ignore_errors=True)
    return errors, [warning for _, warning in results if warning]


def check_args(args, data_dir, output_dir):
    """Stops on a value the build cannot take, before anything is written."""
    for name, smallest, largest in (("size", 1, MAX_IMAGE_SIZE), ("workers", 1, 1024), ("synthetic", 1, 10**6)):
        value = getattr(args, name)
        if value is not None and not smallest <= value <= largest:
            raise UserError(f"--{name} {value} must be a whole number from {smallest} to {largest}.")
    for name in ("dev_fraction", "test_fraction"):
        if not 0 <= getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)} must be a fraction between 0 and 1, such as 0.2.")
    if not args.synthetic:
        require_folder(data_dir, "Give --data_dir the raw dataset, or --synthetic N to draw a demo one.")
    # The build replaces OUTPUT_DIR's split folders: they must not hold the raw data, nor be read as it
    replaced = [folder for split in SPLITS for folder in split_folders(output_dir, split)]
    if output_dir.resolve().is_relative_to(data_dir.resolve()) or any(
        data_dir.resolve().is_relative_to(folder.resolve()) for folder in replaced
    ):
        raise UserError(
            f"--output_dir {output_dir} and --data_dir {data_dir} overlap: the build would read its own output, "
            "or replace the raw data. Choose an output folder outside the raw data, such as data/64x64_SIGNS."
        )


def main(argv=None):
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    output_dir = Path(args.output_dir or f"data/{args.size}x{args.size}_{data_dir.name}")
    check_args(args, data_dir, output_dir)

    # One build at a time writes into OUTPUT_DIR; a build that fails leaves none of the folders it made
    with build_folder(output_dir, "build_dataset.py"):
        set_logger(output_dir / "build_dataset.log")
        build_dataset(args, data_dir, output_dir)


def build_dataset(args, data_dir, output_dir):
    for name in ("classes.json", "build.json"):  # the outputs, checked before the work
        check_output(output_dir / name)

    # Draw the demo dataset first if asked, never over existing data
    if args.synthetic:
        if data_dir.exists() and any(data_dir.iterdir()):
            raise UserError(f"{data_dir} is not empty: remove it, or drop --synthetic to build from it.")
        from demo.synthetic_signs import generate_signs  # only needed for the demo

        counts = generate_signs(data_dir, args.synthetic, seed=args.seed, workers=args.workers)
        logging.info(f"Drew {sum(counts.values())} demo images into {data_dir}")

    # Find the images and the splits the dataset gives; set aside the test and dev splits it lacks
    skipped = []
    splits, class_names, unused = read_dataset(data_dir, skipped)
    if unused:
        logging.warning(f"Warning: not used: the folder(s) {', '.join(unused)} of {data_dir}, which name no split")
    for split, fraction in (("test", args.test_fraction), ("dev", args.dev_fraction)):
        if splits[split] is None:
            splits["train"], splits[split] = split_stratified(splits["train"], fraction, args.seed)
    if not splits["train"]:
        raise UserError("No train images are left once test and dev are set aside: add images, or lower the fractions.")
    for split in ("test", "dev"):
        if not splits[split]:
            logging.warning(
                f"Warning: the {split} split is empty: too few images per class for --{split}_fraction to set any "
                f"aside. Give more images, or a larger --{split}_fraction."
            )

    # Resize and save, skipping (and listing) the files that cannot be read
    errors, warnings = build(splits, output_dir, args.size, args.resize, args.workers)
    for warning in warnings:
        logging.warning(f"Warning: {warning}")
    if skipped + errors:
        logging.warning(
            f"Skipped {len(skipped + errors)} file(s) that are not readable images:\n  " + "\n  ".join(skipped + errors)
        )
    save_json(dict(enumerate(class_names)), output_dir / "classes.json")
    save_json({"size": args.size, "resize": args.resize}, output_dir / "build.json")  # for predict.py and export.py

    # Report what was written
    for split in SPLITS:
        counts = Counter(label_from_filename(path) for path in (output_dir / split).glob("*.jpg"))
        per_class = ", ".join(f"{class_names[label]}: {counts[label]}" for label in sorted(counts))
        logging.info(f"{split}: {sum(counts.values())} images ({per_class})")
    logging.info(f"Done building the dataset in {output_dir}")


if __name__ == "__main__":
    run_main(main)
