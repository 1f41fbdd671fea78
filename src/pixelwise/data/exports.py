"""Labelling tools' exports as datasets every command reads: a Label Studio JSON export is drawn into
id masks once (kept in the cache, keyed by the export's bytes, the images folder and the classes) beside
links to its images; a CVAT "Segmentation mask 1.1" folder is read in place, its classes from its
``labelmap.txt``."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..classes import ClassSet
from ..files import atomic_write, atomic_write_text
from . import cvat, labelstudio
from .problems import DataError, Problem

EXPORT_LAYOUTS = ("labelstudio", "cvat")
IMAGE_DIR, MASK_DIR = "images", "masks"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class ExportDataset:
    """An export as a folder pair every command reads, with what reading it found.

    Attributes:
        images, masks: the folders of paired images and id (or CVAT colour) masks.
        classes: the export's classes, or the ones given.
        mask_format: how the masks hold classes: ``ids`` (drawn from Label Studio) or ``colors`` (CVAT).
        problems: tasks left out, each naming the export, the task and what is wrong.
        notes: what was read but is worth saying (strokes painted over by a later one of another class).
    """

    images: Path
    masks: Path
    classes: ClassSet
    mask_format: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def class_text(classes: ClassSet) -> str:
    """A class file (``name r g b`` a line) that :meth:`ClassSet.load` reads back."""
    return "".join(f"{name} {r} {g} {b}\n" for name, (r, g, b) in zip(classes.names, classes.colors))


def read_cvat(folder: str | Path, images: str | Path | None = None) -> ExportDataset:
    """A CVAT "Segmentation mask 1.1" export folder.

    Args:
        folder: the unpacked export (``labelmap.txt``, ``SegmentationClass/``).
        images: the images' folder when the export was made without them (else its ``JPEGImages/``).

    Raises:
        DataError: a missing ``labelmap.txt``, masks folder or images folder, or a bad label map line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError([Problem(folder, "no such folder (a CVAT Segmentation mask 1.1 export, unpacked)")])
    classes = cvat.read_labelmap(folder / cvat.LABELMAP)
    images = Path(images) if images is not None else folder / cvat.IMAGES
    missing = [p for p in (folder / cvat.MASKS, images) if not p.is_dir()]
    if missing:
        raise DataError([Problem(p, "no such folder, which a CVAT Segmentation mask 1.1 export holds"
                                    + (" (exported without images? pass images=)" if p == images else ""))
                         for p in missing])
    return ExportDataset(images, folder / cvat.MASKS, classes, "colors")


def read_labelstudio(export: str | Path, images: str | Path, cache_dir: str | Path,
                     classes: ClassSet | None = None) -> ExportDataset:
    """A Label Studio JSON export drawn into id masks, beside links to the images it names.

    Args:
        export: the JSON export file.
        images: the folder holding the tasks' images (searched with its sub-folders, matched by file
            name once Label Studio's upload prefix ``1a2b3c4d-`` is removed).
        cache_dir: where the drawn dataset is kept; drawn again when the export, the images folder
            or the classes change.
        classes: the classes in id order; by default ``background`` and the export's labels by name.

    Returns:
        The dataset, with the tasks left out as problems: no image file, an image two tasks annotate
        (the first kept), a label the classes lack, a result that cannot be read.

    Raises:
        ValueError: ``export`` is not a Label Studio JSON export.
        DataError: ``images`` is not a folder.
    """
    export, images = Path(export), Path(images)
    if not images.is_dir():
        raise DataError([Problem(images, "no such folder (the images of the Label Studio export)")])
    tasks = labelstudio.export_tasks(export)
    classes = classes or labelstudio.export_classes(tasks)
    key = hashlib.sha256(export.read_bytes() + os.fsencode(images.resolve()) + class_text(classes).encode())
    out = Path(cache_dir) / "labelstudio" / key.hexdigest()[:16]
    if (out / "problems.txt").is_file():
        return _read_drawn(out, classes)
    _draw(tasks, export, images, classes, out)
    return _read_drawn(out, classes)


def _draw(tasks: list[dict], export: Path, images: Path, classes: ClassSet, out: Path) -> None:
    by_name = _images_by_name(images)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (out / MASK_DIR).mkdir(exist_ok=True)
    problems, notes, seen = [], [], {}
    for number, task in enumerate(tasks, 1):
        drawn = labelstudio.task_mask(task, number, export, classes)
        where = Path(f"{export} (task {number}{', ' + labelstudio.image_name(drawn.image) if drawn.image else ''})")
        image = labelstudio.find_image(drawn.image, images, by_name) if drawn.image else None
        if image is None:
            drawn.problems.insert(0, Problem(where, f"no image file for {drawn.image!r} in {images}"
                                             if drawn.image else "names no image"))
        elif image in seen:
            drawn.problems.insert(0, Problem(where, f"annotates {image.name} again (task {seen[image]} did; "
                                                    "that one is kept)"))
        problems += drawn.problems
        if drawn.problems:
            continue
        seen[image] = number
        if drawn.overlaps:
            notes.append(f"{where}: {drawn.overlaps} pixel(s) painted by two classes: the later stroke wins, "
                         "as Label Studio draws them")
        _link(image, out / IMAGE_DIR / image.name)
        atomic_write(out / MASK_DIR / f"{image.stem}.png", lambda p, ids=drawn.ids: Image.fromarray(ids).save(p, "PNG"))
    atomic_write_text(out / "notes.txt", "".join(f"{n}\n" for n in notes))
    # Written last: its presence says the folder is complete.
    atomic_write_text(out / "problems.txt", "".join(f"{p.path}\t{p.message}\n" for p in problems))


def _read_drawn(out: Path, classes: ClassSet) -> ExportDataset:
    problems = [Problem(Path(path), message) for path, _, message in
                (line.partition("\t") for line in (out / "problems.txt").read_text(encoding="utf-8").splitlines())]
    notes = (out / "notes.txt").read_text(encoding="utf-8").splitlines()
    return ExportDataset(out / IMAGE_DIR, out / MASK_DIR, classes, "ids", problems, notes)


def _images_by_name(images: Path) -> dict[str, Path]:
    """Image files below ``images`` by file name; a name found twice maps to neither (ambiguous)."""
    found = [p for p in sorted(images.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    counts = Counter(p.name for p in found)
    return {p.name: p for p in found if counts[p.name] == 1}


def _link(target: Path, link: Path) -> None:
    """``link`` → ``target`` (a copy where the file system has no symbolic links)."""
    if link.is_symlink() or link.exists():
        link.unlink()
    try:
        link.symlink_to(target.resolve())
    except OSError:
        link.write_bytes(target.read_bytes())

