"""Colour-coded masks: a class table's colours → class ids by one exact-match lookup per pixel.

Each RGB pixel is packed into one 24-bit number (R | G << 8 | B << 16: on a little-endian machine an
RGBA row viewed as uint32, masked) and looked up in a table of 2^24 entries built once per colour
table, so decoding costs one gather per pixel, not a loop over classes or pixels. ``auto`` looks up a
code (class id and two flags) instead, so one gather and one OR over the mask decide its format.

``MaskFormat`` says how a mask file becomes ids:
  ids     the ids rule (decode.mask_ids): grey value, palette index, or max(R, G, B) of an RGB mask
          (CARLA's id in R)
  colors  every pixel's colour must be a class colour (palette and grey masks are read by colour too)
  auto    RGB(A) masks whose every pixel is a class colour are read by colour; otherwise, when every
          pixel has G = B = 0 or R = G = B, by the ids rule; otherwise refused, naming the colours.
          Single-channel (grey, palette, 16-bit) masks are read by the ids rule.
Each format is one converter (:func:`mask_converter`), and :func:`read_mask_as` is the one reader that
training, ``check``, ``evaluate`` and ``predict`` use, so a mask means the same ids everywhere.
Unknown colours are a problem naming the file, the colours and their pixel counts, or with
``unknown="ignore"`` become the ``unlabelled`` class id.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .decode import decode_file, file_error, mask_ids, rgb_ids
from .problems import DataError, Problem

MASK_FORMATS = ("ids", "colors", "auto")
UNKNOWN_COLORS = ("error", "ignore")
_RGB_MODES = ("RGB", "RGBA", "RGBX")
_BY_COLOUR_MODES = ("P", "PA", "L", "LA", "1")  # read by colour only with kind "colors"


@dataclass(frozen=True)
class UnknownColors(Problem):
    """A mask holding colours that no class has: ``colors`` are ((r, g, b), pixel count), most pixels first."""

    colors: tuple[tuple[tuple[int, int, int], int], ...] = ()


def check_mask_format(kind: str, unknown: str = "error") -> None:
    if kind not in MASK_FORMATS:
        raise ValueError(f"mask format must be one of {', '.join(MASK_FORMATS)}, not {kind!r}")
    if unknown not in UNKNOWN_COLORS:
        raise ValueError(f"unknown colours must be one of {', '.join(UNKNOWN_COLORS)}, not {unknown!r}")


def shared_colors(colors: tuple[tuple[int, int, int], ...]) -> str | None:
    """"class 3 and 7 share 1 2 3" for the first colour two classes share, or None."""
    seen: dict[tuple[int, int, int], int] = {}
    for i, c in enumerate(colors):
        c = tuple(int(v) for v in c)
        if c in seen:
            return f"classes {seen[c]} and {i} share the colour {' '.join(map(str, c))}"
        seen[c] = i
    return None


@dataclass(frozen=True)
class MaskFormat:
    """How mask files become class ids (see the module docstring). The default reads ids as always."""

    kind: str = "ids"
    colors: tuple[tuple[int, int, int], ...] = ()  # class id → (r, g, b)
    unknown: str = "error"
    unlabelled: int | None = None  # the id unknown colours become with unknown="ignore"
    id_map: tuple[int, ...] = ()  # 256 entries: file id → class id, applied after decoding (Cityscapes' labelIds)

    def __post_init__(self) -> None:
        check_mask_format(self.kind, self.unknown)
        object.__setattr__(self, "id_map", tuple(int(v) for v in self.id_map))
        if self.id_map and (len(self.id_map) != 256 or not all(0 <= v < 256 for v in self.id_map)):
            raise ValueError("an id map gives a class id (0-255) for each of the 256 values a mask file can hold")
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in c) for c in self.colors))
        if self.kind == "colors":
            if not self.colors:
                raise ValueError("colour-coded masks need a colour for every class (a class file of 'name r g b' lines)")
            shared = shared_colors(self.colors)
            if shared:
                raise ValueError(f"colour-coded masks need one colour per class, but {shared}")
        if self.unknown == "ignore" and self.kind != "ids" and self.unlabelled is None:
            raise ValueError("data.unknown_color ignore marks unknown colours as the unlabelled class: name that class "
                             "with train.ignore_index")

    @property
    def usable_table(self) -> bool:
        return bool(self.colors) and shared_colors(self.colors) is None

    def key(self) -> list:
        """The settings a decode cache must tell apart (its code is in the cache's key already)."""
        key = [self.kind, [list(c) for c in self.colors], self.unknown, self.unlabelled]
        return key + [list(self.id_map)] if self.id_map else key

    @classmethod
    def for_run(cls, config) -> MaskFormat:
        """The mask format of a :class:`~pixelwise.config.RunConfig`: its data settings, its class colours,
        its ignored class as the unlabelled one (runs saved before mask formats existed load with ``ids``:
        config.py)."""
        data = config.data
        return cls(data.mask_format, tuple(config.classes.colors), data.unknown_color, config.train.ignore_index,
                   tuple(data.id_map))


@functools.lru_cache(maxsize=8)
def _lookup_table(colors: tuple[tuple[int, int, int], ...]) -> tuple[np.ndarray, int]:
    """The 2^24-entry table packed colour → class id (uint8, or uint16 for 256 classes), and the
    value it holds for colours of no class."""
    unknown = 255 if len(colors) < 256 else 256
    lut = np.full(1 << 24, unknown, np.uint8 if unknown == 255 else np.uint16)
    packed = np.asarray([r | g << 8 | b << 16 for r, g, b in colors], np.int64)
    lut[packed[::-1]] = np.arange(len(colors))[::-1]  # a shared colour (auto only) goes to the first class
    lut.flags.writeable = False
    return lut, unknown


_NOT_IN_TABLE, _NOT_ID_LIKE = 0x100, 0x200


@functools.lru_cache(maxsize=4)
def _auto_table(colors: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """For ``auto``: packed colour → a code, the class id in the low byte (when a class has the colour)
    and flags for "no class has it" and "not an id colour (neither G = B = 0 nor R = G = B)", so one
    gather and one OR over the mask decide between the colour table and the ids rule."""
    codes = np.full(1 << 24, _NOT_IN_TABLE | _NOT_ID_LIKE, np.uint16)
    codes[:256] = _NOT_IN_TABLE  # (r, 0, 0)
    codes[np.arange(256, dtype=np.int64) * 0x010101] = _NOT_IN_TABLE  # (v, v, v)
    if colors and shared_colors(colors) is None:
        packed = np.asarray([r | g << 8 | b << 16 for r, g, b in colors], np.int64)
        codes[packed] = (codes[packed] & _NOT_ID_LIKE) | np.arange(len(colors), dtype=np.uint16)
    codes.flags.writeable = False
    return codes


def _auto_to_ids(rgb: np.ndarray, fmt: MaskFormat, path: Path) -> np.ndarray:
    table = _auto_table(fmt.colors)
    # The common id mask (CARLA's: G = B = 0) costs no gather and no packing: a sample of pixels shows a
    # colour no class has, so the table cannot take the whole mask, and G and B are checked in place.
    h, w, c = rgb.shape
    sample = pack(rgb.reshape(-1, 1, c)[::97])
    if int(np.bitwise_or.reduce(np.take(table, sample))) & _NOT_IN_TABLE \
            and not rgb[..., 1].any() and not rgb[..., 2].any():
        return rgb_ids(rgb)
    packed = pack(rgb)
    codes = np.take(table, packed).reshape(h, w)
    packed = packed.reshape(h, w)
    flags = int(np.bitwise_or.reduce(codes, axis=None)) if codes.size else 0
    if not flags & _NOT_IN_TABLE:
        return codes.astype(np.uint8)  # every pixel a class colour: the low byte is its id
    if not flags & _NOT_ID_LIKE:
        return rgb_ids(rgb)  # every pixel G = B = 0 or grey
    unknown = (codes & _NOT_IN_TABLE) != 0
    if fmt.unknown == "ignore" and fmt.usable_table:
        ids = codes.astype(np.uint8)
        ids[unknown] = fmt.unlabelled
        return ids
    raise DataError([_unknown_problem(path, packed, unknown, fmt.usable_table)])


def pack(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3 or 4) → uint32 (H * W,) R | G << 8 | B << 16 (alpha left out)."""
    h, w, c = rgb.shape
    n = h * w
    if sys.byteorder == "little" and rgb.flags.c_contiguous and n:
        if c == 4:
            return rgb.reshape(n, 4).view(np.uint32)[:, 0] & np.uint32(0xFFFFFF)
        # Unaligned 4-byte loads 3 bytes apart read R, G, B and the next pixel's R; the last pixel,
        # whose load would run past the end, is packed on its own.
        out = np.empty(n, np.uint32)
        if n > 1:
            view = np.ndarray((n - 1,), np.uint32, buffer=rgb, strides=(3,))
            np.bitwise_and(view, np.uint32(0xFFFFFF), out=out[:-1])
        last = rgb.reshape(n, 3)[-1].astype(np.uint32)
        out[-1] = last[0] | last[1] << 8 | last[2] << 16
        return out
    flat = rgb.reshape(n, c)
    return flat[:, 0].astype(np.uint32) | flat[:, 1].astype(np.uint32) << 8 | flat[:, 2].astype(np.uint32) << 16


def unpack(packed: int) -> tuple[int, int, int]:
    return int(packed) & 255, int(packed) >> 8 & 255, int(packed) >> 16 & 255


def _unknown_problem(path: Path, packed: np.ndarray, unknown_mask: np.ndarray, has_table: bool) -> UnknownColors:
    values, counts = np.unique(packed[unknown_mask], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    found = tuple((unpack(values[i]), int(counts[i])) for i in order)
    shown = ", ".join(f"({r}, {g}, {b}) {n:,} px" for (r, g, b), n in found[:8])
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    if has_table:
        message = (f"mask has {len(found)} colour(s) no class has: {shown}{more}; add them to the class file "
                   "or set data.unknown_color to ignore")
    else:
        message = (f"mask is colour-coded ({len(found)} colour(s): {shown}{more}) but the classes have no colour "
                   "table; give a class file with 'name r g b' lines")
    return UnknownColors(path, message, found)


def colors_to_ids(rgb: np.ndarray, fmt: MaskFormat, path: Path | str = "mask") -> np.ndarray:
    """uint8 (H, W, 3|4) colour mask → uint8 (H, W) ids by exact colour match with ``fmt``'s table
    (``fmt.kind`` "auto" applies its fallback to the ids rule). Raises DataError naming ``path`` for
    colours no class has (unless ``fmt.unknown`` is "ignore")."""
    h, w = rgb.shape[:2]
    path = Path(path)
    if fmt.kind == "auto":
        return _auto_to_ids(rgb, fmt, path)
    packed = pack(rgb)
    lut, unknown_value = _lookup_table(fmt.colors)
    ids = np.take(lut, packed)
    unknown = ids == unknown_value
    if not unknown.any():
        return ids.astype(np.uint8, copy=False).reshape(h, w)
    if fmt.unknown == "ignore":
        ids[unknown] = fmt.unlabelled
        return ids.astype(np.uint8, copy=False).reshape(h, w)
    raise DataError([_unknown_problem(path, packed, unknown, True)])


def _colors_format(im: Image.Image, path: Path, rawmode: str, fmt: MaskFormat) -> np.ndarray:
    """The ``colors`` format: every pixel's colour (palette and grey ones too) looked up in ``fmt``'s table."""
    if im.mode in _RGB_MODES and "16" not in rawmode:
        return colors_to_ids(np.asarray(im), fmt, path)
    if im.mode in _BY_COLOUR_MODES:
        return colors_to_ids(np.asarray(im.convert("RGB")), fmt, path)
    raise file_error(path, f"{im.mode} mask cannot be colour-coded; save colour masks as 8-bit RGB or palette PNGs")


def _auto_format(im: Image.Image, path: Path, rawmode: str, fmt: MaskFormat) -> np.ndarray:
    """The ``auto`` format: RGB masks by colour or by the ids rule (:func:`colors_to_ids` decides), every
    other mode by the ids rule."""
    if im.mode in _RGB_MODES and "16" not in rawmode:
        return colors_to_ids(np.asarray(im), fmt, path)
    return mask_ids(im, path, rawmode)


def mask_converter(fmt: MaskFormat) -> Callable[[Image.Image, Path, str], np.ndarray]:
    """The one function that turns a decoded mask file into class ids in ``fmt``'s format (before its id
    map): ``(image, path, rawmode) -> uint8 (H, W)``, as :func:`~pixelwise.data.decode.decode_file` takes it."""
    if fmt.kind == "ids":
        return mask_ids
    return functools.partial(_colors_format if fmt.kind == "colors" else _auto_format, fmt=fmt)


def read_mask_as(path: str | Path, fmt: MaskFormat | None = None) -> np.ndarray:
    """Read a mask file as class ids in a :class:`MaskFormat`: the reader of every command.

    Args:
        path: the mask file.
        fmt: how it becomes ids (the ``ids`` format, exactly :func:`~pixelwise.data.decode.read_mask`, by default).

    Returns:
        uint8 (H, W) class ids, ``fmt``'s id map applied.

    Raises:
        DataError: naming ``path`` when it cannot be read or holds colours no class has.
    """
    fmt = MaskFormat() if fmt is None else fmt
    ids = decode_file(path, mask_converter(fmt))
    return np.asarray(fmt.id_map, np.uint8)[ids] if fmt.id_map else ids


def ids_to_colors(ids: np.ndarray, colors: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """The inverse: uint8 (H, W) ids → uint8 (H, W, 3) colours (how a colour-coded copy is written)."""
    return np.asarray(colors, np.uint8).reshape(-1, 3)[ids]


def unknown_color_summary(problems: list[Problem], files: int = 3) -> list[str]:
    """One line per colour no class has, over all masks: its pixel count, how many masks hold it and
    the first of them, most pixels first (what ``check`` prints after the problems)."""
    found: dict[tuple[int, int, int], list] = {}
    for problem in problems:
        for color, count in getattr(problem, "colors", ()):
            entry = found.setdefault(color, [0, []])
            entry[0] += count
            entry[1].append(problem.path)
    lines = []
    for (r, g, b), (count, paths) in sorted(found.items(), key=lambda item: -item[1][0]):
        first = ", ".join(str(p) for p in paths[:files]) + (", …" if len(paths) > files else "")
        lines.append(f"({r}, {g}, {b}): {count:,} px in {len(paths)} mask(s): {first}")
    return lines
