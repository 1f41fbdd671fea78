"""Reading one image or mask: any common format and mode to uint8 RGB or class ids, with every
failure (truncated, not an image, a decompression bomb, a bad mode) a DataError naming the file."""

from __future__ import annotations

import io
import re
import stat
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .links import broken_link
from .orientation import upright
from .problems import DataError, Problem


def file_error(path: Path, message: str) -> DataError:
    """A DataError holding one Problem: ``path`` and what is wrong with it."""
    return DataError([Problem(path, message)])


def _head(path: Path, data: bytes | None, n: int) -> bytes:
    """The first ``n`` bytes of the file (or of ``data``, an upload), empty if unreadable."""
    if data is not None:
        return data[:n]
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _bomb_message(path: Path, size: tuple[int, int] | None, exc: Exception | None = None,
                  data: bytes | None = None) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    if size is None:  # Pillow refused before handing us the header; PNGs keep it at a fixed offset
        head = _head(path, data, 24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            size = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if size is not None:
        what = f"image is {size[0]} x {size[1]} pixels"
    else:
        found = re.search(r"\((\d+) pixels\)", str(exc or ""))
        what = f"image has {int(found.group(1)):,} pixels" if found else "image is too large"
    return (f"{what}, larger than the limit of {limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS, a guard "
            "against decompression bombs); raise that limit if the file is trusted")


def _rawmode(im: Image.Image) -> str:
    """How the file stores pixels (e.g. "RGB;16B" for a 16-bit RGB PNG that Pillow reduces to 8 bits)."""
    if not im.tile:
        return ""
    args = im.tile[0][3]
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _file_size(path: Path) -> int:
    """The size of an image file in bytes; DataError naming it if it is missing, unreadable or a folder."""
    try:
        st = path.stat()
    except OSError as exc:
        link = broken_link(path)
        if link or isinstance(exc, FileNotFoundError):
            raise file_error(path, link or "file not found") from None
        raise file_error(path, f"cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise file_error(path, "is a folder, not an image file")
    return st.st_size


def decode_file(path: str | Path, convert: Callable[[Image.Image, Path, str], np.ndarray],
                data: bytes | None = None) -> np.ndarray:
    """Open, size-check, fully decode and convert one file: what every reader of images and masks shares.

    Args:
        path: the file (or, with ``data``, the name an upload is reported under).
        convert: ``(image, path, rawmode) -> array``, the decoded Pillow image to the array wanted
            (``rawmode`` says how the file stores pixels, e.g. "RGB;16B"); raises DataError for what it refuses.
        data: the bytes of an upload, read instead of ``path``.

    Returns:
        What ``convert`` returns, writable.

    Raises:
        DataError: naming ``path``, for every failure (missing, truncated, not an image, a decompression bomb …).
    """
    path = Path(path)
    n_bytes = _file_size(path) if data is None else len(data)
    if n_bytes == 0:
        raise file_error(path, "empty file (0 bytes)")
    kind = path.suffix.lstrip(".").upper() or "image"
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:  # lazy: reads the header only
            kind = im.format or kind
            limit = Image.MAX_IMAGE_PIXELS
            if limit and im.width * im.height > limit:
                raise file_error(path, _bomb_message(path, im.size))
            rawmode = _rawmode(im)  # gone once loaded
            im.load()  # decode everything now, inside the try, so truncation is caught here
            array = convert(im, path, rawmode)
            return array if array.flags.writeable else array.copy()  # np.asarray(im) is read-only
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning: under `-W error`
        raise file_error(path, _bomb_message(path, None, exc, data)) from None
    except UnidentifiedImageError:
        head = _head(path, data, 8)
        if head.startswith(b"\x89PNG"):
            raise file_error(path, "truncated or corrupt PNG header") from None
        if head.startswith(b"\xff\xd8"):
            raise file_error(path, "truncated or corrupt JPEG header") from None
        raise file_error(path, f"not an image file (Pillow cannot identify it; {n_bytes} bytes)") from None
    except MemoryError:
        raise file_error(path, "not enough memory to decode this image") from None
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, zlib/struct errors …
        if "truncated" in str(exc).lower():
            raise file_error(path, f"truncated {kind}: the file ends before its image data does "
                                   "(an interrupted download or copy?)") from None
        if isinstance(exc, OSError) and exc.errno is not None:
            raise file_error(path, f"cannot read ({exc.strerror or exc})") from None
        raise file_error(path, f"corrupt {kind} data ({type(exc).__name__}: {exc})") from None


def scale16(values: np.ndarray) -> np.ndarray:
    """0..65535 → 0..255, rounding (65535 → 255, 257 → 1)."""
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _image_to_rgb(im: Image.Image, path: Path, rawmode: str) -> np.ndarray:
    im = upright(im)  # a phone photo's EXIF orientation applied, as every viewer shows it
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode in ("RGBA", "RGBX", "RGBa"):
        return np.ascontiguousarray(np.asarray(im)[..., :3])  # alpha dropped, not composited
    if mode in ("P", "PA"):
        return np.ascontiguousarray(np.asarray(im.convert("RGBA"))[..., :3])  # via RGBA: no transparency warning
    if mode in ("L", "LA", "1"):
        gray = np.asarray(im.convert("L") if mode == "1" else im)
        gray = gray[..., 0] if gray.ndim == 3 else gray
    elif mode == "I" or mode.startswith("I;16"):
        gray = scale16(np.asarray(im))
    elif mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float64))
        values = values * 255.0 if values.size and values.max() <= 1.0 else values
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    else:  # CMYK, YCbCr, LAB, HSV, …
        return np.asarray(im.convert("RGB"))
    return np.repeat(gray[..., None], 3, axis=2)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image as uint8 (H, W, 3) RGB, whatever its mode: alpha dropped, grey repeated,
    palette applied, 16 bits scaled to 8. Raises DataError naming the file if it cannot be read."""
    return decode_file(path, _image_to_rgb)


def read_image_bytes(data: bytes, name: str = "upload") -> np.ndarray:
    """:func:`read_image` for bytes received rather than read from disk (the server's uploads): the
    same rules and messages, the file called ``name``."""
    return decode_file(name, _image_to_rgb, data)


def rgb_ids(rgb: np.ndarray) -> np.ndarray:
    """The ids rule for colour pixels: uint8 (H, W, 3 or 4) → uint8 (H, W) max(R, G, B), alpha left out.

    CARLA's masks hold the class id in R with G = B = 0; alpha, 255 everywhere, must never count."""
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def mask_ids(im: Image.Image, path: Path, rawmode: str) -> np.ndarray:
    """The ``ids`` mask format, the one rule every reader of id masks uses: RGB(A) → :func:`rgb_ids`;
    grey → its value; palette → its index; 16-bit → its value if below 256.

    Args:
        im: the decoded mask file.
        path: the file, for the problems.
        rawmode: how the file stores pixels (a 16-bit RGB mask is refused: Pillow keeps only its high bytes).

    Returns:
        uint8 (H, W) class ids.

    Raises:
        DataError: naming ``path``, for a mode or values that cannot be class ids.
    """
    mode = im.mode
    if mode in ("RGB", "RGBA", "RGBX"):
        if "16" in rawmode:
            raise file_error(path, "16-bit RGB mask: Pillow keeps only the high byte of each value, so class ids would "
                                   "be lost; save masks as 8-bit PNGs")
        return rgb_ids(np.asarray(im))
    if mode in ("L", "P"):
        return np.asarray(im)  # grey value, or the palette INDEX (not its colour)
    if mode in ("LA", "PA"):
        return np.ascontiguousarray(np.asarray(im)[..., 0])
    if mode == "1":
        return np.asarray(im).astype(np.uint8)
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        values = np.asarray(im)
        fractional = mode == "F" and not np.all(np.isfinite(values) & (values == np.rint(values)))
        if values.size and (fractional or values.min() < 0 or values.max() >= 256):
            raise file_error(path, f"{mode} mask has values from {values.min():g} to {values.max():g}; class ids must be "
                                   "whole numbers 0-255 (save masks as 8-bit PNGs)")
        return values.astype(np.uint8)
    raise file_error(path, f"unsupported mask mode {mode}; save masks as 8-bit grey, palette or RGB PNGs")


def read_mask(path: str | Path) -> np.ndarray:
    """Decode a mask in the ``ids`` format (:func:`mask_ids`) as uint8 (H, W) class ids: RGB(A) → max over
    R, G, B (alpha ignored); grey → its value; palette → its index; 16-bit → its value if below 256.
    Other formats: :func:`~pixelwise.data.colors.read_mask_as`. Raises DataError naming the file."""
    return decode_file(path, mask_ids)


def ids_out_of_range(histogram: np.ndarray, n_classes: int, ignore_index: int | None = None) -> str | None:
    """The ids ≥ n_classes a mask's histogram holds, listed for a message ("23, 40"), or None. The
    ``ignore_index`` value is unlabelled, never out of range (VOC's 255 borders)."""
    bad = np.flatnonzero(histogram[n_classes:]) + n_classes
    bad = bad[bad != ignore_index]
    if not bad.size:
        return None
    return ", ".join(str(i) for i in bad[:20]) + (f" and {bad.size - 20} more" if bad.size > 20 else "")


def quiet_bomb_warnings() -> None:
    # Oversized images become Problems through our own size check; Pillow's warning would only add noise.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
