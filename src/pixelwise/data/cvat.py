"""CVAT's "Segmentation mask 1.1" export (the Pascal VOC layout): ``labelmap.txt`` gives each class
its colour, ``SegmentationClass/NAME.png`` the colour masks, ``ImageSets/Segmentation/*.txt`` the frames
and ``JPEGImages/`` the images when exported with them. Read as a dataset, and written from predictions
as an archive CVAT imports as annotations."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ..classes import ClassSet
from .problems import DataError, Problem

LABELMAP = "labelmap.txt"
MASKS = "SegmentationClass"
IMAGES = "JPEGImages"
LISTS = Path("ImageSets") / "Segmentation"


def read_labelmap(path: str | Path) -> ClassSet:
    """The classes of a ``labelmap.txt`` (``name:r,g,b:parts:actions`` a line, ``#`` comments), in line order.

    Raises:
        DataError: the file is missing or a line is not ``name:r,g,b…``, naming the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError([Problem(path, f"cannot read CVAT's label map ({getattr(exc, 'strerror', None) or exc})")]) from None
    names, colors = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            color = tuple(int(c) for c in rest.split(":")[0].split(","))
            if len(color) != 3 or not all(0 <= c <= 255 for c in color) or not name.strip():
                raise ValueError
        except ValueError:
            raise DataError([Problem(Path(f"{path}:{number}"), f"expected name:r,g,b:parts:actions, not {line!r}")]) from None
        if name in names:
            raise DataError([Problem(Path(f"{path}:{number}"), f"class {name!r} repeats line {names.index(name) + 1}")])
        names.append(name)
        colors.append(color)
    if len(names) < 2:
        raise DataError([Problem(path, f"holds {len(names)} class(es); a segmentation needs at least 2")])
    return ClassSet(tuple(names), tuple(colors))


def write_cvat(out: str | Path, masks: Iterable[tuple[str, np.ndarray]], classes: ClassSet) -> Path:
    """A "Segmentation mask 1.1" zip that CVAT imports as annotations.

    Args:
        out: the zip file to write.
        masks: (frame name without extension, (H, W) class ids) pairs.
        classes: the run's classes (names and colours go into ``labelmap.txt``).

    Returns:
        The zip's path.
    """
    out = Path(out)
    palette = classes.palette()
    names = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(LABELMAP, "# label:color_rgb:parts:actions\n" + "".join(
            f"{name}:{r},{g},{b}::\n" for name, (r, g, b) in zip(classes.names, classes.colors)))
        for name, ids in masks:
            archive.writestr(f"{MASKS}/{name}.png", _png(palette[ids]))
            names.append(name)
        archive.writestr(str(LISTS / "default.txt"), "".join(f"{n}\n" for n in names))
    return out


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
