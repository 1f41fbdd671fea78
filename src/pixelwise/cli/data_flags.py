"""The flags that say how a dataset's files are read: pairing (suffixes, sub-folders) and mask format
(ids, colours). Shared by ``check`` and ``train``; ``evaluate`` and ``predict`` read them from the run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..classes import CARLA, ClassSet, class_set
from ..config import DATA_SETTINGS, DataConfig
from ..data.colors import MaskFormat
from ..data.naming import Naming
from ..settings import Setting
from .flags import add_setting, given

READING = tuple(s for s in DATA_SETTINGS if s.reading)  # how a dataset's files are read: every command's flags


def add_data_format_args(p: argparse.ArgumentParser, note: Callable[[Setting], str]) -> None:
    """The flags of the settings that say how a dataset's files are read; ``note`` gives each help's
    last words (its default)."""
    for setting in READING:
        add_setting(p, setting, note(setting))


def reading_given(args: argparse.Namespace) -> dict:
    """The reading settings given as flags, as DataConfig fields: what evaluate and predict change in
    the run's own."""
    return given(args, READING)["data"]


def add_layout_arg(p: argparse.ArgumentParser) -> None:
    from ..data.exports import EXPORT_LAYOUTS
    from ..data.layouts import LAYOUTS

    p.add_argument("--layout", choices=sorted([*LAYOUTS, *EXPORT_LAYOUTS]), default=None,
                   help="a well-known dataset's layout: its folders below DATA, pairing, mask format, classes "
                        "(names and colours), unlabelled class and official split in one word; flags given "
                        "beside it still win. labelstudio: DATA is Label Studio's JSON export and --images the "
                        "folder of its images; cvat: DATA is an unpacked CVAT 'Segmentation mask 1.1' export "
                        "(its classes from labelmap.txt; --images where it was exported without images)")


def use_export(args: argparse.Namespace, classes: ClassSet | None = None):
    """With ``--layout labelstudio`` or ``cvat``: the export read as a dataset (a Label Studio export drawn
    into masks in the cache), and ``args`` rewritten to read it as folders of images and masks with its
    classes and mask format. ``classes`` (a run's, for evaluate) decide the ids a Label Studio export is
    drawn with; by default ``--classes`` or the export's own. None without such a layout."""
    from ..data.cache import default_cache_dir
    from ..data.exports import read_cvat, read_labelstudio

    if getattr(args, "layout", None) not in ("labelstudio", "cvat"):
        return None
    if args.data is None:
        raise ValueError(f"layout {args.layout}: give the export (DATA)")
    cache = Path(args.cache_dir) if args.cache_dir is not None else default_cache_dir()
    given = getattr(args, "classes", None)
    if args.layout == "cvat":
        if given is not None:
            raise ValueError("--layout cvat sets the classes (the export's labelmap.txt); leave out --classes")
        dataset = read_cvat(args.data, args.images)
        if classes is not None and dataset.classes != classes:
            raise ValueError(f"{args.data}: the labelmap.txt's classes ({', '.join(dataset.classes.names)}) and "
                             f"colours are not the run's ({', '.join(classes.names)})")
    else:
        if args.images is None:
            raise ValueError("--layout labelstudio: give --images, the folder of the export's images")
        given_classes = classes or (class_set(given) if given is not None else None)
        dataset = read_labelstudio(args.data, args.images, cache, given_classes)
    args.data, args.images, args.masks, args.layout = None, dataset.images, dataset.masks, None
    args.classes, args.mask_format = dataset.classes, dataset.mask_format
    return dataset


def add_split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val", type=Path, default=None, metavar="DATA",
                   help="validate on this dataset folder (CameraRGB/ and CameraMask/, or --layout's) instead of "
                        "held-out drives of the training data")
    p.add_argument("--val-images", type=Path, default=None, help="validation images folder (with --val-masks)")
    p.add_argument("--val-masks", type=Path, default=None, help="validation masks folder (with --val-images)")
    p.add_argument("--train-list", type=Path, default=None, metavar="FILE",
                   help="train on the frames this file names, one per line (VOC's ImageSets/Segmentation/train.txt)")
    p.add_argument("--val-list", type=Path, default=None, metavar="FILE",
                   help="validate on the frames this file names (with --train-list)")


def layout_folders(args: argparse.Namespace) -> tuple[Path, Path] | None:
    """The (images, masks) folders --layout reads in DATA, where --images/--masks do not name them."""
    from ..data.layouts import layout

    if getattr(args, "layout", None) is None or args.data is None:
        return None
    images, masks = layout(args.layout).folders(args.data)
    return args.images or images, args.masks or masks


def official_split(args: argparse.Namespace):
    """The official split the flags (or --layout) ask for, or None for the drive split."""
    from ..data.layouts import layout
    from ..data.official import OfficialSplit
    from ..data.pairs import locate

    if args.val is None and (args.val_images is None) != (args.val_masks is None):
        raise ValueError("--val-images and --val-masks go together (or --val DATA for a folder holding both)")
    if args.val is not None or args.val_images is not None or args.val_masks is not None:
        if args.val is not None and getattr(args, "layout", None) and args.val_images is None and args.val_masks is None:
            return OfficialSplit(*layout(args.layout).folders(args.val))
        return OfficialSplit(*locate(args.val, args.val_images, args.val_masks))
    if args.train_list is not None or args.val_list is not None:
        return OfficialSplit(train_list=args.train_list, val_list=args.val_list)
    if getattr(args, "layout", None) and args.data is not None:
        return layout(args.layout).official(args.data)
    return None


def check_inputs(args: argparse.Namespace):
    """What ``check`` reads: (images, masks, classes, mask format, naming, select), with --layout's
    settings. A folder that is not in the CameraRGB/CameraMask layout but in a known one is refused
    with the --layout to pass."""
    from ..data.layouts import layout, recognise
    from ..data.official import keep_listed
    from ..data.pairs import locate
    from ..data.problems import DataError, Problem

    if args.layout is None:
        classes = CARLA if args.classes is None else class_set(args.classes)  # a bad class file first: exit 1
        try:
            images, masks = locate(args.data, args.images, args.masks)
        except DataError:
            fits = recognise(args.data) if args.data is not None and args.images is None and args.masks is None else []
            if fits:
                raise DataError([Problem(args.data, f"is laid out like {' or '.join(fits)}: pass --layout {fits[0]}")])
            raise
        data = DataConfig(**reading_given(args))  # the table's defaults for the flags not given
        mask_format = MaskFormat(data.mask_format, tuple(classes.colors), data.unknown_color, args.ignore_index)
        return images, masks, classes, mask_format, Naming(data.image_suffix, data.mask_suffix, data.recursive), None
    if args.classes is not None:
        raise ValueError(f"--layout {args.layout} sets the classes (its shipped class file); leave out --classes")
    preset = layout(args.layout)
    images, masks = layout_folders(args) or locate(args.data, args.images, args.masks)
    classes = preset.classes()
    ignore = preset.ignore_index() if args.ignore_index is None else args.ignore_index
    mask_format = MaskFormat(args.mask_format or preset.mask_format, tuple(classes.colors),
                             args.unknown_color or DataConfig.unknown_color, ignore, preset.id_map)
    naming = Naming(*(flag if flag is not None else default for flag, default in (
        (args.image_suffix, preset.image_suffix), (args.mask_suffix, preset.mask_suffix),
        (args.recursive, preset.recursive))))
    official = preset.official(args.data) if args.data is not None else None
    select = keep_listed(official, images, masks, naming) if official is not None and official.lists else None
    return images, masks, classes, mask_format, naming, select


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    add_layout_arg(p)
    p.add_argument("--list", type=Path, default=None, metavar="FILE",
                   help="score only the frames this file names, one per line (with --layout voc: its val.txt)")


def evaluate_inputs(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """(images, masks, list file) to score: --layout's official validation frames of DATA where it has them."""
    from ..data.layouts import layout
    from ..data.pairs import locate

    if args.layout is None or args.data is None or (args.images and args.masks):
        return (*locate(args.data, args.images, args.masks), args.list)
    preset = layout(args.layout)
    official = preset.official(args.data)
    if official is not None and official.folders:
        return args.images or official.val_images, args.masks or official.val_masks, args.list
    images, masks = preset.folders(args.data)
    only = args.list or (official.val_list if official is not None else None)
    return args.images or images, args.masks or masks, only


LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")


def mask_notes(masks: Path, naming: Naming, problems: list) -> list[str]:
    """Warnings ``check`` adds: masks in a lossy format (a JPEG mask blurs ids at every edge), and masks
    whose only out-of-range id is 255, the usual "unlabelled" value."""
    notes = []
    try:
        files = masks.rglob("*") if naming.recursive else masks.iterdir()
        lossy = sorted(p for p in files if p.suffix.lower() in LOSSY_SUFFIXES and not p.name.startswith("."))
    except OSError:
        lossy = []
    if lossy:
        notes.append(f"{lossy[0]}: {len(lossy)} mask(s) are JPEG/WebP files: lossy compression blurs the class "
                     "ids at every edge into ids of other classes; save masks as PNG")
    lone_255 = [p for p in problems if "mask has ids 255 but" in str(p)]
    if lone_255:
        notes.append(f"{lone_255[0].path}: {len(lone_255)} mask(s) hold 255 beside valid ids, the usual value of "
                     "unlabelled pixels (VOC's object borders): --ignore-index 255 leaves those pixels out of "
                     "training and scoring (--layout voc does this for VOC)")
    return notes
