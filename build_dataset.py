"""Split an image dataset into train/dev/test and resize every image to SIZE x SIZE, once.

Reads DATA_DIR in the SIGNS layout, DATA_DIR/train_signs/{label}_{name}.jpg (and test_signs/),
or one folder per class, DATA_DIR/<class name>/*.jpg (also under DATA_DIR/train/, with test/ and
val/ beside it); the splits it lacks are set aside, seeded and stratified by class. Writes
OUTPUT_DIR/{train,dev,test}/{label}_{name}.jpg, classes.json and build.json. Resizing once here
saves decoding large photos on every epoch. Layouts, options and outputs: docs/data.md.

Example:
    python build_dataset.py --data_dir data/SIGNS --output_dir data/64x64_SIGNS
"""

import argparse
import logging
import os
import random
import re
import shutil
from collections import Counter, defaultdict
from contextlib import suppress
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from model.utils.dataset import SPLITS, label_from_filename
from model.utils.errors import UserError, check_utf8, run_main
from model.utils.files import check_output, lock_folder, refuse_special, require_folder, save_json
from model.utils.images import IMAGE_EXTENSIONS, RESIZE_MODES, UNREADABLE, read_rgb, square, worker_pool
from model.utils.logs import set_logger
from model.utils.params import MAX_IMAGE_SIZE

# Names a dataset gives its dev split, in the order they are looked for
DEV_FOLDERS = ("val", "valid", "validation", "dev")
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


def image_files(folder, skipped):
    """The image files of a folder, sorted; files that are not regular (a pipe, a device) go to `skipped`."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    for path in paths:
        check_utf8(str(path), "The file ")
    skipped += [f"{p}: not a regular file" for p in paths if not p.is_file()]
    return [p for p in paths if p.is_file()]


def read_signs_split(folder, skipped):
    """[(path, label, output name)] of a SIGNS folder: '3_IMG_1.jpg' -> (path, 3, 'IMG_1')."""
    return [(path, label_from_filename(path), path.stem.split("_", 1)[1]) for path in image_files(folder, skipped)]


def read_class_folders(root, class_names, skipped):
    """[(path, label, name)] from root/<class name>/*, label = index in the sorted class list."""
    items = []
    for label, class_name in enumerate(class_names):
        if (root / class_name).is_dir():
            items += [(path, label, path.stem) for path in image_files(root / class_name, skipped)]
    return items


def subfolders(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def read_dataset(data_dir, skipped):
    """Finds the layout of data_dir: ({split: items, or None if not given}, class names, unused folders)."""
    folders = subfolders(data_dir)
    if "train_signs" in folders:  # (a) SIGNS: the labels are in the file names
        given = {split: f"{split}_signs" for split in SPLITS if f"{split}_signs" in folders}
        splits = {split: read_signs_split(data_dir / folder, skipped) for split, folder in given.items()}
        labels = {label for items in splits.values() for _, label, _ in items}
        class_names = [str(label) for label in range(max(labels) + 1)] if labels else []
    elif "train" in folders:  # (b) one folder per class, in a folder per split
        dev = next((name for name in DEV_FOLDERS if name in folders), None)
        given = {
            split: folder for split, folder in (("train", "train"), ("dev", dev), ("test", "test")) if folder in folders
        }
        class_names = subfolders(data_dir / "train")
        splits = {split: read_class_folders(data_dir / folder, class_names, skipped) for split, folder in given.items()}
        for folder in given.values():
            if extra := ", ".join(sorted(set(subfolders(data_dir / folder)) - set(class_names))):
                logging.warning(
                    f"Warning: not used: the class folder(s) {extra} of {data_dir / folder}, absent from train/"
                )
    elif split_names := [name for name in folders if name in ("dev_signs", "test_signs", "test", *DEV_FOLDERS)]:
        raise UserError(
            f"{data_dir} holds {', '.join(split_names)} but no train split: add train_signs/ (or train/), "
            "or give the folder that holds all the splits."
        )
    else:  # (b) one folder per class
        given, class_names = {}, folders
        splits = {"train": read_class_folders(data_dir, class_names, skipped)}
    if not splits.get("train"):
        raise UserError(
            f"No images found in {data_dir}. Expected either DATA_DIR/train_signs/{{label}}_{{name}}.jpg "
            "(SIGNS layout) or one folder per class, DATA_DIR/<class name>/*.jpg (also .jpeg, .png, .bmp)."
        )
    for name in class_names:
        check_utf8(name, f"In {data_dir}, the class ")
    if len(class_names) < 2:
        raise UserError(f"{data_dir} holds 1 class ({class_names[0]}): a classifier needs images of 2 classes or more.")
    unused = [folder for folder in folders if given and folder not in given.values()]
    return {split: splits.get(split) for split in SPLITS}, class_names, unused


def split_stratified(items, fraction, seed):
    """Splits items into (kept, set aside): `fraction` of each class set aside, seeded."""
    by_label = defaultdict(list)
    for item in items:
        by_label[item[1]].append(item)
    rng = random.Random(seed)
    kept, aside = [], []
    for label in sorted(by_label):
        group = sorted(by_label[label])  # sort first: the shuffle then gives the same split anywhere
        rng.shuffle(group)
        n_aside = round(len(group) * fraction)
        aside += group[:n_aside]
        kept += group[n_aside:]
    return kept, aside


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
    # A failed write (a full disk) is not an unreadable image: it stops the build, which then
    # leaves the earlier dataset as it was.
    square(image, resize).resize((size, size), Image.Resampling.BILINEAR).save(destination, format="JPEG", quality=95)
    return None, warning


def split_folders(output_dir, split):
    """The folders a build replaces for a split: its own, its name in earlier versions, and last
    the hidden folder it is written into."""
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
    made = [folder for folder in output_dir.parents if not folder.exists()]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):  # made by this build only if mkdir succeeds: another may race us
        output_dir.mkdir()
        made.insert(0, output_dir)
    with lock_folder(output_dir, "build_dataset.py"):
        try:
            set_logger(output_dir / "build_dataset.log")
            build_dataset(args, data_dir, output_dir)
        except BaseException:
            if made and made[0] == output_dir:  # as the lock's holder: no other build is using it
                shutil.rmtree(output_dir, ignore_errors=True)
                for folder in made[1:]:
                    with suppress(OSError):
                        folder.rmdir()  # only if empty
            raise


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
            if not splits[split]:
                logging.warning(
                    f"Warning: the {split} split is empty: {fraction:.0%} of too few images per class rounds to "
                    f"none. Give more images, or a larger --{split}_fraction."
                )
    if not splits["train"]:
        raise UserError("No train images are left once test and dev are set aside: add images, or lower the fractions.")

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
