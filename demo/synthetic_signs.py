"""Draw a synthetic stand-in for the SIGNS dataset (hands showing 0 to 5 fingers), which cannot be shipped.

Each hand raises `label` fingers, the rest folded into knuckle bumps, on a cluttered background. Pose, size,
skin tone, clutter, lighting, blur, noise and JPEG quality vary, so that the label can only be read from the
fingers. The files follow the raw SIGNS layout of build_dataset.py: data_dir/{train,test}_signs/{label}_IMG_{id}.jpg
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from model.utils.images import worker_pool

NUM_CLASSES = 6
SUPERSAMPLE = 2  # draw at 2x and shrink, which antialiases the edges
# How much the pose varies. Wider ranges (say +/-35 degrees, or the hand anywhere in the frame)
# make 3,000 images too few for the base model to reach 90% test accuracy in 10 epochs.
ROTATION_DEGREES = 18  # hand tilts uniformly within +/- this angle
SCALE_RANGE = (0.82, 1.18)  # overall hand size
POSITION_JITTER = 0.3  # 0 = hand centred, 1 = anywhere it fits
PALM_FRACTION = 0.38  # palm width / image width at scale 1
PALM_HEIGHT_RANGE = (0.95, 1.25)  # palm height / palm width
FOREARM_WIDTH_RANGE = (0.65, 0.9)
FINGER_LENGTH_RANGE = (1.0, 1.25)  # middle finger length / palm width
FINGER_WIDTH_RANGE = (0.21, 0.26)  # in palm widths
SPREAD_DEGREES_RANGE = (12, 18)  # angle between neighbouring raised fingers
EDGE_WIDTH = 0.1  # darker rim around fingers and palm, in palm widths
EDGE_DARKNESS_RANGE = (0.45, 0.65)  # rim colour = skin colour times this
OTHER_FINGERS_PROBABILITY = 0.15  # chance to count with the thumb first
CLUTTER_SHAPES_RANGE = (2, 6)  # 2 to 5 blobs on the background (upper end excluded)
LIGHTING_GAIN_RANGE = (0.7, 1.25)  # brightness at the dark and bright side of the image
BLUR_RADIUS_RANGE = (0.0, 1.2)
NOISE_STD_RANGE = (2.0, 10.0)
JPEG_QUALITY_RANGE = (85, 95)

# Skin tones from light to dark (RGB); a tone is picked anywhere between them.
SKIN_TONES = np.array(
    [(255, 224, 196), (234, 189, 157), (210, 150, 105), (170, 110, 70), (120, 75, 45), (75, 48, 32)], dtype=float
)

FINGER_NAMES = ("thumb", "index", "middle", "ring", "pinky")
# Which fingers people raise for each count: the usual way first, then a less common way (from the thumb).
USUAL_FINGERS = {
    0: ((),),
    1: (("index",), ("thumb",)),
    2: (("index", "middle"), ("thumb", "index")),
    3: (("index", "middle", "ring"), ("thumb", "index", "middle")),
    4: (("index", "middle", "ring", "pinky"), ("thumb", "index", "middle", "ring")),
    5: (FINGER_NAMES,),
}
# Each finger's place along the top of the palm, counted in FINGER_SPACING steps from the palm's
# centre line, and its length relative to the middle finger.
FINGER_SPACING = 0.2
FINGER_SLOTS = {"index": (-1.5, 0.92), "middle": (-0.5, 1.0), "ring": (0.5, 0.93), "pinky": (1.5, 0.75)}


def random_skin_tone(rng):
    position = rng.uniform(0, len(SKIN_TONES) - 1)
    low = int(position)
    high = min(low + 1, len(SKIN_TONES) - 1)
    tone = SKIN_TONES[low] + (position - low) * (SKIN_TONES[high] - SKIN_TONES[low])
    return np.clip(tone + rng.normal(0, 8, size=3), 0, 255)


def as_rgb(colour):
    return tuple(int(round(c)) for c in np.clip(colour, 0, 255))


def random_ramp(rng, size):
    """A size x size array going from 0 to 1 in a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.ogrid[0:size, 0:size]  # a column and a row, broadcast below
    return np.clip(0.5 + (xs / size - 0.5) * np.cos(angle) + (ys / size - 0.5) * np.sin(angle), 0, 1)


def draw_background(rng, size, skin):
    """A two-colour gradient with random blobs, some of them skin coloured,
    so that "skin-coloured pixels" is not a shortcut to find the hand."""
    near_skin = rng.random() < 0.3
    start = skin + rng.normal(0, 40, size=3) if near_skin else rng.uniform(0, 255, size=3)
    end = start + rng.normal(0, 50, size=3)
    pixels = start + random_ramp(rng, size)[..., None] * (end - start)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(*CLUTTER_SHAPES_RANGE)):
        base = skin if rng.random() < 0.4 else start
        colour = as_rgb(base + rng.normal(0, 30, size=3))
        x0, y0 = rng.uniform(-0.1, 1.0, size=2) * size
        width, height = rng.uniform(0.05, 0.35, size=2) * size
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + width, y0 + height], fill=colour)
    return image


class HandPose:
    """Maps hand coordinates (palm width = 1, palm centre at the origin,
    fingers pointing up) to pixel coordinates in the image."""

    def __init__(self, centre, degrees, palm_width, mirrored):
        self.centre = np.asarray(centre, dtype=float)
        self.angle = np.radians(degrees)
        self.palm_width = palm_width
        self.mirror = -1.0 if mirrored else 1.0

    def to_pixels(self, points):
        points = np.atleast_2d(np.asarray(points, dtype=float))
        x, y = self.mirror * points[:, 0], points[:, 1]
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        rotated_x, rotated_y = x * cos - y * sin, x * sin + y * cos
        # Image rows grow downwards, hand coordinates grow upwards.
        return self.centre + self.palm_width * np.stack([rotated_x, -rotated_y], axis=1)


def draw_capsule(draw, pose, start, end, width, fill, edge):
    """A finger-like stroke with rounded ends, with a thin darker rim so that fingers over the palm show."""
    (x0, y0), (x1, y1) = pose.to_pixels([start, end])
    for colour, pixels in ((edge, (width + EDGE_WIDTH) * pose.palm_width), (fill, width * pose.palm_width)):
        radius = pixels / 2
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=max(1, int(round(pixels))))
        for x, y in ((x0, y0), (x1, y1)):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)


def palm_outline(palm_height, points=48):
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return np.stack([0.5 * np.cos(angles), 0.5 * palm_height * np.sin(angles)], axis=1)


def palm_top(x, palm_height):
    """Height of the palm's upper edge at horizontal position x."""
    return 0.5 * palm_height * np.sqrt(max(0.0, 1 - (2 * x) ** 2))


def random_hand_shape(label, rng):
    """Where each finger starts and ends, in hand coordinates."""
    palm_height = rng.uniform(*PALM_HEIGHT_RANGE)
    finger_length = rng.uniform(*FINGER_LENGTH_RANGE)
    finger_width = rng.uniform(*FINGER_WIDTH_RANGE)
    spread = np.radians(rng.uniform(*SPREAD_DEGREES_RANGE))
    usual, *others = USUAL_FINGERS[label]
    raised = set(others[0] if others and rng.random() < OTHER_FINGERS_PROBABILITY else usual)

    fingers = []  # (start, end, width, is_raised)
    for name, (slot, relative_length) in FINGER_SLOTS.items():
        x = slot * FINGER_SPACING
        base = np.array([x, palm_top(x, palm_height) - 0.12])
        if name in raised:
            angle = slot * spread + rng.normal(0, np.radians(3))
            length = finger_length * relative_length * rng.uniform(0.92, 1.08)
            # Fingers fan out: those left of the centre line tilt left, and so on.
            tip = base + length * np.array([np.sin(angle), np.cos(angle)])
        else:
            # A folded finger only shows its knuckle above the palm.
            tip = base + np.array([0.0, 0.17])
        fingers.append((base, tip, finger_width, name in raised))

    thumb_base = np.array([-0.38, -0.1 * palm_height])
    if "thumb" in raised:
        angle = np.radians(rng.uniform(35, 65))
        length = finger_length * rng.uniform(0.55, 0.7)
        thumb_tip = thumb_base + length * np.array([-np.sin(angle), np.cos(angle)])
    else:
        # Folded, the thumb lies across the palm.
        thumb_tip = np.array([rng.uniform(-0.05, 0.15), rng.uniform(-0.05, 0.15) * palm_height])
    fingers.append((thumb_base, thumb_tip, finger_width * 1.2, "thumb" in raised))
    return palm_height, fingers


def random_pose(rng, size, palm_height, fingers):
    """Rotate and scale the hand, then shift it from the middle of the image
    by up to POSITION_JITTER of the room that is left around it."""
    palm_width = PALM_FRACTION * size * rng.uniform(*SCALE_RANGE)
    pose = HandPose((0, 0), rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES), palm_width, mirrored=rng.random() < 0.5)
    key_points = np.concatenate([palm_outline(palm_height)] + [[tip] for _, tip, _, _ in fingers])
    pixels = pose.to_pixels(key_points)  # relative to a centre at (0, 0) for now
    margin = 0.15 * palm_width
    low = margin - pixels.min(axis=0)
    high = size - margin - pixels.max(axis=0)
    middle = (low + np.maximum(low, high)) / 2
    room = np.maximum(0, high - low) / 2
    pose.centre = middle + POSITION_JITTER * room * rng.uniform(-1, 1, size=2)
    return pose


def draw_hand(image, label, rng, skin):
    draw = ImageDraw.Draw(image)
    palm_height, fingers = random_hand_shape(label, rng)
    pose = random_pose(rng, image.width, palm_height, fingers)
    fill = as_rgb(skin)
    edge = as_rgb(skin * rng.uniform(*EDGE_DARKNESS_RANGE))

    # The forearm is long enough to leave the picture, as in a real photo.
    draw_capsule(draw, pose, (0, 0), (0, -12), rng.uniform(*FOREARM_WIDTH_RANGE), fill, edge)
    # Raised fingers go behind the palm, folded ones (knuckles, thumb) on top.
    for start, end, width, is_raised in fingers:
        if is_raised:
            draw_capsule(draw, pose, start, end, width, fill, edge)
    palm = [tuple(p) for p in pose.to_pixels(palm_outline(palm_height))]
    draw.polygon(palm, fill=fill, outline=edge, width=max(1, int(EDGE_WIDTH / 2 * pose.palm_width)))
    for start, end, width, is_raised in fingers:
        if not is_raised:
            draw_capsule(draw, pose, start, end, width, fill, edge)


def apply_camera_effects(image, rng):
    """Uneven lighting, focus blur and sensor noise, at the final size."""
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*BLUR_RADIUS_RANGE)))
    size = image.width
    dark, bright = rng.uniform(*LIGHTING_GAIN_RANGE, size=2)
    colour_cast = rng.uniform(0.9, 1.1, size=3)
    gain = (dark + random_ramp(rng, size) * (bright - dark))[..., None] * colour_cast
    noise = rng.normal(0, rng.uniform(*NOISE_STD_RANGE), size=(size, size, 3))
    pixels = np.asarray(image, dtype=float) * gain + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_sign(label, rng, image_size=256):
    """One RGB image of a hand showing `label` raised fingers."""
    skin = random_skin_tone(rng)
    canvas = draw_background(rng, image_size * SUPERSAMPLE, skin)
    draw_hand(canvas, label, rng, skin)
    return apply_camera_effects(canvas.resize((image_size, image_size), Image.Resampling.LANCZOS), rng)


def _draw_and_save(task):
    index, label, path, seed, image_size = task
    # Each image has its own random stream, so the output does not depend on how the work is split.
    rng = np.random.default_rng([seed, index])
    image = draw_sign(label, rng, image_size)
    partial = path.with_name(f".{path.name}.part")
    image.save(partial, format="JPEG", quality=int(rng.integers(*JPEG_QUALITY_RANGE, endpoint=True)))
    os.replace(partial, path)  # a crash never leaves a half-written .jpg behind


def split_labels(num_images, seed, test_fraction):
    """Balanced shuffled labels and a test mask stratified by label."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_images) % NUM_CLASSES)
    is_test = np.zeros(num_images, dtype=bool)
    for label in range(NUM_CLASSES):
        indices = np.flatnonzero(labels == label)
        is_test[indices[: int(round(test_fraction * len(indices)))]] = True
    return labels, is_test


def generate_signs(data_dir, num_images, seed=230, image_size=256, test_fraction=0.1, workers=None):
    """Writes `num_images` synthetic SIGNS photos under data_dir; returns {"train_signs": n_train,
    "test_signs": n_test}. The same seed always gives byte-identical files, whatever `workers` is."""
    labels, is_test = split_labels(num_images, seed, test_fraction)
    folders = {split: Path(data_dir) / split for split in ("train_signs", "test_signs")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    tasks = []
    for index, (label, test) in enumerate(zip(labels, is_test)):
        folder = folders["test_signs" if test else "train_signs"]
        tasks.append((index, int(label), folder / f"{label}_IMG_{index:05d}.jpg", seed, image_size))

    with worker_pool(workers or os.cpu_count()) as pool:
        list(tqdm(pool.imap_unordered(_draw_and_save, tasks, chunksize=8), total=len(tasks), desc="Drawing demo hands"))
    return {"train_signs": int((~is_test).sum()), "test_signs": int(is_test.sum())}
