"""Reading image files with Pillow: any format, colour mode, bit depth, size and EXIF orientation.

build_dataset.py reads a dataset with it and predict.py new images, so that a model sees new
photos as it saw its data. The exported SavedModel follows the same rules (model/serving.py).
No TensorFlow here: build_dataset.py stays quick to start.
"""

import multiprocessing
import signal
import warnings

import numpy as np
from PIL import Image, ImageOps

# What the scripts read; build_dataset.py writes JPEG only.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# What Pillow raises on a file it cannot read as an image.
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_rgb(path, size):
    """(upright 8-bit RGB image, warning or None) from an image file, decoded at about `size`
    pixels if it is larger. Raises one of UNREADABLE if Pillow cannot read it.

    The warning is Pillow's about a very large image (a possible decompression bomb): the image
    is read anyway, and the warning is for the log.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            # Draft mode lets the JPEG decoder skip detail we would throw away: a 4000x3000 photo
            # is decoded straight at 1/8 scale when only 64x64 is needed (~20x faster).
            image.draft("RGB", (size, size))
            file_format = image.format
            image = to_rgb(ImageOps.exif_transpose(image), file_format)  # phones store photos sideways
    bombs = [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    return image, f"{path}: {bombs[0].message} Read anyway." if bombs else None


def to_rgb(image, file_format=None):
    """Any Pillow image as 8-bit RGB, by the rules the SavedModel follows too:

    - 16-bit and 32-bit integer pixels (modes I;16, I) keep their high byte, 0-65535 -> 0-255,
      as TensorFlow's PNG decoder does; floating-point pixels (mode F) are read as 0-1 -> 0-255.
    - Transparent pixels are composited onto white, except in GIF and BMP files, whose
      transparency TensorFlow's decoders cannot read: there it is ignored, as in TensorFlow.
    """
    if image.mode.startswith("I"):
        image = Image.fromarray((np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.round(np.clip(np.asarray(image), 0, 1) * 255).astype(np.uint8))
    if ("A" in image.mode or "transparency" in image.info) and file_format not in ("GIF", "BMP"):
        rgba = np.asarray(image.convert("RGBA"), np.float32)
        alpha = rgba[..., 3:] / 255
        return Image.fromarray(np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8))
    return image.convert("RGB")


def worker_pool(processes):
    """A multiprocessing Pool whose workers leave Ctrl-C and SIGTERM to the main process.

    Without this, every worker prints its own KeyboardInterrupt traceback when the user
    presses Ctrl-C, or when the pool shuts its workers down with SIGTERM.
    """
    return multiprocessing.Pool(processes, initializer=_default_signal_handlers)


def _default_signal_handlers():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
