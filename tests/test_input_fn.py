"""model/input_fn.py: listing a split, the tf.data pipeline and its cache, and the label checks."""

import atexit
import json
import re
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, tiny_params
from PIL import Image

from model import model_fn  # noqa: F401  (declares the networks that params are checked against)
from model.input_fn import augment, input_fn
from model.utils.dataset import check_labels, list_split, load_class_names
from model.utils.errors import UserError
from model.utils.params import load_params


def make_params(folder, **overrides):
    (folder / "params.json").write_text(json.dumps(tiny_params(**overrides)))
    return load_params(folder)


def read_all(dataset):
    """One pass over the dataset: ([image batches], [label batches]) as NumPy arrays."""
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return images, labels


# list_split


def test_list_split_gives_sorted_files_and_their_labels(built_dataset):
    filenames, labels = list_split(built_dataset, "dev")

    assert len(filenames) == 24
    assert filenames == sorted(filenames)
    assert all(f"/dev/{label}_IMG_dev" in name for name, label in zip(filenames, labels))
    assert Counter(labels) == {label: 4 for label in range(6)}


def test_list_split_on_a_missing_split_names_the_folder(built_dataset):
    shutil.rmtree(built_dataset / "test")

    with pytest.raises(UserError, match=re.escape(f"{built_dataset / 'test'} does not exist")):
        list_split(built_dataset, "test")


def test_list_split_on_an_empty_split_names_the_folder(built_dataset):
    for path in (built_dataset / "dev").iterdir():
        path.unlink()

    with pytest.raises(UserError, match=re.escape(f"empty: no .jpg images in {built_dataset / 'dev'}")):
        list_split(built_dataset, "dev")


@pytest.mark.parametrize(
    "names",
    [
        {"0": "cat", "1": None},
        {"0": "cat", "1": 5},
        {"0": "cat", "1": {"x": 1}},
        {"0": "", "1": "dog"},
        {"0": "a", "1": "a"},
    ],
)
def test_classes_json_must_name_each_label_with_text_of_its_own(tmp_path, names):
    (tmp_path / "classes.json").write_text(json.dumps(names))
    with pytest.raises(UserError, match="must give each label a name of its own"):
        load_class_names(tmp_path, 2)
    (tmp_path / "classes.json").write_text(json.dumps({"0": "cat", "1": "dog"}))
    assert load_class_names(tmp_path, 2) == ["cat", "dog"]


# input_fn


def test_evaluation_batches_have_the_right_shapes_types_and_range(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "dev")

    images, batch_labels = read_all(input_fn(False, filenames, labels, make_params(tmp_path)))

    assert [batch.shape for batch in images] == [(16, 16, 16, 3), (8, 16, 16, 3)]  # 24 = 16 + remainder 8
    assert all(batch.dtype == np.float32 for batch in images)
    assert all(batch.dtype == np.int32 for batch in batch_labels)
    assert min(batch.min() for batch in images) >= 0.0
    assert max(batch.max() for batch in images) <= 1.0


def test_pixels_are_the_image_file_scaled_to_0_1(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "dev")

    images, _ = read_all(input_fn(False, filenames, labels, make_params(tmp_path)))

    expected = np.asarray(Image.open(filenames[0]).convert("RGB"), np.float32) / 255
    # TensorFlow and Pillow decode JPEG with slightly different rounding: a few levels apart
    np.testing.assert_allclose(images[0][0], expected, atol=5 / 255)


def test_evaluation_keeps_the_order_of_the_files(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "dev")

    _, batch_labels = read_all(input_fn(False, filenames, labels, make_params(tmp_path)))

    assert np.concatenate(batch_labels).tolist() == labels


def test_images_larger_than_image_size_are_resized(raw_signs, tmp_path):
    filenames, labels = list_split(raw_signs, "train")  # 40x48 images

    images, _ = read_all(input_fn(False, filenames, labels, make_params(tmp_path, batch_size=32)))

    assert [batch.shape for batch in images] == [(32, 16, 16, 3), (28, 16, 16, 3)]


def test_evaluation_passes_are_identical(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "dev")
    dataset = input_fn(False, filenames, labels, make_params(tmp_path))

    first_images, first_labels = read_all(dataset)
    second_images, second_labels = read_all(dataset)

    np.testing.assert_array_equal(np.concatenate(first_images), np.concatenate(second_images))
    np.testing.assert_array_equal(np.concatenate(first_labels), np.concatenate(second_labels))


def test_training_epochs_differ_but_see_the_same_images(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "train")
    dataset = input_fn(True, filenames, labels, make_params(tmp_path))

    first_images, first_labels = read_all(dataset)
    second_images, second_labels = read_all(dataset)

    assert not np.array_equal(np.concatenate(first_images), np.concatenate(second_images))
    assert Counter(np.concatenate(first_labels).tolist()) == Counter(labels)
    assert Counter(np.concatenate(second_labels).tolist()) == Counter(labels)


def test_training_shuffles_the_order(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "train")

    _, batch_labels = read_all(input_fn(True, filenames, labels, make_params(tmp_path)))

    # 96 labels cycling 0..5: the chance that a uniform shuffle keeps that order is nil
    assert np.concatenate(batch_labels).tolist() != labels


# Augmentation: each transform, at its strength, on training images only

NO_AUGMENTATION = {
    key: 0 if hyperparameter.default is not False else False for key, hyperparameter in augment.hyperparameters.items()
}
SWITCHED_ON = {"use_random_flip": True, "random_brightness": 0.2, "random_saturation": 0.5}


def copies_of_one_image(built_dataset, tmp_path, **augmentation):
    """(24 training copies of one dev image, the evaluation image) under the given augmentation."""
    filenames, labels = list_split(built_dataset, "dev")
    params = make_params(tmp_path, batch_size=24, **(NO_AUGMENTATION | augmentation))
    [augmented], _ = read_all(input_fn(True, [filenames[0]] * 24, [labels[0]] * 24, params))
    [plain], _ = read_all(input_fn(False, [filenames[0]] * 24, [labels[0]] * 24, params))
    return augmented, plain[0]


def test_every_augmentation_is_covered_here():
    assert set(SWITCHED_ON) == set(augment.hyperparameters)


@pytest.mark.parametrize("key", sorted(augment.hyperparameters))
def test_each_augmentation_changes_training_images_and_0_turns_it_off(built_dataset, tmp_path, key):
    augmented, plain = copies_of_one_image(built_dataset, tmp_path, **{key: SWITCHED_ON[key]})
    assert sum(not np.allclose(copy, plain) for copy in augmented) >= 6  # a flip is left alone half the time

    off, plain = copies_of_one_image(built_dataset, tmp_path)  # every strength 0 or false
    assert all(np.array_equal(copy, plain) for copy in off)


def test_random_flip_mirrors_left_and_right(built_dataset, tmp_path):
    augmented, plain = copies_of_one_image(built_dataset, tmp_path, use_random_flip=True)
    flipped = [np.array_equal(copy, plain[:, ::-1]) for copy in augmented]
    assert all(f or np.array_equal(copy, plain) for f, copy in zip(flipped, augmented))
    assert 0 < sum(flipped) < 24


def test_random_brightness_adds_one_shift_per_image_of_at_most_its_strength(built_dataset, tmp_path):
    augmented, plain = copies_of_one_image(built_dataset, tmp_path, random_brightness=0.2)
    unclipped = (plain > 0.2) & (plain < 0.8)
    shifts = [(copy - plain)[unclipped] for copy in augmented]
    assert all(np.ptp(shift) < 1e-5 and abs(shift[0]) <= 0.2 + 1e-6 for shift in shifts)
    assert len({round(float(shift[0]), 4) for shift in shifts}) > 12


def test_random_saturation_scales_saturation_and_keeps_hue_and_value(built_dataset, tmp_path):
    augmented, plain = copies_of_one_image(built_dataset, tmp_path, random_saturation=0.5)
    hsv = tf.image.rgb_to_hsv(plain).numpy()
    ratios = []
    for copy in augmented:
        copy_hsv = tf.image.rgb_to_hsv(copy).numpy()
        np.testing.assert_allclose(copy_hsv[..., 2], hsv[..., 2], atol=1e-5)  # value: the largest channel
        kept = (hsv[..., 1] > 0.1) & (copy_hsv[..., 1] < 0.999)  # where the scaled saturation was not cut at 1
        ratio = copy_hsv[..., 1][kept] / hsv[..., 1][kept]
        assert np.ptp(ratio) < 1e-3 and 0.5 - 1e-3 <= ratio[0] <= 1.5 + 1e-3
        ratios.append(ratio[0])
    assert min(ratios) < 0.9 and max(ratios) > 1.1


def test_evaluation_images_are_never_augmented(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "dev")
    strongest = {"use_random_flip": True, "random_brightness": 1.0, "random_saturation": 1.0}
    with_augmentation = read_all(input_fn(False, filenames, labels, make_params(tmp_path, **strongest)))
    without = read_all(input_fn(False, filenames, labels, make_params(tmp_path, **NO_AUGMENTATION)))
    for a, b in zip(with_augmentation[0], without[0]):
        np.testing.assert_array_equal(a, b)


# check_labels


def test_check_labels_rejects_labels_outside_num_labels_and_says_what_num_labels_fits():
    with pytest.raises(UserError, match=r"labels \[6, 9\] outside 0..5.*Set num_labels to 10"):
        check_labels([0, 1, 6, 9, 2], num_labels=6, split="dev")


def test_check_labels_warns_of_classes_without_train_images_and_names_them():
    # labels {0..5, 9}: num_labels 10 works, and names the classes the model cannot learn
    [warning] = check_labels([0, 1, 2, 3, 4, 5, 9], num_labels=10, split="train")

    assert "no images of label(s) [6, 7, 8]" in warning


def test_check_labels_accepts_matching_labels_and_a_dev_split_missing_classes():
    assert check_labels([0, 1, 2, 3, 4, 5], num_labels=6, split="train") == []
    assert check_labels([0, 1, 2], num_labels=6, split="dev") == []


# cache


def cache_modes(tmp_path):
    """The three values of the `cache` hyperparameter: in memory, none, and a folder on disk."""
    return {"memory": "memory", "none": "none", "folder": str(tmp_path / "cache")}


def test_evaluation_batches_are_the_same_with_every_cache(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "dev")
    passes = {}
    for name, where in cache_modes(tmp_path).items():
        dataset = input_fn(False, filenames, labels, make_params(tmp_path, cache=where))
        passes[name] = [read_all(dataset) for _ in range(2)]  # the second pass reads the cache

    expected_images, expected_labels = (np.concatenate(batches) for batches in passes["none"][0])
    for name, (first, second) in passes.items():
        for images, batch_labels in (first, second):
            np.testing.assert_array_equal(np.concatenate(images), expected_images, err_msg=f"cache {name}")
            assert np.concatenate(batch_labels).tolist() == expected_labels.tolist()


@pytest.mark.parametrize("mode", ["memory", "none", "folder"])
def test_training_sees_every_image_once_per_epoch_in_a_new_order(built_dataset, tmp_path, mode):
    filenames, _ = list_split(built_dataset, "train")
    # Each file's index as its label, so that the labels name the images a batch holds.
    ids = list(range(len(filenames)))
    dataset = input_fn(True, filenames, ids, make_params(tmp_path, cache=cache_modes(tmp_path)[mode]))

    epochs = [read_all(dataset) for _ in range(2)]

    (first_images, first_ids), (second_images, second_ids) = (
        (np.concatenate(images), np.concatenate(batch_ids)) for images, batch_ids in epochs
    )
    assert Counter(first_ids.tolist()) == Counter(ids), "each image exactly once in epoch 1"
    assert Counter(second_ids.tolist()) == Counter(ids), "each image exactly once in epoch 2"
    # A cache replays the order it was filled in: the epochs must still be shuffled anew.
    assert first_ids.tolist() != second_ids.tolist()
    # and each image augmented anew: the cache holds the images before augmentation.
    assert not np.array_equal(first_images[np.argsort(first_ids)], second_images[np.argsort(second_ids)])


def test_a_folder_cache_holds_one_subfolder_per_dataset(built_dataset, tmp_path):
    params = make_params(tmp_path, cache=str(tmp_path / "cache"))
    # As in train.py: the train and dev datasets share the folder.
    train = input_fn(True, *list_split(built_dataset, "train"), params)
    dev = input_fn(False, *list_split(built_dataset, "dev"), params)

    read_all(train)
    read_all(dev)

    subfolders = sorted((tmp_path / "cache").iterdir())
    assert len(subfolders) == 2
    assert all(folder.name.startswith("tf_data_cache_") for folder in subfolders)
    assert all((folder / "images.index").is_file() for folder in subfolders)


def test_a_dataset_read_once_writes_no_cache(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "test")
    dataset = input_fn(False, filenames, labels, make_params(tmp_path, cache=str(tmp_path / "cache")), one_pass=True)

    _, batch_labels = read_all(dataset)

    assert np.concatenate(batch_labels).tolist() == labels
    assert list((tmp_path / "cache").glob("**/*")) == []


# Reads the train split through a folder cache, then shows what the folder holds at exit.
READ_WITH_CACHE = """
import sys
from pathlib import Path
from model.utils.dataset import list_split
from model.input_fn import input_fn
from model import model_fn  # noqa: F401
from model.utils.params import load_params

params_path, data_dir, cache_dir = sys.argv[1:]
for batch in input_fn(True, *list_split(data_dir, "train"), load_params(Path(params_path).parent)):
    pass
print(sorted(path.name for path in Path(cache_dir).glob("*/*")))
"""


def test_the_cache_is_deleted_by_what_runs_when_the_process_ends(built_dataset, tmp_path, monkeypatch):
    at_exit = []  # what the process would run as it ends
    monkeypatch.setattr(atexit, "register", lambda function, *args, **kwargs: at_exit.append((function, args, kwargs)))
    cache_dir = tmp_path / "cache"
    params = make_params(tmp_path, cache=str(cache_dir))

    read_all(input_fn(True, *list_split(built_dataset, "train"), params))

    assert "images.index" in [path.name for path in cache_dir.glob("*/*")], "the cache should exist until the end"
    for function, args, kwargs in at_exit:
        function(*args, **kwargs)
    assert list(cache_dir.iterdir()) == []


@pytest.mark.slow
def test_the_cache_is_deleted_when_the_process_ends(built_dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    make_params(tmp_path, cache=str(cache_dir))

    result = subprocess.run(
        [sys.executable, "-c", READ_WITH_CACHE, tmp_path / "params.json", built_dataset, cache_dir],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "images.index" in result.stdout, "the cache should exist until the process ends"
    assert list(cache_dir.iterdir()) == []
