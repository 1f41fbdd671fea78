"""data/decode.py and data/resize.py: every image and mask mode, broken files, bombs, resizing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from pixelwise.data.decode import read_image, read_mask
from pixelwise.data.problems import DataError
from pixelwise.data.resize import resize_image, resize_mask

H, W = 12, 16  # original size of the synthetic frames
from data_files import (
    SIZE,
    decode,
    frame,
    make_dataset,
    png_bytes,
    problem_for,
    rgba_mask,
    save,
    save_palette,
)

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
