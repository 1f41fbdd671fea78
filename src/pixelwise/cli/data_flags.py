"""The flags that say how a dataset's files are read: pairing (suffixes, sub-folders) and mask format
(ids, colours). Shared by ``check`` and ``train``; ``evaluate`` and ``predict`` read them from the run."""

from __future__ import annotations

import argparse

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
