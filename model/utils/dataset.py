"""The built dataset, as build_dataset.py writes it and train.py and evaluate.py read it:
DATA_DIR/{train,dev,test}/{label}_{name}.jpg (DATA_DIR/{split}_signs/ in earlier builds) and
DATA_DIR/classes.json (label -> class name). No TensorFlow here: build_dataset.py starts fast."""

import os
from pathlib import Path

from PIL import Image

from model.utils.errors import UserError, check_utf8
from model.utils.files import load_json, require_folder
from model.utils.images import RESIZE_MODES, UNREADABLE
from model.utils.params import MAX_IMAGE_SIZE, MAX_LABELS

SPLITS = ("train", "dev", "test")
# Where train.py and evaluate.py look when neither --data_dir nor the run's run.json names a folder
DEFAULT_DATA_DIR = "data/64x64_SIGNS"


def list_split(data_dir, split):
    """The JPEG images of one split and their labels, sorted by name: one order on every machine.
    train.py and evaluate.py both call it, so that they always read data the same way."""
    folder = Path(data_dir) / split
    if not folder.is_dir() and (Path(data_dir) / f"{split}_signs").is_dir():
        folder = Path(data_dir) / f"{split}_signs"
    require_folder(folder, f"The {split} split is missing: run build_dataset.py first, or give --data_dir its output.")
    # Regular files only: a pipe or a device named *.jpg would block the reader forever.
    filenames = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())
    if not filenames:
        raise UserError(f"The {split} split is empty: no .jpg images in {folder}.")
    for name in filenames:
        check_utf8(name, "The file ")
    return filenames, [label_from_filename(name) for name in filenames]


def label_from_filename(path):
    """The integer before the first '_' of a file name: `12_IMG_5.jpg` -> 12."""
    name = Path(path).name
    prefix = name.split("_", 1)[0]
    if "_" not in name or not prefix.isdecimal() or int(prefix) >= MAX_LABELS:
        raise UserError(
            f"Cannot read a label from the file name '{path}': expected '<label>_<name>', the label a whole "
            f"number below {MAX_LABELS}, for example '3_IMG_4821.jpg'. Rename the file or remove it from the folder."
        )
    return int(prefix)


def check_split(filenames, labels, params, split):
    """Stops on images of another size than image_size, or labels outside 0..num_labels - 1 (num_labels is
    one more than the largest label); returns a warning for each class without train images (allowed)."""
    for filename in filenames:
        try:
            with open(filename, "rb") as f:  # a JPEG cut short lacks its end marker, and would stop training
                f.seek(-2, os.SEEK_END)
                if f.read() != b"\xff\xd9":
                    raise OSError("cut short")
            image = Image.open(filename)  # reads the file's header only
        except UNREADABLE:
            raise UserError(
                f"{filename} is not an image that can be read. Rebuild the data with build_dataset.py."
            ) from None
        with image:
            if image.size != (params.image_size, params.image_size):
                raise UserError(
                    f"{filename} is {image.width}x{image.height} pixels, but image_size = {params.image_size} in "
                    f"params.json. Rebuild the data with `build_dataset.py --size {params.image_size}`, or set "
                    "image_size to the size the data was built with."
                )
    return check_labels(labels, params.num_labels, split)


def check_labels(labels, num_labels, split):
    if outside := sorted({label for label in labels if not 0 <= label < num_labels}):
        raise UserError(
            f"The {split} split has labels {outside} outside 0..{num_labels - 1}, the range num_labels = "
            f"{num_labels} in params.json allows. Set num_labels to {max(outside) + 1} (the largest label + 1)."
        )
    missing = sorted(set(range(num_labels)) - set(labels))
    if split == "train" and missing:
        return [f"Warning: the train split has no images of label(s) {missing}: the model cannot learn those classes"]
    return []


def resize_mode(data_dir):
    """How build_dataset.py made DATA_DIR's images square (its build.json): "squash" if unknown."""
    path = Path(data_dir or "") / "build.json"
    if not data_dir or not path.is_file():
        return "squash"
    build = load_json(path)
    size = build.get("size", 1)
    if build.get("resize", "squash") not in RESIZE_MODES or type(size) is not int or not 1 <= size <= MAX_IMAGE_SIZE:
        raise UserError(f"{path} is not one that build_dataset.py writes. Rebuild the data, or delete the file.")
    return build.get("resize", "squash")


def load_class_names(data_dir, num_labels):
    """The name of each label, from DATA_DIR/classes.json; else the label numbers."""
    path = Path(data_dir or "") / "classes.json"
    if not data_dir or not path.is_file():
        return [str(label) for label in range(num_labels)]
    names = load_json(path)
    if not_labels := [key for key in names if not (key.isdecimal() and int(key) < MAX_LABELS)]:
        raise UserError(f"{path}: {not_labels[0]!r} is not a label. The keys are the labels 0, 1, 2...: fix the file.")
    labels = sorted(int(key) for key in names)
    if labels != list(range(len(labels))):
        missing = sorted(set(range(labels[-1])) - set(labels))
        raise UserError(
            f"{path} must name every label from 0 up, but lacks {', '.join(map(str, missing))}: fix the file."
        )
    if len(labels) != num_labels:
        raise UserError(
            f"{path} names the labels 0 to {len(labels) - 1}, but the model has num_labels = {num_labels} "
            f"(0 to {num_labels - 1}). Pass the --data_dir the model was trained on, or for a new model "
            f"set num_labels to {len(labels)}."
        )
    names = [names[str(label)] for label in range(num_labels)]
    for name in names:
        check_utf8(str(name), f"{path}: the class name ")
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) < len(names):
        raise UserError(
            f'{path} must give each label a name of its own, as text (such as {{"0": "cat", "1": "dog"}}). '
            "Fix the file, or delete it to name the classes by their labels."
        )
    return names
