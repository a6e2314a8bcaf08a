"""build_dataset.py, run in the test's process: splits, sizes, names, odd images and bad input."""

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from conftest import run_in_process, write_image, write_raw_signs, write_signs_split
from PIL import Image

import build_dataset

SPLITS = ("train", "dev", "test")
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def build(data_dir, output_dir, *args):
    return run_in_process(
        "build_dataset.py",
        *("--data_dir", data_dir, "--output_dir", output_dir, "--size", 16, "--workers", 2, *args),
    )


def names(folder):
    return sorted(path.name for path in folder.iterdir())


def label_counts(folder):
    return Counter(int(name.split("_")[0]) for name in names(folder))


def pixels(path):
    return np.asarray(Image.open(path), np.float32)


def assert_colour(region, colour, tolerance=60):
    """Every pixel of region within `tolerance` of colour, in each channel (JPEG blurs edges)."""
    assert np.abs(region - np.array(colour, np.float32)).max() < tolerance, region.mean(axis=(0, 1))


def write_class_folders(root, extensions, per_class, rng, prefix=""):
    """root/<class>/<class>_<prefix><i>.<ext>, one folder and file format per class."""
    for label, (class_name, ext) in enumerate(extensions.items()):
        (root / class_name).mkdir(parents=True)
        for i in range(per_class):
            write_image(root / class_name / f"{class_name}_{prefix}{i}.{ext}", label, rng, size=(20, 24))


# SIGNS layout


@pytest.fixture(scope="module")
def signs(tmp_path_factory):
    """One build of a SIGNS dataset (60 train, 12 test images), shared by the tests below."""
    root = tmp_path_factory.mktemp("signs")
    result = build(write_raw_signs(root / "SIGNS"), root / "out")
    assert result.returncode == 0, result.stderr
    return root / "SIGNS", root / "out"


def test_signs_build_writes_three_splits_of_16x16_rgb_jpegs(signs):
    _, out = signs

    for split in SPLITS:
        for path in (out / split).iterdir():
            with Image.open(path) as image:
                assert (image.format, image.size, image.mode) == ("JPEG", (16, 16), "RGB"), path


def test_signs_dev_is_a_fifth_of_train_in_each_class(signs):
    _, out = signs

    assert label_counts(out / "train") == {label: 8 for label in range(6)}
    assert label_counts(out / "dev") == {label: 2 for label in range(6)}
    assert label_counts(out / "test") == {label: 2 for label in range(6)}


def test_signs_files_keep_their_label_and_name(signs):
    raw, out = signs

    assert sorted(names(out / "train") + names(out / "dev")) == names(raw / "train_signs")
    assert names(out / "test") == names(raw / "test_signs")


def test_signs_classes_json_maps_each_label(signs):
    _, out = signs

    assert json.loads((out / "classes.json").read_text()) == {str(i): str(i) for i in range(6)}


def test_signs_log_reports_the_count_of_each_split(signs):
    _, out = signs

    log = (out / "build_dataset.log").read_text()

    assert "train: 48 images" in log
    assert "dev: 12 images" in log
    assert "test: 12 images" in log


def test_signs_build_is_reproducible(signs, tmp_path):
    raw, out = signs

    assert build(raw, tmp_path / "again").returncode == 0

    for split in SPLITS:
        assert names(tmp_path / "again" / split) == names(out / split)


def test_another_seed_gives_another_dev_set_and_no_stale_files(signs, tmp_path):
    raw, out = signs
    rebuilt = tmp_path / "out"
    shutil.copytree(out, rebuilt)

    assert build(raw, rebuilt, "--seed", 1).returncode == 0

    assert names(rebuilt / "dev") != names(out / "dev")
    assert label_counts(rebuilt / "dev") == {label: 2 for label in range(6)}
    assert len(names(rebuilt / "train")) == 48  # the earlier build's train images are gone


def test_signs_labels_with_two_digits(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 60), ("test", 12)):
        (tmp_path / "SIGNS" / f"{split}_signs").mkdir(parents=True)
        for i in range(count):
            write_image(tmp_path / "SIGNS" / f"{split}_signs/{i % 12}_IMG_{i}.jpg", i % 6, rng, size=(16, 16))

    result = build(tmp_path / "SIGNS", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out/classes.json").read_text()) == {str(i): str(i) for i in range(12)}
    assert label_counts(tmp_path / "out/train") == {label: 4 for label in range(12)}
    assert "11_IMG_11.jpg" in names(tmp_path / "out/test")


# One folder per class

CLASS_FORMATS = {"cat": "png", "dog": "jpeg", "zebra": "bmp"}


def test_class_folders_get_labels_in_name_order_and_a_test_split(tmp_path):
    write_class_folders(tmp_path / "DATA", CLASS_FORMATS, 20, np.random.default_rng(0))

    result = build(tmp_path / "DATA", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert json.loads((out / "classes.json").read_text()) == {"0": "cat", "1": "dog", "2": "zebra"}
    assert label_counts(out / "test") == {0: 2, 1: 2, 2: 2}  # 10% of 20
    assert label_counts(out / "dev") == {0: 4, 1: 4, 2: 4}  # 20% of the other 18
    assert label_counts(out / "train") == {0: 14, 1: 14, 2: 14}
    written = {name for split in SPLITS for name in names(out / split)}
    expected = {f"{label}_{name}_{i}.jpg" for label, name in enumerate(CLASS_FORMATS) for i in range(20)}
    assert written == expected


def test_class_folders_under_train_and_test_keep_the_given_test_set(tmp_path):
    rng = np.random.default_rng(0)
    write_class_folders(tmp_path / "DATA/train", CLASS_FORMATS, 10, rng)
    write_class_folders(tmp_path / "DATA/test", CLASS_FORMATS, 3, rng, prefix="test")

    result = build(tmp_path / "DATA", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    expected_test = [f"{label}_{name}_test{i}.jpg" for label, name in enumerate(CLASS_FORMATS) for i in range(3)]
    assert names(tmp_path / "out/test") == sorted(expected_test)
    assert label_counts(tmp_path / "out/dev") == {0: 2, 1: 2, 2: 2}
    assert label_counts(tmp_path / "out/train") == {0: 8, 1: 8, 2: 8}


@pytest.mark.parametrize("dev_folder", ["val", "valid", "validation", "dev"])
def test_a_given_validation_folder_is_the_dev_split_and_unused_folders_are_named(tmp_path, dev_folder):
    # As photo datasets come: train/, validation/ and test/ class folders of non-square photos
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), (dev_folder, 2), ("test", 2)):
        for label, name in enumerate(("shirt", "shoes")):
            (tmp_path / "DATA" / split / name).mkdir(parents=True)
            for i in range(n):
                size = ((30, 50), (64, 40), (17, 23))[i % 3]
                write_image(tmp_path / "DATA" / split / name / f"{split}{i}.jpg", label, rng, size=size)
    (tmp_path / "DATA" / "extras").mkdir()

    result = build(tmp_path / "DATA", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert names(tmp_path / "out/dev") == sorted(f"{label}_{dev_folder}{i}.jpg" for label in (0, 1) for i in (0, 1))
    assert label_counts(tmp_path / "out/train") == {0: 6, 1: 6}  # none of train went to dev
    assert "Warning: not used: the folder(s) extras" in result.stderr
    assert all(Image.open(p).size == (16, 16) for p in (tmp_path / "out").glob("*/*.jpg"))
    assert json.loads((tmp_path / "out/classes.json").read_text()) == {"0": "shirt", "1": "shoes"}


def striped_photo(path):
    """40 wide x 20 tall: a red band on the left, white in the middle, a blue band on the right."""
    image = np.full((20, 40, 3), 255, np.uint8)
    image[:, :10] = RED
    image[:, 30:] = BLUE
    Image.fromarray(image).save(path)


@pytest.mark.parametrize("resize", ["squash", "crop", "pad"])
def test_each_resize_mode_gives_the_expected_pixels(tmp_path, resize):
    for split in ("train", "test"):
        (tmp_path / "DATA" / split / "striped").mkdir(parents=True)
        for i in range(5):
            striped_photo(tmp_path / "DATA" / split / "striped" / f"{i}.png")
    (tmp_path / "DATA" / "train" / "other").mkdir()  # a classifier needs two classes
    striped_photo(tmp_path / "DATA" / "train" / "other" / "0.png")

    result = build(tmp_path / "DATA", tmp_path / "out", *([] if resize == "squash" else ["--resize", resize]))

    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out/build.json").read_text()) == {"size": 16, "resize": resize}
    image = pixels(next((tmp_path / "out/test").iterdir()))
    if resize == "squash":  # stretched: the bands keep their share of the width, over the full height
        assert_colour(image[:, :3], RED)
        assert_colour(image[:, 6:10], WHITE)
        assert_colour(image[:, 13:], BLUE)
    elif resize == "crop":  # the centre square: the white middle only
        assert_colour(image, WHITE)
    else:  # the whole photo, with black borders above and below
        assert_colour(image[:3], (0, 0, 0))
        assert_colour(image[13:], (0, 0, 0))
        assert_colour(image[5:11, :3], RED)
        assert_colour(image[5:11, 6:10], WHITE)
        assert_colour(image[5:11, 13:], BLUE)


def test_an_unknown_resize_mode_is_refused(tmp_path):
    result = build(tmp_path / "DATA", tmp_path / "out", "--resize", "stretch")
    assert result.returncode == 2 and "invalid choice: 'stretch'" in result.stderr


# Odd and broken images


def write_odd_images(folder):
    """Images a real dataset holds besides plain RGB JPEGs, and two files that are no image."""
    (folder / "0_IMG_bad.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (folder / "1_IMG_empty.jpg").write_bytes(b"")

    # Stored 40 wide x 20 tall, red left and blue right; EXIF orientation 6 tells viewers to
    # turn it 90 degrees clockwise, so it shows 20 wide x 40 tall, red on top and blue below.
    sideways = Image.new("RGB", (40, 20), BLUE)
    sideways.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(folder / "2_IMG_exif.jpg", exif=exif)

    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(folder / "3_IMG_cmyk.jpg")  # red
    half_transparent = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    half_transparent.paste((0, 0, 255, 255), (0, 0, 10, 20))  # blue left half, transparent right
    half_transparent.save(folder / "4_IMG_rgba.png")
    Image.new("RGB", (20, 20), RED).convert("P").save(folder / "5_IMG_palette.png")
    Image.new("L", (20, 20), 128).save(folder / "0_IMG_grey.jpg")


ODD_IMAGES = ["2_IMG_exif.jpg", "3_IMG_cmyk.jpg", "4_IMG_rgba.jpg", "5_IMG_palette.jpg", "0_IMG_grey.jpg"]


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """A SIGNS build whose test split holds the odd images: (finished process, output folder)."""
    root = tmp_path_factory.mktemp("odd")
    write_raw_signs(root / "SIGNS", num_train=12, num_test=6)
    write_odd_images(root / "SIGNS/test_signs")
    return build(root / "SIGNS", root / "out"), root / "out"


def test_unreadable_files_are_skipped_with_a_warning(odd):
    result, out = odd

    assert result.returncode == 0, result.stderr
    log = (out / "build_dataset.log").read_text()
    for bad in ("0_IMG_bad.jpg", "1_IMG_empty.jpg"):
        assert bad in result.stderr
        assert bad in log
        assert bad not in names(out / "test")
    normal = [f"{i % 6}_IMG_{1000 + i}.jpg" for i in range(6)]
    assert names(out / "test") == sorted(normal + ODD_IMAGES)
    assert len(names(out / "train") + names(out / "dev")) == 12


@pytest.mark.parametrize("name", ODD_IMAGES)
def test_every_colour_mode_becomes_a_16x16_rgb_jpeg(odd, name):
    _, out = odd

    with Image.open(out / "test" / name) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (16, 16), "RGB")


def test_exif_rotated_photo_comes_out_upright(odd):
    image = pixels(odd[1] / "test/2_IMG_exif.jpg")

    assert_colour(image[:6], RED)
    assert_colour(image[10:], BLUE)


def test_transparent_area_becomes_white(odd):
    image = pixels(odd[1] / "test/4_IMG_rgba.jpg")

    assert_colour(image[:, :6], BLUE)
    assert_colour(image[:, 10:], WHITE)


@pytest.mark.parametrize(
    "name, colour", [("3_IMG_cmyk.jpg", RED), ("5_IMG_palette.jpg", RED), ("0_IMG_grey.jpg", (128, 128, 128))]
)
def test_colours_survive_the_conversion_to_rgb(odd, name, colour):
    assert_colour(pixels(odd[1] / "test" / name), colour)


# Mistakes in the input


def assert_user_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_missing_data_dir_is_named(tmp_path):
    result = build(tmp_path / "NO_SUCH_DATA", tmp_path / "out")

    assert_user_error(result, "NO_SUCH_DATA", "does not exist")


def test_folder_without_images_explains_both_layouts(tmp_path):
    (tmp_path / "DATA").mkdir()
    (tmp_path / "DATA/notes.txt").write_text("no images here")

    result = build(tmp_path / "DATA", tmp_path / "out")

    assert_user_error(result, "No images found", "train_signs", "class")


def test_signs_file_without_a_label_is_named(tmp_path):
    write_signs_split(tmp_path / "SIGNS/train_signs", 6, np.random.default_rng(0))
    Image.new("RGB", (20, 20), RED).save(tmp_path / "SIGNS/train_signs/x_IMG_1.jpg")

    result = build(tmp_path / "SIGNS", tmp_path / "out")

    assert_user_error(result, "x_IMG_1.jpg")


@pytest.mark.parametrize("data, output", [("PETS", "PETS/16x16"), ("out/train", "out"), ("out/dev_signs/pets", "out")])
def test_data_and_output_folders_that_overlap_are_refused_and_nothing_is_touched(tmp_path, data, output):
    # An output inside the data would be read as one more class folder on the next build; data
    # inside a split folder of the output would be replaced by the build.
    write_class_folders(tmp_path / data, {"cat": "jpg", "dog": "jpg"}, 10, np.random.default_rng(0))

    result = build(tmp_path / data, tmp_path / output)

    assert_user_error(result, "overlap")
    assert sorted(path.name for path in (tmp_path / data).rglob("*")) == sorted(
        ["cat", "dog"] + [f"{c}_{i}.jpg" for c in ("cat", "dog") for i in range(10)]
    )


@pytest.mark.parametrize("option, value", [("--size", 0), ("--size", -5), ("--workers", 0), ("--synthetic", -5)])
def test_a_count_below_one_is_refused(raw_signs, tmp_path, option, value):
    result = build(raw_signs, tmp_path / "out", option, value)

    assert_user_error(result, f"{option} {value}", "a whole number from 1 to")
    assert not (tmp_path / "out").exists()


def test_a_build_that_fails_leaves_the_earlier_dataset_whole(signs, tmp_path):
    out = shutil.copytree(signs[1], tmp_path / "out")
    before = contents(out)
    for name in ("cat", "dog"):
        (tmp_path / "garbage" / name).mkdir(parents=True)
        (tmp_path / "garbage" / name / f"{name}.jpg").write_text("not an image")

    result = build(tmp_path / "garbage", out)

    assert_user_error(result, "None of the train images could be read", "cat.jpg")
    assert contents(out) == before, "the earlier images, classes.json and build.json stay"
    assert [p.name for p in out.glob(".*")] == [".lock"], "and no hidden folder is left (the lock stays)"


class InterruptedPool:
    """A worker pool where the user presses Ctrl-C after the first images are written."""

    def __init__(self, processes):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def imap(self, function, tasks, chunksize):
        yield from map(function, tasks[:5])
        raise KeyboardInterrupt


def test_an_interrupted_build_leaves_the_earlier_dataset_whole(signs, tmp_path, monkeypatch):
    out = shutil.copytree(signs[1], tmp_path / "out")
    before = contents(out)
    splits, _, _ = build_dataset.read_dataset(signs[0], [])
    monkeypatch.setattr(build_dataset, "worker_pool", InterruptedPool)

    with pytest.raises(KeyboardInterrupt):
        build_dataset.build({split: items for split, items in splits.items() if items}, out, 16, "squash", 1)

    assert contents(out) == before
    assert [p.name for p in out.glob(".*")] == [".lock"]


def contents(folder):
    """{path: bytes} of every file below folder but the log, which each build appends to."""
    return {
        p.relative_to(folder): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != "build_dataset.log"
    }


@pytest.mark.parametrize("option", ["--dev_fraction", "--test_fraction"])
def test_fraction_given_as_a_percentage_is_refused(raw_signs, tmp_path, option):
    result = build(raw_signs, tmp_path / "out", option, "20")

    assert_user_error(result, option, "between 0 and 1")
