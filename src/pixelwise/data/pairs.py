"""Finding the pairs: the images and masks folders, files matched by stem, and every file without
a partner or with an unusable name reported as a problem."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .links import broken_link
from .naming import Naming
from .problems import DataError, Problem

IMAGE_DIR = "CameraRGB"
MASK_DIR = "CameraMask"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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
            problems.append(Problem(masks_dir, "a masks folder was given without an images folder; "
                                               "pass images=FOLDER too"))
        if masks_dir is None:
            problems.append(Problem(images_dir, "an images folder was given without a masks folder; "
                                                "pass masks=FOLDER too"))
    elif images_dir is None or masks_dir is None:
        if not data_dir.exists():
            problems.append(Problem(data_dir, "no such folder"))
        elif not data_dir.is_dir():
            problems.append(Problem(data_dir, "not a folder"))
        else:
            wanted = [(IMAGE_DIR, images_dir), (MASK_DIR, masks_dir)]
            missing = [f"{sub}/" for sub, given in wanted if given is None and not (data_dir / sub).is_dir()]
            if missing:
                subfolders = sorted((p.name + "/" for p in data_dir.iterdir() if p.is_dir()), key=natural_key)
                more = ", …" if len(subfolders) > 6 else ""
                found = f" (it has {', '.join(subfolders[:6])}{more})" if subfolders else ""
                problems.append(Problem(data_dir, f"has no {' or '.join(missing)} folder{found}; a dataset folder "
                                                  f"holds {IMAGE_DIR}/ and {MASK_DIR}/ with matching file names, or "
                                                  "pass images=FOLDER and masks=FOLDER to name the folders yourself"))
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


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: "2" < "10", "frame9" < "frame10"."""
    parts = re.split(r"([0-9]+)", text)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), text


def is_image_file(path: Path) -> bool:
    """What pixelwise reads from a folder: image suffixes, hidden files left out."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _image_files(folder: Path, role: str, naming: Naming | None = None
                 ) -> tuple[dict[str, Path] | None, list[Problem], list[str]]:
    """Image files in ``folder`` by stem (None if it cannot be listed); stems used twice are problems.
    Also returns the names of the other (non-image) files, for hints."""
    by_stem: dict[str, list[Path]] = {}
    others: list[str] = []
    links: list[Problem] = []  # image names that are broken links or link loops
    try:
        entries = list(os.scandir(folder) if naming is None else naming.entries(folder))
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
            link = broken_link(entry.path) if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES else None
            if link:
                links.append(Problem(Path(entry.path), link))
            continue
        path = Path(entry.path)
        name = path.stem if naming is None else naming.pair_name(folder, path, role)
        if path.suffix.lower() in IMAGE_SUFFIXES and name is not None:
            by_stem.setdefault(name, []).append(path)
        else:
            others.append(entry.name)
    files, problems = {}, links
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
        others = sorted(others, key=natural_key)
        hint = f"; it has {len(others)} other file(s) such as {others[0]!r}"
    return Problem(folder, f"no {role} files ({', '.join(IMAGE_SUFFIXES)}) in this folder{hint}")


def find_pairs(images_dir: Path, masks_dir: Path | None, naming: Naming | None = None
               ) -> tuple[list[Pair], list[Problem]]:
    """Pair images with masks BY FILE STEM (never by listing order, which differs between systems).

    Hidden files and files without an image suffix are ignored. An image without a mask, a mask
    without an image, and two files with one stem in one folder are problems; such pairs are left
    out. Pairs come in natural order ("2" before "10"). ``masks_dir=None`` lists a prediction-only
    image folder (every ``Pair.mask`` is None). ``naming`` pairs by stems less a suffix and by
    relative path in sub-folders (see :class:`~.naming.Naming`); a pair's name is then that.
    """
    naming = None if naming is None or naming.is_default else naming
    images_dir = Path(images_dir)
    images, problems, other_images = _image_files(images_dir, "image", naming)
    if images is None:
        return [], problems
    if masks_dir is None:
        if not images and not problems:
            problems.append(_empty_folder_problem(images_dir, "image", other_images))
        pairs = [Pair(stem, path, None) for stem, path in images.items()]
        return sorted(pairs, key=lambda p: natural_key(p.name)), problems

    masks_dir = Path(masks_dir)
    if images_dir.resolve() == masks_dir.resolve():
        return [], [Problem(images_dir, "the images and masks folders are the same folder")]
    masks, mask_problems, other_masks = _image_files(masks_dir, "mask", naming)
    if masks is None:
        return [], problems + mask_problems
    # An empty (or wrong) folder is one problem, not one per file on the other side.
    if not images and not problems:
        return [], [_empty_folder_problem(images_dir, "image", other_images)] + mask_problems
    if not masks and not mask_problems:
        return [], problems + [_empty_folder_problem(masks_dir, "mask", other_masks)]
    problems += mask_problems
    duplicated = {p.path.stem if naming is None else naming.name_of(p.path, images_dir, masks_dir) for p in problems}
    pairs = []
    for stem in sorted(images.keys() | masks.keys(), key=natural_key):
        image, mask = images.get(stem), masks.get(stem)
        if image is not None and mask is not None:
            pairs.append(Pair(stem, image, mask))
        elif stem in duplicated:
            continue  # already reported; "no mask" on top would only add noise
        elif mask is None:
            named = f"{stem}.*" if naming is None else naming.describe("mask").format(name=stem)
            problems.append(Problem(image, f"no mask named {named} in {masks_dir}"))
        else:
            named = f"{stem}.*" if naming is None else naming.describe("image").format(name=stem)
            problems.append(Problem(mask, f"no image named {named} in {images_dir}"))
    problems.sort(key=lambda p: natural_key(p.path.stem))
    return pairs, problems
