"""Resizing to the training size: images by nearest, bilinear or area averaging, masks always by
nearest neighbour (a blended class id is no class)."""

from __future__ import annotations

import numpy as np
from PIL import Image

RESIZE_MODES = ("nearest", "bilinear", "area")


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel: the one whose centre is nearest (half-pixel centres, as in
    Pillow and tf.image.resize). Exact integer arithmetic, so images and masks always agree."""
    return (np.arange(n_out, dtype=np.int64) * 2 + 1) * n_in // (2 * n_out)


def check_resize_mode(mode: str, what: str = "image resize") -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"{what} must be one of {', '.join(RESIZE_MODES)}, not {mode!r}")


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
        ok = h >= 1 and w >= 1 and tuple(size) == (h, w)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"size must be (height, width) in whole pixels, not {size!r}")
    return h, w


def resize_image(image: np.ndarray, size: tuple[int, int], mode: str = "nearest") -> np.ndarray:
    """Resize a uint8 (H, W) or (H, W, C) image to ``size`` = (H, W).

    "nearest" picks exactly the pixels :func:`resize_mask` picks, so image and mask stay aligned;
    "bilinear" is Pillow's (antialiased when shrinking); "area" averages the covered source area
    (Pillow's BOX filter, like ``Image.reduce``).
    """
    h, w = check_size(size)
    check_resize_mode(mode, "resize mode")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, C) image, got {image.dtype} {image.shape}")
    if image.shape[:2] == (h, w):
        return image.copy()
    if mode == "nearest":
        return image[_nearest_index(image.shape[0], h)[:, None], _nearest_index(image.shape[1], w)[None, :]]
    resample = Image.Resampling.BILINEAR if mode == "bilinear" else Image.Resampling.BOX
    if image.ndim == 2 or image.shape[2] == 3:  # not 4: Pillow would treat it as RGBA and premultiply
        return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), resample))
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize((w, h), resample))
                for c in range(image.shape[2])]
    return np.stack(channels, axis=2)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (H, W) class-id mask to ``size`` = (H, W), always nearest-neighbour (ids must not be
    blended), with the same source pixels as ``resize_image(..., "nearest")``."""
    h, w = check_size(size)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}")
    if mask.shape == (h, w):
        return mask.copy()
    return mask[_nearest_index(mask.shape[0], h)[:, None], _nearest_index(mask.shape[1], w)[None, :]]
