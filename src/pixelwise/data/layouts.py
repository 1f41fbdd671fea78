"""Presets for the well-known dataset layouts, so ``--layout camvid|cityscapes|voc|carla`` sets in one
word the folders, pairing, mask format, classes (names and colours, shipped as class files in
``pixelwise/layouts/``), unlabelled class and official split; and ``recognise`` says which preset fits
a folder (what ``check`` prints).

  carla       DATA/CameraRGB + DATA/CameraMask, same names; the id in R (or CARLA's colours): 23 classes
  camvid      DATA/701_StillsRaw_full (or images/) + DATA/LabeledApproved_full (or labels/) NAME_L.png colour
              masks: 32 classes, Void unlabelled; drive split (the sequence prefix 0001TP_, 0006R0_, … keeps
              each sequence's frames apart)
  cityscapes  DATA/leftImg8bit/train/CITY/NAME_leftImg8bit.png + DATA/gtFine/train/CITY/NAME_gtFine_labelIds.png,
              validated on …/val: labelIds mapped to the 19 training classes, every other id unlabelled
  voc         DATA/JPEGImages/NAME.jpg + DATA/SegmentationClass/NAME.png palette masks, 255 (borders) unlabelled,
              split by ImageSets/Segmentation/train.txt and val.txt
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from ..classes import ClassSet
from .naming import Naming
from .official import OfficialSplit
from .problems import DataError, Problem

# cityscapesScripts' labels.py: labelId → trainId for the 19 training classes; every other id is unlabelled.
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                         26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


@dataclass(frozen=True)
class Layout:
    name: str
    images: tuple[str, ...]  # the images folder below DATA: the first of these that exists
    masks: tuple[str, ...]
    mask_format: str = "auto"
    image_suffix: str = ""
    mask_suffix: str = ""
    recursive: bool = False
    unlabelled: str | None = None  # the class whose pixels are neither trained nor scored
    id_map: tuple[int, ...] = ()
    val_images: tuple[str, ...] = ()  # an official validation folder pair below DATA
    val_masks: tuple[str, ...] = ()
    train_list: str = ""  # official split lists below DATA
    val_list: str = ""

    @property
    def class_file(self) -> Path:
        return Path(str(resources.files("pixelwise.layouts") / f"{self.name}.txt"))

    def classes(self) -> ClassSet:
        return ClassSet.load(self.class_file)

    def ignore_index(self) -> int | None:
        return None if self.unlabelled is None else self.classes().index(self.unlabelled)

    def naming(self) -> Naming:
        return Naming(self.image_suffix, self.mask_suffix, self.recursive)

    def data_settings(self) -> dict:
        """The DataConfig fields this layout sets."""
        return {"mask_format": self.mask_format, "image_suffix": self.image_suffix, "mask_suffix": self.mask_suffix,
                "recursive": self.recursive, "id_map": self.id_map}

    def apply(self, config):
        """``config`` (a RunConfig) with this layout's classes, mask format, pairing and unlabelled class."""
        classes = self.classes()
        return replace(config, classes=classes, model=replace(config.model, n_classes=len(classes)),
                       data=replace(config.data, **self.data_settings()),
                       train=replace(config.train, ignore_index=self.ignore_index()))

    def folders(self, data: str | Path) -> tuple[Path, Path]:
        """The (images, masks) folders of a dataset in this layout; DataError naming what is missing."""
        return _pick(Path(data), self.images, self.masks, self.name)

    def official(self, data: str | Path) -> OfficialSplit | None:
        """The layout's official split of the dataset in ``data`` (None when it has none: the drive split)."""
        data = Path(data)
        if self.val_images:
            return OfficialSplit(*_pick(data, self.val_images, self.val_masks, self.name))
        if self.train_list:
            lists = [data / self.train_list, data / self.val_list]
            missing = [p for p in lists if not p.is_file()]
            if missing:
                raise DataError([Problem(p, f"no such split list (the {self.name} layout's)") for p in missing])
            return OfficialSplit(train_list=lists[0], val_list=lists[1])
        return None


def _pick(data: Path, images: tuple[str, ...], masks: tuple[str, ...], name: str) -> tuple[Path, Path]:
    found = []
    for candidates in (images, masks):
        existing = [data / c for c in candidates if (data / c).is_dir()]
        if not existing:
            wanted = " or ".join(f"{c}/" for c in candidates)
            raise DataError([Problem(data, f"has no {wanted} folder, which the {name} layout reads")])
        found.append(existing[0])
    return found[0], found[1]


LAYOUTS = {
    "carla": Layout("carla", ("CameraRGB",), ("CameraMask",)),
    "camvid": Layout("camvid", ("701_StillsRaw_full", "images"), ("LabeledApproved_full", "labels"),
                     mask_format="colors", mask_suffix="_L", unlabelled="Void"),
    "cityscapes": Layout("cityscapes", ("leftImg8bit/train",), ("gtFine/train",), mask_format="ids",
                         image_suffix="_leftImg8bit", mask_suffix="_gtFine_labelIds", recursive=True,
                         unlabelled="unlabelled",
                         id_map=tuple(_CITYSCAPES_TRAIN_IDS.get(i, 19) for i in range(256)),
                         val_images=("leftImg8bit/val",), val_masks=("gtFine/val",)),
    "voc": Layout("voc", ("JPEGImages",), ("SegmentationClass",), mask_format="ids", unlabelled="void",
                  id_map=tuple(min(21, i) for i in range(256)),
                  train_list="ImageSets/Segmentation/train.txt", val_list="ImageSets/Segmentation/val.txt"),
}


def layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; one of {', '.join(LAYOUTS)}") from None


def _some_files(folder: Path, limit: int = 50) -> list[str]:
    """Up to ``limit`` file names in ``folder`` and its sub-folders (the first few only: a quick look)."""
    names: list[str] = []
    for _root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names += [f for f in sorted(files) if not f.startswith(".")]
        if len(names) >= limit:
            break
    return names[:limit]


def recognise(data: str | Path) -> list[str]:
    """The layouts whose folders and file names ``data`` has (usually one; empty when none fits)."""
    data = Path(data)
    fits = []
    for name, preset in LAYOUTS.items():
        try:
            images, masks = preset.folders(data)
        except DataError:
            continue
        mask_names = _some_files(masks)
        image_names = _some_files(images)
        if not mask_names or not image_names:
            continue
        stems = [Path(f).stem for f in mask_names]
        if preset.mask_suffix and not any(s.endswith(preset.mask_suffix) for s in stems):
            continue
        if preset.image_suffix and not any(Path(f).stem.endswith(preset.image_suffix) for f in image_names):
            continue
        if preset.train_list and not (data / preset.train_list).is_file():
            continue
        fits.append(name)
    return fits
