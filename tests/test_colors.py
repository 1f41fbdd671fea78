"""Colour-coded masks: the exact-colour lookup, the auto rule, unknown colours as named problems, the
format in config.json, and a colour-coded copy of a dataset training, evaluating and predicting
exactly like its id original."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import small_config
from data_files import decode, make_dataset, rgba_mask, save, save_palette
from PIL import Image

from pixelwise.classes import CARLA, ClassSet
from pixelwise.config import DataConfig, RunConfig
from pixelwise.data.colors import (
    MaskFormat,
    UnknownColors,
    colors_to_ids,
    ids_to_colors,
    mask_converter,
    pack,
    read_mask_as,
    unknown_color_summary,
)
from pixelwise.data.dataset import check
from pixelwise.data.decode import mask_ids, read_mask, rgb_ids
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.data.problems import DataError

COLORS = ((0, 0, 0), (128, 64, 128), (70, 70, 70), (220, 20, 60), (0, 0, 142))  # 5 classes, as data_files makes
FIVE = ClassSet(("void", "road", "building", "person", "car"), COLORS)


def colour_copy(images: Path, masks: Path, out: Path, colors=COLORS, alpha: bool = False) -> tuple[Path, Path]:
    """The same dataset with every mask saved as the classes' colours (RGB, or RGBA)."""
    shutil.copytree(images, out / IMAGE_DIR)
    (out / MASK_DIR).mkdir(parents=True)
    for path in sorted(masks.iterdir()):
        rgb = ids_to_colors(read_mask(path), colors)
        if alpha:
            rgb = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        save(out / MASK_DIR / path.name, rgb)
    return out / IMAGE_DIR, out / MASK_DIR


# ------------------------------------------------------------------------------------------ the lookup


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 3), (33, 17)])
@pytest.mark.parametrize("channels", [3, 4])
def test_lookup_inverts_the_palette_for_any_shape(shape, channels):
    ids = np.random.default_rng(0).integers(0, len(CARLA), shape).astype(np.uint8)
    rgb = ids_to_colors(ids, CARLA.colors)
    if channels == 4:
        rgb = np.concatenate([rgb, np.full(shape + (1,), 7, np.uint8)], axis=2)  # alpha never matters
    got = colors_to_ids(np.ascontiguousarray(rgb), MaskFormat("colors", CARLA.colors))
    assert got.dtype == np.uint8 and np.array_equal(got, ids)
    assert np.array_equal(colors_to_ids(rgb[:, ::-1], MaskFormat("colors", CARLA.colors)), ids[:, ::-1])  # a view


def test_pack_agrees_with_the_arithmetic():
    rgb = np.random.default_rng(1).integers(0, 256, (9, 11, 3)).astype(np.uint8)
    expected = (rgb[..., 0].astype(np.uint32) | rgb[..., 1].astype(np.uint32) << 8
                | rgb[..., 2].astype(np.uint32) << 16).ravel()
    assert np.array_equal(pack(rgb), expected)
    assert np.array_equal(pack(np.ascontiguousarray(np.dstack([rgb, rgb[..., :1]]))), expected)


def test_a_table_of_256_classes_uses_every_id():
    colors = tuple((i, 255 - i, i // 2) for i in range(256))
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(colors_to_ids(ids_to_colors(ids, colors), MaskFormat("colors", colors)), ids)


def test_unknown_colours_are_one_problem_naming_file_colours_and_pixel_counts():
    ids = np.zeros((4, 4), np.uint8)
    rgb = ids_to_colors(ids, COLORS)
    rgb[0, :3] = (1, 2, 3)
    rgb[3, 3] = (250, 251, 252)
    with pytest.raises(DataError) as caught:
        colors_to_ids(rgb, MaskFormat("colors", COLORS), "masks/frame7.png")
    [problem] = caught.value.problems
    assert isinstance(problem, UnknownColors) and problem.path == Path("masks/frame7.png")
    assert problem.colors == (((1, 2, 3), 3), ((250, 251, 252), 1))
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("masks/frame7.png: mask has 2 colour(s) no class has: (1, 2, 3) 3 px, "
                                        "(250, 251, 252) 1 px")


def test_unknown_colours_can_be_marked_unlabelled():
    rgb = ids_to_colors(np.array([[1, 2], [3, 4]], np.uint8), COLORS)
    rgb[0, 0] = (9, 9, 10)
    got = colors_to_ids(rgb, MaskFormat("colors", COLORS, "ignore", unlabelled=0))
    assert got.tolist() == [[0, 2], [3, 4]]
    with pytest.raises(ValueError, match="train.ignore_index"):
        MaskFormat("colors", COLORS, "ignore")


def test_colour_tables_that_cannot_decode_are_refused():
    with pytest.raises(ValueError, match="classes 0 and 2 share the colour 1 2 3"):
        MaskFormat("colors", ((1, 2, 3), (4, 5, 6), (1, 2, 3)))
    with pytest.raises(ValueError, match="colour for every class"):
        MaskFormat("colors", ())
    with pytest.raises(ValueError, match="mask format must be one of"):
        MaskFormat("rgb")


def test_auto_reads_colours_ids_and_refuses_the_rest():
    auto = MaskFormat("auto", COLORS)
    ids = np.array([[0, 1, 2], [3, 4, 1]], np.uint8)
    assert np.array_equal(colors_to_ids(ids_to_colors(ids, COLORS), auto), ids)
    red = np.zeros((2, 3, 3), np.uint8)
    red[..., 0] = ids + 5  # CARLA's rule: the id in R, G = B = 0
    assert np.array_equal(colors_to_ids(red, auto), ids + 5)
    sparse = np.zeros((40, 40, 4), np.uint8)  # black (class 0's colour) but one pixel (7, 0, 0): ids after all
    sparse[17, 23, 0] = 7
    assert colors_to_ids(sparse, auto).tolist() == sparse[..., 0].tolist()
    grey = np.repeat((ids + 5)[..., None], 3, axis=2)  # R = G = B
    assert np.array_equal(colors_to_ids(grey, auto), ids + 5)
    neither = ids_to_colors(ids, COLORS)
    neither[0, 0] = (10, 20, 30)
    with pytest.raises(DataError, match=r"m.png: mask has 1 colour\(s\) no class has: \(10, 20, 30\) 1 px"):
        colors_to_ids(neither, auto, "m.png")
    with pytest.raises(DataError, match="no colour table"):  # two classes share a colour: no usable table
        colors_to_ids(neither, MaskFormat("auto", ((1, 1, 1),) * 5), "m.png")


def test_mask_files_by_mode(tmp_path):
    ids = np.array([[0, 1, 2], [3, 4, 0]], np.uint8)
    colors = MaskFormat("colors", COLORS)
    flat = [c for rgb in COLORS for c in rgb]
    # A palette PNG whose indices are NOT the class ids: read by colour, its colours decide.
    shuffled = save_palette(tmp_path / "p.png", (4 - ids).astype(np.uint8), [c for rgb in COLORS[::-1] for c in rgb])
    assert np.array_equal(read_mask_as(shuffled, colors), ids)
    assert np.array_equal(read_mask_as(shuffled, MaskFormat("auto", COLORS)), 4 - ids)  # auto: palette = ids
    assert np.array_equal(read_mask_as(save_palette(tmp_path / "q.png", ids, flat), colors), ids)
    assert np.array_equal(read_mask_as(save(tmp_path / "rgba.png", rgba_mask(ids)), MaskFormat("auto", COLORS)), ids)
    assert np.array_equal(read_mask_as(save(tmp_path / "l.png", ids), MaskFormat("auto", COLORS)), ids)
    save(tmp_path / "i.png", ids.astype(np.uint16))
    with pytest.raises(DataError, match=r"i.png: I.* mask cannot be colour-coded"):
        read_mask_as(tmp_path / "i.png", colors)


# ------------------------------------------------------------------------------------ whole datasets


def test_a_colour_copy_decodes_to_the_same_ids_and_the_cache_keeps_them_apart(tmp_path):
    images, masks = make_dataset(tmp_path / "ids", ["f1", "f2", "f3"])
    c_images, c_masks = colour_copy(images, masks, tmp_path / "colours", alpha=True)
    cache = tmp_path / "cache"
    original = decode(images, masks, cache_dir=cache)
    for fmt in (MaskFormat("colors", COLORS), MaskFormat("auto", COLORS)):
        copy = decode(c_images, c_masks, cache_dir=cache, mask_format=fmt)
        assert not copy.problems and copy.names == original.names
        assert np.array_equal(np.asarray(copy.masks), np.asarray(original.masks))
        assert np.array_equal(copy.histogram, original.histogram)
    # Another table over the same files is another cache entry, never the first one's ids.
    swapped = (COLORS[1], COLORS[0]) + COLORS[2:]
    again = decode(c_images, c_masks, cache_dir=cache, mask_format=MaskFormat("colors", swapped))
    expected = np.asarray(original.masks).copy()
    expected[np.asarray(original.masks) == 0], expected[np.asarray(original.masks) == 1] = 1, 0
    assert np.array_equal(np.asarray(again.masks), expected)
    # Read as ids, colours are out of range: problems, not silently wrong ids.
    as_ids = decode(c_images, c_masks, cache_dir=cache, mask_format=MaskFormat("ids"))
    assert len(as_ids.problems) == 3 and "only 5 classes" in str(as_ids.problems[0])


def test_check_lists_each_unknown_colour_with_its_pixels_and_files(tmp_path):
    images, masks = make_dataset(tmp_path / "ids", ["f1", "f2", "f3"])
    c_images, c_masks = colour_copy(images, masks, tmp_path / "colours")
    for name in ("f1", "f3"):
        rgb = np.asarray(Image.open(c_masks / f"{name}.png")).copy()
        rgb[0, :2] = (7, 7, 9)
        save(c_masks / f"{name}.png", rgb)
    decoded = check(c_images, c_masks, FIVE, cache_dir=tmp_path / "cache", progress=False)
    assert decoded.names == ["f2"] and len(decoded.problems) == 2
    assert [p.path.name for p in decoded.problems] == ["f1.png", "f3.png"]
    assert unknown_color_summary(decoded.problems) == [
        f"(7, 7, 9): 4 px in 2 mask(s): {c_masks / 'f1.png'}, {c_masks / 'f3.png'}"]


def test_the_format_is_saved_and_old_configs_read_ids():
    config = small_config()
    assert config.data.mask_format == "auto"
    restored = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    old = config.to_dict()
    for key in ("mask_format", "unknown_color", "image_suffix", "mask_suffix", "recursive"):
        del old["data"][key]
    assert RunConfig.from_dict(old).data.mask_format == "ids"  # runs from before decode masks as they did
    with pytest.raises(ValueError, match="train.ignore_index"):
        small_config().__class__(config.model, config.data.__class__(unknown_color="ignore"), config.train)


def test_a_new_run_reads_masks_by_its_data_settings_and_an_old_one_by_the_ids_rule():
    config = small_config()
    fmt = MaskFormat.for_run(config)
    assert (fmt.kind, fmt.unknown, fmt.id_map) == (DataConfig.mask_format, DataConfig.unknown_color, DataConfig.id_map)
    saved = config.to_dict()
    for key in ("mask_format", "unknown_color", "id_map"):  # config.json of a run made before mask formats
        del saved["data"][key]
    assert MaskFormat.for_run(RunConfig.from_dict(saved)).kind == "ids"


# ------------------------------------------------------------------------------ one rule per format


def test_every_format_reads_id_masks_by_the_one_ids_rule(tmp_path):
    """ids, auto and the plain reader agree on every kind of id mask, through the one rule (max of R, G, B)."""
    ids = np.random.default_rng(3).integers(0, 5, (9, 11)).astype(np.uint8)
    grey_rgb = np.repeat(ids[..., None], 3, axis=2)
    files = {"rgba.png": rgba_mask(ids), "grey-rgb.png": grey_rgb, "l.png": ids}
    assert mask_converter(MaskFormat("ids")) is mask_ids and mask_converter(MaskFormat()) is mask_ids
    assert np.array_equal(rgb_ids(rgba_mask(ids)), ids) and np.array_equal(rgb_ids(grey_rgb), ids)
    for name, array in files.items():
        path = save(tmp_path / name, array)
        expected = read_mask(path)
        assert np.array_equal(expected, ids), name
        for fmt in (None, MaskFormat("ids"), MaskFormat("auto"), MaskFormat("auto", COLORS[1:] + ((9, 9, 1),))):
            assert np.array_equal(read_mask_as(path, fmt), expected), (name, fmt)
    # auto hands an id mask (G = B = 0) to the same rule as an array, too
    assert np.array_equal(colors_to_ids(rgba_mask(ids), MaskFormat("auto", COLORS[1:] + ((9, 9, 1),))), ids)


def test_a_colour_coded_copy_trains_evaluates_and_predicts_exactly_like_the_original(scenes, tmp_path):
    from pixelwise.evaluation.evaluate import evaluate
    from pixelwise.inference.predict import predict
    from pixelwise.inference.predictor import Predictor
    from pixelwise.training.loop import train

    c_images, c_masks = colour_copy(scenes / IMAGE_DIR, scenes / MASK_DIR, tmp_path / "colour-data", CARLA.colors)
    cache, config = tmp_path / "cache", small_config(epochs=1)  # mask format auto, CARLA's colours
    runs = {}
    for name, (images, masks) in {"ids": (scenes / IMAGE_DIR, scenes / MASK_DIR), "colours": (c_images, c_masks)}.items():
        runs[name] = train(images, masks, tmp_path / f"run-{name}", config, cache_dir=cache, progress=False, log=lambda _: None)
    assert runs["ids"].history[0]["train_loss"] == runs["colours"].history[0]["train_loss"]
    assert runs["ids"].best_miou == runs["colours"].best_miou
    scored = [evaluate(tmp_path / "run-ids", images, masks, cache_dir=cache, progress=False)
              for images, masks in ((scenes / IMAGE_DIR, scenes / MASK_DIR), (c_images, c_masks))]
    assert np.array_equal(scored[0].confusion, scored[1].confusion) and scored[0].confusion.sum() > 0
    frames = sorted((scenes / IMAGE_DIR).iterdir())[:2]
    for name in runs:
        predict(Predictor(tmp_path / f"run-{name}"), frames, tmp_path / f"pred-{name}", masks_dir=c_masks)
    for frame in frames:
        for kind in ("mask", "color", "figure"):
            a = np.asarray(Image.open(tmp_path / "pred-ids" / f"{frame.stem}_{kind}.png"))
            b = np.asarray(Image.open(tmp_path / "pred-colours" / f"{frame.stem}_{kind}.png"))
            assert np.array_equal(a, b), kind
    # Predicted colour masks come back in the table's colours.
    mask = np.asarray(Image.open(tmp_path / "pred-ids" / f"{frames[0].stem}_mask.png"))
    colour = np.asarray(Image.open(tmp_path / "pred-ids" / f"{frames[0].stem}_color.png"))[..., :3]
    assert np.array_equal(colour, CARLA.palette()[mask])
