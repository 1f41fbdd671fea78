"""Image/mask pairs on disk → validated, resized uint8 arrays, plus a leak-free train/val split.

The flow: :func:`locate` the two folders, :func:`find_pairs` by file stem, decode every pair
(:func:`read_image`, :func:`read_mask`), validate it, resize it, and cache the result on disk
(:func:`decode_dataset`). Nothing here raises at the first bad file: every problem is collected as a
:class:`Problem` naming the file, so a user can fix a whole dataset in one round; the caller decides
whether to refuse (``raise DataError(problems)``) or to skip the bad pairs.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import math
import os
import random
import re
import secrets
import stat
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .device import usable_cores
from .files import atomic_path, atomic_write

__all__ = [
    "IMAGE_DIR", "MASK_DIR", "IMAGE_SUFFIXES", "RESIZE_MODES", "Problem", "DataError", "Pair", "Decoded", "Split",
    "locate", "find_pairs", "read_image", "read_mask", "resize_image", "resize_mask", "decode_dataset",
    "default_cache_dir", "frame_runs", "split_by_runs",
]

IMAGE_DIR = "CameraRGB"
MASK_DIR = "CameraMask"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
RESIZE_MODES = ("nearest", "bilinear", "area")

# Bump whenever what a cache entry holds or how it is computed changes: old entries then simply miss.
_CACHE_VERSION = 1


# ---------------------------------------------------------------------------------------------- errors


_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data. Always names the file or folder, so the user knows what to fix."""

    path: Path
    message: str

    def __str__(self) -> str:
        # A line break in a file name is shown escaped, so one problem stays one line.
        path = "".join(repr(c)[1:-1] if c in _LINE_BREAKS else c for c in str(self.path))
        return f"{path}: {self.message}"


class DataError(Exception):
    """Bad input data: carries every :class:`Problem` found, one line each in ``str(error)``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        if len(lines) > 1:
            lines.insert(0, f"{len(lines)} problems with the data:")
        super().__init__("\n".join(lines) if lines else "problem with the data")

    def __reduce__(self):  # picklable across processes although __init__ takes problems, not a message
        return (type(self), (self.problems,))


# --------------------------------------------------------------------------------------------- finding


@dataclass(frozen=True)
class Pair:
    """An image and its mask, matched by file stem (``name``). ``mask`` is None for prediction-only sets."""

    name: str
    image: Path
    mask: Path | None


def locate(data: str | Path | None = None, images: str | Path | None = None,
           masks: str | Path | None = None) -> tuple[Path, Path]:
    """The (images, masks) folders: ``data/CameraRGB`` and ``data/CameraMask``, or explicit folders.

    Explicit ``images``/``masks`` override the dataset folder's, so a dataset laid out differently
    needs no renaming. Raises :class:`DataError` naming each missing folder, ValueError if nothing
    was given at all.
    """
    data_dir = Path(data).expanduser() if data is not None else None
    images_dir = Path(images).expanduser() if images is not None else None
    masks_dir = Path(masks).expanduser() if masks is not None else None
    if data_dir is None and images_dir is None and masks_dir is None:
        raise ValueError(f"no data given: pass a dataset folder (with {IMAGE_DIR}/ and {MASK_DIR}/) "
                         "or both an images and a masks folder")
    problems: list[Problem] = []
    if data_dir is None:
        if images_dir is None:
            problems.append(Problem(masks_dir, "a masks folder was given without an images folder; pass --images too"))
        if masks_dir is None:
            problems.append(Problem(images_dir, "an images folder was given without a masks folder; pass --masks too"))
    elif images_dir is None or masks_dir is None:
        if not data_dir.exists():
            problems.append(Problem(data_dir, "no such folder"))
        elif not data_dir.is_dir():
            problems.append(Problem(data_dir, "not a folder"))
        else:
            wanted = [(IMAGE_DIR, images_dir), (MASK_DIR, masks_dir)]
            missing = [f"{sub}/" for sub, given in wanted if given is None and not (data_dir / sub).is_dir()]
            if missing:
                subfolders = sorted((p.name + "/" for p in data_dir.iterdir() if p.is_dir()), key=_natural_key)
                more = ", …" if len(subfolders) > 6 else ""
                found = f" (it has {', '.join(subfolders[:6])}{more})" if subfolders else ""
                problems.append(Problem(data_dir, f"has no {' or '.join(missing)} folder{found}; a dataset folder "
                                                  f"holds {IMAGE_DIR}/ and {MASK_DIR}/ with matching file names, or "
                                                  "pass --images and --masks to name the folders yourself"))
        images_dir = images_dir if images_dir is not None else data_dir / IMAGE_DIR
        masks_dir = masks_dir if masks_dir is not None else data_dir / MASK_DIR
    if not problems:
        for folder, what in ((images_dir, "images"), (masks_dir, "masks")):
            if not folder.exists():
                problems.append(Problem(folder, f"no such folder (the {what} folder)"))
            elif not folder.is_dir():
                problems.append(Problem(folder, f"not a folder (the {what} folder)"))
    if problems:
        raise DataError(problems)
    return images_dir, masks_dir


def _natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: "2" < "10", "frame9" < "frame10"."""
    parts = re.split(r"([0-9]+)", text)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), text


def is_image_file(path: Path) -> bool:
    """What pixelwise reads from a folder: image suffixes, hidden files left out."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _image_files(folder: Path, role: str) -> tuple[dict[str, Path] | None, list[Problem], list[str]]:
    """Image files in ``folder`` by stem (None if it cannot be listed); stems used twice are problems.
    Also returns the names of the other (non-image) files, for hints."""
    by_stem: dict[str, list[Path]] = {}
    others: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        return None, [Problem(folder, f"cannot list the {role} folder ({exc.strerror or exc})")], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_file = entry.is_file()
        except OSError:
            is_file = False
        if not is_file:
            continue
        path = Path(entry.path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(path.stem, []).append(path)
        else:
            others.append(entry.name)
    files, problems = {}, []
    for stem, paths in by_stem.items():
        if len(paths) == 1:
            files[stem] = paths[0]
        else:
            paths.sort(key=lambda p: p.name)
            problems.append(Problem(paths[0], f"{len(paths)} {role} files share the name {stem!r} "
                                              f"({', '.join(p.name for p in paths)}); keep one"))
    return files, problems, others


def _empty_folder_problem(folder: Path, role: str, others: list[str]) -> Problem:
    hint = ""
    if others:
        others = sorted(others, key=_natural_key)
        hint = f"; it has {len(others)} other file(s) such as {others[0]!r}"
    return Problem(folder, f"no {role} files ({', '.join(IMAGE_SUFFIXES)}) in this folder{hint}")


def find_pairs(images_dir: Path, masks_dir: Path | None) -> tuple[list[Pair], list[Problem]]:
    """Pair images with masks BY FILE STEM (never by listing order, which differs between systems).

    Hidden files and files without an image suffix are ignored. An image without a mask, a mask
    without an image, and two files with one stem in one folder are problems; such pairs are left
    out. Pairs come in natural order ("2" before "10"). ``masks_dir=None`` lists a prediction-only
    image folder (every ``Pair.mask`` is None).
    """
    images_dir = Path(images_dir)
    images, problems, other_images = _image_files(images_dir, "image")
    if images is None:
        return [], problems
    if masks_dir is None:
        if not images and not problems:
            problems.append(_empty_folder_problem(images_dir, "image", other_images))
        pairs = [Pair(stem, path, None) for stem, path in images.items()]
        return sorted(pairs, key=lambda p: _natural_key(p.name)), problems

    masks_dir = Path(masks_dir)
    if images_dir.resolve() == masks_dir.resolve():
        return [], [Problem(images_dir, "the images and masks folders are the same folder")]
    masks, mask_problems, other_masks = _image_files(masks_dir, "mask")
    if masks is None:
        return [], problems + mask_problems
    # An empty (or wrong) folder is one problem, not one per file on the other side.
    if not images and not problems:
        return [], [_empty_folder_problem(images_dir, "image", other_images)] + mask_problems
    if not masks and not mask_problems:
        return [], problems + [_empty_folder_problem(masks_dir, "mask", other_masks)]
    problems += mask_problems
    duplicated = {p.path.stem for p in problems}
    pairs = []
    for stem in sorted(images.keys() | masks.keys(), key=_natural_key):
        image, mask = images.get(stem), masks.get(stem)
        if image is not None and mask is not None:
            pairs.append(Pair(stem, image, mask))
        elif stem in duplicated:
            continue  # already reported; "no mask" on top would only add noise
        elif mask is None:
            problems.append(Problem(image, f"no mask named {stem}.* in {masks_dir}"))
        else:
            problems.append(Problem(mask, f"no image named {stem}.* in {images_dir}"))
    problems.sort(key=lambda p: _natural_key(p.path.stem))
    return pairs, problems


# -------------------------------------------------------------------------------------------- decoding


def _fail(path: Path, message: str) -> DataError:
    return DataError([Problem(path, message)])


def _bomb_message(path: Path, size: tuple[int, int] | None, exc: Exception | None = None) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    if size is None:  # Pillow refused before handing us the header; PNGs keep it at a fixed offset
        try:
            with open(path, "rb") as f:
                head = f.read(24)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                size = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        except OSError:
            pass
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


def _decode(path: str | Path, convert: Callable[[Image.Image, Path, str], np.ndarray]) -> np.ndarray:
    """Open, size-check, fully decode and convert one file; every failure becomes a DataError naming it."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as exc:
        raise _fail(path, f"cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(path, "is a folder, not an image file")
    if st.st_size == 0:
        raise _fail(path, "empty file (0 bytes)")
    kind = path.suffix.lstrip(".").upper() or "image"
    try:
        with Image.open(path) as im:  # lazy: reads the header only
            kind = im.format or kind
            limit = Image.MAX_IMAGE_PIXELS
            if limit and im.width * im.height > limit:
                raise _fail(path, _bomb_message(path, im.size))
            rawmode = _rawmode(im)  # gone once loaded
            im.load()  # decode everything now, inside the try, so truncation is caught here
            array = convert(im, path, rawmode)
            return array if array.flags.writeable else array.copy()  # np.asarray(im) is read-only
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning: under `-W error`
        raise _fail(path, _bomb_message(path, None, exc)) from None
    except UnidentifiedImageError:
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError:
            head = b""
        if head.startswith(b"\x89PNG"):
            raise _fail(path, "truncated or corrupt PNG header") from None
        if head.startswith(b"\xff\xd8"):
            raise _fail(path, "truncated or corrupt JPEG header") from None
        raise _fail(path, f"not an image file (Pillow cannot identify it; {st.st_size} bytes)") from None
    except MemoryError:
        raise _fail(path, "not enough memory to decode this image") from None
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, zlib/struct errors …
        if "truncated" in str(exc).lower():
            raise _fail(path, f"truncated {kind}: the file ends before its image data does "
                              "(an interrupted download or copy?)") from None
        if isinstance(exc, OSError) and exc.errno is not None:
            raise _fail(path, f"cannot read ({exc.strerror or exc})") from None
        raise _fail(path, f"corrupt {kind} data ({type(exc).__name__}: {exc})") from None


def _scale16(values: np.ndarray) -> np.ndarray:
    """0..65535 → 0..255, rounding (65535 → 255, 257 → 1)."""
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _image_to_rgb(im: Image.Image, path: Path, rawmode: str) -> np.ndarray:
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
        gray = _scale16(np.asarray(im))
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
    return _decode(path, _image_to_rgb)


def _mask_to_ids(im: Image.Image, path: Path, rawmode: str) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "RGBA", "RGBX"):
        if "16" in rawmode:
            raise _fail(path, "16-bit RGB mask: Pillow keeps only the high byte of each value, so class ids would "
                              "be lost; save masks as 8-bit PNGs")
        a = np.asarray(im)
        # The class id is in R (G, B are 0 in CARLA's masks); never include alpha, which is 255 everywhere.
        return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])
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
            raise _fail(path, f"{mode} mask has values from {values.min():g} to {values.max():g}; class ids must be "
                              "whole numbers 0-255 (save masks as 8-bit PNGs)")
        return values.astype(np.uint8)
    raise _fail(path, f"unsupported mask mode {mode}; save masks as 8-bit grey, palette or RGB PNGs")


def read_mask(path: str | Path) -> np.ndarray:
    """Decode a mask as uint8 (H, W) class ids: RGB(A) → max over R, G, B (alpha ignored); grey → its
    value; palette → its index; 16-bit → its value if below 256. Raises DataError naming the file."""
    return _decode(path, _mask_to_ids)


# -------------------------------------------------------------------------------------------- resizing


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel: the one whose centre is nearest (half-pixel centres, as in
    Pillow and tf.image.resize). Exact integer arithmetic, so images and masks always agree."""
    return (np.arange(n_out, dtype=np.int64) * 2 + 1) * n_in // (2 * n_out)


def check_resize_mode(mode: str, what: str = "image resize") -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"{what} must be one of {', '.join(RESIZE_MODES)}, not {mode!r}")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
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
    h, w = _check_size(size)
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
    h, w = _check_size(size)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}")
    if mask.shape == (h, w):
        return mask.copy()
    return mask[_nearest_index(mask.shape[0], h)[:, None], _nearest_index(mask.shape[1], w)[None, :]]


# ------------------------------------------------------------------------------------- dataset + cache


@dataclass
class Decoded:
    """Every valid pair decoded and resized, with everything found wrong on the way.

    With a cache folder, ``images`` and ``masks`` are copy-on-write ``np.memmap`` views of the cache
    files: only the rows a caller touches are read, so a dataset larger than RAM fits, and
    ``images[batch_indices]`` reads (copies) just that batch. Writing into them changes this process's
    private copy of those pages, never the cache. Without a cache folder they are ordinary arrays.
    """

    names: list[str]  # the valid pairs, in order
    images: np.ndarray  # (N, H, W, 3) uint8: 4x smaller than float; scaled to [0, 1] at batch time
    masks: np.ndarray  # (N, H, W) uint8 class ids
    original_sizes: list[tuple[int, int]]  # (H, W) of each pair before resizing
    histogram: np.ndarray  # (n_classes,) int64 pixel counts over the original-size masks of valid pairs
    problems: list[Problem]  # everything found, pairing problems included
    skipped: list[str]  # names of pairs left out because of problems


@dataclass
class _PairResult:
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    original_size: tuple[int, int] | None = None
    histogram: np.ndarray | None = None  # int64 pixel counts of ids 0, 1, … over the original-size mask
    problems: tuple[Problem, ...] = ()


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: $PIXELWISE_CACHE, else ~/.cache/pixelwise."""
    env = os.environ.get("PIXELWISE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pixelwise"


def _decode_pair(pair: Pair, size: tuple[int, int], image_resize: str) -> _PairResult:
    """Decode, check and resize one pair. Never raises for bad data: problems are returned."""
    problems: list[Problem] = []
    image = mask = None
    try:
        image = read_image(pair.image)
    except DataError as exc:
        problems += exc.problems
    try:
        mask = read_mask(pair.mask)
    except DataError as exc:
        problems += exc.problems
    if image is not None and mask is not None and image.shape[:2] != mask.shape:
        (ih, iw), (mh, mw) = image.shape[:2], mask.shape
        problems.append(Problem(pair.mask, f"image {pair.image.name} is {iw}x{ih} but mask is {mw}x{mh}; "
                                           "they must be the same size"))
    if problems:
        return _PairResult(problems=tuple(problems))
    return _PairResult(resize_image(image, size, image_resize), resize_mask(mask, size), mask.shape,
                       np.bincount(mask.ravel(), minlength=1).astype(np.int64))


def ids_out_of_range(histogram: np.ndarray, n_classes: int) -> str | None:
    """The ids ≥ n_classes a mask's histogram holds, listed for a message ("23, 40"), or None."""
    bad = np.flatnonzero(histogram[n_classes:]) + n_classes
    if not bad.size:
        return None
    return ", ".join(str(i) for i in bad[:20]) + (f" and {bad.size - 20} more" if bad.size > 20 else "")


def _ids_problem(pair: Pair, histogram: np.ndarray, n_classes: int) -> Problem | None:
    """The problem with a mask whose histogram has ids >= n_classes (None if it has none)."""
    ids = ids_out_of_range(histogram, n_classes)
    if ids is None:
        return None
    return Problem(pair.mask, f"mask has ids {ids} but there are only {n_classes} classes (0-{n_classes - 1})")


def quiet_bomb_warnings() -> None:
    # Oversized images become Problems through our own size check; Pillow's warning would only add noise.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _parallel_map(fn: Callable, items: list, workers: int) -> Iterator:
    """``map(fn, items)`` in order on a thread pool, at most ``2 * workers`` items ahead of the
    consumer, so memory stays bounded however many items there are (``Executor.map`` would submit
    them all at once and hold every finished result until it is consumed). Threads, not processes:
    Pillow's decoders and numpy release the GIL, and on the CARLA frames (257 pairs, 2 vCPUs)
    2 threads took 2.0 s against 3.5 s for 2 spawned processes, which each pay for importing torch."""
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="pixelwise-decode")
    pending: deque = deque()
    todo = iter(items)
    try:
        for item in itertools.islice(todo, 2 * workers):
            pending.append(pool.submit(fn, item))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(todo, 1):  # keep the workers busy while the caller consumes
                pending.append(pool.submit(fn, item))
            yield result
    finally:  # on Ctrl-C or an error, drop the queued work instead of finishing it
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Table:
    """What decoding a pair list produced: rows ``0 … n-1`` of ``images``/``masks`` hold the pairs
    that decoded, in pair order (arrays may have spare rows after them); ``rows[i]`` is pair i's row,
    or -1 with the reason in ``problems[i]``. The id check against n_classes is not applied here."""

    images: np.ndarray  # (capacity, H, W, 3) uint8
    masks: np.ndarray  # (capacity, H, W) uint8
    rows: np.ndarray  # (pairs,) int64
    original_sizes: np.ndarray  # (n, 2) int64
    histograms: np.ndarray  # (n, K) int64: per-row pixel counts of ids 0 … K-1 at the original size
    problems: dict[int, tuple[Problem, ...]]
    build: str = ""  # the cache build the arrays belong to ("" in memory)


class _PairDecoder:
    """``(pair, key) -> _PairResult`` with the decode settings bound. A pair whose key is in
    ``previous`` (an earlier build of the same dataset) is copied from it instead of decoded."""

    def __init__(self, size: tuple[int, int], image_resize: str, previous: _Previous | None = None) -> None:
        self.size, self.image_resize, self.previous = size, image_resize, previous

    def __call__(self, item: tuple[Pair, bytes | None]) -> _PairResult:
        pair, key = item
        if self.previous is not None and key is not None:
            reused = self.previous.get(key)
            if reused is not None:
                return reused
        return _decode_pair(pair, self.size, self.image_resize)


def _decode_into(put: Callable[[np.ndarray, np.ndarray], None], pairs: list[Pair], keys: list[bytes | None],
                 decode: _PairDecoder, workers: int, progress: bool, n_classes: int | None = None) -> dict:
    """Decode every pair in parallel, handing each good one to ``put(image, mask)`` in pair order as it
    arrives (nothing is held back, so memory does not grow with the dataset). With ``n_classes``,
    pairs with larger ids are left out here already. Returns the :class:`_Table` fields but the arrays."""
    rows = np.full(len(pairs), -1, np.int64)
    sizes: list[tuple[int, int]] = []
    histograms: list[np.ndarray] = []
    problems: dict[int, tuple[Problem, ...]] = {}
    with warnings.catch_warnings(), tqdm(total=len(pairs), desc="decode", unit="pair",
                                         disable=None if progress else True) as bar:
        quiet_bomb_warnings()
        for i, result in enumerate(_parallel_map(decode, list(zip(pairs, keys)), workers)):
            bar.update()
            if not result.problems and n_classes is not None:
                bad_ids = _ids_problem(pairs[i], result.histogram, n_classes)
                result = _PairResult(problems=(bad_ids,)) if bad_ids else result
            if result.problems:
                problems[i] = result.problems
                continue
            put(result.image, result.mask)
            rows[i] = len(sizes)
            sizes.append(result.original_size)
            used = np.flatnonzero(result.histogram)
            histograms.append(result.histogram[: used[-1] + 1 if used.size else 1])
    width = max((len(h) for h in histograms), default=1)
    table = np.zeros((len(histograms), width), np.int64)
    for r, h in enumerate(histograms):
        table[r, : len(h)] = h
    return {"rows": rows, "original_sizes": np.asarray(sizes, np.int64).reshape(-1, 2), "histograms": table,
            "problems": problems}


def _decode_in_memory(pairs: list[Pair], decode: _PairDecoder, workers: int, progress: bool,
                      n_classes: int) -> _Table:
    h, w = decode.size
    images = np.empty((len(pairs), h, w, 3), np.uint8)  # untouched spare rows never take up memory
    masks = np.empty((len(pairs), h, w), np.uint8)
    count = itertools.count()

    def put(image: np.ndarray, mask: np.ndarray) -> None:
        k = next(count)
        images[k], masks[k] = image, mask

    fields = _decode_into(put, pairs, [None] * len(pairs), decode, workers, progress, n_classes)
    return _Table(images, masks, **fields)


# The on-disk cache. One "slot" per (images folder, masks folder, size, resize mode) holds one build:
#   <slot>.meta.npz               names, per-pair keys, rows, original sizes, per-row histograms, version,
#                                 the dataset key and the build id; written last, so it is the commit point
#   <slot>.<build>.images.npy     (pairs, H, W, 3) uint8, memory-mapped when read
#   <slot>.<build>.masks.npy      (pairs, H, W) uint8
#   <slot>.<build>.<rows>.*.npy   the same without the rows a smaller n_classes excludes (made on demand)
# A build id is new for each build, so the meta can never describe another build's arrays; files of
# builds the meta does not name are deleted after each commit, so the disk holds one copy per slot.


def _memmap(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A cache array opened copy-on-write, after checking its dtype, shape and exact file size."""
    array = np.lib.format.open_memmap(path, mode="c")
    if array.dtype != np.uint8 or array.shape != shape or not array.flags.c_contiguous \
            or os.path.getsize(path) != array.offset + array.nbytes:
        raise ValueError(f"{path}: not the array the cache expects")
    return array


def _new_array_file(path: Path, shape: tuple[int, ...]) -> BinaryIO:
    """Create a .npy file for ``shape`` uint8 (space reserved up front, so a full disk fails before any
    decoding) and return it open for writing rows, positioned at the first one.

    Rows are written through the file rather than through the mapping: pages written through a shared
    mapping count in this process's RSS until the whole file is unmapped; written to the file they
    live in the page cache only, and the build's resident memory stays that of a few pairs."""
    created = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = created.offset
    del created
    f = open(path, "r+b", buffering=1 << 20)  # noqa: SIM115 - returned to the caller, who closes it
    try:
        if hasattr(os, "posix_fallocate") and math.prod(shape):
            try:
                os.posix_fallocate(f.fileno(), offset, math.prod(shape))
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
        f.seek(offset)
    except BaseException:
        f.close()
        raise
    return f


class _Previous:
    """An earlier build of a slot, whose rows a rebuild copies for the pairs that did not change."""

    def __init__(self, meta: dict, images: np.ndarray, masks: np.ndarray) -> None:
        self.images, self.masks = images, masks
        self.sizes, self.histograms = meta["original_sizes"], meta["histograms"]
        self.row_of = {bytes(k): int(r) for k, r in zip(meta["pair_keys"], meta["rows"]) if r >= 0}

    def get(self, key: bytes) -> _PairResult | None:
        r = self.row_of.get(key)
        if r is None:
            return None
        return _PairResult(np.array(self.images[r]), np.array(self.masks[r]),
                           tuple(int(v) for v in self.sizes[r]), self.histograms[r])


class _Cache:
    """The cache slot of one dataset at one size and resize mode (see the file layout above)."""

    def __init__(self, folder: Path, images_dir: Path, masks_dir: Path, size: tuple[int, int],
                 image_resize: str) -> None:
        self.folder, self.size = folder, size
        where = [_CACHE_VERSION, str(images_dir.resolve()), str(masks_dir.resolve()), list(size), image_resize]
        self.slot = hashlib.sha256(json.dumps(where).encode()).hexdigest()[:24]
        self.meta_path = folder / f"{self.slot}.meta.npz"
        self.common = where + [Image.MAX_IMAGE_PIXELS]  # a new pixel limit can change what decodes

    def keys(self, pairs: list[Pair]) -> tuple[list[bytes], str]:
        """One key per pair (file names, sizes, mtimes and the settings), and the dataset's key over them all."""
        keys = []
        for pair in pairs:
            parts: list[object] = [self.common]
            for path in (pair.image, pair.mask):
                try:
                    st = os.stat(path)
                    parts += [path.name, st.st_size, st.st_mtime_ns]
                except OSError:
                    parts += [path.name, None, None]  # vanished or unreadable: decoding reports it
            keys.append(hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).digest())
        return keys, hashlib.sha256(json.dumps(self.common).encode() + b"".join(keys)).hexdigest()

    def path(self, build: str, part: str, rows: str = "") -> Path:
        return self.folder / f"{self.slot}.{build}{'.' + rows if rows else ''}.{part}.npy"

    def _read_meta(self) -> dict | None:
        try:
            with open(self.meta_path, "rb") as f, np.load(f, allow_pickle=False) as z:
                meta = {name: z[name] for name in z.files}
            if int(meta["version"]) != _CACHE_VERSION:
                return None
            meta["key"], meta["build"] = str(meta["key"]), str(meta["build"])
            n, pairs = len(meta["original_sizes"]), len(meta["rows"])
            valid = meta["rows"][meta["rows"] >= 0]
            ok = (meta["pair_keys"].shape == (pairs, 16) and meta["names"].shape == (pairs,)
                  and meta["original_sizes"].shape == (n, 2) and meta["histograms"].ndim == 2
                  and len(meta["histograms"]) == n and meta["histograms"].shape[1] >= 1
                  and np.array_equal(valid, np.arange(n)) and re.fullmatch(r"[0-9a-f]{16}", meta["build"]))
            return meta if ok else None
        except Exception:  # missing, truncated, corrupt or foreign: a miss, never an error
            return None

    def _open(self, build: str, n: int, rows: str = "") -> tuple[np.ndarray, np.ndarray] | None:
        """The images and masks files of a build (or of one of its row subsets), or None if either is
        missing, truncated, overlong or not the expected array."""
        h, w = self.size
        try:
            return (_memmap(self.path(build, "images", rows), (n, h, w, 3)),
                    _memmap(self.path(build, "masks", rows), (n, h, w)))
        except Exception:
            return None

    def load(self, pairs: list[Pair], key: str) -> _Table | None:
        """The cached table for exactly these pairs, or None (a miss)."""
        for _ in range(2):  # a concurrent build may replace the files between reading the meta and opening them
            meta = self._read_meta()
            if meta is None or meta["key"] != key or meta["names"].tolist() != [p.name for p in pairs]:
                return None
            arrays = self._open(meta["build"], len(meta["rows"]))
            if arrays is not None:
                return _Table(*arrays, meta["rows"], meta["original_sizes"], meta["histograms"], {}, meta["build"])
        return None

    def previous(self) -> _Previous | None:
        """Whatever valid build the slot holds now, for its unchanged rows."""
        meta = self._read_meta()
        arrays = self._open(meta["build"], len(meta["rows"])) if meta is not None else None
        return _Previous(meta, *arrays) if arrays is not None else None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Only one process builds a slot at a time (e.g. the ranks of a torchrun job); the others wait and
        then find it built. Released by the OS if the holder dies. Best effort: no lock where flock is missing."""
        try:
            import fcntl
            f = open(self.folder / f"{self.slot}.lock", "a+b")  # noqa: SIM115
        except (ImportError, OSError):
            yield
            return
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            except OSError:
                pass
            yield  # closing the file releases the lock

    def build(self, pairs: list[Pair], keys: list[bytes], key: str, decode: _PairDecoder, workers: int,
              progress: bool) -> _Table:
        """Decode into new files (reusing the rows of the previous build whose pair is unchanged), move
        them into place, then commit by replacing the meta. Raises OSError if the cache cannot be written."""
        build = secrets.token_hex(8)
        decode.previous = self.previous()
        try:
            return self._build(build, pairs, keys, key, decode, workers, progress)
        finally:
            decode.previous = None  # let its mappings go

    def _build(self, build: str, pairs: list[Pair], keys: list[bytes], key: str, decode: _PairDecoder, workers: int,
               progress: bool) -> _Table:
        h, w = self.size
        with atomic_path(self.path(build, "images")) as images_tmp, atomic_path(self.path(build, "masks")) as masks_tmp:
            with _new_array_file(images_tmp, (len(pairs), h, w, 3)) as images_file, \
                    _new_array_file(masks_tmp, (len(pairs), h, w)) as masks_file:
                def put(image: np.ndarray, mask: np.ndarray) -> None:
                    images_file.write(np.ascontiguousarray(image).data)
                    masks_file.write(np.ascontiguousarray(mask).data)

                fields = _decode_into(put, pairs, keys, decode, workers, progress)
            decode.previous = None
            # Mapped before the rename, so a concurrent build's clean-up cannot take them away from us.
            table = _Table(_memmap(images_tmp, (len(pairs), h, w, 3)), _memmap(masks_tmp, (len(pairs), h, w)),
                           **fields, build=build)

        def write_meta(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, version=np.asarray(_CACHE_VERSION), key=np.asarray(key),
                                    build=np.asarray(build), names=np.asarray([p.name for p in pairs], dtype=str),
                                    pair_keys=np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), 16),
                                    rows=table.rows, original_sizes=table.original_sizes, histograms=table.histograms)

        atomic_write(self.meta_path, write_meta)
        self._clean(build)
        return table

    def subset(self, table: _Table, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows ``keep`` as memory-mapped arrays of their own, made once from the build's (no decoding)
        and kept beside it. Raises OSError if they cannot be written."""
        h, w = self.size
        rows = hashlib.blake2b(keep.astype("<i8").tobytes(), digest_size=8).hexdigest()
        made = self._open(table.build, len(keep), rows)
        if made is not None:
            return made
        arrays = []
        shapes = {"images": (len(keep), h, w, 3), "masks": (len(keep), h, w)}
        for (part, shape), source in zip(shapes.items(), (table.images, table.masks)):
            with atomic_path(self.path(table.build, part, rows)) as tmp:
                f = _new_array_file(tmp, shape)
                with f:
                    for start in range(0, len(keep), 256):
                        f.write(np.ascontiguousarray(source[keep[start:start + 256]]).data)
                arrays.append(_memmap(tmp, shape))
        return tuple(arrays)

    def _clean(self, build: str) -> None:
        """Delete what no valid cache uses: other builds of this slot, temporary files of builds that
        died more than an hour ago, and the legacy per-pair `.npz` entries of earlier pixelwise builds."""
        old = time.time() - 3600
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return
        for entry in entries:
            name = entry.name
            try:
                other_build = name.startswith(f"{self.slot}.") and name.endswith(".npy") and name.split(".")[1] != build
                dead_temporary = name.startswith(f".{self.slot}.") and ".tmp" in name and entry.stat().st_mtime < old
                if other_build or dead_temporary or re.fullmatch(r"[0-9a-f]{40}\.npz", name):
                    os.unlink(entry.path)
            except OSError:
                pass


def decode_dataset(images_dir: Path, masks_dir: Path, size: tuple[int, int], n_classes: int, *,
                   image_resize: str = "nearest", cache_dir: Path | None = None, workers: int | None = None,
                   progress: bool = True) -> Decoded:
    """Decode, validate and resize every pair, in parallel, collecting ALL problems.

    A pair is left out (and listed in ``skipped``) when a file cannot be read, when image and mask
    differ in size, or when the mask holds ids >= ``n_classes``; the caller decides whether any
    problem means refusing.

    With ``cache_dir``, the decoded dataset is stored there as one images and one masks ``.npy`` file
    and returned memory-mapped (see :class:`Decoded`); a later call with unchanged files, size and
    resize mode opens them without decoding any image (pairs that failed are tried again, so their
    problems are current). After a change only the changed or new pairs are decoded; the rest are
    copied from the previous build, which is then deleted. ``n_classes`` is not part of the cache: the
    id check runs on the stored histograms. A missing, truncated or corrupt cache is rebuilt, and an
    unwritable one only costs speed (a warning, then decoding into memory).
    """
    size = _check_size(size)
    check_resize_mode(image_resize)
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, not {n_classes}")
    workers = usable_cores() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    pairs, problems = find_pairs(images_dir, masks_dir)
    decode = _PairDecoder(size, image_resize)
    table = cache = None
    if cache_dir is not None and pairs:
        cache_dir = Path(cache_dir).expanduser()
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            cache = _Cache(cache_dir, images_dir, masks_dir, size, image_resize)
            keys, key = cache.keys(pairs)
            table = _with_current_problems(cache.load(pairs, key), pairs, decode, workers)
            if table is None:
                with cache.lock():
                    table = _with_current_problems(cache.load(pairs, key), pairs, decode, workers)  # built meanwhile?
                    if table is None:
                        table = cache.build(pairs, keys, key, decode, workers, progress)
        except OSError as exc:  # a full or read-only disk costs speed, not the run
            warnings.warn(f"{cache_dir}: cannot use the decode cache ({exc.strerror or exc}); decoding without it",
                          stacklevel=2)
            table = cache = None
    if table is None:
        table = _decode_in_memory(pairs, decode, workers, progress, n_classes)
    return _select(table, pairs, n_classes, problems, cache)


def _with_current_problems(table: _Table | None, pairs: list[Pair], decode: _PairDecoder,
                           workers: int) -> _Table | None:
    """A cached table with the pairs that failed tried again, for today's problems (a file made readable
    by chmod keeps its mtime). None if one of them decodes now: the cache is stale."""
    if table is None:
        return None
    failed = np.flatnonzero(table.rows < 0).tolist()
    with warnings.catch_warnings():
        quiet_bomb_warnings()
        for i, result in zip(failed, _parallel_map(decode, [(pairs[i], None) for i in failed], workers)):
            if not result.problems:
                return None
            table.problems[i] = result.problems
    return table


def _select(table: _Table, pairs: list[Pair], n_classes: int, problems: list[Problem],
            cache: _Cache | None) -> Decoded:
    """The pairs that are valid for ``n_classes`` as a :class:`Decoded`, every problem in pair order."""
    bad_rows = set(np.flatnonzero(table.histograms[:, n_classes:].any(axis=1)).tolist())
    names, skipped, keep = [], [], []
    for i, pair in enumerate(pairs):
        r = int(table.rows[i])
        found = list(table.problems.get(i, ()))
        if r in bad_rows:
            found.append(_ids_problem(pair, table.histograms[r], n_classes))
        if found:
            problems += found
            skipped.append(pair.name)
        else:
            names.append(pair.name)
            keep.append(r)
    keep = np.asarray(keep, np.int64)
    if len(keep) == 0 or np.array_equal(keep, np.arange(keep[0], keep[0] + len(keep))):
        start = int(keep[0]) if len(keep) else 0
        images, masks = table.images[start:start + len(keep)], table.masks[start:start + len(keep)]  # views
    else:
        images = masks = None
        if cache is not None:  # memory-mapped like the rest rather than copied into memory
            try:
                images, masks = cache.subset(table, keep)
            except OSError as exc:
                warnings.warn(f"{cache.folder}: cannot write to the decode cache ({exc.strerror or exc}); "
                              f"the {len(keep)} pairs valid for {n_classes} classes are copied into memory",
                              stacklevel=3)
        if images is None:
            images, masks = table.images[keep], table.masks[keep]
    totals = table.histograms[keep].sum(axis=0) if len(keep) else np.zeros(1, np.int64)
    histogram = np.zeros(n_classes, np.int64)
    histogram[: min(n_classes, len(totals))] = totals[:n_classes]
    sizes = [(int(hh), int(ww)) for hh, ww in table.original_sizes[keep]]
    return Decoded(names, images, masks, sizes, histogram, problems, skipped)


# ------------------------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class Split:
    """Indices into the decoded pairs: which train, which validate."""

    train: list[int]
    val: list[int]


_TRAILING_NUMBER = re.compile(r"^(.*?)([0-9]+)$")


def frame_runs(names: list[str], gap_factor: float = 10.0) -> list[list[int]]:
    """Indices of ``names`` grouped into runs of consecutive frames (one drive, one recording).

    Neighbouring frames are near duplicates, so a split must keep runs whole. Names ending in a
    number are sorted by it (separately per prefix, e.g. ``town1_…`` vs ``town2_…``); a new run
    starts where the step between numbers exceeds ``gap_factor`` × the median step. Names without a
    trailing number form one run in natural order.
    """
    numbered: dict[str, list[tuple[int, int]]] = {}
    plain: list[int] = []
    for i, name in enumerate(names):
        found = _TRAILING_NUMBER.match(name)
        if found:
            numbered.setdefault(found.group(1), []).append((int(found.group(2)), i))
        else:
            plain.append(i)
    groups = [sorted(members, key=lambda m: (m[0], _natural_key(names[m[1]])))
              for _, members in sorted(numbered.items(), key=lambda kv: _natural_key(kv[0]))]
    steps = [b[0] - a[0] for g in groups for a, b in zip(g, g[1:]) if b[0] > a[0]]
    threshold = gap_factor * float(np.median(steps)) if steps else math.inf
    runs: list[list[int]] = []
    for group in groups:
        run = [group[0][1]]
        for (prev, _), (number, i) in zip(group, group[1:]):
            if number - prev > threshold:
                runs.append(run)
                run = []
            run.append(i)
        runs.append(run)
    if plain:
        runs.append(sorted(plain, key=lambda i: _natural_key(names[i])))
    return runs


def split_by_runs(names: list[str], val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Split into train/val without leaking near-duplicate neighbours across the two.

    Whole runs (see :func:`frame_runs`) go to validation, chosen by a seeded shuffle so the val share
    comes as close to ``val_fraction`` as whole runs allow. A single run is cut into two contiguous
    blocks instead (its last ~``val_fraction`` validates). With two or more frames and a nonzero
    fraction, both sides get at least one frame. Deterministic for a given ``seed``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    n = len(names)
    if n < 2 or val_fraction == 0:
        return Split(list(range(n)), [])
    runs = frame_runs(names)
    if len(runs) == 1:
        run = runs[0]
        k = min(n - 1, max(1, round(n * val_fraction)))
        return Split(sorted(run[: n - k]), sorted(run[n - k:]))
    order = list(range(len(runs)))
    random.Random(seed).shuffle(order)
    target = n * val_fraction
    chosen: list[int] = []
    total = 0
    for r in order:  # runs in shuffled order, as long as they fit under the target …
        if total + len(runs[r]) <= target:
            chosen.append(r)
            total += len(runs[r])
    rest = [r for r in order if r not in chosen]
    best = min(rest, key=lambda r: abs(total + len(runs[r]) - target), default=None)
    if best is not None and abs(total + len(runs[best]) - target) < abs(total - target):
        chosen.append(best)  # … then the one run that brings the share closest, if any does
        total += len(runs[best])
    if not chosen:  # every run is far larger than the target: take the smallest
        chosen = [min(order, key=lambda r: len(runs[r]))]
    if len(chosen) == len(runs):  # keep something to train on
        chosen.pop()
    val = sorted(i for r in chosen for i in runs[r])
    in_val = set(val)
    return Split([i for i in range(n) if i not in in_val], val)
