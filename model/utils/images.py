"""Reading image files with Pillow: any format, colour mode, bit depth, size and EXIF orientation.
build_dataset.py reads a dataset with it and predict.py new images, so that a model sees new photos as
it saw its data (the SavedModel follows the same rules). No TensorFlow here: build_dataset.py starts fast."""

import multiprocessing
import signal
import warnings

import numpy as np
from PIL import Image, ImageOps

# What the scripts read; build_dataset.py writes JPEG only.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# How a non-square image becomes square before it is resized: "squash" stretches it, "crop" keeps
# its centre square, "pad" adds black borders; build_dataset.py --resize chooses, and records it
# in the dataset's build.json for predict.py and export.py. input_fn.square is the same in TensorFlow.
RESIZE_MODES = ("squash", "crop", "pad")
# What Pillow raises on a file it cannot read as an image
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_rgb(path, size):
    """(upright 8-bit RGB image, warning or None) of an image file, decoded at about `size` pixels
    if larger; the warning is Pillow's on an image large enough to be a decompression bomb, which
    is read anyway. Raises one of UNREADABLE if Pillow cannot read the file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            # Draft mode lets the JPEG decoder skip detail we would throw away: a 4000x3000 photo
            # is decoded straight at 1/8 scale when only 64x64 is needed (~20x faster).
            image.draft("RGB", (size, size))
            image = to_rgb(ImageOps.exif_transpose(image), image.format)  # phones store photos sideways
    bombs = [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    return image, f"{path}: {bombs[0].message} Read anyway." if bombs else None


def square(image, mode):
    """A Pillow image made square by `mode` (one of RESIZE_MODES)."""
    width, height = image.size
    if mode == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return image.crop((left, top, left + side, top + side))
    if mode == "pad":
        side = max(width, height)
        padded = Image.new("RGB", (side, side))  # black
        padded.paste(image, ((side - width) // 2, (side - height) // 2))
        return padded
    return image


def to_rgb(image, file_format=None):
    """Any Pillow image as 8-bit RGB, by the rules the SavedModel follows too:
    - 16-bit and 32-bit integer pixels (modes I;16, I) keep their high byte, 0-65535 -> 0-255, as
      TensorFlow's PNG decoder does; floating-point pixels (mode F) are read as 0-1 -> 0-255.
    - Transparent pixels are composited onto white, except in GIF and BMP files, whose
      transparency TensorFlow's decoders cannot read: there it is ignored, as in TensorFlow."""
    if image.mode.startswith("I"):
        image = Image.fromarray((np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.round(np.clip(np.asarray(image), 0, 1) * 255).astype(np.uint8))
    if ("A" in image.mode or "transparency" in image.info) and file_format not in ("GIF", "BMP"):
        rgba = np.asarray(image.convert("RGBA"), np.float32)
        alpha = rgba[..., 3:] / 255
        return Image.fromarray(np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8))
    return image.convert("RGB")


# Ctrl-C and SIGTERM, held back from a new worker until it has its own handlers (POSIX only)
HELD = {signal.SIGINT, signal.SIGTERM} if hasattr(signal, "pthread_sigmask") else set()


def worker_pool(processes):
    """A multiprocessing Pool whose workers leave Ctrl-C and SIGTERM to the main process: else
    each would print its own traceback when the user presses Ctrl-C or the pool ends. A worker is
    born with both signals blocked, so that a pool ended at once never meets one half started."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD) if HELD else None
    try:
        return multiprocessing.Pool(processes, initializer=_default_signal_handlers)
    finally:
        if HELD:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _default_signal_handlers():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if HELD:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
