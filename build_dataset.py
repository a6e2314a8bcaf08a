"""Split an image dataset into train/dev/test and resize every image to SIZE x SIZE.

Reads DATA_DIR in either of two layouts:
  (a) SIGNS:   DATA_DIR/train_signs/{label}_{name}.jpg and DATA_DIR/test_signs/{label}_{name}.jpg,
               where the label is the integer before the first '_' of the file name;
  (b) classes: DATA_DIR/<class name>/*.jpg|png|bmp|gif|webp|tif, one folder per class (labels follow
               the sorted class names), or the same under DATA_DIR/train/ and DATA_DIR/test/.
               Without a test folder, a seeded test split stratified by class is set aside.

Writes OUTPUT_DIR/{train,dev,test}_signs/{label}_{name}.jpg, where dev is 20% of the original
train set (seeded and stratified by class, so it is the same on every run), OUTPUT_DIR/classes.json
(label -> class name) and OUTPUT_DIR/build_dataset.log.

Resizing once here, rather than on every epoch, makes training much faster: decoding a
3000x3000 phone photo takes longer than a training step on its 64x64 copy.

Example:
    python build_dataset.py --data_dir data/SIGNS --output_dir data/64x64_SIGNS
    python build_dataset.py --synthetic 3000   # first draw a demo dataset into data/SIGNS
"""

import argparse
import logging
import os
import random
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from model.images import IMAGE_EXTENSIONS, UNREADABLE, read_rgb
from model.utils import UserError, label_from_filename, run_main, save_dict_to_json, set_logger, worker_pool

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data_dir", default="data/SIGNS", help="Folder with the raw dataset")
parser.add_argument(
    "--output_dir", default=None, help="Where to write the resized dataset (default data/{SIZE}x{SIZE}_SIGNS)"
)
parser.add_argument("--size", type=int, default=64, help="Side of the square output images, in pixels")
parser.add_argument("--seed", type=int, default=230, help="Seed of the dev and test splits")
parser.add_argument("--dev_fraction", type=float, default=0.2, help="Share of the train images kept for dev")
parser.add_argument(
    "--test_fraction", type=float, default=0.1, help="Share set aside for test when DATA_DIR has no test set"
)
parser.add_argument("--workers", type=int, default=os.cpu_count(), help="Processes resizing images in parallel")
parser.add_argument(
    "--synthetic", type=int, metavar="N", help="First draw a demo dataset of N hand images into DATA_DIR"
)


def image_files(folder):
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def read_signs_split(folder):
    """[(path, label)] of a SIGNS folder, and the output name of each: '3_IMG_1.jpg' -> 'IMG_1'."""
    return [(path, label_from_filename(path), path.stem.split("_", 1)[1]) for path in image_files(folder)]


def read_class_folders(root, class_names):
    """[(path, label, name)] from root/<class name>/*, label = index in the sorted class list."""
    items = []
    for label, class_name in enumerate(class_names):
        if (root / class_name).is_dir():
            items += [(path, label, path.stem) for path in image_files(root / class_name)]
    return items


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


def read_dataset(data_dir, test_fraction, seed):
    """Finds the layout of data_dir; returns ({'train': items, 'test': items}, class names)."""
    if not data_dir.is_dir():
        raise UserError(f"The data folder {data_dir} does not exist. Pass --data_dir, or --synthetic N for demo data.")
    if (data_dir / "train_signs").is_dir():
        splits = {"train": read_signs_split(data_dir / "train_signs")}
        splits["test"] = read_signs_split(data_dir / "test_signs") if (data_dir / "test_signs").is_dir() else None
        labels = sorted({label for items in splits.values() if items for _, label, _ in items})
        class_names = [str(label) for label in range(max(labels) + 1)] if labels else []
    else:
        train_root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
        class_names = sorted(p.name for p in train_root.iterdir() if p.is_dir() and not p.name.startswith("."))
        splits = {"train": read_class_folders(train_root, class_names)}
        test_root = data_dir / "test"
        splits["test"] = (
            read_class_folders(test_root, class_names) if train_root != data_dir and test_root.is_dir() else None
        )
    if not splits["train"]:
        raise UserError(
            f"No images found in {data_dir}. Expected either DATA_DIR/train_signs/{{label}}_{{name}}.jpg "
            "(SIGNS layout) or one folder per class, DATA_DIR/<class name>/*.jpg (also .jpeg, .png, .bmp)."
        )
    if splits["test"] is None:
        splits["train"], splits["test"] = split_stratified(splits["train"], test_fraction, seed)
    return splits, class_names


def output_name(label, name, taken):
    """'{label}_{name}.jpg' with characters safe on every OS, made unique within `taken`."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    candidate, n = f"{label}_{safe}.jpg", 1
    while candidate in taken:
        n += 1
        candidate = f"{label}_{safe}_{n}.jpg"
    taken.add(candidate)
    return candidate


def resize_and_save(task):
    """Resizes one image and saves it as JPEG; returns an error message, or None if it worked."""
    source, destination, size = task
    try:
        image = read_rgb(source, size).resize((size, size), Image.Resampling.BILINEAR)
        temporary = destination.with_suffix(".tmp")
        image.save(temporary, format="JPEG", quality=95)
        os.replace(temporary, destination)  # never leave a half-written image behind
        return None
    except UNREADABLE as error:
        return f"{source}: {error}"


def build(splits, output_dir, size, workers):
    """Writes every split's images resized into output_dir; returns the files it had to skip."""
    tasks = []
    for split, items in splits.items():
        split_dir = output_dir / f"{split}_signs"
        shutil.rmtree(split_dir, ignore_errors=True)  # no stale images from an earlier build
        split_dir.mkdir(parents=True)
        taken = set()
        tasks += [(path, split_dir / output_name(label, name, taken), size) for path, label, name in items]
    with worker_pool(workers) as pool:
        results = pool.imap(resize_and_save, tasks, chunksize=8)
        errors = [error for error in tqdm(results, total=len(tasks), desc="Resizing", unit="img") if error]
    return errors


def main():
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    output_dir = Path(args.output_dir or f"data/{args.size}x{args.size}_SIGNS")
    if output_dir.resolve().is_relative_to(data_dir.resolve()):
        raise UserError(
            f"--output_dir {output_dir} is inside --data_dir {data_dir}: it would be read as data. "
            "Choose an output folder outside the raw data, such as data/64x64_SIGNS."
        )
    for name in ("dev_fraction", "test_fraction"):
        if not 0 <= getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)} must be a fraction between 0 and 1, such as 0.2.")
    set_logger(output_dir / "build_dataset.log")

    # Draw the demo dataset first if asked, never over existing data
    if args.synthetic:
        if data_dir.exists() and any(data_dir.iterdir()):
            raise UserError(f"{data_dir} is not empty: remove it, or drop --synthetic to build from it.")
        from model.synthetic_signs import generate_signs  # only needed for the demo

        counts = generate_signs(data_dir, args.synthetic, seed=args.seed, workers=args.workers)
        logging.info(f"Drew {sum(counts.values())} demo images into {data_dir}")

    # Find the images and split them: dev is carved out of train, stratified by class
    splits, class_names = read_dataset(data_dir, args.test_fraction, args.seed)
    splits["train"], splits["dev"] = split_stratified(splits["train"], args.dev_fraction, args.seed)

    # Resize and save, skipping (and listing) files that cannot be read
    errors = build(splits, output_dir, args.size, args.workers)
    if errors:
        logging.warning(f"Skipped {len(errors)} unreadable image(s):\n  " + "\n  ".join(errors))
    save_dict_to_json(dict(enumerate(class_names)), output_dir / "classes.json")

    # Report what was written
    for split in ("train", "dev", "test"):
        counts = Counter(label_from_filename(path) for path in (output_dir / f"{split}_signs").glob("*.jpg"))
        per_class = ", ".join(f"{class_names[label]}: {counts[label]}" for label in sorted(counts))
        logging.info(f"{split}: {sum(counts.values())} images ({per_class})")
    logging.info(f"Done building the dataset in {output_dir}")


if __name__ == "__main__":
    run_main(main)
