"""Phone photos: JPEG images turned by their EXIF orientation before their size meets the mask's, and
a size that matches only turned a quarter named as such."""

from __future__ import annotations

import numpy as np
from data_files import decode, frame, rgba_mask, save
from PIL import Image

from pixelwise.data.decode import read_image
from pixelwise.data.orientation import ORIENTATION_TAG


def save_jpeg(path, rgb: np.ndarray, orientation: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    Image.fromarray(rgb).save(path, quality=100, subsampling=0, exif=exif.tobytes())


def test_exif_orientation_turns_the_photo_upright(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = 250  # left half white, as stored (landscape)
    for tag, shape in ((1, (20, 40)), (6, (40, 20)), (8, (40, 20)), (3, (20, 40))):
        save_jpeg(tmp_path / f"o{tag}.jpg", rgb, tag)
        got = read_image(tmp_path / f"o{tag}.jpg")
        assert got.shape[:2] == shape, tag
    assert read_image(tmp_path / "o6.jpg")[:20, :, 0].mean() > 200  # 6 = turned 90° clockwise: left → top
    assert read_image(tmp_path / "o8.jpg")[20:, :, 0].mean() > 200  # 8 = counter-clockwise: left → bottom
    assert read_image(tmp_path / "o3.jpg")[:, 20:, 0].mean() > 200  # 3 = half a turn: left → right


def test_a_phone_photo_pairs_with_a_mask_drawn_upright_and_a_turned_one_is_named(tmp_path):
    image, ids = frame(1, 12, 16)  # upright: 16 high, 12 wide after the turn
    images, masks = tmp_path / "images", tmp_path / "masks"
    save_jpeg(images / "phone.jpg", np.ascontiguousarray(np.rot90(image[..., :3], 1)), 6)  # stored turned back
    save(masks / "phone.png", rgba_mask(ids))
    decoded = decode(images, masks, cache_dir=None, size=(12, 16))
    assert decoded.names == ["phone"] and not decoded.problems
    save_jpeg(images / "phone.jpg", image[..., :3], 6)  # now the upright photo is 16x12: the mask is not
    decoded = decode(images, masks, cache_dir=None, size=(12, 16))
    [problem] = decoded.problems
    assert "image phone.jpg is 12x16 but mask is 16x12; they must be the same size (they match only with one " \
           "of them turned a quarter: the image is shown upright by its EXIF orientation" in str(problem)


def test_check_warns_of_jpeg_masks_and_names_a_lone_255(tmp_path, capsys):
    from pixelwise.cli import main

    images, masks = tmp_path / "CameraRGB", tmp_path / "CameraMask"
    for k in range(2):
        image, ids = frame(k)
        save(images / f"{k}.png", image)
        if k == 0:
            masks.mkdir()
            Image.fromarray(ids).save(masks / "0.jpg", quality=90)
        else:
            ids[0, 0] = 255
            save(masks / "1.png", ids)
    main(["check", str(tmp_path), "--classes", "5", "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err
    assert f"warning: {masks / '0.jpg'}: 1 mask(s) are JPEG/WebP files: lossy compression blurs" in err
    assert f"warning: {masks / '1.png'}: 1 mask(s) hold 255 beside valid ids" in err
