"""A dataset decoded once: every pair validated and resized, from the cache when nothing changed,
with every problem listed (``decode_dataset``); ``check`` is the same without training."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..classes import CARLA, ClassSet
from ..config import DataConfig
from ..device import usable_cores
from .cache import Cache, default_cache_dir
from .colors import MaskFormat
from .decode import quiet_bomb_warnings
from .naming import Naming
from .pairs import Pair, find_pairs
from .problems import Problem
from .resize import check_resize_mode, check_size
from .table import PairDecoder, Table, decode_in_memory, ids_problem, parallel_map


@dataclass
class Decoded:
    """Every valid pair decoded and resized, with everything found wrong on the way.

    With a cache folder, ``images`` and ``masks`` are copy-on-write ``np.memmap`` views of the cache
    files: only the rows a caller touches are read, so a dataset larger than RAM fits, and
    ``images[batch_indices]`` reads (copies) just that batch. Writing into them changes this process's
    private copy of those pages, never the cache. Without a cache folder they are ordinary arrays.
    """

    names: list[str]  # the valid pairs, in order
    images: np.ndarray  # (N, H, W, 3) uint8: 4x smaller than float; scaled to [0, 1] at batch time
    masks: np.ndarray  # (N, H, W) uint8 class ids
    original_sizes: list[tuple[int, int]]  # (H, W) of each pair before resizing
    histogram: np.ndarray  # (n_classes,) int64 pixel counts over the original-size masks of valid pairs
    problems: list[Problem]  # everything found, pairing problems included
    skipped: list[str]  # names of pairs left out because of problems


def decode_dataset(images_dir: Path, masks_dir: Path, size: tuple[int, int], n_classes: int, *,
                   image_resize: str = "nearest", cache_dir: Path | None = None, workers: int | None = None,
                   progress: bool = True, mask_format: MaskFormat | None = None,
                   naming: Naming | None = None, select: Callable | None = None,
                   ignore_index: int | None = None) -> Decoded:
    """Decode, validate and resize every pair, in parallel, collecting ALL problems.

    ``naming`` says how files pair (name suffixes, sub-folders; by equal stems by default) and
    ``mask_format`` how a mask becomes ids (colour table; the ids rule by default): both are part of the
    cache's key. ``select(pairs, problems) -> (pairs, problems)`` keeps only some pairs (official split
    lists) before anything is decoded.

    A pair is left out (and listed in ``skipped``) when a file cannot be read, when image and mask
    differ in size, or when the mask holds ids >= ``n_classes`` other than ``ignore_index`` (the
    value that marks unlabelled pixels); the caller decides whether any problem means refusing.

    With ``cache_dir``, the decoded dataset is stored there as one images and one masks ``.npy`` file
    and returned memory-mapped (see :class:`Decoded`); a later call with unchanged files, size and
    resize mode opens them without decoding any image (pairs that failed are tried again, so their
    problems are current). After a change only the changed or new pairs are decoded; the rest are
    copied from the previous build, which is then deleted. ``n_classes`` is not part of the cache: the
    id check runs on the stored histograms. The cache's key holds the decoding code itself, so a change
    to how files are decoded never reuses older entries. Every cached row is checked against its
    checksum when the cache is opened: rows that fail are decoded again, with a warning naming the
    cache file and the dataset. A missing, truncated or corrupt cache is rebuilt, and an unwritable one
    only costs speed (a warning, then decoding into memory).
    """
    size = check_size(size)
    check_resize_mode(image_resize)
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, not {n_classes}")
    workers = usable_cores() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    pairs, problems = find_pairs(images_dir, masks_dir, naming)
    if select is not None:
        pairs, problems = select(pairs, problems)
    decode = PairDecoder(size, image_resize, masks=mask_format)
    table = cache = None
    if cache_dir is not None and pairs:
        cache_dir = Path(cache_dir).expanduser()
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            settings = (mask_format.key() if mask_format else []) + (naming.key() if naming else [])
            cache = Cache(cache_dir, images_dir, masks_dir, size, image_resize, settings)
            keys, key = cache.keys(pairs)
            table = _with_current_problems(cache.load(pairs, key), pairs, decode, workers)
            if table is None:
                with cache.lock():
                    table = _with_current_problems(cache.load(pairs, key), pairs, decode, workers)  # built meanwhile?
                    if table is None:
                        table = cache.build(pairs, keys, key, decode, workers, progress)
        except OSError as exc:  # a full or read-only disk costs speed, not the run
            warnings.warn(f"{cache_dir}: cannot use the decode cache ({exc.strerror or exc}); decoding without it",
                          stacklevel=2)
            table = cache = None
    if table is None:
        table = decode_in_memory(pairs, decode, workers, progress, n_classes, ignore_index)
    return _select(table, pairs, n_classes, problems, cache, ignore_index)


def _with_current_problems(table: Table | None, pairs: list[Pair], decode: PairDecoder,
                           workers: int) -> Table | None:
    """A cached table with the pairs that failed tried again, for today's problems (a file made readable
    by chmod keeps its mtime). None if one of them decodes now: the cache is stale."""
    if table is None:
        return None
    failed = np.flatnonzero(table.rows < 0).tolist()
    with warnings.catch_warnings():
        quiet_bomb_warnings()
        for i, result in zip(failed, parallel_map(decode, [(pairs[i], None) for i in failed], workers)):
            if not result.problems:
                return None
            table.problems[i] = result.problems
    return table


def _select(table: Table, pairs: list[Pair], n_classes: int, problems: list[Problem],
            cache: Cache | None, ignore_index: int | None = None) -> Decoded:
    """The pairs that are valid for ``n_classes`` as a :class:`Decoded`, every problem in pair order."""
    bad_rows = set(np.flatnonzero(table.histograms[:, n_classes:].any(axis=1)).tolist())
    names, skipped, keep = [], [], []
    for i, pair in enumerate(pairs):
        r = int(table.rows[i])
        found = list(table.problems.get(i, ()))
        bad_ids = ids_problem(pair, table.histograms[r], n_classes, ignore_index) if r in bad_rows else None
        if bad_ids:
            found.append(bad_ids)
        if found:
            problems += found
            skipped.append(pair.name)
        else:
            names.append(pair.name)
            keep.append(r)
    keep = np.asarray(keep, np.int64)
    if len(keep) == 0 or np.array_equal(keep, np.arange(keep[0], keep[0] + len(keep))):
        start = int(keep[0]) if len(keep) else 0
        images, masks = table.images[start:start + len(keep)], table.masks[start:start + len(keep)]  # views
    else:
        images = masks = None
        if cache is not None:  # memory-mapped like the rest rather than copied into memory
            try:
                images, masks = cache.subset(table, keep)
            except OSError as exc:
                warnings.warn(f"{cache.folder}: cannot write to the decode cache ({exc.strerror or exc}); "
                              f"the {len(keep)} pairs valid for {n_classes} classes are copied into memory",
                              stacklevel=3)
        if images is None:
            images, masks = table.images[keep], table.masks[keep]
    totals = table.histograms[keep].sum(axis=0) if len(keep) else np.zeros(1, np.int64)
    histogram = np.zeros(n_classes, np.int64)
    histogram[: min(n_classes, len(totals))] = totals[:n_classes]
    sizes = [(int(hh), int(ww)) for hh, ww in table.original_sizes[keep]]
    return Decoded(names, images, masks, sizes, histogram, problems, skipped)


def check(images_dir: str | Path, masks_dir: str | Path, classes: ClassSet = CARLA, *,
          cache_dir: Path | None = None, progress: bool = True, mask_format: MaskFormat | None = None,
          naming: Naming | None = None, select: Callable | None = None, ignore_index: int | None = None) -> Decoded:
    """Every problem in a dataset and its class histogram, without training: decodes (and caches) at
    the default training size, so a later ``train`` at that size starts from the cache. ``mask_format`` and
    ``naming`` and ``select`` as for ``decode_dataset`` (by default: masks in the format new runs get,
    ``DataConfig.mask_format``, with ``classes``' colours; files paired by equal stems)."""
    mask_format = MaskFormat(DataConfig.mask_format, tuple(classes.colors)) if mask_format is None else mask_format
    return decode_dataset(Path(images_dir), Path(masks_dir), DataConfig.size, len(classes),
                          cache_dir=default_cache_dir() if cache_dir is None else cache_dir, progress=progress,
                          mask_format=mask_format, naming=naming, select=select, ignore_index=ignore_index)
