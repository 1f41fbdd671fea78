"""Photos as they are meant to be seen: a camera stores a portrait photo as landscape pixels plus an
EXIF orientation tag, so an image is turned by that tag before anything compares its size with its
mask's (the mask was drawn on the upright photo)."""

from __future__ import annotations

from PIL import Image, ImageOps

ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 = upright, 2-8 = mirrored and/or turned


def orientation(im: Image.Image) -> int:
    """The image's EXIF orientation (1, upright, when it has none or an unreadable one)."""
    try:
        value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block must not make the photo unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def upright(im: Image.Image) -> Image.Image:
    """``im`` turned and mirrored as its EXIF orientation says (itself when upright)."""
    return im if orientation(im) == 1 else ImageOps.exif_transpose(im)


def turned_hint(image_size: tuple[int, int], mask_size: tuple[int, int]) -> str:
    """A note for a size mismatch that is a quarter turn: (h, w) against (w, h)."""
    if image_size != mask_size and image_size == mask_size[::-1]:
        return (" (they match only with one of them turned a quarter: the image is shown upright by its EXIF "
                "orientation, as a phone takes it; draw or export the mask on the upright image)")
    return ""
