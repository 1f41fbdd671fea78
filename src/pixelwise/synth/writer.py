"""Writing a dataset: frames rendered drive by drive and saved in CARLA's layout and file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..files import atomic_write
from .render import check_size, render_drive


def _save_png(array: np.ndarray, path: Path, noisy: bool) -> None:
    """Write atomically: a reader never sees half a file, even if this process dies mid-way.

    Noisy photos compress best and fastest with Huffman coding only (zlib strategy 2); masks, made of
    long runs, with ordinary deflate.
    """
    options = {"compress_type": 2} if noisy else {"compress_level": 3}
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", **options), durable=False)


def _plan(rng: np.random.Generator, count: int) -> list[list[int]]:
    """Frame numbers, drive by drive: 3-8 consecutive numbers each, gaps of 50 or more between."""
    drives, n, total = [], int(rng.integers(0, 50)), 0
    while total < count:
        k = min(int(rng.integers(3, 9)), count - total)
        drives.append(list(range(n, n + k)))
        total += k
        n += k + int(rng.integers(50, 150))
    return drives


def write_dataset(
    out: str | Path, count: int, seed: int = 0, height: int = 480, width: int = 640, progress: bool = True
) -> Path:
    """Write `count` synthetic frames in CARLA's layout and format; returns the dataset folder.

    ``out/CameraRGB/NNNNNN.png`` holds the image and ``out/CameraMask/NNNNNN.png`` the mask (class id
    in red, green = blue = 0), both RGBA with alpha 255. Frames come in drives of consecutive numbers
    separated by gaps, like the real data, so splits by run can be tested. Same seed, same bytes.
    """
    if int(count) < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    check_size(height, width)
    out = Path(out)
    root = np.random.SeedSequence(int(seed))
    drives = _plan(np.random.default_rng(root), int(count))
    names = {f"{n:06d}.png" for run in drives for n in run}
    rgb_dir, mask_dir = out / "CameraRGB", out / "CameraMask"
    for d in (rgb_dir, mask_dir):
        d.mkdir(parents=True, exist_ok=True)
        stray = sorted(p.name for p in d.glob("*.png") if p.name not in names)
        if stray:
            raise ValueError(
                f"{d} already holds {len(stray)} frame(s) this dataset would not overwrite (e.g. {stray[0]}); "
                "use an empty folder or delete the old one, so the two datasets do not mix"
            )
    alpha = np.full((int(height), int(width), 1), 255, np.uint8)
    zeros = np.zeros((int(height), int(width), 2), np.uint8)
    with tqdm(total=int(count), desc="synth", unit="frame", disable=None if progress else True) as bar:
        for run, child in zip(drives, root.spawn(len(drives))):
            frames = render_drive(np.random.default_rng(child), len(run), height, width)
            for n, (image, mask) in zip(run, frames):
                name = f"{n:06d}.png"
                _save_png(np.concatenate([image, alpha], axis=2), rgb_dir / name, noisy=True)
                _save_png(np.concatenate([mask[..., None], zeros, alpha], axis=2), mask_dir / name, noisy=False)
                bar.update(1)
    return out
