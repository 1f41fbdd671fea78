"""data/cache.py, data/table.py and data/dataset.py: the memory-mapped cache, rebuilt only where
needed, never half-written, shared safely; parallel decoding."""

from __future__ import annotations

import os
import signal
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.data import cache as cache_module
from pixelwise.data import dataset, table
from pixelwise.data import pairs as pairs_module
from pixelwise.data.dataset import decode_dataset
from pixelwise.data.pairs import find_pairs
from pixelwise.data.resize import resize_mask

H, W = 12, 16  # original size of the synthetic frames
from data_files import SIZE, decode, frame, make_dataset, rgba_mask, save

# ----------------------------------------------------------------------------------------------- cache


# Whether the cache answered is which image files were opened: these watch Pillow's Image.open itself
# (third-party, the one place every decode passes), since nothing of pixelwise's own should report it.
def forbid_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image file was opened although the cache should have answered")
    monkeypatch.setattr(Image, "open", refuse)


def count_decoding(monkeypatch) -> list[str]:
    """Names of the image and mask files opened from now on."""
    opened: list[str] = []
    real_open = Image.open

    def spy(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    return opened


def cache_files(cache: Path) -> dict[str, list[str]]:
    names = sorted(p.name for p in cache.iterdir())
    return {"meta": [n for n in names if n.endswith(".meta.npz")], "npy": [n for n in names if n.endswith(".npy")],
            "other": [n for n in names if not n.endswith((".meta.npz", ".npy", ".lock"))]}


def assert_same(a: dataset.Decoded, b: dataset.Decoded) -> None:
    assert a.names == b.names and a.skipped == b.skipped and a.original_sizes == b.original_sizes
    assert [str(p) for p in a.problems] == [str(p) for p in b.problems]
    assert np.array_equal(a.histogram, b.histogram) and a.histogram.dtype == b.histogram.dtype
    for x, y in ((a.images, b.images), (a.masks, b.masks)):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def test_cache_hit_opens_no_image_file(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3"])
    cache = tmp_path / "cache"
    first = decode(images, masks, cache_dir=cache)
    files = cache_files(cache)  # one consolidated copy: a meta, an images and a masks file
    assert len(files["meta"]) == 1 and len(files["npy"]) == 2 and files["other"] == []
    forbid_decoding(monkeypatch)
    again = decode(images, masks, cache_dir=cache)
    assert again.problems == [] and again.names == ["1", "2", "3"]
    assert_same(again, first)
    # n_classes is not in the key: the id check runs on the cached histograms
    fewer = decode(images, masks, cache_dir=cache, n_classes=3)
    assert fewer.names == [] and len(fewer.problems) == 3 and fewer.images.shape == (0, *SIZE, 3)
    assert all("but there are only 3 classes (0-2)" in p.message for p in fewer.problems)


def test_cached_arrays_are_memmaps_identical_to_the_uncached_decode(tmp_path):
    torch = pytest.importorskip("torch")
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3", "4"])
    save(images / "3.png", frame(2, 24, 32)[0])  # another original size
    save(masks / "3.png", rgba_mask(frame(2, 24, 32)[1]))
    (masks / "2.png").write_bytes(b"")  # one bad pair, so the arrays have a spare row
    plain = decode(images, masks)
    assert not isinstance(plain.images, np.memmap) and plain.names == ["1", "3", "4"]
    cache = tmp_path / "cache"
    cold, warm = decode(images, masks, cache_dir=cache), decode(images, masks, cache_dir=cache)
    for cached in (cold, warm):
        assert_same(cached, plain)
        assert isinstance(cached.images, np.memmap) and isinstance(cached.masks, np.memmap)
        assert cached.images.flags.writeable and cached.masks.flags.writeable  # copy-on-write: torch takes them as is
        batch = cached.images[np.array([2, 0])]  # what the training loop does: copies just the batch
        assert type(batch) is np.ndarray and np.array_equal(batch, plain.images[[2, 0]])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # copy-on-write maps are writable: torch has nothing to warn about
            tensor = torch.from_numpy(cached.images)
            assert torch.equal(tensor[[1, 2]], torch.from_numpy(plain.images[[1, 2]]))
            torch.from_numpy(cached.masks)
    warm.images[0] = 0  # a private copy of that page: the cache file is untouched
    assert np.array_equal(decode(images, masks, cache_dir=cache).images, plain.images)


def test_a_datasets_second_decode_reads_no_png(tmp_path, monkeypatch):
    from pixelwise.synth import write_dataset
    root = write_dataset(tmp_path / "scenes", 6, seed=3, height=48, width=64, progress=False)
    cache = tmp_path / "cache"
    kwargs = {"size": (12, 16), "n_classes": 23, "cache_dir": cache}
    first = decode(root / pairs_module.IMAGE_DIR, root / pairs_module.MASK_DIR, **kwargs)
    assert len(first.names) == 6 and first.problems == []
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    second = decode(root / pairs_module.IMAGE_DIR, root / pairs_module.MASK_DIR, **kwargs)
    assert opened == [] and isinstance(second.images, np.memmap)
    assert_same(second, first)


def test_changing_n_classes_excludes_pairs_without_decoding(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3", "4", "5"])
    for name in ("2", "4", "5"):
        ids = frame(int(name) - 1)[1]
        ids[0, 0] = 6 if name != "5" else 5
        save(masks / f"{name}.png", rgba_mask(ids))
    cache = tmp_path / "cache"
    every = decode(images, masks, cache_dir=cache, n_classes=7)
    assert every.names == ["1", "2", "3", "4", "5"] and every.histogram.shape == (7,) and every.histogram[6] == 2
    expected = {n: decode(images, masks, n_classes=n) for n in (5, 6)}
    forbid_decoding(monkeypatch)
    fewer = decode(images, masks, cache_dir=cache, n_classes=5)  # "2" and "4" hold id 6, "5" holds id 5
    assert fewer.names == ["1", "3"] and fewer.skipped == ["2", "4", "5"]
    assert [p.path.name for p in fewer.problems] == ["2.png", "4.png", "5.png"]
    assert all(f"mask has ids {i} but there are only 5 classes (0-4)" in p.message
               for i, p in zip((6, 6, 5), fewer.problems))
    assert_same(fewer, expected[5])
    # rows 0 and 2 are no slice: they get memory-mapped files of their own, made once from the cache
    assert isinstance(fewer.images, np.memmap) and isinstance(fewer.masks, np.memmap)
    assert len(cache_files(cache)["npy"]) == 4
    assert_same(decode(images, masks, cache_dir=cache, n_classes=5), fewer)
    assert len(cache_files(cache)["npy"]) == 4
    # a run of rows is a view of the cached arrays: no new file, no copy
    monkeypatch.undo()
    for name in ("2", "4"):
        (images / f"{name}.png").unlink()
        (masks / f"{name}.png").unlink()
    expected = decode(images, masks, n_classes=5)
    opened = count_decoding(monkeypatch)
    decode(images, masks, cache_dir=cache, n_classes=7)  # rebuilt from the previous build's rows
    assert opened == []
    files = cache_files(cache)["npy"]
    head = decode(images, masks, cache_dir=cache, n_classes=5)  # "5" (id 5) is out: rows 0 and 1 are left
    assert head.names == ["1", "3"] and isinstance(head.images, np.memmap) and opened == []
    assert cache_files(cache)["npy"] == files and len(files) == 2 and Path(head.images.filename).name in files
    assert_same(head, expected)


def test_cache_rebuilds_only_what_changed(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3"])
    cache = tmp_path / "cache"
    first = decode(images, masks, cache_dir=cache)
    ids = np.full((H, W), 4, np.uint8)
    save(masks / "2.png", rgba_mask(ids))
    stat = (masks / "2.png").stat()
    os.utime(masks / "2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse clocks: make sure
    image, more = frame(9)
    save(images / "4.png", image)
    save(masks / "4.png", rgba_mask(more))
    opened = count_decoding(monkeypatch)
    changed = decode(images, masks, cache_dir=cache)
    assert sorted(opened) == ["2.png", "2.png", "4.png", "4.png"]  # "1" and "3" were copied from the old build
    assert changed.names == ["1", "2", "3", "4"] and (changed.masks[1] == 4).all()
    assert np.array_equal(changed.images[[0, 2]], first.images[[0, 2]]) and np.array_equal(changed.masks[3], resize_mask(more, SIZE))
    files = cache_files(cache)
    assert len(files["meta"]) == 1 and len(files["npy"]) == 2 and files["other"] == []  # the old build is gone
    uncached = decode(images, masks)
    assert_same(changed, uncached)


def test_cache_slots_per_size_and_resize_mode(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path / "set", ["1", "2"])
    cache = tmp_path / "cache"
    decode(images, masks, cache_dir=cache)
    other_size = decode(images, masks, cache_dir=cache, size=(3, 4))
    assert other_size.images.shape == (2, 3, 4, 3)
    area = decode(images, masks, cache_dir=cache, image_resize="area")
    assert not np.array_equal(area.images, decode(images, masks).images)
    assert len(cache_files(cache)["meta"]) == 3 and len(cache_files(cache)["npy"]) == 6
    forbid_decoding(monkeypatch)
    assert np.array_equal(decode(images, masks, cache_dir=cache, image_resize="area").images, area.images)
    assert decode(images, masks, cache_dir=cache, size=(3, 4)).images.shape == (2, 3, 4, 3)


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


CORRUPTIONS = {
    "meta garbage": lambda meta, npy: meta.write_bytes(b"not a zip file"),
    "meta truncated": lambda meta, npy: truncate(meta, 100),
    "meta missing": lambda meta, npy: meta.unlink(),
    "images truncated": lambda meta, npy: truncate(npy["images"], npy["images"].stat().st_size - 1),
    "masks header only": lambda meta, npy: truncate(npy["masks"], 128),
    "images header garbage": lambda meta, npy: npy["images"].write_bytes(b"\x93NUMPY" + os.urandom(200)),
    "masks longer": lambda meta, npy: npy["masks"].write_bytes(npy["masks"].read_bytes() + b"\0" * 64),
    "images empty": lambda meta, npy: npy["images"].write_bytes(b""),
    "masks missing": lambda meta, npy: npy["masks"].unlink(),
    "images of another shape": lambda meta, npy: np.save(npy["images"], np.zeros((2, 3, 4, 3), np.uint8)),
    "meta of other code": lambda meta, npy: np.savez(meta, **{**dict(np.load(meta)), "code": np.asarray("0" * 32)}),
    "meta without checksums": lambda meta, npy: np.savez(meta, **{k: v for k, v in np.load(meta).items() if k != "checksums"}),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_or_truncated_cache_is_rebuilt(tmp_path, monkeypatch, corruption):
    images, masks = make_dataset(tmp_path / "set", ["1", "2"])
    cache = tmp_path / "cache"
    decode(images, masks, cache_dir=cache)
    first = decode(images, masks)  # not a map of the files about to be damaged in place (reading it would SIGBUS)
    meta = next(cache.glob("*.meta.npz"))
    npy = {part: next(cache.glob(f"*.{part}.npy")) for part in ("images", "masks")}
    CORRUPTIONS[corruption](meta, npy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a miss, never an error nor a warning
        recovered = decode(images, masks, cache_dir=cache)
    assert_same(recovered, first)
    forbid_decoding(monkeypatch)
    assert_same(decode(images, masks, cache_dir=cache), first)
    assert len(cache_files(cache)["npy"]) == 2


class InterruptedDecoder(table.PairDecoder):
    """Decodes as a build does, until a Ctrl-C arrives while pair "3" is decoded."""

    def __call__(self, item):
        if item[0].name == "3":
            raise KeyboardInterrupt
        return super().__call__(item)


def test_an_interrupted_build_leaves_nothing_that_looks_valid(tmp_path):
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3", "4"])
    cache = tmp_path / "cache"
    cache.mkdir()
    slot = cache_module.Cache(cache, images, masks, SIZE, "nearest")  # the slot decode(…, cache_dir=cache) uses
    pairs, _ = find_pairs(images, masks)
    with pytest.raises(KeyboardInterrupt):
        slot.build(pairs, *slot.keys(pairs), InterruptedDecoder(SIZE, "nearest"), workers=2, progress=False)
    assert cache_files(cache) == {"meta": [], "npy": [], "other": []}
    # what a SIGKILL leaves: a temporary file, removed by the next build once it is an hour old
    stale = cache / f".{'0' * 24}.x.images.npy.abc.tmp.npy"
    stale.write_bytes(b"half")
    slot = slot.slot
    stale = stale.rename(cache / f".{slot}.0123456789abcdef.images.npy.abc.tmp.npy")
    fresh = cache / f".{slot}.0123456789abcdef.masks.npy.abc.tmp.npy"
    fresh.write_bytes(b"another process is writing this")
    os.utime(stale, (0, 0))
    assert decode(images, masks, cache_dir=cache).names == ["1", "2", "3", "4"]
    assert not stale.exists() and fresh.exists()


def test_problems_are_found_with_a_cache_too(tmp_path):
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3"])
    (images / "2.png").write_bytes(b"")
    good = (images / "3.png").read_bytes()
    (images / "3.png").write_bytes(b"\0" * len(good))  # same size as the good file
    stat = (images / "3.png").stat()
    cache = tmp_path / "cache"
    for _ in range(2):
        decoded = decode(images, masks, cache_dir=cache)
        assert decoded.names == ["1"] and decoded.skipped == ["2", "3"]
        assert "empty file" in decoded.problems[0].message and "not an image file" in decoded.problems[1].message
    # failed pairs are tried again on a hit: one that reads now (same size, same mtime) makes the cache stale
    (images / "3.png").write_bytes(good)
    os.utime(images / "3.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    fixed = decode(images, masks, cache_dir=cache)
    assert fixed.names == ["1", "3"] and len(fixed.problems) == 1
    assert_same(fixed, decode(images, masks))


@contextmanager
def file_size_limit(limit: int):
    """A real limit on the size of the files this process writes (``ulimit -f``): a write past it fails
    with EFBIG, as a full disk fails with ENOSPC, in the middle of a cache build."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write(), not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_an_unwritable_cache_warns_and_decodes_into_memory(tmp_path):
    images, masks = make_dataset(tmp_path / "set", ["1", "2"])
    cache = tmp_path / "cache"
    cache.mkdir()
    # The decoded images (2 x 6 x 8 x 3 bytes and a .npy header) do not fit in 300 bytes; the lock file does.
    with file_size_limit(300), \
            pytest.warns(UserWarning, match="cannot use the decode cache .File too large.; decoding without it"):
        decoded = decode(images, masks, cache_dir=cache)
    assert not isinstance(decoded.images, np.memmap)
    assert_same(decoded, decode(images, masks))
    assert cache_files(tmp_path / "cache")["npy"] == []


def test_concurrent_decodes_build_the_cache_once(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3"])
    cache = tmp_path / "cache"
    opened = count_decoding(monkeypatch)
    with ThreadPoolExecutor(2) as pool:  # like two torchrun ranks: the second waits for the first's build
        results = list(pool.map(lambda _: decode(images, masks, cache_dir=cache, workers=1), range(2)))
    assert len(opened) == 6 and results[0].names == results[1].names == ["1", "2", "3"]
    assert_same(results[0], results[1])
    assert len(cache_files(cache)["npy"]) == 2


def test_version_1_entries_are_dropped(tmp_path):
    images, masks = make_dataset(tmp_path / "set", ["1"])
    cache = tmp_path / "cache"
    cache.mkdir()
    legacy = cache / f"{'ab' * 20}.npz"
    legacy.write_bytes(b"an old per-pair entry")
    decode(images, masks, cache_dir=cache)
    assert not legacy.exists()


def test_parallel_map_streams_in_order_with_bounded_lookahead():
    import threading
    import time
    started, consumed, ahead = [0], [0], []
    lock = threading.Lock()

    def work(x):
        with lock:
            started[0] += 1
            ahead.append(started[0] - consumed[0])
        return x * x

    out = []
    for y in table.parallel_map(work, list(range(40)), 2):
        time.sleep(0.002)  # a slow consumer
        consumed[0] += 1
        out.append(y)
    assert out == [x * x for x in range(40)] and max(ahead) <= 2 * 2 + 1


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "c"))
    assert cache_module.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PIXELWISE_CACHE")
    assert cache_module.default_cache_dir() == Path.home() / ".cache" / "pixelwise"


def test_no_decompression_warning_escapes_decode(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path, ["1", "2"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", H * W - 1)  # just over: Pillow would only warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = decode(images, masks)
    assert decoded.names == [] and len(decoded.problems) == 4
    assert all("larger than the limit" in p.message for p in decoded.problems)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
def test_decoders_default_to_the_cores_this_process_may_use(tmp_path, monkeypatch):
    from pixelwise import device

    images, masks = make_dataset(tmp_path, ["000001", "000002"])
    threads: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: threads.append(threading.current_thread().name)
                        or real_open(*a, **k))
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # what taskset -c N does: one core, whatever os.cpu_count() says
    try:
        assert device.usable_cores() == 1
        decode_dataset(images, masks, size=SIZE, n_classes=5, progress=False)
    finally:
        os.sched_setaffinity(0, allowed)
    assert threads == [threading.current_thread().name] * 4  # one core: decoded here, no pool of threads
    if len(allowed) > 1:
        threads.clear()
        decode_dataset(images, masks, size=SIZE, n_classes=5, progress=False)
        assert all(name.startswith("pixelwise-decode") for name in threads)
