"""A run's data, ready before any training: every pair decoded and checked up front (bad data is
refused before the first step), then split by drive, or by an official validation folder or list."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from ..config import RunConfig
from ..data.colors import MaskFormat
from ..data.dataset import Decoded, decode_dataset
from ..data.naming import Naming
from ..data.official import OfficialSplit, join, keep_listed, split_by_lists
from ..data.problems import DataError, SkippableDataError
from ..data.split import Split, split_by_folds, split_by_runs


def prepare_data(images_dir: Path, masks_dir: Path, config: RunConfig, *, skip_invalid: bool, cache_dir: Path | None,
                 progress: bool, log: Callable[[str], None], official: OfficialSplit | None = None
                 ) -> tuple[Decoded, Split]:
    """Decode and validate every pair up front (refusing bad data before any training), then split: by
    drive, or by ``official``'s validation folder or split lists."""
    official = official or OfficialSplit()
    if config.data.folds > 1 and (official.folders or official.lists):
        raise ValueError("data.folds splits the training data into folds by drive, but an official validation "
                         "folder or list is given: use one or the other")
    naming = Naming.for_run(config)
    settings = {"image_resize": config.data.image_resize, "cache_dir": cache_dir, "progress": progress,
                "mask_format": MaskFormat.for_run(config), "naming": naming, "ignore_index": config.train.ignore_index}
    decoded = decode_dataset(images_dir, masks_dir, config.data.size, config.model.n_classes, **settings,
                             select=keep_listed(official, images_dir, masks_dir, naming) if official.lists else None)
    n_train = len(decoded.names)
    if official.folders:
        decoded = join(decoded, decode_dataset(official.val_images, official.val_masks, config.data.size,
                                               config.model.n_classes, **settings))
    if decoded.problems and not skip_invalid:
        raise (SkippableDataError if len(decoded.names) else DataError)(decoded.problems)
    if decoded.problems:
        log(f"skipping {len(decoded.skipped)} invalid pair(s) (skip_invalid=True):")
        for problem in decoded.problems:
            log(f"  {problem}")
    if len(decoded.names) == 0:
        raise DataError(decoded.problems) if decoded.problems else ValueError(f"{images_dir}: no image/mask pairs found")
    if official.folders:
        split = Split(list(range(n_train)), list(range(n_train, len(decoded.names))))
    elif official.lists:
        split = split_by_lists(decoded.names, official)
    elif config.data.folds > 1:
        split = split_by_folds(decoded.names, config.data.folds, config.data.fold, config.data.split_seed)
    else:
        split = split_by_runs(decoded.names, config.data.val_fraction, config.data.split_seed)
    return decoded, split


def split_fingerprint(names: list[str], split: Split) -> str:
    """A short hash of which pairs train and which validate: a resumed run must see the same split."""
    text = "\n".join(names[i] for i in split.train) + "\n--\n" + "\n".join(names[i] for i in split.val)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
