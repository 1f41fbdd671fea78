"""Official splits instead of the drive split: a validation folder of its own (``val_images`` and
``val_masks``), or VOC-style list files that name the training and the validation frames
(``train_list``/``val_list``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import Decoded
from .naming import Naming
from .pairs import IMAGE_SUFFIXES, Pair
from .problems import DataError, Problem
from .split import Split


@dataclass(frozen=True)
class OfficialSplit:
    """Where the validation pairs come from: another folder pair, or name lists over one dataset."""

    val_images: Path | None = None
    val_masks: Path | None = None
    train_list: Path | None = None
    val_list: Path | None = None

    def __post_init__(self) -> None:
        if (self.val_images is None) != (self.val_masks is None):
            raise ValueError("a validation folder needs both its images and its masks (val_images and val_masks)")
        if (self.train_list is None) != (self.val_list is None):
            raise ValueError("official split lists come in pairs: train_list and val_list")
        if self.val_images is not None and self.train_list is not None:
            raise ValueError("give a validation folder or split lists, not both")

    @property
    def folders(self) -> bool:
        return self.val_images is not None

    @property
    def lists(self) -> bool:
        return self.train_list is not None


def read_list(path: Path) -> list[tuple[int, str]]:
    """(line number, name) for each name in a split list: one per line, the first word of the line
    (VOC's lists hold names; some lists add columns), blank lines and ``#`` comments skipped. A file
    name (``000026.png``, as ``ls`` writes them) stands for its pair's name, which has no suffix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError([Problem(Path(path), f"cannot read the split list ({exc.strerror or exc})")]) from None
    except UnicodeDecodeError:
        raise DataError([Problem(Path(path), "split list is not UTF-8 text")]) from None
    names = [(n, _pair_name(line.split()[0])) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise DataError([Problem(Path(path), "split list names no frames")])
    return names


def _pair_name(entry: str) -> str:
    suffix = Path(entry).suffix
    return entry[: -len(suffix)] if suffix.lower() in IMAGE_SUFFIXES else entry


def keep_listed(split: OfficialSplit, images_dir: Path, masks_dir: Path, naming: Naming | None
                ) -> Callable[[list[Pair], list[Problem]], tuple[list[Pair], list[Problem]]]:
    """A filter for ``decode_dataset``: only the pairs the lists name are decoded; files no list names
    are not part of the dataset (VOC's JPEGImages holds many images without masks), and a listed
    name without a pair is a problem naming the list file and line."""
    listed = {name: (path, n) for path in (split.train_list, split.val_list) for n, name in read_list(path)}
    naming = naming or Naming()

    def select(pairs: list[Pair], problems: list[Problem]) -> tuple[list[Pair], list[Problem]]:
        kept = [p for p in pairs if p.name in listed]
        found = {p.name for p in kept}
        relevant = [p for p in problems if naming.name_of(p.path, images_dir, masks_dir) in listed
                    or p.path in (images_dir, masks_dir)]
        missing = [Problem(path, f"line {n}: {name!r} has no image/mask pair in {images_dir} and {masks_dir}")
                   for name, (path, n) in listed.items() if name not in found
                   and not any(naming.name_of(p.path, images_dir, masks_dir) == name for p in relevant)]
        return kept, relevant + missing

    return select


def split_by_lists(names: list[str], split: OfficialSplit) -> Split:
    """Indices of ``names`` in the training and in the validation list (a name in both is refused:
    validating on training frames would report a score that means nothing)."""
    train = {name for _, name in read_list(split.train_list)}
    val = {name for _, name in read_list(split.val_list)}
    both = sorted(train & val)
    if both:
        raise DataError([Problem(split.val_list, f"names {len(both)} frame(s) the training list "
                                                 f"{split.train_list.name} names too, such as {both[0]!r}")])
    return Split([i for i, n in enumerate(names) if n in train], [i for i, n in enumerate(names) if n in val])


def join(train: Decoded, val: Decoded) -> Decoded:
    """The training folder's pairs, then the validation folder's, as one dataset (copied into memory:
    two memory-mapped caches cannot be one array without a copy)."""
    return Decoded(train.names + val.names, np.concatenate([train.images, val.images]),
                   np.concatenate([train.masks, val.masks]), train.original_sizes + val.original_sizes,
                   train.histogram + val.histogram, train.problems + val.problems, train.skipped + val.skipped)
