"""Tiny image/mask files written on the fly for the data/ tests: arrays, palette and 16-bit PNGs,
hand-made PNG bytes, small datasets in the CameraRGB/CameraMask layout."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from pixelwise.data import dataset
from pixelwise.data import pairs as pairs_module
from pixelwise.data.dataset import decode_dataset
from pixelwise.data.problems import Problem

H, W = 12, 16  # original size of the synthetic frames


SIZE = (6, 8)  # decoded size


# --------------------------------------------------------------------------------------------- helpers


def save(path: Path, array: np.ndarray) -> Path:
    """uint8 (H, W) → L, (H, W, 3|4) → RGB(A), uint16 (H, W) → I;16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_palette(path: Path, indices: np.ndarray, colors: list[int]) -> Path:
    im = Image.fromarray(indices)
    im.putpalette(colors + [0] * (768 - len(colors)))  # L + palette → P
    assert im.mode == "P"
    im.save(path)
    return path


def rgba_mask(ids: np.ndarray) -> np.ndarray:
    """CARLA-style mask: id in R, G = B = 0, alpha 255."""
    out = np.zeros(ids.shape + (4,), np.uint8)
    out[..., 0], out[..., 3] = ids, 255
    return out


def frame(seed: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """An RGBA image and its class ids; the image's R channel is 10 * id + seed, so pairs can be told apart."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 5, (h, w)).astype(np.uint8)
    image = np.zeros((h, w, 4), np.uint8)
    image[..., 0] = ids * 10 + seed
    image[..., 1] = rng.integers(0, 256, (h, w))
    image[..., 3] = 255
    return image, ids


def make_dataset(root: Path, names: list[str], h: int = H, w: int = W) -> tuple[Path, Path]:
    images, masks = root / pairs_module.IMAGE_DIR, root / pairs_module.MASK_DIR
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        image, ids = frame(seed, h, w)
        save(images / f"{name}.png", image)
        save(masks / f"{name}.png", rgba_mask(ids))
    return images, masks


def png_bytes(array: np.ndarray, color_type: int, depth: int, size: tuple[int, int] | None = None) -> bytes:
    """A hand-written PNG: for 16-bit RGB (Pillow cannot write it) and for headers that lie about size."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    h, w = size or array.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2" if depth == 16 else "u1").tobytes() for row in array)
    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def problem_for(problems: list[Problem], path: Path) -> Problem:
    found = [p for p in problems if p.path == path]
    assert len(found) == 1, f"expected one problem for {path}, got {problems}"
    return found[0]


def decode(images: Path, masks: Path, **kwargs) -> dataset.Decoded:
    kwargs = {"size": SIZE, "n_classes": 5, "progress": False, "workers": 2, **kwargs}
    return decode_dataset(images, masks, **kwargs)
