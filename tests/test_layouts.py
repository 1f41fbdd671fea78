"""--layout camvid|cityscapes|voc|carla on tiny datasets the tests build in each layout: each is
recognised by check, trains a step with its official split and evaluates; official splits (--val,
--train-list/--val-list) and their problems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_files import frame, rgba_mask, save, save_palette
from PIL import Image

from pixelwise.cli import main
from pixelwise.data.colors import ids_to_colors
from pixelwise.data.layouts import LAYOUTS, layout, recognise
from pixelwise.data.official import OfficialSplit, keep_listed, split_by_lists
from pixelwise.data.pairs import find_pairs
from pixelwise.data.problems import DataError

TINY = ["--recipe", "seed", "--epochs", "1", "--batch-size", "4", "--size", "16x16", "--filters", "4", "--no-progress"]


def camvid(root: Path) -> Path:
    classes = layout("camvid").classes()
    for seq, start in (("0001TP", 6690), ("0006R0", 930)):
        for k in range(4):
            name = f"{seq}_{start + 30 * k:06d}"
            image, ids = frame(k)
            ids = (ids * 7) % len(classes)  # some CamVid ids, Void (30) included
            save(root / "701_StillsRaw_full" / f"{name}.png", image[..., :3])
            save(root / "LabeledApproved_full" / f"{name}_L.png", ids_to_colors(ids.astype(np.uint8), classes.colors))
    return root


def cityscapes(root: Path) -> Path:
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt",))):
        for city in cities:
            for k in range(3):
                stem = f"{city}_{k:06d}_000019"
                image, ids = frame(k)
                label_ids = np.array([0, 7, 8, 26, 23], np.uint8)[ids]  # unlabelled, road, sidewalk, car, sky
                save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image[..., :3])
                save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
                save(root / "gtFine" / split / city / f"{stem}_gtFine_color.png", np.zeros((4, 4, 3), np.uint8))
    return root


def voc(root: Path, listed: int = 8) -> Path:
    palette = [c for rgb in layout("voc").classes().colors[:21] for c in rgb]
    names = [f"2007_{k:06d}" for k in range(listed + 3)]
    for k, name in enumerate(names):
        image, ids = frame(k)
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., :3]).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        if k < listed:  # the rest: images without masks, as most of VOC's JPEGImages
            ids = (ids * 4).astype(np.uint8)
            ids[0, :] = 255  # an object border
            (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            save_palette(root / "SegmentationClass" / f"{name}.png", ids, palette)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names[: listed - 2]) + "\n")
    (lists / "val.txt").write_text("\n".join(names[listed - 2: listed]) + "\n")
    return root


def carla(root: Path) -> Path:
    for k in range(6):
        image, ids = frame(k)
        save(root / "CameraRGB" / f"{k:06d}.png", image)
        save(root / "CameraMask" / f"{k:06d}.png", rgba_mask(ids))
    return root


MAKERS = {"camvid": camvid, "cityscapes": cityscapes, "voc": voc, "carla": carla}


def test_the_shipped_class_files():
    sizes = {name: len(preset.classes()) for name, preset in LAYOUTS.items()}
    assert sizes == {"carla": 23, "camvid": 32, "cityscapes": 20, "voc": 22}
    assert layout("camvid").ignore_index() == 30 and layout("camvid").classes().colors[30] == (0, 0, 0)
    assert layout("cityscapes").ignore_index() == 19 and layout("voc").ignore_index() == 21
    cityscapes_map = layout("cityscapes").id_map
    assert [cityscapes_map[i] for i in (7, 8, 26, 33, 0, 6, 255)] == [0, 1, 13, 18, 19, 19, 19]
    assert layout("voc").id_map[255] == 21 and layout("voc").id_map[20] == 20
    with pytest.raises(ValueError, match="unknown layout 'ade'"):
        layout("ade")


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_each_layout_is_recognised_trains_and_evaluates(name, tmp_path, capsys):
    data = MAKERS[name](tmp_path / name)
    assert recognise(data) == [name]
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["check", str(data), "--layout", name, *cache, "--no-progress"]) == 0
    assert f"looks like {name}" not in capsys.readouterr().out  # --layout given: nothing to suggest
    run = tmp_path / "run"
    assert main(["train", str(data), "--layout", name, "--out", str(run), *TINY, *cache]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["classes"]["names"] == list(layout(name).classes().names)
    assert config["data"]["mask_format"] == layout(name).mask_format
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 2 and ",," not in history[1].split("lr")[0]  # validated: an official or drive split
    assert main(["evaluate", str(run), str(data), "--layout", name, *cache, "--no-progress"]) == 0
    scored = json.loads((run / "evaluation" / "report.json").read_text())
    official = layout(name).official(data)
    assert scored["images"] == {"camvid": 8, "carla": 6, "cityscapes": 3, "voc": 2}[name]  # the official val frames
    assert official is None or name in ("cityscapes", "voc")


def test_check_without_layout_names_the_one_that_fits(tmp_path, capsys):
    data = camvid(tmp_path / "camvid")
    assert main(["check", str(data), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 2
    assert "is laid out like camvid: pass --layout camvid" in capsys.readouterr().err


def test_cityscapes_label_ids_become_train_ids_and_val_is_the_official_split(tmp_path):
    from conftest import small_config

    from pixelwise.training.prepare import prepare_data

    data = cityscapes(tmp_path / "cs")
    preset = layout("cityscapes")
    config = preset.apply(small_config())
    images, masks = preset.folders(data)
    decoded, split = prepare_data(images, masks, config, skip_invalid=False, cache_dir=tmp_path / "cache",
                                  progress=False, log=print, official=preset.official(data))
    assert [decoded.names[i] for i in split.val] == [f"frankfurt/frankfurt_{k:06d}_000019" for k in range(3)]
    assert len(split.train) == 6 and all(decoded.names[i].split("/")[0] in ("aachen", "bochum") for i in split.train)
    assert set(np.unique(np.asarray(decoded.masks))) <= {19, 0, 1, 13, 10}


def test_voc_lists_decode_only_the_listed_frames_and_name_missing_ones(tmp_path, capsys):
    data = voc(tmp_path / "voc")
    preset = layout("voc")
    images, masks = preset.folders(data)
    official = preset.official(data)
    pairs, problems = find_pairs(images, masks)
    assert len(problems) == 3  # images without masks: not part of the split
    kept, problems = keep_listed(official, images, masks, None)(pairs, problems)
    assert len(kept) == 8 and problems == []
    split = split_by_lists([p.name for p in kept], official)
    assert (len(split.train), len(split.val)) == (6, 2)
    with open(official.val_list, "a") as f:
        f.write("2007_999999\n")
    assert main(["train", str(data), "--layout", "voc", "--out", str(tmp_path / "run"), *TINY,
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    assert f"{official.val_list}: line 3: '2007_999999' has no image/mask pair" in capsys.readouterr().err


def test_a_name_in_both_lists_is_refused(tmp_path):
    (tmp_path / "train.txt").write_text("a\nb\n")
    (tmp_path / "val.txt").write_text("b\n")
    with pytest.raises(DataError, match="names 1 frame.s. the training list train.txt names too, such as 'b'"):
        split_by_lists(["a", "b"], OfficialSplit(train_list=tmp_path / "train.txt", val_list=tmp_path / "val.txt"))
    with pytest.raises(ValueError, match="train_list and val_list"):
        OfficialSplit(train_list=tmp_path / "train.txt")


def test_val_folder_trains_on_one_dataset_and_validates_on_another(tmp_path):
    train_data, val_data = carla(tmp_path / "train"), carla(tmp_path / "val")
    run = tmp_path / "run"
    assert main(["train", str(train_data), "--val", str(val_data), "--out", str(run), *TINY,
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    row = (run / "history.csv").read_text().splitlines()[1]
    assert row.count(",,") == 0


def test_ignore_index_255_beyond_the_classes_is_neither_trained_nor_scored(tmp_path, capsys):
    """A user's own masks with 255 borders and 5 classes: --ignore-index 255 instead of a layout."""
    images, masks = tmp_path / "data" / "CameraRGB", tmp_path / "data" / "CameraMask"
    border = 0
    for k in range(8):
        image, ids = frame(k, 32, 48)
        ids[0, :] = 255
        border += int((ids == 255).sum())
        save(images / f"{k:03d}.png", image[..., :3])
        save(masks / f"{k:03d}.png", ids)
    cache, data = ["--cache-dir", str(tmp_path / "cache"), "--no-progress"], str(tmp_path / "data")
    assert main(["check", data, "--classes", "5", *cache]) == 2
    assert "mask has ids 255 but there are only 5 classes" in capsys.readouterr().err
    assert main(["check", data, "--classes", "5", "--ignore-index", "255", *cache]) == 0
    run = tmp_path / "run"
    assert main(["train", data, "--out", str(run), "--classes", "5", "--ignore-index", "255", "--recipe", "seed",
                 "--size", "32x48", "--epochs", "1", "--batch-size", "4", "--filters", "4", *cache]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["ignore_index"] == 255
    assert main(["evaluate", str(run), data, *cache]) == 0
    scored = json.loads((run / "evaluation" / "report.json").read_text())
    assert sum(c["true_pixels"] for c in scored["per_class"]) == 8 * 32 * 48 - border  # the borders unscored
    capsys.readouterr()
    assert main(["predict", str(run), str(images), "--masks", str(masks), "--out", str(tmp_path / "pred"),
                 "--no-progress"]) == 0  # the true-mask figures show the borders, not refuse them
    assert main(["train", data, "--out", str(tmp_path / "r2"), "--classes", "5", "--ignore-index", "256", *cache]) == 1
    assert "--ignore-index must be in [0, 255], not 256" in capsys.readouterr().err


def test_a_list_may_name_files_with_their_suffix(tmp_path):
    """`ls CameraRGB > list.txt` names files; they stand for their pairs (named without suffix)."""
    (tmp_path / "train.txt").write_text("a.png\nb.JPG\n# c.png\n")
    (tmp_path / "val.txt").write_text("c.png\nd.v2\n")  # a dot that is no image suffix stays in the name
    split = split_by_lists(["a", "b", "c", "d.v2"],
                           OfficialSplit(train_list=tmp_path / "train.txt", val_list=tmp_path / "val.txt"))
    assert (split.train, split.val) == ([0, 1], [2, 3])
