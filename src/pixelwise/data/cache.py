"""The on-disk cache of decoded datasets, memory-mapped so a dataset larger than RAM trains in
bounded memory, checked against every file's path, size and modification time.

One "slot" per (images folder, masks folder, size, resize mode) holds one build:
  <slot>.meta.npz               names, per-pair keys, rows, original sizes, per-row histograms, version,
                                the dataset key and the build id; written last, so it is the commit point
  <slot>.<build>.images.npy     (pairs, H, W, 3) uint8, memory-mapped when read
  <slot>.<build>.masks.npy      (pairs, H, W) uint8
  <slot>.<build>.<rows>.*.npy   the same without the rows a smaller n_classes excludes (made on demand)
A build id is new for each build, so the meta can never describe another build's arrays; files of
builds the meta does not name are deleted after each commit, so the disk holds one copy per slot.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from ..files import atomic_path, atomic_write
from .pairs import Pair
from .table import PairDecoder, PairResult, Table, decode_into

# Bump whenever what a cache entry holds or how it is computed changes: old entries then simply miss.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: $PIXELWISE_CACHE, else ~/.cache/pixelwise."""
    env = os.environ.get("PIXELWISE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pixelwise"


def open_array(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A cache array opened copy-on-write, after checking its dtype, shape and exact file size."""
    array = np.lib.format.open_memmap(path, mode="c")
    if array.dtype != np.uint8 or array.shape != shape or not array.flags.c_contiguous \
            or os.path.getsize(path) != array.offset + array.nbytes:
        raise ValueError(f"{path}: not the array the cache expects")
    return array


def new_array_file(path: Path, shape: tuple[int, ...]) -> BinaryIO:
    """Create a .npy file for ``shape`` uint8 (space reserved up front, so a full disk fails before any
    decoding) and return it open for writing rows, positioned at the first one.

    Rows are written through the file rather than through the mapping: pages written through a shared
    mapping count in this process's RSS until the whole file is unmapped; written to the file they
    live in the page cache only, and the build's resident memory stays that of a few pairs."""
    created = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = created.offset
    del created
    f = open(path, "r+b", buffering=1 << 20)  # noqa: SIM115 - returned to the caller, who closes it
    try:
        if hasattr(os, "posix_fallocate") and math.prod(shape):
            try:
                os.posix_fallocate(f.fileno(), offset, math.prod(shape))
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
        f.seek(offset)
    except BaseException:
        f.close()
        raise
    return f


class PreviousBuild:
    """An earlier build of a slot, whose rows a rebuild copies for the pairs that did not change."""

    def __init__(self, meta: dict, images: np.ndarray, masks: np.ndarray) -> None:
        self.images, self.masks = images, masks
        self.sizes, self.histograms = meta["original_sizes"], meta["histograms"]
        self.row_of = {bytes(k): int(r) for k, r in zip(meta["pair_keys"], meta["rows"]) if r >= 0}

    def get(self, key: bytes) -> PairResult | None:
        r = self.row_of.get(key)
        if r is None:
            return None
        return PairResult(np.array(self.images[r]), np.array(self.masks[r]),
                           tuple(int(v) for v in self.sizes[r]), self.histograms[r])


class Cache:
    """The cache slot of one dataset at one size and resize mode (its files: see the module docstring)."""

    def __init__(self, folder: Path, images_dir: Path, masks_dir: Path, size: tuple[int, int],
                 image_resize: str, settings: list | None = None) -> None:
        self.folder, self.size = folder, size
        where = [CACHE_VERSION, str(images_dir.resolve()), str(masks_dir.resolve()), list(size), image_resize]
        if settings:  # what else changes the decoded ids or the pairs: mask format, colour table, name suffixes
            where.append(settings)
        self.slot = hashlib.sha256(json.dumps(where).encode()).hexdigest()[:24]
        self.meta_path = folder / f"{self.slot}.meta.npz"
        self.common = where + [Image.MAX_IMAGE_PIXELS]  # a new pixel limit can change what decodes

    def keys(self, pairs: list[Pair]) -> tuple[list[bytes], str]:
        """One key per pair (file names, sizes, mtimes and the settings), and the dataset's key over them all."""
        keys = []
        for pair in pairs:
            parts: list[object] = [self.common]
            if pair.name != pair.image.stem:  # paired by relative path or suffix: two folders may hold one file name
                parts.append(pair.name)
            for path in (pair.image, pair.mask):
                try:
                    st = os.stat(path)
                    parts += [path.name, st.st_size, st.st_mtime_ns]
                except OSError:
                    parts += [path.name, None, None]  # vanished or unreadable: decoding reports it
            keys.append(hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).digest())
        return keys, hashlib.sha256(json.dumps(self.common).encode() + b"".join(keys)).hexdigest()

    def path(self, build: str, part: str, rows: str = "") -> Path:
        return self.folder / f"{self.slot}.{build}{'.' + rows if rows else ''}.{part}.npy"

    def _read_meta(self) -> dict | None:
        try:
            with open(self.meta_path, "rb") as f, np.load(f, allow_pickle=False) as z:
                meta = {name: z[name] for name in z.files}
            if int(meta["version"]) != CACHE_VERSION:
                return None
            meta["key"], meta["build"] = str(meta["key"]), str(meta["build"])
            n, pairs = len(meta["original_sizes"]), len(meta["rows"])
            valid = meta["rows"][meta["rows"] >= 0]
            ok = (meta["pair_keys"].shape == (pairs, 16) and meta["names"].shape == (pairs,)
                  and meta["original_sizes"].shape == (n, 2) and meta["histograms"].ndim == 2
                  and len(meta["histograms"]) == n and meta["histograms"].shape[1] >= 1
                  and np.array_equal(valid, np.arange(n)) and re.fullmatch(r"[0-9a-f]{16}", meta["build"]))
            return meta if ok else None
        except Exception:  # missing, truncated, corrupt or foreign: a miss, never an error
            return None

    def _open(self, build: str, n: int, rows: str = "") -> tuple[np.ndarray, np.ndarray] | None:
        """The images and masks files of a build (or of one of its row subsets), or None if either is
        missing, truncated, overlong or not the expected array."""
        h, w = self.size
        try:
            return (open_array(self.path(build, "images", rows), (n, h, w, 3)),
                    open_array(self.path(build, "masks", rows), (n, h, w)))
        except Exception:
            return None

    def load(self, pairs: list[Pair], key: str) -> Table | None:
        """The cached table for exactly these pairs, or None (a miss)."""
        for _ in range(2):  # a concurrent build may replace the files between reading the meta and opening them
            meta = self._read_meta()
            if meta is None or meta["key"] != key or meta["names"].tolist() != [p.name for p in pairs]:
                return None
            arrays = self._open(meta["build"], len(meta["rows"]))
            if arrays is not None:
                return Table(*arrays, meta["rows"], meta["original_sizes"], meta["histograms"], {}, meta["build"])
        return None

    def previous(self) -> PreviousBuild | None:
        """Whatever valid build the slot holds now, for its unchanged rows."""
        meta = self._read_meta()
        arrays = self._open(meta["build"], len(meta["rows"])) if meta is not None else None
        return PreviousBuild(meta, *arrays) if arrays is not None else None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Only one process builds a slot at a time (e.g. the ranks of a torchrun job); the others wait and
        then find it built. Released by the OS if the holder dies. Best effort: no lock where flock is missing."""
        try:
            import fcntl
            f = open(self.folder / f"{self.slot}.lock", "a+b")  # noqa: SIM115
        except (ImportError, OSError):
            yield
            return
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            except OSError:
                pass
            yield  # closing the file releases the lock

    def build(self, pairs: list[Pair], keys: list[bytes], key: str, decode: PairDecoder, workers: int,
              progress: bool) -> Table:
        """Decode into new files (reusing the rows of the previous build whose pair is unchanged), move
        them into place, then commit by replacing the meta. Raises OSError if the cache cannot be written."""
        build = secrets.token_hex(8)
        decode.previous = self.previous()
        try:
            return self._build(build, pairs, keys, key, decode, workers, progress)
        finally:
            decode.previous = None  # let its mappings go

    def _build(self, build: str, pairs: list[Pair], keys: list[bytes], key: str, decode: PairDecoder, workers: int,
               progress: bool) -> Table:
        h, w = self.size
        with atomic_path(self.path(build, "images")) as images_tmp, atomic_path(self.path(build, "masks")) as masks_tmp:
            with new_array_file(images_tmp, (len(pairs), h, w, 3)) as images_file, \
                    new_array_file(masks_tmp, (len(pairs), h, w)) as masks_file:
                def put(image: np.ndarray, mask: np.ndarray) -> None:
                    images_file.write(np.ascontiguousarray(image).data)
                    masks_file.write(np.ascontiguousarray(mask).data)

                fields = decode_into(put, pairs, keys, decode, workers, progress)
            decode.previous = None
            # Mapped before the rename, so a concurrent build's clean-up cannot take them away from us.
            table = Table(open_array(images_tmp, (len(pairs), h, w, 3)), open_array(masks_tmp, (len(pairs), h, w)),
                           **fields, build=build)

        def write_meta(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, version=np.asarray(CACHE_VERSION), key=np.asarray(key),
                                    build=np.asarray(build), names=np.asarray([p.name for p in pairs], dtype=str),
                                    pair_keys=np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), 16),
                                    rows=table.rows, original_sizes=table.original_sizes, histograms=table.histograms)

        atomic_write(self.meta_path, write_meta)
        self._clean(build)
        return table

    def subset(self, table: Table, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows ``keep`` as memory-mapped arrays of their own, made once from the build's (no decoding)
        and kept beside it. Raises OSError if they cannot be written."""
        h, w = self.size
        rows = hashlib.blake2b(keep.astype("<i8").tobytes(), digest_size=8).hexdigest()
        made = self._open(table.build, len(keep), rows)
        if made is not None:
            return made
        arrays = []
        shapes = {"images": (len(keep), h, w, 3), "masks": (len(keep), h, w)}
        for (part, shape), source in zip(shapes.items(), (table.images, table.masks)):
            with atomic_path(self.path(table.build, part, rows)) as tmp:
                f = new_array_file(tmp, shape)
                with f:
                    for start in range(0, len(keep), 256):
                        f.write(np.ascontiguousarray(source[keep[start:start + 256]]).data)
                arrays.append(open_array(tmp, shape))
        return tuple(arrays)

    def _clean(self, build: str) -> None:
        """Delete what no valid cache uses: other builds of this slot, temporary files of builds that
        died more than an hour ago, and the legacy per-pair `.npz` entries of earlier pixelwise builds."""
        old = time.time() - 3600
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return
        for entry in entries:
            name = entry.name
            try:
                other_build = name.startswith(f"{self.slot}.") and name.endswith(".npy") and name.split(".")[1] != build
                dead_temporary = name.startswith(f".{self.slot}.") and ".tmp" in name and entry.stat().st_mtime < old
                if other_build or dead_temporary or re.fullmatch(r"[0-9a-f]{40}\.npz", name):
                    os.unlink(entry.path)
            except OSError:
                pass
