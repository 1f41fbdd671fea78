"""Images handed over as arrays (the Python API's ``Predictor.predict``) follow the rule files follow
in :func:`~pixelwise.data.decode.read_image`: whatever the layout, the network gets uint8 (H, W, 3) RGB,
alpha dropped, grey repeated, 16 bits scaled to 8; what cannot be an image is a one-line ValueError
that says which shape or values are expected."""

from __future__ import annotations

import numpy as np

from .decode import scale16

EXPECTED = "an (H, W, 3) RGB image, or (H, W) / (H, W, 1) grey, (H, W, 2) grey + alpha, (H, W, 4) RGBA"


def _values(array: np.ndarray) -> np.ndarray:
    """Any real dtype → uint8 as read_image maps a file's modes: uint8 as is, bool as 0/255, uint16
    scaled from 16 bits to 8 (as a 16-bit PNG is), other integers as they are within 0-255 and as 16
    bits up to 65535, floats in 0-1 times 255 (in 0-255 rounded); never by wrapping around."""
    kind = array.dtype.kind
    if kind == "u" and array.dtype.itemsize == 1:
        return array
    if kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    if kind in "iu":
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(f"integer image values run from {low} to {high}; expected 0-255 (uint8) or 0-65535 "
                             "(16 bits)")
        return scale16(array) if array.dtype == np.uint16 or high > 255 else array.astype(np.uint8)
    if kind == "f":
        values = array.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("the image holds NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 255:
            raise ValueError(f"float image values run from {low:g} to {high:g}; expected 0-1 or 0-255")
        return np.rint(values * 255.0 if high <= 1.0 else values).astype(np.uint8)
    raise ValueError(f"image array has dtype {array.dtype}; expected uint8 (or integers, "
                     "bool, floats in 0-1 or 0-255)")


def image_array(image: object) -> np.ndarray:
    """``image`` as uint8 (H, W, 3) RGB, C-contiguous; ValueError naming the expected shape otherwise."""
    try:
        array = np.asarray(image)
    except Exception as exc:  # ragged lists and other objects numpy cannot make an array of
        raise ValueError(f"not an image array ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         f"expected {EXPECTED}") from None
    shape = "x".join(str(n) for n in array.shape) or "a scalar"
    if array.ndim not in (2, 3):
        raise ValueError(f"image array has shape {array.shape}; expected {EXPECTED}")
    channels = 1 if array.ndim == 2 else array.shape[2]
    if array.ndim == 3 and channels > 4:
        first = " (channels first? use array.transpose(1, 2, 0))" if array.shape[0] in (1, 2, 3, 4) else ""
        raise ValueError(f"image array has shape {array.shape}: {channels} channels{first}; expected {EXPECTED}")
    if array.shape[0] == 0 or array.shape[1] == 0 or channels == 0:
        raise ValueError(f"image array is empty (shape {shape}); expected {EXPECTED}")
    array = _values(array)
    if array.ndim == 2:
        array = array[..., None]
    if channels <= 2:  # grey (+ alpha): the grey repeated
        array = np.repeat(array[..., :1], 3, axis=2)
    elif channels == 4:  # RGBA: alpha dropped, not composited, as read_image does
        array = array[..., :3]
    return np.ascontiguousarray(array)
