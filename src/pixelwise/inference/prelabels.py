"""Predictions handed back to the labelling tools as pre-labels, from what ``predict`` wrote: a Label
Studio tasks file (brush results per class, with the model's version and a score) or a CVAT
"Segmentation mask 1.1" archive, both built from the rows of ``OUT/predictions.csv``."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ..classes import ClassSet
from ..data.cvat import write_cvat
from ..data.labelstudio import prelabel_task
from ..files import atomic_write_text
from .manifest import MANIFEST

FORMATS = ("labelstudio", "cvat")
LABELSTUDIO_FILE, CVAT_FILE = "labelstudio.json", "cvat.zip"


def _predicted(out_dir: Path) -> Iterator[tuple[str, Path, Path | None]]:
    """(input as listed, its id mask, its confidence map or None) for each row of the manifest."""
    with open(out_dir / MANIFEST, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            names = row["outputs"].split(";")
            mask = next((n for n in names if n.endswith("_mask.png")), None)
            if mask is None:  # a video's row: no pre-label
                continue
            sure = next((n for n in names if n.endswith("_confidence.png")), None)
            yield row["input"], out_dir / mask, out_dir / sure if sure else None


def write_prelabels(out_dir: str | Path, fmt: str, classes: ClassSet, model_version: str) -> Path:
    """The pre-labels of every image ``predict`` wrote into ``out_dir``, in a labelling tool's format.

    Args:
        out_dir: ``predict``'s output folder (with its ``predictions.csv``).
        fmt: ``labelstudio`` (``labelstudio.json``: one task per image, its ``data.image`` the image's
            path as predict was given it, the predictions scored by their mean confidence where
            ``NAME_confidence.png`` was written) or ``cvat`` (``cvat.zip``).
        classes: the run's classes.
        model_version: what Label Studio shows as the predictions' model.

    Returns:
        The file written.

    Raises:
        ValueError: an unknown ``fmt``.
        FileNotFoundError: ``out_dir`` holds no ``predictions.csv``.
    """
    out_dir = Path(out_dir)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "cvat":
        masks = ((Path(image).stem, np.asarray(Image.open(mask))) for image, mask, _ in _predicted(out_dir))
        return write_cvat(out_dir / CVAT_FILE, masks, classes)
    tasks = []
    for image, mask, sure in _predicted(out_dir):
        score = float(np.asarray(Image.open(sure)).mean() / 255) if sure is not None else 0.0
        tasks.append(prelabel_task(image, np.asarray(Image.open(mask)), classes, model_version=model_version,
                                   score=score))
    atomic_write_text(out_dir / LABELSTUDIO_FILE, json.dumps(tasks))
    return out_dir / LABELSTUDIO_FILE
