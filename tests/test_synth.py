"""The synthetic CARLA-like scenes: exact, deterministic, in CARLA's file format, not trivially easy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.classes import CARLA
from pixelwise.synth import render_drive, render_scene, write_dataset

H, W = 96, 128
REQUIRED = ("Road", "Sky", "Vehicles", "Pedestrian", "Pole", "TrafficSign", "TrafficLight", "Building", "Vegetation", "Sidewalk", "RoadLine")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth") / "data", count=20, seed=3, height=H, width=W, progress=False)


def _frame_numbers(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("*.png"))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- frames in memory ----------------------------------------------------------------------------


def test_render_scene_shapes_and_ids() -> None:
    image, mask = render_scene(np.random.default_rng(0), H, W)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    assert mask.min() >= 1 and mask.max() < len(CARLA)  # CARLA's frames never hold 0 (Unlabeled)
    assert {CARLA.index("Road"), CARLA.index("Sky")} <= set(np.unique(mask).tolist())


def test_non_default_aspect_ratio() -> None:
    image, mask = render_scene(np.random.default_rng(1), 64, 200)
    assert image.shape == (64, 200, 3) and mask.shape == (64, 200)


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    a = render_scene(np.random.default_rng(5), H, W)
    b = render_scene(np.random.default_rng(5), H, W)
    c = render_scene(np.random.default_rng(6), H, W)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_drive_frames_are_near_duplicates() -> None:
    frames = render_drive(np.random.default_rng(2), 4, H, W)
    assert len(frames) == 4
    other = render_scene(np.random.default_rng(99), H, W)[1]
    for (img0, m0), (img1, m1) in zip(frames, frames[1:]):
        assert not np.array_equal(img0, img1)  # the camera moved and the noise is new
        assert (m0 != m1).mean() < 0.3  # but it is the same street
    assert (frames[0][1] != other).mean() > (frames[0][1] != frames[1][1]).mean()


def test_every_frame_has_road_and_sky() -> None:
    road, sky = CARLA.index("Road"), CARLA.index("Sky")
    for seed in range(4):
        for _, mask in render_drive(np.random.default_rng(seed), 3, H, W):
            assert (mask == road).mean() > 0.05 and (mask == sky).mean() > 0.05


def test_colour_alone_does_not_give_the_class() -> None:
    """A nearest-mean-colour classifier fitted on some drives must do badly on others.

    If the scenes became flat colour per class (a palette, or any fixed colour per class), it would
    score close to 100%; on the real thing it does worse than always guessing "Road".
    """

    def pixels(seed: int) -> tuple[np.ndarray, np.ndarray]:
        frames = [f for d in range(3) for f in render_drive(np.random.default_rng([seed, d]), 3, H, W)]
        x = np.concatenate([img.reshape(-1, 3) for img, _ in frames]).astype(np.float32)
        y = np.concatenate([m.ravel() for _, m in frames])
        return x, y

    x_fit, y_fit = pixels(10)
    x_test, y_test = pixels(11)
    classes = np.unique(y_fit)
    means = np.stack([x_fit[y_fit == c].mean(axis=0) for c in classes])
    pred = classes[((x_test[:, None, :] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)]
    assert (pred == y_test).mean() < 0.6
    # and the image is never the colourised mask
    assert (np.abs(x_test - CARLA.palette()[y_test]).sum(axis=1) < 6).mean() < 0.02


def test_classes_are_textured_not_flat() -> None:
    image, mask = render_scene(np.random.default_rng(4), 240, 320)
    img = image.astype(np.float32)
    same = mask[:, 1:] == mask[:, :-1]
    step = np.abs(img[:, 1:] - img[:, :-1]).mean(axis=2)[same]
    assert step.mean() > 2.0  # pixel-to-pixel variation inside regions: noise and texture
    road = mask == CARLA.index("Road")
    assert img[road].std(axis=0).mean() > 6.0  # shading, patches and grain across the road


@pytest.mark.parametrize(
    "kwargs",
    [dict(count=0), dict(count=-3), dict(count=2, height=31), dict(count=2, width=16), dict(count=2, height=0, width=0)],
)
def test_write_dataset_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        write_dataset(tmp_path / "x", progress=False, **kwargs)


def test_render_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        render_scene(np.random.default_rng(0), 20, 20)
    with pytest.raises(ValueError):
        render_drive(np.random.default_rng(0), 0, H, W)


# --- files on disk ---------------------------------------------------------------------------------


def test_layout_and_names(dataset: Path) -> None:
    rgb = sorted(p.name for p in (dataset / "CameraRGB").iterdir())
    masks = sorted(p.name for p in (dataset / "CameraMask").iterdir())
    assert rgb == masks and len(rgb) == 20  # no temporary files left behind
    assert all(len(n) == 10 and n.endswith(".png") and n[:6].isdigit() for n in rgb)


def test_carla_file_format(dataset: Path) -> None:
    for name in sorted(p.name for p in (dataset / "CameraRGB").glob("*.png"))[:6]:
        with Image.open(dataset / "CameraRGB" / name) as im:
            assert im.mode == "RGBA" and im.size == (W, H)
            rgba = np.asarray(im)
        with Image.open(dataset / "CameraMask" / name) as im:
            assert im.mode == "RGBA" and im.size == (W, H)
            m = np.asarray(im)
        assert (rgba[..., 3] == 255).all() and (m[..., 3] == 255).all()
        assert (m[..., 1] == 0).all() and (m[..., 2] == 0).all()
        ids = m[..., 0]
        assert ids.min() >= 1 and ids.max() < len(CARLA)
        assert rgba[..., :3].std() > 10  # a picture, not a mask


def test_runs_of_consecutive_numbers(dataset: Path) -> None:
    numbers = _frame_numbers(dataset / "CameraRGB")
    gaps = np.diff(numbers)
    assert set(gaps.tolist()) - {1} and all(g == 1 or g >= 50 for g in gaps)
    runs = np.split(np.asarray(numbers), np.flatnonzero(gaps > 1) + 1)
    assert all(3 <= len(r) <= 8 for r in runs[:-1]) and 1 <= len(runs[-1]) <= 8
    assert len(runs) >= 3


def test_required_classes_appear(dataset: Path) -> None:
    seen: set[int] = set()
    road, sky = CARLA.index("Road"), CARLA.index("Sky")
    for p in (dataset / "CameraMask").glob("*.png"):
        with Image.open(p) as im:
            ids = set(np.unique(np.asarray(im)[..., 0]).tolist())
        assert {road, sky} <= ids
        seen |= ids
    missing = [name for name in REQUIRED if CARLA.index(name) not in seen]
    assert not missing


def test_files_are_deterministic(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", count=5, seed=11, height=48, width=64, progress=False)
    b = write_dataset(tmp_path / "b", count=5, seed=11, height=48, width=64, progress=False)
    c = write_dataset(tmp_path / "c", count=5, seed=12, height=48, width=64, progress=False)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    # writing again into the same folder is allowed and gives the same bytes
    write_dataset(tmp_path / "a", count=5, seed=11, height=48, width=64, progress=False)
    assert _digest(a) == _digest(b)


def test_refuses_to_mix_with_another_dataset(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", count=4, seed=1, height=48, width=64, progress=False)
    with pytest.raises(ValueError, match="already holds"):
        write_dataset(tmp_path / "d", count=4, seed=2, height=48, width=64, progress=False)


def test_accepts_str_path_and_returns_path(tmp_path: Path) -> None:
    out = write_dataset(str(tmp_path / "s"), count=1, seed=0, height=32, width=32, progress=False)
    assert isinstance(out, Path) and len(list((out / "CameraMask").glob("*.png"))) == 1
