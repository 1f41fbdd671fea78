"""A decode cache that cannot lie: every cached row is checked against its checksum when a run opens
the cache (rows that fail are decoded again, and a warning names the file and the dataset), ids out of
range are a named problem, and a change to the decoding code misses every older entry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from pixelwise.data.cache import Cache, damaged_rows, decoding_fingerprint
from pixelwise.data.pairs import find_pairs

from data_files import SIZE, decode, frame, make_dataset, rgba_mask, save
from test_cache import assert_same, count_decoding, forbid_decoding


def garble(path: Path, rows: slice | None = None, value: int | None = None) -> None:
    """Overwrite the data bytes of a cached ``.npy`` array in place, its header intact: with ``value``
    (every byte), else with random bytes; all rows or just ``rows``."""
    array = np.lib.format.open_memmap(path, mode="r")
    offset, n, row_bytes = array.offset, len(array), array.nbytes // len(array)
    del array
    start, stop, _ = (rows or slice(None)).indices(n)
    size = (stop - start) * row_bytes
    noise = np.random.default_rng(1).integers(0, 256, size, np.uint8).tobytes()
    data = bytes([value]) * size if value is not None else noise
    with open(path, "r+b") as f:  # in place, never truncated: a map of the file elsewhere keeps its pages
        f.seek(offset + start * row_bytes)
        f.write(data)


def cached(cache: Path, part: str) -> Path:
    return next(p for p in cache.glob(f"*.{part}.npy") if p.name.count(".") == 3)


@pytest.mark.parametrize("part", ["images", "masks"])
def test_garbled_cached_arrays_are_decoded_again_with_a_message(tmp_path, monkeypatch, part):
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3"])
    cache = tmp_path / "cache"
    decode(images, masks, cache_dir=cache)
    fresh = decode(images, masks)  # in memory: no map of the files about to be garbled
    path = cached(cache, part)
    garble(path, value=250)  # masks of 250s: ids far beyond the classes, what once stopped training with an IndexError
    with pytest.warns(UserWarning) as caught:
        again = decode(images, masks, cache_dir=cache)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert str(path) in messages[0] and "3 of 3 cached pairs do not match their checksums" in messages[0]
    assert f"damaged decode cache of {images} and {masks}" in messages[0]
    assert_same(again, fresh)
    forbid_decoding(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next run trusts it without a word
        assert_same(decode(images, masks, cache_dir=cache), fresh)


def test_garbled_bytes_of_one_pair_decode_that_pair_again(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3", "4"])
    cache = tmp_path / "cache"
    decode(images, masks, cache_dir=cache)
    fresh = decode(images, masks)
    garble(cached(cache, "images"), rows=slice(2, 3))  # random bytes: noise a training would take for a frame
    opened = count_decoding(monkeypatch)
    with pytest.warns(UserWarning, match="1 of 4 cached pairs do not match their checksums"):
        again = decode(images, masks, cache_dir=cache)
    assert sorted(opened) == ["3.png", "3.png"]  # the other pairs' rows were sound and copied
    assert_same(again, fresh)


def test_a_garbled_row_subset_is_made_again(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3"])
    ids = frame(1)[1]
    ids[0, 0] = 5
    save(masks / "2.png", rgba_mask(ids))
    cache = tmp_path / "cache"
    decode(images, masks, cache_dir=cache, n_classes=6)
    fewer = decode(images, masks, cache_dir=cache, n_classes=5)  # rows 0 and 2: a file of their own
    assert fewer.names == ["1", "3"]
    subset = next(p for p in cache.glob("*.masks.npy") if p.name.count(".") == 4)
    expected = np.array(fewer.masks)
    del fewer
    garble(subset, value=250)
    forbid_decoding(monkeypatch)  # made again from the build's rows, which are sound: no decoding
    with pytest.warns(UserWarning, match=f"{subset.name}: 2 of 2 cached pairs do not match"):
        again = decode(images, masks, cache_dir=cache, n_classes=5)
    assert np.array_equal(again.masks, expected)


def test_damaged_rows_reads_in_chunks_and_names_the_rows(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
    path = tmp_path / "a.npy"
    np.save(path, rows)
    sums = np.array([zlib.crc32(row.tobytes()) for row in rows], np.uint32)
    assert damaged_rows(path, sums, chunk=10) == []
    garble(path, rows=slice(1, 2))
    garble(path, rows=slice(4, 5), value=0)
    assert damaged_rows(path, sums, chunk=10) == [1, 4] == damaged_rows(path, sums)
    assert damaged_rows(path, sums[:3]) == [1]  # spare rows after the checked ones are not checked


@pytest.mark.parametrize("cache", [False, True])
def test_ids_out_of_range_are_a_named_problem(tmp_path, cache):
    images, masks = make_dataset(tmp_path / "set", ["1", "2"])
    ids = frame(1)[1]
    ids[3, 4] = 250
    save(masks / "2.png", rgba_mask(ids))
    kwargs = {"cache_dir": tmp_path / "cache"} if cache else {}
    for _ in range(2 if cache else 1):  # cold, then warm from the cache
        decoded = decode(images, masks, n_classes=23, **kwargs)
        assert decoded.names == ["1"] and decoded.skipped == ["2"]
        assert [str(p) for p in decoded.problems] == [
            f"{masks / '2.png'}: mask has ids 250 but there are only 23 classes (0-22)"]
        assert int(decoded.masks.max()) < 23


def test_the_cache_key_holds_the_decoding_code(tmp_path):
    images, masks = make_dataset(tmp_path / "set", ["1"])
    pairs = find_pairs(images, masks)[0]
    one, other = (Cache(tmp_path / "c", images, masks, SIZE, "nearest", code=c) for c in ("a" * 32, "b" * 32))
    assert one.slot == other.slot and one.keys(pairs)[1] != other.keys(pairs)[1]  # one slot, another key
    assert Cache(tmp_path / "c", images, masks, SIZE, "nearest").code == decoding_fingerprint()
    fingerprints = []
    for folder, rule in (("a", "rgb[..., 0]"), ("b", "rgb.max(axis=-1)"), ("c", "rgb[..., 0]")):
        module = tmp_path / folder / "rule.py"
        module.parent.mkdir()
        module.write_text(f"def rule(rgb):\n    return {rule}\n")
        fingerprints.append(decoding_fingerprint((type("Module", (), {"__file__": str(module)}),)))
    assert fingerprints[0] != fingerprints[1] and fingerprints[0] == fingerprints[2]  # the code, not where it lies


def test_a_changed_decoding_rule_misses_the_cache(tmp_path):
    """The package copied, its ids rule changed (id i read as 4 - i) and nothing else, no number
    bumped: a process running the copy must decode anew, never reuse this process's entries."""
    images, masks = make_dataset(tmp_path / "set", ["1", "2"])
    cache = tmp_path / "cache"
    ours = decode(images, masks, cache_dir=cache)
    import pixelwise
    copy = tmp_path / "src" / "pixelwise"
    shutil.copytree(Path(pixelwise.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    decode_py = copy / "data" / "decode.py"
    decode_py.write_text(decode_py.read_text() + "\n\n_rgb_ids = rgb_ids\n\n\ndef rgb_ids(rgb):\n"
                                                 "    return 4 - _rgb_ids(rgb)\n")
    script = ("import sys, numpy as np\n"
              "from pathlib import Path\n"
              "from pixelwise.data.dataset import decode_dataset\n"
              f"d = decode_dataset(Path(sys.argv[1]), Path(sys.argv[2]), {SIZE}, 5, cache_dir=Path(sys.argv[3]),"
              " progress=False, workers=1)\n"
              "np.save(sys.argv[4], np.asarray(d.masks))\n")
    env = {**os.environ, "PYTHONPATH": str(copy.parent)}
    subprocess.run([sys.executable, "-c", script, str(images), str(masks), str(cache), str(tmp_path / "theirs.npy")],
                   env=env, check=True, timeout=300)
    theirs = np.load(tmp_path / "theirs.npy")
    assert np.array_equal(theirs, 4 - np.asarray(ours.masks))  # their rule, not our cached rows
    del ours
    assert np.array_equal(decode(images, masks, cache_dir=cache).masks, decode(images, masks).masks)  # and back
