"""The flags that say how a dataset's files are read: pairing (suffixes, sub-folders) and mask format
(ids, colours). Shared by ``check`` and ``train``; ``evaluate`` and ``predict`` read them from the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.colors import MASK_FORMATS, UNKNOWN_COLORS, MaskFormat
from ..data.naming import Naming

# Flag → DataConfig field, for train's settings table.
DATA_SETTINGS = {
    "--mask-format": ("data", "mask_format"), "--unknown-color": ("data", "unknown_color"),
    "--image-suffix": ("data", "image_suffix"), "--mask-suffix": ("data", "mask_suffix"),
    "--recursive": ("data", "recursive"),
}


def add_data_format_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask-format", choices=MASK_FORMATS, default=None,
                   help="ids: grey value, palette index or max(R, G, B) (CARLA's id in R); colors: exact match with "
                        "the class file's colours ('name r g b' lines); auto (the default): colours when every pixel "
                        "is a class colour, else ids when every pixel has G = B = 0 or R = G = B, else refused")
    p.add_argument("--unknown-color", choices=UNKNOWN_COLORS, default=None,
                   help="error (the default): a mask colour no class has is a problem; ignore: such pixels become "
                        "the --ignore-index class (unlabelled)")
    p.add_argument("--image-suffix", default=None, metavar="SUFFIX",
                   help="image file names end in this before the extension (e.g. _leftImg8bit); pairs are matched "
                        "on the name without it")
    p.add_argument("--mask-suffix", default=None, metavar="SUFFIX",
                   help="mask file names end in this (e.g. _L for CamVid, _gtFine_labelIds for Cityscapes); masks "
                        "without it are not read")
    p.add_argument("--recursive", action=argparse.BooleanOptionalAction, default=None,
                   help="also pair the files in sub-folders, by their path below the images and masks folders")


def naming_from(args: argparse.Namespace) -> Naming:
    return Naming(args.image_suffix or "", args.mask_suffix or "", bool(args.recursive))


def mask_format_from(args: argparse.Namespace, ignore_index: int | None = None) -> MaskFormat:
    return MaskFormat(args.mask_format or "auto", tuple(args.classes.colors), args.unknown_color or "error",
                      ignore_index)


def add_layout_arg(p: argparse.ArgumentParser) -> None:
    from ..data.layouts import LAYOUTS

    p.add_argument("--layout", choices=sorted(LAYOUTS), default=None,
                   help="a well-known dataset's layout: its folders below DATA, pairing, mask format, classes "
                        "(names and colours), unlabelled class and official split in one word; flags given "
                        "beside it still win")


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


def with_layout(args: argparse.Namespace, config):
    """``config`` with --layout's settings, then the data flags given beside it."""
    from dataclasses import replace

    from ..data.layouts import layout

    if getattr(args, "layout", None) is None:
        return config
    if any(t == "--classes" or t.startswith("--classes=") for t in args.argv):
        raise ValueError(f"--layout {args.layout} sets the classes (its shipped class file); leave out --classes")
    config = layout(args.layout).apply(config)
    given = {name: getattr(args, flag[2:].replace("-", "_")) for flag, (_, name) in DATA_SETTINGS.items()}
    data = replace(config.data, **{k: v for k, v in given.items() if v is not None})
    train = config.train if args.ignore_index is None else replace(config.train, ignore_index=args.ignore_index)
    return replace(config, data=data, train=train)


def official_split(args: argparse.Namespace):
    """The official split the flags (or --layout) ask for, or None for the drive split."""
    from ..data.layouts import layout
    from ..data.official import OfficialSplit
    from ..data.pairs import locate

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
    """What ``check`` reads: (images, masks, mask format, naming, select), with --layout's settings and
    its classes put in ``args.classes``. A folder that is not in the CameraRGB/CameraMask layout but
    in a known one is refused with the --layout to pass."""
    from ..data.layouts import layout, recognise
    from ..data.official import keep_listed
    from ..data.pairs import locate
    from ..data.problems import DataError, Problem

    if args.layout is None:
        try:
            images, masks = locate(args.data, args.images, args.masks)
        except DataError:
            fits = recognise(args.data) if args.data is not None and args.images is None and args.masks is None else []
            if fits:
                raise DataError([Problem(args.data, f"is laid out like {' or '.join(fits)}: pass --layout {fits[0]}")])
            raise
        return images, masks, mask_format_from(args, args.ignore_index), naming_from(args), None
    if any(t == "--classes" or t.startswith("--classes=") for t in args.argv):
        raise ValueError(f"--layout {args.layout} sets the classes (its shipped class file); leave out --classes")
    preset = layout(args.layout)
    images, masks = layout_folders(args) or locate(args.data, args.images, args.masks)
    args.classes = preset.classes()
    ignore = preset.ignore_index() if args.ignore_index is None else args.ignore_index
    mask_format = MaskFormat(args.mask_format or preset.mask_format, tuple(args.classes.colors),
                             args.unknown_color or "error", ignore, preset.id_map)
    naming = Naming(*(given if given is not None else default for given, default in (
        (args.image_suffix, preset.image_suffix), (args.mask_suffix, preset.mask_suffix),
        (args.recursive, preset.recursive))))
    official = preset.official(args.data) if args.data is not None else None
    select = keep_listed(official, images, masks, naming) if official is not None and official.lists else None
    return images, masks, mask_format, naming, select


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
