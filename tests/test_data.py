"""data/: pairing, decoding, validation, resizing, cache and the run-aware split — on tiny synthetic files."""

from __future__ import annotations

import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.data import cache as cache_module
from pixelwise.data import dataset, table
from pixelwise.data import pairs as pairs_module
from pixelwise.data.dataset import decode_dataset
from pixelwise.data.decode import read_image, read_mask
from pixelwise.data.pairs import find_pairs, locate
from pixelwise.data.problems import DataError, Problem
from pixelwise.data.resize import resize_image, resize_mask
from pixelwise.data.split import Split, frame_runs, split_by_runs

H, W = 12, 16  # original size of the synthetic frames
SIZE = (6, 8)  # decoded size


# --------------------------------------------------------------------------------------------- helpers


def save(path: Path, array: np.ndarray) -> Path:
    """uint8 (H, W) → L, (H, W, 3|4) → RGB(A), uint16 (H, W) → I;16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_palette(path: Path, indices: np.ndarray, colors: list[int]) -> Path:
    im = Image.fromarray(indices)
    im.putpalette(colors + [0] * (768 - len(colors)))  # L + palette → P
    assert im.mode == "P"
    im.save(path)
    return path


def rgba_mask(ids: np.ndarray) -> np.ndarray:
    """CARLA-style mask: id in R, G = B = 0, alpha 255."""
    out = np.zeros(ids.shape + (4,), np.uint8)
    out[..., 0], out[..., 3] = ids, 255
    return out


def frame(seed: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """An RGBA image and its class ids; the image's R channel is 10 * id + seed, so pairs can be told apart."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 5, (h, w)).astype(np.uint8)
    image = np.zeros((h, w, 4), np.uint8)
    image[..., 0] = ids * 10 + seed
    image[..., 1] = rng.integers(0, 256, (h, w))
    image[..., 3] = 255
    return image, ids


def make_dataset(root: Path, names: list[str], h: int = H, w: int = W) -> tuple[Path, Path]:
    images, masks = root / pairs_module.IMAGE_DIR, root / pairs_module.MASK_DIR
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        image, ids = frame(seed, h, w)
        save(images / f"{name}.png", image)
        save(masks / f"{name}.png", rgba_mask(ids))
    return images, masks


def png_bytes(array: np.ndarray, color_type: int, depth: int, size: tuple[int, int] | None = None) -> bytes:
    """A hand-written PNG: for 16-bit RGB (Pillow cannot write it) and for headers that lie about size."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    h, w = size or array.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2" if depth == 16 else "u1").tobytes() for row in array)
    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def problem_for(problems: list[Problem], path: Path) -> Problem:
    found = [p for p in problems if p.path == path]
    assert len(found) == 1, f"expected one problem for {path}, got {problems}"
    return found[0]


def decode(images: Path, masks: Path, **kwargs) -> dataset.Decoded:
    kwargs = {"size": SIZE, "n_classes": 5, "progress": False, "workers": 2, **kwargs}
    return decode_dataset(images, masks, **kwargs)


# -------------------------------------------------------------------------------------- errors, locate


def test_data_error_lists_every_problem_and_pickles():
    one = DataError([Problem(Path("a.png"), "truncated PNG")])
    assert str(one) == "a.png: truncated PNG"
    two = DataError([Problem(Path("a.png"), "truncated PNG"), Problem(Path("b.png"), "empty file")])
    lines = str(two).splitlines()
    assert len(lines) == 3 and "2 problems" in lines[0] and lines[1:] == ["a.png: truncated PNG", "b.png: empty file"]
    again = pickle.loads(pickle.dumps(two))
    assert again.problems == two.problems and str(again) == str(two)


def test_locate_dataset_folder_and_explicit_overrides(tmp_path):
    images, masks = make_dataset(tmp_path / "set", ["1"])
    assert locate(tmp_path / "set") == (images, masks)
    other = tmp_path / "labels"
    other.mkdir()
    assert locate(tmp_path / "set", masks=other) == (images, other)
    assert locate(images=images, masks=other) == (images, other)


def test_locate_names_what_is_missing(tmp_path):
    with pytest.raises(DataError) as err:
        locate(tmp_path / "nope")
    assert err.value.problems[0].path == tmp_path / "nope" and "no such folder" in str(err.value)

    (tmp_path / "plain" / "images").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        locate(tmp_path / "plain")
    message = str(err.value)
    assert "CameraRGB/" in message and "CameraMask/" in message and "--images" in message and "images/" in message

    with pytest.raises(DataError) as err:
        locate(images=tmp_path / "plain" / "images", masks=tmp_path / "gone")
    assert [p.path for p in err.value.problems] == [tmp_path / "gone"]

    with pytest.raises(DataError, match="--masks"):
        locate(images=tmp_path / "plain" / "images")
    with pytest.raises(ValueError):
        locate()


# --------------------------------------------------------------------------------------------- pairing


def test_pairs_match_by_stem_whatever_the_listing_order(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path, ["b", "a", "c", "10", "2"])
    real_scandir = os.scandir

    def scandir_reversing_masks(path):  # the two folders list in different orders
        entries = list(real_scandir(path))
        entries.sort(key=lambda e: e.name, reverse=Path(path) == masks)
        return iter(entries)

    monkeypatch.setattr(pairs_module.os, "scandir", scandir_reversing_masks)
    pairs, problems = find_pairs(images, masks)
    assert problems == []
    assert [p.name for p in pairs] == ["2", "10", "a", "b", "c"]  # natural order
    assert all(p.image.stem == p.mask.stem == p.name for p in pairs)

    decoded = decode(images, masks, workers=1)
    for k in range(len(decoded.names)):  # image R = 10 * id + seed: the image belongs to this mask
        seed = (decoded.images[k, ..., 0].astype(int) - 10 * decoded.masks[k].astype(int))
        assert len(np.unique(seed)) == 1


def test_unmatched_files_are_problems_naming_the_file(tmp_path):
    images, masks = make_dataset(tmp_path, ["1", "2", "3"])
    (masks / "2.png").unlink()
    (images / "3.png").unlink()
    pairs, problems = find_pairs(images, masks)
    assert [p.name for p in pairs] == ["1"]
    assert len(problems) == 2
    assert "no mask" in problem_for(problems, images / "2.png").message
    assert "no image" in problem_for(problems, masks / "3.png").message


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    images, masks = make_dataset(tmp_path, ["1"])
    (images / ".DS_Store").write_bytes(b"junk")
    (images / "._1.png").write_bytes(b"junk")  # macOS resource fork
    (masks / "notes.txt").write_text("hello")
    (images / "sub.png").mkdir()
    pairs, problems = find_pairs(images, masks)
    assert [p.name for p in pairs] == ["1"] and problems == []


def test_same_stem_twice_in_one_folder_is_a_problem(tmp_path):
    images, masks = make_dataset(tmp_path, ["1", "2"])
    save(images / "1.jpg", frame(0)[0][..., :3])
    pairs, problems = find_pairs(images, masks)
    assert [p.name for p in pairs] == ["2"]
    assert len(problems) == 1 and "1.jpg" in problems[0].message and "1.png" in problems[0].message


def test_empty_or_identical_folders(tmp_path):
    images, masks = make_dataset(tmp_path, ["1", "2"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "1.npy").write_bytes(b"x")
    pairs, problems = find_pairs(images, empty)
    assert pairs == [] and len(problems) == 1 and problems[0].path == empty and "1.npy" in problems[0].message
    pairs, problems = find_pairs(images, images)
    assert pairs == [] and "same folder" in problems[0].message


def test_prediction_only_images(tmp_path):
    images, _ = make_dataset(tmp_path, ["3", "1"])
    pairs, problems = find_pairs(images, None)
    assert problems == [] and [(p.name, p.mask) for p in pairs] == [("1", None), ("3", None)]


# -------------------------------------------------------------------------------------------- decoding


def test_rgba_mask_uses_max_over_rgb_not_alpha(tmp_path):
    ids = np.array([[0, 1, 2], [22, 7, 0]], np.uint8)
    assert np.array_equal(read_mask(save(tmp_path / "m.png", rgba_mask(ids))), ids)
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (0, 4, 1)  # max over channels, wherever the id is
    assert read_mask(save(tmp_path / "rgb.png", rgb))[0, 0] == 4


def test_gray_palette_and_16_bit_masks(tmp_path):
    ids = np.array([[0, 3], [5, 9]], np.uint8)
    assert np.array_equal(read_mask(save(tmp_path / "l.png", ids)), ids)
    assert np.array_equal(read_mask(save_palette(tmp_path / "p.png", ids, [200, 100, 50] * 256)), ids)  # the index

    assert Image.open(save(tmp_path / "i16.png", ids.astype(np.uint16))).mode == "I;16"
    assert np.array_equal(read_mask(tmp_path / "i16.png"), ids)
    save(tmp_path / "big.png", np.array([[0, 300]], np.uint16))
    with pytest.raises(DataError, match="300") as err:
        read_mask(tmp_path / "big.png")
    assert err.value.problems[0].path == tmp_path / "big.png"

    (tmp_path / "rgb16.png").write_bytes(png_bytes(np.zeros((2, 2, 3), np.uint16) + 7, color_type=2, depth=16))
    with pytest.raises(DataError, match="16-bit RGB mask"):
        read_mask(tmp_path / "rgb16.png")


def test_read_image_converts_modes_to_rgb(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 9, 0  # fully transparent: colour kept, alpha dropped
    out = read_image(save(tmp_path / "a.png", rgba))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8 and (out[..., 0] == 9).all()

    gray = np.array([[0, 128]], np.uint8)
    out = read_image(save(tmp_path / "l.png", gray))
    assert np.array_equal(out, np.repeat(gray[..., None], 3, 2))
    assert read_image(save(tmp_path / "rgb.png", np.zeros((2, 2, 3), np.uint8))).flags.writeable

    save_palette(tmp_path / "p.png", np.array([[0, 1]], np.uint8), [10, 20, 30, 40, 50, 60])
    assert read_image(tmp_path / "p.png").tolist() == [[[10, 20, 30], [40, 50, 60]]]

    deep = np.array([[0, 257, 65535, 32896]], np.uint16)
    out = read_image(save(tmp_path / "i16.png", deep))
    assert out.dtype == np.uint8 and out[..., 0].tolist() == [[0, 1, 255, 128]] and (out[..., 0] == out[..., 2]).all()

    rgb16 = np.zeros((1, 2, 3), np.uint16)
    rgb16[0, 1] = (65535, 32768, 256)
    (tmp_path / "rgb16.png").write_bytes(png_bytes(rgb16, color_type=2, depth=16))
    assert read_image(tmp_path / "rgb16.png").tolist() == [[[0, 0, 0], [255, 128, 1]]]


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_broken_files_raise_a_problem_naming_the_file(tmp_path, reader):
    good = save(tmp_path / "good.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    cases = {
        "truncated.png": (good.read_bytes()[: good.stat().st_size // 2], "truncated PNG"),
        "random.png": (np.random.default_rng(1).bytes(500), "not an image file"),
        "empty.png": (b"", "empty file"),
        "header.png": (good.read_bytes()[:20], "truncated PNG"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError) as err:
            reader(path)
        assert [p.path for p in err.value.problems] == [path]
        assert expected in err.value.problems[0].message, (name, str(err.value))
    with pytest.raises(DataError, match="file not found"):
        reader(tmp_path / "missing.png")


def test_decompression_bomb_header_is_a_problem_not_a_crash(tmp_path):
    liar = tmp_path / "bomb.png"
    liar.write_bytes(png_bytes(np.zeros((1, 1, 3), np.uint8), color_type=2, depth=8, size=(100_000, 100_000)))
    with pytest.raises(DataError) as err:
        read_image(liar)
    assert err.value.problems[0].path == liar
    assert "100000 x 100000 pixels, larger than the limit" in err.value.problems[0].message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [12, 20])  # 144 px: Pillow only warns (> limit); 400 px: Pillow raises (> 2 x limit)
def test_image_over_a_lowered_pixel_limit_is_a_problem(tmp_path, monkeypatch, side):
    path = save(tmp_path / "big.png", np.zeros((side, side, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match=f"image is {side} x {side} pixels, larger than the limit of 100 pixels"):
        read_image(path)


def test_decode_collects_every_problem_in_one_pass(tmp_path):
    names = ["1", "2", "3", "4", "5", "6", "7", "8"]
    images, masks = make_dataset(tmp_path, names)
    full = (images / "1.png").read_bytes()
    (images / "2.png").write_bytes(full[: len(full) // 2])  # truncated image
    (masks / "3.png").write_bytes(os.urandom(300))  # random bytes
    (images / "4.png").write_bytes(b"")  # zero-size
    save(masks / "5.png", rgba_mask(np.zeros((H // 2, W // 2), np.uint8)))  # size mismatch
    bad_ids = frame(6)[1]
    bad_ids[0, :3] = (40, 23, 40)
    save(masks / "6.png", rgba_mask(bad_ids))  # ids >= n_classes (23)
    (masks / "7.png").unlink()  # image without mask
    save(masks / "9.png", rgba_mask(frame(9)[1]))  # mask without image

    decoded = decode(images, masks, n_classes=23)
    problems = decoded.problems
    assert len(problems) == 7, "\n".join(map(str, problems))
    assert "truncated PNG" in problem_for(problems, images / "2.png").message
    assert "not an image file" in problem_for(problems, masks / "3.png").message
    assert "empty file" in problem_for(problems, images / "4.png").message
    assert f"is {W}x{H} but mask is {W // 2}x{H // 2}" in problem_for(problems, masks / "5.png").message
    assert "mask has ids 23, 40 but there are only 23 classes (0-22)" in problem_for(problems, masks / "6.png").message
    assert "no mask" in problem_for(problems, images / "7.png").message
    assert "no image" in problem_for(problems, masks / "9.png").message
    assert decoded.names == ["1", "8"] and decoded.skipped == ["2", "3", "4", "5", "6"]
    assert decoded.images.shape == (2, *SIZE, 3) and decoded.masks.shape == (2, *SIZE)
    assert str(DataError(problems)).count("\n") == 7


def test_decode_arrays_histogram_and_sizes(tmp_path):
    images, masks = make_dataset(tmp_path, ["1", "2", "3"])
    save(images / "3.png", frame(2, 24, 32)[0])  # another original size is fine: everything is resized
    save(masks / "3.png", rgba_mask(frame(2, 24, 32)[1]))
    decoded = decode(images, masks, n_classes=7)
    assert decoded.problems == [] and decoded.skipped == [] and decoded.names == ["1", "2", "3"]
    assert decoded.images.dtype == np.uint8 and decoded.images.shape == (3, *SIZE, 3)
    assert decoded.masks.dtype == np.uint8 and decoded.masks.shape == (3, *SIZE)
    assert decoded.original_sizes == [(H, W), (H, W), (24, 32)]
    shapes = [(0, (H, W)), (1, (H, W)), (2, (24, 32))]
    expected = sum(np.bincount(frame(seed, *hw)[1].ravel(), minlength=7) for seed, hw in shapes)
    assert decoded.histogram.dtype == np.int64 and decoded.histogram.tolist() == expected.tolist()
    assert decoded.histogram.sum() == 2 * H * W + 24 * 32  # counted at the original size
    serial = decode(images, masks, n_classes=7, workers=1)
    assert np.array_equal(serial.images, decoded.images) and np.array_equal(serial.masks, decoded.masks)


def test_decode_rejects_bad_arguments(tmp_path):
    images, masks = make_dataset(tmp_path, ["1"])
    for kwargs in ({"size": (0, 8)}, {"image_resize": "cubic"}, {"n_classes": 0}, {"workers": 0}):
        with pytest.raises(ValueError):
            decode(images, masks, **kwargs)


# -------------------------------------------------------------------------------------------- resizing


def test_nearest_resize_keeps_image_and_mask_aligned():
    h, w = 37, 53
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([yy, xx, np.zeros_like(yy)], axis=2).astype(np.uint8)  # each pixel knows where it came from
    mask = (yy * w + xx) % 251
    for size in [(12, 16), (13, 7), (37, 53), (80, 100), (1, 1)]:
        small_image, small_mask = resize_image(image, size, "nearest"), resize_mask(mask.astype(np.uint8), size)
        assert small_image.shape == (*size, 3) and small_mask.shape == size and small_image.dtype == np.uint8
        source = (small_image[..., 0].astype(int) * w + small_image[..., 1]) % 251
        assert np.array_equal(source, small_mask)


def test_nearest_picks_pixel_centres_like_pillow_for_whole_ratios():
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for size in [(96, 128), (240, 320), (48, 64)]:
        pillow = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.NEAREST))
        assert np.array_equal(resize_image(image, size, "nearest"), pillow)


def test_bilinear_and_area_resizes():
    flat = np.full((20, 30, 3), 77, np.uint8)
    for mode in ("bilinear", "area"):
        out = resize_image(flat, (7, 11), mode)
        assert out.shape == (7, 11, 3) and out.dtype == np.uint8 and (out == 77).all()
    blocks = np.kron(np.array([[0, 100], [200, 50]], np.uint8), np.ones((2, 2), np.uint8))
    checker = np.array([[0, 100], [100, 0]], np.uint8)
    assert resize_image(np.tile(checker, (2, 2)), (2, 2), "area").tolist() == [[50, 50], [50, 50]]
    assert resize_image(blocks, (2, 2), "area").tolist() == [[0, 100], [200, 50]]
    five = np.zeros((4, 4, 5), np.uint8) + np.arange(5, dtype=np.uint8)  # any channel count
    assert resize_image(five, (2, 2), "bilinear")[0, 0].tolist() == [0, 1, 2, 3, 4]
    four = np.zeros((4, 4, 4), np.uint8) + np.array([90, 60, 30, 0], np.uint8)  # 4th channel is not alpha
    assert resize_image(four, (2, 2), "area")[1, 1].tolist() == [90, 60, 30, 0]
    with pytest.raises(ValueError):
        resize_image(flat, (7, 11), "cubic")
    with pytest.raises(ValueError):
        resize_image(flat.astype(np.float32), (7, 11))
    with pytest.raises(ValueError):
        resize_mask(flat, (7, 11))


# ----------------------------------------------------------------------------------------------- cache


def forbid_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image file was opened although the cache should have answered")
    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(table, "read_image", refuse)
    monkeypatch.setattr(table, "read_mask", refuse)


def count_decoding(monkeypatch) -> list[str]:
    """Names of the files decoded from now on (read_image and read_mask calls)."""
    opened: list[str] = []

    def spy(real):
        def read(path):
            opened.append(Path(path).name)
            return real(path)
        return read

    monkeypatch.setattr(table, "read_image", spy(table.read_image))
    monkeypatch.setattr(table, "read_mask", spy(table.read_mask))
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
    "meta of another version": lambda meta, npy: np.savez(meta, **{**dict(np.load(meta)), "version": np.asarray(cache_module.CACHE_VERSION + 1)}),
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


def test_an_interrupted_build_leaves_nothing_that_looks_valid(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path / "set", ["1", "2", "3", "4"])
    cache = tmp_path / "cache"
    real = table.decode_pair

    def crash_on_third(pair, *args):
        if pair.name == "3":
            raise KeyboardInterrupt
        return real(pair, *args)

    monkeypatch.setattr(table, "decode_pair", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        decode(images, masks, cache_dir=cache)
    assert cache_files(cache) == {"meta": [], "npy": [], "other": []}
    # what a SIGKILL leaves: a temporary file, removed by the next build once it is an hour old
    stale = cache / f".{'0' * 24}.x.images.npy.abc.tmp.npy"
    stale.write_bytes(b"half")
    monkeypatch.setattr(table, "decode_pair", real)
    slot = cache_module.Cache(cache, images, masks, SIZE, "nearest").slot
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


def test_an_unwritable_cache_warns_and_decodes_into_memory(tmp_path, monkeypatch):
    images, masks = make_dataset(tmp_path / "set", ["1", "2"])

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module, "new_array_file", disk_full)
    with pytest.warns(UserWarning, match="cannot use the decode cache .No space left on device.; decoding without it"):
        decoded = decode(images, masks, cache_dir=tmp_path / "cache")
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


# ----------------------------------------------------------------------------------------------- split


def carla_like_names(rng: np.random.Generator, n_runs: int = 6) -> tuple[list[str], list[set[str]]]:
    """Every-third-frame drives: steps of 3-22 inside a drive, >= 39 between drives."""
    names, runs, number = [], [], 26
    for _ in range(n_runs):
        run = set()
        for _ in range(rng.integers(1, 15)):
            names.append(f"{number:06d}")
            run.add(names[-1])
            number += int(rng.choice([3, 3, 3, 4, 6, 9, 22]))
        runs.append(run)
        number += int(rng.integers(39, 5000))
    return names, runs


def test_frame_runs_finds_drives():
    rng = np.random.default_rng(0)
    for _ in range(20):
        names, runs = carla_like_names(rng)
        order = rng.permutation(len(names))
        shuffled = [names[i] for i in order]
        found = frame_runs(shuffled)
        assert sorted(sorted(shuffled[i] for i in run) for run in found) == sorted(sorted(r) for r in runs)
        for run in found:  # each run in frame order
            assert [int(shuffled[i]) for i in run] == sorted(int(shuffled[i]) for i in run)


def test_frame_runs_prefixes_and_unnumbered_names():
    names = ["town2_0001", "town1_0002", "town1_0001", "town2_0002"]
    assert frame_runs(names) == [[2, 1], [0, 3]]  # a prefix is its own sequence
    assert frame_runs(["b", "a", "c10", "c2x"]) == [[2], [1, 0, 3]]  # unnumbered names: one run, natural order
    unnumbered = ["zeta", "alpha", "mid"]
    assert frame_runs(unnumbered) == [[1, 2, 0]]
    assert frame_runs([]) == [] and frame_runs(["7"]) == [[0]]


def test_split_keeps_runs_whole_and_is_deterministic():
    names, runs = carla_like_names(np.random.default_rng(3), n_runs=12)
    splits = {seed: split_by_runs(names, 0.25, seed) for seed in range(6)}
    for split in splits.values():
        assert sorted(split.train + split.val) == list(range(len(names))) and not set(split.train) & set(split.val)
        val = {names[i] for i in split.val}
        for run in runs:
            assert run <= val or not run & val, "a run was split between train and val"
        assert abs(len(split.val) - 0.25 * len(names)) <= max(len(r) for r in runs)
    assert split_by_runs(names, 0.25, 0) == splits[0]
    assert len({tuple(s.val) for s in splits.values()}) > 1  # the seed matters


def test_split_fractions_and_edges():
    names, _ = carla_like_names(np.random.default_rng(5), n_runs=30)
    n = len(names)
    for fraction in (0.1, 0.2, 0.5):
        share = len(split_by_runs(names, fraction).val) / n
        assert abs(share - fraction) < 0.05
    assert split_by_runs(names, 0.0) == Split(list(range(n)), [])
    assert split_by_runs(["5"], 0.5) == Split([0], [])
    assert split_by_runs(["1", "2"], 0.01) == Split([0], [1])
    assert split_by_runs(["1", "2"], 0.99) == Split([0], [1])
    tiny = split_by_runs(names, 0.001)
    assert len(tiny.val) >= 1 and len(tiny.train) >= 1
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError):
            split_by_runs(names, bad)


def test_single_run_splits_into_contiguous_blocks():
    names = [f"{i:04d}" for i in range(0, 300, 3)][::-1]  # one drive, listed backwards
    split = split_by_runs(names, 0.2, seed=7)
    assert len(split.val) == 20
    frames = sorted(int(names[i]) for i in split.val)
    assert frames == list(range(240, 300, 3))  # the last block of the drive, never interleaved
    assert split_by_runs(names, 0.2, seed=8) == split

    words = ["delta", "alpha", "charlie", "bravo", "echo"]
    split = split_by_runs(words, 0.4)
    assert sorted(words[i] for i in split.val) == ["delta", "echo"]


def test_decoders_default_to_the_cores_this_process_may_use(tmp_path, monkeypatch):
    from pixelwise import device

    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 5, 7}, raising=False)
    assert device.usable_cores() == 3  # not os.cpu_count(): a CPU set or taskset limits the process
    seen = []
    real = table.parallel_map
    monkeypatch.setattr(table, "parallel_map", lambda fn, items, workers: seen.append(workers) or real(fn, items, 1))
    images, masks = make_dataset(tmp_path, ["000001", "000002"])
    decode_dataset(images, masks, size=SIZE, n_classes=5, progress=False)
    assert seen == [3]
