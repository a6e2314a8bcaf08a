"""Reading image files with Pillow: any format, colour mode, size and EXIF orientation.

Shared by build_dataset.py, which resizes a whole dataset once, and predict.py, which reads
new images the same way, so that a model sees new photos as it saw its data. No TensorFlow
here: build_dataset.py stays quick to start.
"""

from PIL import Image, ImageOps

# What the scripts read; build_dataset.py writes JPEG only.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# What Pillow raises on a file it cannot read as an image.
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_rgb(path, size):
    """The image in `path` as an upright RGB image, decoded at about `size` pixels if it is larger.

    Raises one of UNREADABLE if the file is not an image Pillow can read.
    """
    with Image.open(path) as image:
        # Draft mode lets the JPEG decoder skip detail we would throw away: a 4000x3000 photo
        # is decoded straight at 1/8 scale when only 64x64 is needed (~20x faster).
        image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image)  # phone photos are often stored sideways
        return to_rgb(image)


def to_rgb(image):
    """Any Pillow mode (L, P, RGBA, CMYK, ...) to RGB; transparent parts become white."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
    return image.convert("RGB")
