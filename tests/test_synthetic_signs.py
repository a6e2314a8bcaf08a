"""The demo dataset generator: layout, balance, determinism, and no trivial give-away."""

import re
from collections import Counter

import numpy as np
from PIL import Image

from demo.synthetic_signs import generate_signs


def files(root):
    return sorted(path for path in root.rglob("*.jpg"))


def label(path):
    return int(path.name.split("_")[0])


def test_raw_signs_layout_with_balanced_stratified_labels(tmp_path):
    counts = generate_signs(tmp_path, 60, image_size=64, workers=2)

    assert counts == {"train_signs": 54, "test_signs": 6}
    assert all(re.fullmatch(r"[0-5]_IMG_\d{5}\.jpg", path.name) for path in files(tmp_path))
    assert Counter(label(p) for p in files(tmp_path)) == {k: 10 for k in range(6)}
    assert Counter(label(p) for p in files(tmp_path / "test_signs")) == {k: 1 for k in range(6)}
    with Image.open(files(tmp_path)[0]) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))


def test_same_seed_gives_the_same_files_whatever_the_number_of_workers(tmp_path):
    generate_signs(tmp_path / "a", 12, image_size=64, workers=1)
    generate_signs(tmp_path / "b", 12, image_size=64, workers=2)
    generate_signs(tmp_path / "c", 12, image_size=64, seed=1, workers=2)

    a, b, c = (files(tmp_path / name) for name in "abc")
    assert [p.name for p in a] == [p.name for p in b]
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b))
    assert [p.read_bytes() for p in a] != [p.read_bytes() for p in c]


def test_mean_colour_and_file_size_do_not_give_the_label_away(tmp_path):
    generate_signs(tmp_path, 240, image_size=64, workers=2)
    paths = files(tmp_path)
    labels = np.array([label(p) for p in paths])
    features = np.array([[*np.asarray(Image.open(p), np.float32).mean(axis=(0, 1)), p.stat().st_size] for p in paths])
    features = (features - features.mean(axis=0)) / features.std(axis=0)

    # Leave-one-out nearest class centroid: chance is 1/6.
    correct = 0
    for i in range(len(paths)):
        others = np.arange(len(paths)) != i
        centroids = np.array([features[others & (labels == k)].mean(axis=0) for k in range(6)])
        correct += np.argmin(((centroids - features[i]) ** 2).sum(axis=1)) == labels[i]
    assert correct / len(paths) < 0.3, correct / len(paths)
