"""Image/mask pairs on disk → validated, resized uint8 arrays, plus a leak-free train/val split.

The flow: :func:`locate` the two folders, :func:`find_pairs` by file stem, decode every pair
(:func:`read_image`, :func:`read_mask`), validate it, resize it, and cache the result on disk
(:func:`decode_dataset`). Nothing here raises at the first bad file: every problem is collected as a
:class:`Problem` naming the file, so a user can fix a whole dataset in one round; the caller decides
whether to refuse (``raise DataError(problems)``) or to skip the bad pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import stat
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .files import atomic_write

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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data. Always names the file or folder, so the user knows what to fix."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


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
    except Image.DecompressionBombError as exc:
        raise _fail(path, _bomb_message(path, None, exc)) from None
    except Image.DecompressionBombWarning as exc:  # raised as an error under `-W error`
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
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, not {mode!r}")
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
    """Every valid pair decoded and resized, with everything found wrong on the way."""

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
    histogram: np.ndarray | None = None  # (256,) int64 over the original-size mask
    problems: tuple[Problem, ...] = ()


def default_cache_dir() -> Path:
    """Where decoded pairs are cached: $PIXELWISE_CACHE, else ~/.cache/pixelwise."""
    env = os.environ.get("PIXELWISE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pixelwise"


def _cache_path(cache_dir: Path, pair: Pair, size: tuple[int, int], image_resize: str) -> Path:
    """The entry for exactly these files (path, size, mtime) at this target size and resize mode."""
    parts: list[object] = [_CACHE_VERSION, list(size), image_resize]
    for path in (pair.image, pair.mask):
        st = os.stat(path)
        parts += [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:40]
    return cache_dir / f"{key}.npz"


def _cache_load(entry: Path, size: tuple[int, int]) -> _PairResult | None:
    """The cached pair, or None for a missing, corrupt or foreign entry (a miss, never an error)."""
    try:
        with np.load(entry, allow_pickle=False) as z:
            result = _PairResult(z["image"], z["mask"], tuple(int(v) for v in z["original_size"]), z["histogram"])
            version = int(z["version"])
    except Exception:
        return None
    h, w = size
    if (version != _CACHE_VERSION or result.image.dtype != np.uint8 or result.image.shape != (h, w, 3)
            or result.mask.dtype != np.uint8 or result.mask.shape != (h, w)
            or result.histogram.shape != (256,) or len(result.original_size) != 2):
        return None
    result.histogram = result.histogram.astype(np.int64, copy=False)
    return result


def _cache_store(entry: Path, result: _PairResult) -> None:
    """Write to a temporary file, then rename: a crash never leaves a half-written entry in place."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, image=result.image, mask=result.mask, original_size=np.asarray(result.original_size),
                     histogram=result.histogram, version=np.asarray(_CACHE_VERSION))

    try:
        atomic_write(entry, write, durable=False)
    except OSError as exc:  # a full or read-only disk costs speed, not the run
        warnings.warn(f"{entry.parent}: cannot write to the decode cache ({exc.strerror or exc})", stacklevel=2)


def _decode_pair(pair: Pair, size: tuple[int, int], image_resize: str, cache_dir: Path | None) -> _PairResult:
    """Decode, check and resize one pair (from the cache when possible). Never raises for bad data."""
    entry = None
    if cache_dir is not None:
        try:
            entry = _cache_path(cache_dir, pair, size, image_resize)
        except OSError:
            entry = None  # a file vanished: decoding below reports it
        cached = _cache_load(entry, size) if entry is not None and entry.exists() else None
        if cached is not None:
            return cached
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
    result = _PairResult(resize_image(image, size, image_resize), resize_mask(mask, size), mask.shape,
                         np.bincount(mask.ravel(), minlength=256).astype(np.int64))
    if entry is not None:
        _cache_store(entry, result)
    return result


def _quiet_bomb_warnings() -> None:
    # Oversized images become Problems through our own size check; Pillow's warning would only add noise.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _parallel_map(fn: Callable, items: list, workers: int) -> Iterator:
    """``map(fn, items)`` in order on a thread pool. Threads, not processes: Pillow's decoders and
    numpy release the GIL, and on the CARLA frames (257 pairs, 2 vCPUs) 2 threads took 2.0 s against
    3.5 s for 2 spawned processes, which each pay for importing torch."""
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="pixelwise-decode")
    try:
        yield from pool.map(fn, items)
    finally:  # on Ctrl-C or an error, drop the queued work instead of finishing it
        pool.shutdown(wait=True, cancel_futures=True)


class _PairDecoder:
    """``pair -> _PairResult`` with the decode settings bound."""

    def __init__(self, size: tuple[int, int], image_resize: str, cache_dir: Path | None) -> None:
        self.size, self.image_resize, self.cache_dir = size, image_resize, cache_dir

    def __call__(self, pair: Pair) -> _PairResult:
        return _decode_pair(pair, self.size, self.image_resize, self.cache_dir)


def decode_dataset(images_dir: Path, masks_dir: Path, size: tuple[int, int], n_classes: int, *,
                   image_resize: str = "nearest", cache_dir: Path | None = None, workers: int | None = None,
                   progress: bool = True) -> Decoded:
    """Decode, validate and resize every pair, in parallel, collecting ALL problems.

    A pair is left out (and listed in ``skipped``) when a file cannot be read, when image and mask
    differ in size, or when the mask holds ids >= ``n_classes``; the caller decides whether any
    problem means refusing. With ``cache_dir``, decoded pairs are stored there and a later call with
    unchanged files, size and resize mode reads them back without decoding any image.
    """
    size = _check_size(size)
    if image_resize not in RESIZE_MODES:
        raise ValueError(f"image resize must be one of {', '.join(RESIZE_MODES)}, not {image_resize!r}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, not {n_classes}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    pairs, problems = find_pairs(Path(images_dir), Path(masks_dir))
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser()
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            warnings.warn(f"{cache_dir}: cannot create the decode cache ({exc.strerror or exc}); decoding without it",
                          stacklevel=2)
            cache_dir = None

    h, w = size
    images = np.empty((len(pairs), h, w, 3), np.uint8)
    masks = np.empty((len(pairs), h, w), np.uint8)
    names: list[str] = []
    original_sizes: list[tuple[int, int]] = []
    skipped: list[str] = []
    histogram = np.zeros(256, np.int64)
    decode = _PairDecoder(size, image_resize, cache_dir)
    with warnings.catch_warnings(), tqdm(total=len(pairs), desc="decode", unit="pair", disable=None if progress else True) as bar:
        _quiet_bomb_warnings()
        for pair, result in zip(pairs, _parallel_map(decode, pairs, workers)):
            bar.update()
            pair_problems = list(result.problems)
            if not pair_problems:
                bad = np.flatnonzero(result.histogram[n_classes:]) + n_classes
                if bad.size:
                    ids = ", ".join(str(i) for i in bad[:20]) + (f" and {bad.size - 20} more" if bad.size > 20 else "")
                    pair_problems.append(Problem(pair.mask, f"mask has ids {ids} but there are only {n_classes} "
                                                            f"classes (0-{n_classes - 1})"))
            if pair_problems:
                problems += pair_problems
                skipped.append(pair.name)
                continue
            k = len(names)
            images[k], masks[k] = result.image, result.mask
            names.append(pair.name)
            original_sizes.append(result.original_size)
            histogram += result.histogram
    n = len(names)
    counts = np.zeros(n_classes, np.int64)
    counts[: min(n_classes, 256)] = histogram[:n_classes]
    return Decoded(names, images[:n], masks[:n], original_sizes, counts, problems, skipped)


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
