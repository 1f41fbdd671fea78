"""The on-disk cache of decoded datasets, memory-mapped so a dataset larger than RAM trains in
bounded memory, keyed by every file's path, size and modification time, by the decoding settings and
by the decoding code itself, and checked row by row against checksums whenever it is opened.

One "slot" per (images folder, masks folder, size, resize mode) holds one build:
  <slot>.meta.npz               names, per-pair keys, rows, original sizes, per-row histograms and
                                checksums, the decoding code's fingerprint, the dataset key and the build
                                id; written last, so it is the commit point (a zip: damage to it fails
                                its own CRC, and the cache misses)
  <slot>.<build>.images.npy     (pairs, H, W, 3) uint8, memory-mapped when read
  <slot>.<build>.masks.npy      (pairs, H, W) uint8
  <slot>.<build>.<rows>.*.npy   the same without the rows a smaller n_classes excludes (made on demand)
A build id is new for each build, so the meta can never describe another build's arrays; files of
builds the meta does not name are deleted after each commit, so the disk holds one copy per slot.

No version number to remember: the key holds :func:`decoding_fingerprint`, a hash of the modules that
turn files into rows, so any change to how masks or images are decoded misses every older entry. Rows
whose bytes no longer match their CRC-32 (bit rot, a stray write) are decoded again, with a warning
naming the cache file and the dataset.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib
import json
import math
import os
import re
import secrets
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

import numpy as np
import PIL
from PIL import Image

from ..files import atomic_path, atomic_write
from .pairs import Pair
from .table import PairDecoder, PairResult, Table, decode_into

# Part of the slot's name since the first cache format, kept so that caches made before the code
# fingerprint are replaced by the next build instead of left behind. Never bumped: the key changes itself.
_SLOT_SCHEME = 1
# The modules of this package whose code decides what a cache entry holds.
DECODING_MODULES = ("decode", "colors", "orientation", "resize", "table", "cache")


def decoding_fingerprint(modules: tuple[ModuleType, ...] | None = None) -> str:
    """A hash of the code that turns a pair of files into cached rows, so a change to it misses the cache.

    Args:
        modules: the modules whose files are hashed; by default decode, colors, orientation, resize,
            table and this one (the layout of an entry), with the Pillow and numpy versions beside them.

    Returns:
        A hex digest that changes whenever one of those files does (a docstring edit included: a
        needless rebuild costs a decode, a stale entry a wrong training).
    """
    if modules is None:
        modules = tuple(importlib.import_module(f"{__package__}.{name}") for name in DECODING_MODULES)
    return _fingerprint(tuple(m.__file__ for m in modules))


@functools.lru_cache(maxsize=4)
def _fingerprint(files: tuple[str, ...]) -> str:
    digest = hashlib.sha256(f"Pillow {PIL.__version__} numpy {np.__version__}".encode())
    for file in files:
        digest.update(Path(file).read_bytes())  # the source, or the compiled code where no source ships
    return digest.hexdigest()[:32]


def damaged_rows(path: Path, expected: np.ndarray, chunk: int = 16 << 20) -> list[int]:
    """The first ``len(expected)`` rows of a cache array file whose bytes do not match ``expected`` (their
    CRC-32s, the fastest check measured: docs/benchmarks.md), read through the file in chunks of about ``chunk`` bytes (so checking a cache larger than
    RAM takes no more memory; spare rows after them, left by pairs that failed, hold nothing to check).

    Args:
        path: a ``.npy`` file of at least ``len(expected)`` rows (its header and size checked already).
        expected: uint32 (n,) checksums, one per row.
        chunk: bytes read at a time (rounded to whole rows).

    Returns:
        Indices of the rows that do not match, ascending.

    Raises:
        OSError: if the file cannot be read.
    """
    n = len(expected)
    if not n:
        return []
    array = np.lib.format.open_memmap(path, mode="r")
    offset, row_bytes = array.offset, array.nbytes // len(array) if len(array) >= n else 0
    del array
    if not row_bytes:
        return list(range(n))  # fewer rows than checksums: nothing here can be trusted
    bad: list[int] = []
    per_read = max(1, chunk // row_bytes)
    buffer = memoryview(bytearray(per_read * row_bytes))
    with open(path, "rb") as f:
        f.seek(offset)
        for start in range(0, n, per_read):
            k = min(per_read, n - start)
            got = f.readinto(buffer[:k * row_bytes]) or 0
            for i in range(k):
                row = buffer[i * row_bytes:(i + 1) * row_bytes]
                if (i + 1) * row_bytes > got or zlib.crc32(row) != expected[start + i]:
                    bad.append(start + i)
    return bad


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
    """An earlier build of a slot, whose rows a rebuild copies for the pairs that did not change (but
    never its ``damaged`` rows)."""

    def __init__(self, meta: dict, images: np.ndarray, masks: np.ndarray,
                 damaged: frozenset[int] = frozenset()) -> None:
        self.images, self.masks = images, masks
        self.sizes, self.histograms = meta["original_sizes"], meta["histograms"]
        self.row_of = {bytes(k): int(r) for k, r in zip(meta["pair_keys"], meta["rows"])
                       if r >= 0 and int(r) not in damaged}

    def get(self, key: bytes) -> PairResult | None:
        r = self.row_of.get(key)
        if r is None:
            return None
        return PairResult(np.array(self.images[r]), np.array(self.masks[r]),
                           tuple(int(v) for v in self.sizes[r]), self.histograms[r])


class Cache:
    """The cache slot of one dataset at one size and resize mode (its files: see the module docstring)."""

    def __init__(self, folder: Path, images_dir: Path, masks_dir: Path, size: tuple[int, int],
                 image_resize: str, settings: list | None = None, code: str | None = None) -> None:
        """``settings``: what else changes the decoded ids or the pairs (mask format, colour table, name
        suffixes); ``code``: the decoding code's fingerprint (:func:`decoding_fingerprint` by default)."""
        self.folder, self.size, self.dataset = folder, size, (images_dir, masks_dir)
        where = [_SLOT_SCHEME, str(images_dir.resolve()), str(masks_dir.resolve()), list(size), image_resize]
        if settings:
            where.append(settings)
        self.slot = hashlib.sha256(json.dumps(where).encode()).hexdigest()[:24]
        self.meta_path = folder / f"{self.slot}.meta.npz"
        self.code = decoding_fingerprint() if code is None else code
        self.common = where + [Image.MAX_IMAGE_PIXELS, self.code]  # a new pixel limit can change what decodes
        self._damaged: dict[str, frozenset[int]] = {}  # per build: its rows that failed their checksums

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
            if str(meta["code"]) != self.code:
                return None  # made by other decoding code: nothing in it can be reused
            meta["key"], meta["build"] = str(meta["key"]), str(meta["build"])
            n, pairs = len(meta["original_sizes"]), len(meta["rows"])
            valid = meta["rows"][meta["rows"] >= 0]
            ok = (meta["pair_keys"].shape == (pairs, 16) and meta["names"].shape == (pairs,)
                  and meta["checksums"].shape == (n, 2) and meta["checksums"].dtype == np.uint32
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
        """The cached table for exactly these pairs, or None (a miss, also when a row fails its checksum)."""
        for _ in range(2):  # a concurrent build may replace the files between reading the meta and opening them
            meta = self._read_meta()
            if meta is None or meta["key"] != key or meta["names"].tolist() != [p.name for p in pairs]:
                return None
            arrays = self._open(meta["build"], len(meta["rows"]))
            if arrays is not None:
                if self.damaged(meta):
                    return None
                return Table(*arrays, meta["rows"], meta["original_sizes"], meta["histograms"], {}, meta["build"],
                             meta["checksums"])
        return None

    def previous(self) -> PreviousBuild | None:
        """Whatever valid build the slot holds now, for its unchanged rows whose checksums hold."""
        meta = self._read_meta()
        arrays = self._open(meta["build"], len(meta["rows"])) if meta is not None else None
        return PreviousBuild(meta, *arrays, self.damaged(meta)) if arrays is not None else None

    def damaged(self, meta: dict, rows: str = "", keep: np.ndarray | None = None) -> frozenset[int]:
        """The rows of a build whose images or masks no longer match their checksums, read once per build
        and warned about (one line naming the cache files and the dataset).

        Args:
            meta: the build's meta (its ``build`` id and ``checksums``, (n, 2) uint32).
            rows: the name of a row subset of the build to check instead (see :meth:`subset`).
            keep: with ``rows``, the build's rows that subset holds.

        Returns:
            The damaged rows' indices (all of them for a file that cannot be read or was replaced).
        """
        checked = f"{meta['build']}.{rows}"
        if checked not in self._damaged:
            sums = meta["checksums"] if keep is None else meta["checksums"][keep]
            files = [self.path(meta["build"], part, rows) for part in ("images", "masks")]
            bad: set[int] = set()
            hit = []
            for column, path in enumerate(files):
                try:
                    found = damaged_rows(path, sums[:, column])
                except FileNotFoundError:  # replaced by a concurrent build since: not damage, but not usable
                    bad.update(range(len(sums)))
                    continue
                except (OSError, ValueError):
                    found = list(range(len(sums)))
                bad.update(found)
                hit += [path] * bool(found)
            if hit:
                images_dir, masks_dir = self.dataset
                warnings.warn(f"{', '.join(map(str, hit))}: {len(bad)} of {len(sums)} cached pairs do not match "
                              f"their checksums (a damaged decode cache of {images_dir} and {masks_dir}); "
                              "decoding them again", stacklevel=4)
            self._damaged[checked] = frozenset(bad)
        return self._damaged[checked]

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
            sums: list[tuple[int, int]] = []
            with new_array_file(images_tmp, (len(pairs), h, w, 3)) as images_file, \
                    new_array_file(masks_tmp, (len(pairs), h, w)) as masks_file:
                def put(image: np.ndarray, mask: np.ndarray) -> None:
                    image, mask = np.ascontiguousarray(image).data, np.ascontiguousarray(mask).data
                    images_file.write(image)
                    masks_file.write(mask)
                    sums.append((zlib.crc32(image), zlib.crc32(mask)))

                fields = decode_into(put, pairs, keys, decode, workers, progress)
            decode.previous = None
            # Mapped before the rename, so a concurrent build's clean-up cannot take them away from us.
            table = Table(open_array(images_tmp, (len(pairs), h, w, 3)), open_array(masks_tmp, (len(pairs), h, w)),
                           **fields, build=build, checksums=np.asarray(sums, np.uint32).reshape(-1, 2))

        def write_meta(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, code=np.asarray(self.code), key=np.asarray(key), build=np.asarray(build),
                                    names=np.asarray([p.name for p in pairs], dtype=str),
                                    pair_keys=np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), 16),
                                    rows=table.rows, original_sizes=table.original_sizes, histograms=table.histograms,
                                    checksums=table.checksums)

        atomic_write(self.meta_path, write_meta)
        self._clean(build)
        return table

    def subset(self, table: Table, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows ``keep`` as memory-mapped arrays of their own, made once from the build's (no decoding)
        and kept beside it, made again if their checksums fail. Raises OSError if they cannot be written."""
        h, w = self.size
        rows = hashlib.blake2b(keep.astype("<i8").tobytes(), digest_size=8).hexdigest()
        made = self._open(table.build, len(keep), rows)
        if made is not None and not self.damaged({"build": table.build, "checksums": table.checksums}, rows, keep):
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
