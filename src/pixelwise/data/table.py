"""Decoding many pairs on all cores into rows of arrays, in pair order and in bounded memory, with
each bad pair a problem instead of an exception (what the cache builds and the in-memory path uses)."""

from __future__ import annotations

import itertools
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from .colors import MaskFormat, read_mask_as
from .decode import ids_out_of_range, quiet_bomb_warnings, read_image
from .orientation import turned_hint
from .pairs import Pair
from .problems import DataError, Problem
from .resize import resize_image, resize_mask


@dataclass
class PairResult:
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    original_size: tuple[int, int] | None = None
    histogram: np.ndarray | None = None  # int64 pixel counts of ids 0, 1, … over the original-size mask
    problems: tuple[Problem, ...] = ()


def decode_pair(pair: Pair, size: tuple[int, int], image_resize: str, masks: MaskFormat | None = None) -> PairResult:
    """Decode, check and resize one pair (the mask as ``masks`` says). Never raises for bad data:
    problems are returned."""
    problems: list[Problem] = []
    image = mask = None
    try:
        image = read_image(pair.image)
    except DataError as exc:
        problems += exc.problems
    try:
        mask = read_mask_as(pair.mask, masks)
    except DataError as exc:
        problems += exc.problems
    if image is not None and mask is not None and image.shape[:2] != mask.shape:
        (ih, iw), (mh, mw) = image.shape[:2], mask.shape
        problems.append(Problem(pair.mask, f"image {pair.image.name} is {iw}x{ih} but mask is {mw}x{mh}; "
                                           "they must be the same size" + turned_hint((ih, iw), (mh, mw))))
    if problems:
        return PairResult(problems=tuple(problems))
    return PairResult(resize_image(image, size, image_resize), resize_mask(mask, size), mask.shape,
                       np.bincount(mask.ravel(), minlength=1).astype(np.int64))


def ids_problem(pair: Pair, histogram: np.ndarray, n_classes: int, ignore_index: int | None = None) -> Problem | None:
    """The problem with a mask whose histogram has ids >= n_classes other than ``ignore_index``
    (None if it has none)."""
    ids = ids_out_of_range(histogram, n_classes, ignore_index)
    if ids is None:
        return None
    return Problem(pair.mask, f"mask has ids {ids} but there are only {n_classes} classes (0-{n_classes - 1})")


def parallel_map(fn: Callable, items: list, workers: int) -> Iterator:
    """``map(fn, items)`` in order on a thread pool, at most ``2 * workers`` items ahead of the
    consumer, so memory stays bounded however many items there are (``Executor.map`` would submit
    them all at once and hold every finished result until it is consumed). Threads, not processes:
    Pillow's decoders and numpy release the GIL, and spawned processes each pay for importing torch
    (threads measured faster on the CARLA frames: docs/benchmarks.md)."""
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="pixelwise-decode")
    pending: deque = deque()
    todo = iter(items)
    try:
        for item in itertools.islice(todo, 2 * workers):
            pending.append(pool.submit(fn, item))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(todo, 1):  # keep the workers busy while the caller consumes
                pending.append(pool.submit(fn, item))
            yield result
    finally:  # on Ctrl-C or an error, drop the queued work instead of finishing it
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Table:
    """What decoding a pair list produced: rows ``0 … n-1`` of ``images``/``masks`` hold the pairs
    that decoded, in pair order (arrays may have spare rows after them); ``rows[i]`` is pair i's row,
    or -1 with the reason in ``problems[i]``. The id check against n_classes is not applied here."""

    images: np.ndarray  # (capacity, H, W, 3) uint8
    masks: np.ndarray  # (capacity, H, W) uint8
    rows: np.ndarray  # (pairs,) int64
    original_sizes: np.ndarray  # (n, 2) int64
    histograms: np.ndarray  # (n, K) int64: per-row pixel counts of ids 0 … K-1 at the original size
    problems: dict[int, tuple[Problem, ...]]
    build: str = ""  # the cache build the arrays belong to ("" in memory)
    checksums: np.ndarray | None = None  # (n, 2) uint32: each cached row's image and mask CRC-32 (None in memory)


class Reusable(Protocol):
    """Pairs decoded before, by key (the cache's previous build of the same dataset)."""

    def get(self, key: bytes) -> PairResult | None: ...


class PairDecoder:
    """``(pair, key) -> PairResult`` with the decode settings bound. A pair whose key is in
    ``previous`` (an earlier build of the same dataset) is copied from it instead of decoded."""

    def __init__(self, size: tuple[int, int], image_resize: str, previous: Reusable | None = None,
                 masks: MaskFormat | None = None) -> None:
        self.size, self.image_resize, self.previous, self.masks = size, image_resize, previous, masks

    def __call__(self, item: tuple[Pair, bytes | None]) -> PairResult:
        pair, key = item
        if self.previous is not None and key is not None:
            reused = self.previous.get(key)
            if reused is not None:
                return reused
        return decode_pair(pair, self.size, self.image_resize, self.masks)


def decode_into(put: Callable[[np.ndarray, np.ndarray], None], pairs: list[Pair], keys: list[bytes | None],
                 decode: PairDecoder, workers: int, progress: bool, n_classes: int | None = None,
                 ignore_index: int | None = None) -> dict:
    """Decode every pair in parallel, handing each good one to ``put(image, mask)`` in pair order as it
    arrives (nothing is held back, so memory does not grow with the dataset). With ``n_classes``,
    pairs with larger ids are left out here already. Returns the :class:`Table` fields but the arrays."""
    rows = np.full(len(pairs), -1, np.int64)
    sizes: list[tuple[int, int]] = []
    histograms: list[np.ndarray] = []
    problems: dict[int, tuple[Problem, ...]] = {}
    with warnings.catch_warnings(), tqdm(total=len(pairs), desc="decode", unit="pair",
                                         disable=None if progress else True) as bar:
        quiet_bomb_warnings()
        for i, result in enumerate(parallel_map(decode, list(zip(pairs, keys)), workers)):
            bar.update()
            if not result.problems and n_classes is not None:
                bad_ids = ids_problem(pairs[i], result.histogram, n_classes, ignore_index)
                result = PairResult(problems=(bad_ids,)) if bad_ids else result
            if result.problems:
                problems[i] = result.problems
                continue
            put(result.image, result.mask)
            rows[i] = len(sizes)
            sizes.append(result.original_size)
            used = np.flatnonzero(result.histogram)
            histograms.append(result.histogram[: used[-1] + 1 if used.size else 1])
    width = max((len(h) for h in histograms), default=1)
    table = np.zeros((len(histograms), width), np.int64)
    for r, h in enumerate(histograms):
        table[r, : len(h)] = h
    return {"rows": rows, "original_sizes": np.asarray(sizes, np.int64).reshape(-1, 2), "histograms": table,
            "problems": problems}


def decode_in_memory(pairs: list[Pair], decode: PairDecoder, workers: int, progress: bool,
                      n_classes: int, ignore_index: int | None = None) -> Table:
    h, w = decode.size
    images = np.empty((len(pairs), h, w, 3), np.uint8)  # untouched spare rows never take up memory
    masks = np.empty((len(pairs), h, w), np.uint8)
    count = itertools.count()

    def put(image: np.ndarray, mask: np.ndarray) -> None:
        k = next(count)
        images[k], masks[k] = image, mask

    fields = decode_into(put, pairs, [None] * len(pairs), decode, workers, progress, n_classes, ignore_index)
    return Table(images, masks, **fields)
