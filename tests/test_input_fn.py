"""model/input_fn.py: listing a split, the tf.data pipeline, and the label checks."""

import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest
from conftest import tiny_params
from PIL import Image

from model.input_fn import check_labels, input_fn, list_split
from model.utils import Params, UserError


def make_params(folder, **overrides):
    path = folder / "params.json"
    path.write_text(json.dumps(tiny_params(**overrides)))
    return Params(path)


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
    assert all(f"/dev_signs/{label}_IMG_dev" in name for name, label in zip(filenames, labels))
    assert Counter(labels) == {label: 4 for label in range(6)}


def test_list_split_on_a_missing_split_names_the_folder(built_dataset):
    shutil.rmtree(built_dataset / "test_signs")

    with pytest.raises(UserError, match=re.escape(f"no folder {built_dataset / 'test_signs'}")):
        list_split(built_dataset, "test")


def test_list_split_on_an_empty_split_names_the_folder(built_dataset):
    for path in (built_dataset / "dev_signs").iterdir():
        path.unlink()

    with pytest.raises(UserError, match=re.escape(f"empty: no .jpg images in {built_dataset / 'dev_signs'}")):
        list_split(built_dataset, "dev")


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


def test_training_augments_pixels(built_dataset, tmp_path):
    filenames, labels = list_split(built_dataset, "dev")
    params = make_params(tmp_path, batch_size=24)
    one_file = [filenames[0]] * 24

    [augmented], _ = read_all(input_fn(True, one_file, [labels[0]] * 24, params))
    [plain], _ = read_all(input_fn(False, one_file, [labels[0]] * 24, params))

    # the same image 24 times: without augmentation every copy would equal the plain one
    assert sum(not np.allclose(copy, plain[0]) for copy in augmented) > 20


# check_labels


def test_check_labels_rejects_labels_outside_num_labels():
    with pytest.raises(UserError, match=r"labels \[6, 9\] outside 0..5"):
        check_labels([0, 1, 6, 9, 2], num_labels=6, split="dev")


def test_check_labels_rejects_a_train_split_missing_classes():
    with pytest.raises(UserError, match="train split has 4 different labels .* num_labels = 6"):
        check_labels([0, 1, 2, 3, 0, 1], num_labels=6, split="train")


def test_check_labels_accepts_matching_labels_and_a_dev_split_missing_classes():
    check_labels([0, 1, 2, 3, 4, 5], num_labels=6, split="train")
    check_labels([0, 1, 2], num_labels=6, split="dev")
