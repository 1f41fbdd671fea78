"""What prediction writes: colour masks, overlays, 8-bit id PNGs and the assignment's
"Input Image | True Mask | Predicted Mask" figure."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np  # noqa: E402
from PIL import Image

from ..classes import ClassSet
from ..data.problems import DataError, Problem
from ..figures import plt, save_figure
from ..files import atomic_write


def colorize(mask: np.ndarray, classes: ClassSet) -> np.ndarray:
    """(H, W) class ids → (H, W, 3) uint8 in the class colours; any other value (an unlabelled
    true-mask pixel such as VOC's 255) black."""
    palette = np.vstack([classes.palette(), np.zeros((1, 3), np.uint8)])
    return palette[np.minimum(mask, len(classes))]


def overlay(image: np.ndarray, mask: np.ndarray, classes: ClassSet, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised mask over the image so errors can be seen against the scene."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask, classes).astype(np.float32)
    return blended.round().clip(0, 255).astype(np.uint8)


def display_figure(image: np.ndarray, predicted: np.ndarray, classes: ClassSet, path: str | Path,
                   true: np.ndarray | None = None) -> None:
    """The assignment's ``display([image, true_mask, pred_mask])`` figure, saved to a file."""
    panels = [("Input Image", image)]
    if true is not None:
        panels.append(("True Mask", colorize(true, classes)))
    panels.append(("Predicted Mask", colorize(predicted, classes)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (title, picture) in zip(np.atleast_1d(axes), panels):
        ax.imshow(picture)
        ax.set_title(title)
        ax.axis("off")
    save_figure(fig, path)


def save_png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def output_paths(stem: Path, figure: bool, confidence: bool = False) -> list[Path]:
    """The files :func:`write_outputs` writes for one image: ``STEM_mask.png`` (class ids),
    ``STEM_color.png``, ``STEM_overlay.png``, with ``figure`` ``STEM_figure.png`` and with
    ``confidence`` ``STEM_confidence.png``."""
    suffixes = ["_mask.png", "_color.png", "_overlay.png"] + ["_figure.png"] * figure + ["_confidence.png"] * confidence
    return [Path(f"{stem}{suffix}") for suffix in suffixes]


# What atomic_path names an output while it is written (".NAME_mask.png.k3x_9az2.tmp.png"): a process
# killed at that moment leaves it behind.
_UNFINISHED = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp\.png")


def remove_unfinished_outputs(out_dir: Path) -> int:
    """Remove the temporary files that writes of outputs into ``out_dir`` left when their process was
    killed, and return how many. Call it only while no process writes into ``out_dir``."""
    try:
        entries = [e for e in os.scandir(out_dir) if _UNFINISHED.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return 0
    for entry in entries:
        try:
            os.unlink(entry.path)
        except FileNotFoundError:  # another machine's process, sharing this folder, removed it first
            continue
    return len(entries)


def write_outputs(path: Path, stem: Path, image: np.ndarray, mask: np.ndarray, classes: ClassSet, *,
                  true: np.ndarray | None, figure: bool, confidence: np.ndarray | None = None) -> list[Path]:
    """Write one image's outputs, all or none: if one cannot be written (a name too long for the file
    system, a full disk) the others are removed again and a DataError names the image. ``confidence``
    (uint8, 0-255) is written as ``STEM_confidence.png``."""
    paths = output_paths(stem, figure, confidence is not None)
    mask_file, color_file, overlay_file = paths[:3]
    figure_file = paths[3:4] if figure else []
    outputs = {mask_file: mask, color_file: colorize(mask, classes), overlay_file: overlay(image, mask, classes)}
    if confidence is not None:
        outputs[paths[-1]] = confidence
    written: list[Path] = []
    target: Path
    try:
        for target, array in outputs.items():
            save_png(target, array)
            written.append(target)
        for target in figure_file:
            display_figure(image, mask, classes, target, true=true)
            written.append(target)
    except OSError as exc:
        for done in written:
            done.unlink(missing_ok=True)
        raise DataError([Problem(path, f"cannot write its output {target.name} ({exc.strerror or exc}); "
                                       "nothing written for this image")]) from None
    return written
