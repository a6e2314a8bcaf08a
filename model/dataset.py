"""The built dataset, as build_dataset.py writes it and train.py, evaluate.py read it:

    DATA_DIR/{train,dev,test}/{label}_{name}.jpg   (DATA_DIR/{split}_signs/ from earlier builds too)
    DATA_DIR/classes.json                          (label -> class name)

No TensorFlow here: build_dataset.py stays quick to start.
"""

from pathlib import Path

from PIL import Image

from model.errors import UserError
from model.files import load_json

# What build_dataset.py writes (predict.py reads any format: model/images.py).
BUILT_EXTENSIONS = (".jpg", ".jpeg")
SPLITS = ("train", "dev", "test")
# Where train.py and evaluate.py look when neither --data_dir nor the run's run.json names a folder
DEFAULT_DATA_DIR = "data/64x64_SIGNS"


def split_folder(data_dir, split):
    """DATA_DIR/{split}, or DATA_DIR/{split}_signs as the SIGNS builds of earlier versions named it."""
    folder = Path(data_dir) / split
    legacy = Path(data_dir) / f"{split}_signs"
    return legacy if legacy.is_dir() and not folder.is_dir() else folder


def list_split(data_dir, split):
    """The images of one split and their labels, sorted by name: one order on every machine.

    Used by both train.py and evaluate.py, so the two always read data the same way.
    """
    folder = split_folder(data_dir, split)
    if not folder.is_dir():
        raise UserError(
            f"The {split} split is missing: no folder {folder}. "
            "Run build_dataset.py first, or pass --data_dir pointing at its output."
        )
    # Regular files only: a pipe or a device named *.jpg would block the reader forever.
    filenames = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in BUILT_EXTENSIONS and p.is_file())
    if not filenames:
        raise UserError(f"The {split} split is empty: no .jpg images in {folder}.")
    return filenames, [label_from_filename(name) for name in filenames]


def label_from_filename(path):
    """The label of a file named '{label}_{name}': the integer before the first '_' (`12_IMG_5.jpg` -> 12)."""
    name = Path(path).name
    prefix = name.split("_", 1)[0]
    if "_" not in name or not prefix.isdecimal():
        raise UserError(
            f"Cannot read a label from the file name '{path}': expected '<integer label>_<name>', "
            "for example '3_IMG_4821.jpg'. Rename the file or remove it from the folder."
        )
    return int(prefix)


def check_split(filenames, labels, params, split):
    """The checks train.py and evaluate.py run on each split before using it; returns warnings to log."""
    check_image_size(filenames, params.image_size)
    return check_labels(labels, params.num_labels, split)


def check_labels(labels, num_labels, split):
    """Labels must lie in 0..num_labels - 1; a class without train images is allowed, with a warning.

    One rule: num_labels is one more than the largest label (the number of classes, counting those
    a dataset has no images of). Returns the warnings.
    """
    outside = sorted({label for label in labels if not 0 <= label < num_labels})
    if outside:
        raise UserError(
            f"The {split} split has labels {outside} outside 0..{num_labels - 1}, the range num_labels = "
            f"{num_labels} in params.json allows. Set num_labels to {max(outside) + 1} (the largest label + 1)."
        )
    missing = sorted(set(range(num_labels)) - set(labels))
    if split == "train" and missing:
        return [f"Warning: the train split has no images of label(s) {missing}: the model cannot learn those classes"]
    return []


def check_image_size(filenames, image_size):
    """Stops with a clear message when an image is not image_size x image_size pixels."""
    for filename in filenames:
        with Image.open(filename) as image:  # reads the file's header only
            width, height = image.size
        if (width, height) != (image_size, image_size):
            raise UserError(
                f"{filename} is {width}x{height} pixels, but image_size = {image_size} in params.json. "
                f"Rebuild the data with `build_dataset.py --size {image_size}`, or set image_size to the "
                "size the data was built with."
            )


def load_class_names(data_dir, num_labels):
    """The name of each label, from DATA_DIR/classes.json (written by build_dataset.py); else the label numbers."""
    path = Path(data_dir) / "classes.json" if data_dir else None
    if path is None or not path.is_file():
        return [str(label) for label in range(num_labels)]
    names = load_json(path)
    if set(names) != {str(label) for label in range(num_labels)}:
        raise UserError(
            f"{path} names the labels {', '.join(names)}, but the model has num_labels = {num_labels} "
            f"(0 to {num_labels - 1}). Pass the --data_dir the model was trained on."
        )
    return [names[str(label)] for label in range(num_labels)]
