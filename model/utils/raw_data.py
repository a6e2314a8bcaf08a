"""A raw image dataset, as build_dataset.py finds it: its layout (SIGNS file names, or a folder per
class), the splits it gives, its classes, and the seeded split of those it lacks."""

import logging
import random
from collections import defaultdict
from pathlib import Path

from model.utils.dataset import SPLITS, label_from_filename
from model.utils.errors import UserError, check_utf8
from model.utils.images import IMAGE_EXTENSIONS

# Names a dataset gives its dev split, in the order they are looked for
DEV_FOLDERS = ("val", "valid", "validation", "dev")


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
        given = {split: folder for split, folder in zip(SPLITS, ("train", dev, "test")) if folder in folders}
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
    rng, kept, aside = random.Random(seed), [], []
    for label in sorted(by_label):
        group = sorted(by_label[label])  # sort first: the shuffle then gives the same split anywhere
        rng.shuffle(group)
        n_aside = round(len(group) * fraction)
        aside += group[:n_aside]
        kept += group[n_aside:]
    return kept, aside
