"""Labelling tools' exports read as datasets (Label Studio's JSON with brush RLE and polygons, CVAT's
Segmentation mask 1.1), and predictions written back in their formats: checked against Label Studio's
own RLE code (label-studio-converter) and by reading what was written."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.classes import CARLA, ClassSet
from pixelwise.cli.main import main
from pixelwise.data.cvat import read_labelmap, write_cvat
from pixelwise.data.exports import read_cvat, read_labelstudio
from pixelwise.data.labelstudio import decode_rle, encode_rle, image_name, mask_rle, prelabel_task
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.data.problems import DataError

brush = pytest.importorskip("label_studio_converter.brush")

UPLOAD = "/data/upload/7/{:08x}-{}"


def brush_result(mask: np.ndarray, label: str, rle: list[int] | None = None) -> dict:
    height, width = mask.shape
    return {"type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": width,
            "original_height": height, "value": {"format": "rle", "brushlabels": [label],
                                                 "rle": rle if rle is not None else brush.mask2rle(mask.astype(np.uint8) * 255)}}


def polygon_result(points_px: list[tuple[float, float]], shape: tuple[int, int], label: str) -> dict:
    height, width = shape
    return {"type": "polygonlabels", "original_width": width, "original_height": height,
            "value": {"points": [[100 * x / width, 100 * y / height] for x, y in points_px], "polygonlabels": [label]}}


def task(image: str, results: list[dict]) -> dict:
    return {"data": {"image": image}, "annotations": [{"was_cancelled": False, "result": results}]}


def carla_export(scenes: Path, count: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Tasks drawing the scenes' own masks as one brush stroke per class (encoded by Label Studio's code)."""
    tasks, truth = [], {}
    for n, mask_path in enumerate(sorted((scenes / MASK_DIR).iterdir())[:count]):
        ids = np.asarray(Image.open(mask_path).convert("RGB"))[:, :, 0]
        results = [brush_result(ids == c, CARLA.names[c]) for c in np.unique(ids) if c != 0]
        tasks.append(task(UPLOAD.format(n, mask_path.name), results))
        truth[mask_path.name] = ids
    return tasks, truth


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (96, 128), (300, 301)])
def test_brush_rle_agrees_with_label_studios_own_encoder_and_decoder(shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > 0.6
    mask[: shape[0] // 2] = True  # a long run as well as noise
    canvas = np.repeat(mask.ravel() * np.uint8(255), 4)
    assert np.array_equal(brush.decode_rle(mask_rle(mask)), canvas)
    assert np.array_equal(decode_rle(brush.mask2rle(mask.astype(np.uint8) * 255)), canvas)


def test_runs_longer_than_the_widest_length_field_are_cut_and_read_back():
    values = np.r_[np.zeros(70_000, np.uint8), np.full(140_000, 9, np.uint8), [3]]
    assert np.array_equal(decode_rle(encode_rle(values)), values)
    assert np.array_equal(brush.decode_rle(encode_rle(values)), values)


def test_a_cut_short_or_garbage_rle_is_a_value_error():
    rle = mask_rle(np.ones((20, 20), bool) ^ np.eye(20, dtype=bool))
    with pytest.raises(ValueError, match="ends after"):
        decode_rle(rle[: len(rle) // 2])
    with pytest.raises(ValueError, match="byte values"):
        decode_rle([300, 1, 2, 3, 4, 5, 6, 7])


def test_image_names_as_label_studio_stores_them():
    assert image_name("/data/upload/3/1a2b3c4d-frame%20one.png") == "1a2b3c4d-frame one.png"
    assert image_name("/data/local-files/?d=drive1/frame_7.png") == "frame_7.png"
    assert image_name("s3://bucket/a/b/frame.jpg") == "frame.jpg"


def test_a_label_studio_export_is_read_as_the_masks_it_draws(scenes, tmp_path):
    tasks, truth = carla_export(scenes, 4)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    dataset = read_labelstudio(export, scenes / IMAGE_DIR, tmp_path / "cache", CARLA)
    assert dataset.problems == [] and dataset.mask_format == "ids"
    for name, ids in truth.items():
        assert np.array_equal(np.asarray(Image.open(dataset.masks / name)), ids)
        assert (dataset.images / name).resolve() == (scenes / IMAGE_DIR / name).resolve()
    # The export's own classes by default: background, then its labels by name.
    own = read_labelstudio(export, scenes / IMAGE_DIR, tmp_path / "cache")
    present = sorted({CARLA.names[c] for ids in truth.values() for c in np.unique(ids) if c != 0})
    assert own.classes.names == ("background", *present)


def test_polygons_cover_the_pixels_whose_centres_they_hold_and_a_later_stroke_wins(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(images / "frame.png")
    square = polygon_result([(10, 5), (20, 5), (20, 15), (10, 15)], (40, 50), "Road")
    stroke = np.zeros((40, 50), bool)
    stroke[10:30, 15:25] = True
    export = tmp_path / "export.json"
    export.write_text(json.dumps([task("/data/local-files/?d=frame.png", [square, brush_result(stroke, "Car")])]))
    dataset = read_labelstudio(export, images, tmp_path / "cache")
    ids = np.asarray(Image.open(dataset.masks / "frame.png"))
    expected = np.zeros((40, 50), np.uint8)
    expected[5:15, 10:20] = dataset.classes.index("Road")
    expected[stroke] = dataset.classes.index("Car")
    assert np.array_equal(ids, expected)
    assert len(dataset.notes) == 1 and "25 pixel(s) painted by two classes: the later stroke wins" in dataset.notes[0]


def test_what_is_wrong_in_an_export_is_named_by_task_and_the_rest_is_read(scenes, tmp_path):
    tasks, truth = carla_export(scenes, 3)
    first = next(iter(truth))
    tasks.append(task(UPLOAD.format(99, first), tasks[0]["annotations"][0]["result"]))  # the same image again
    tasks.append(task("/data/upload/7/deadbeef-missing.png", tasks[1]["annotations"][0]["result"]))
    fourth = sorted((scenes / MASK_DIR).iterdir())[3].name
    tasks.append(task(UPLOAD.format(5, fourth), [brush_result(truth[first] > 0, "Dragon")]))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    dataset = read_labelstudio(export, scenes / IMAGE_DIR, tmp_path / "cache", CARLA)
    messages = [str(p) for p in dataset.problems]
    assert len(messages) == 3, messages
    assert f"(task 4, 00000063-{first}): annotates {first} again (task 1 did; that one is kept)" in messages[0]
    assert "(task 5, deadbeef-missing.png): no image file for '/data/upload/7/deadbeef-missing.png'" in messages[1]
    assert f"(task 6, 00000005-{fourth}): has label 'Dragon', which the classes lack" in messages[2]
    assert sorted(p.name for p in dataset.masks.iterdir()) == sorted(truth)  # task 6's image left out


def test_check_and_train_read_a_label_studio_export(scenes, tmp_path, capsys):
    tasks, _ = carla_export(scenes, 12)
    tasks.append(task("/data/upload/7/deadbeef-missing.png", tasks[0]["annotations"][0]["result"]))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    args = [export, "--layout", "labelstudio", "--images", scenes / IMAGE_DIR]
    assert main(["check", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert "(task 13, deadbeef-missing.png): no image file" in err
    code = main(["train", *map(str, args), "--out", str(tmp_path / "run"), "--recipe", "scratch", "--epochs", "1",
                 "--batch-size", "4", "--size", "48x64", "--filters", "8", "--no-progress"])
    assert code == 2 and "--skip-invalid" in capsys.readouterr().err
    code = main(["train", *map(str, args), "--out", str(tmp_path / "run"), "--recipe", "scratch", "--epochs", "1",
                 "--batch-size", "4", "--size", "48x64", "--filters", "8", "--no-progress", "--skip-invalid"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["classes"]["names"][0] == "background" and "Road" in saved["classes"]["names"]


def cvat_folder(scenes: Path, tmp_path: Path, classes: ClassSet, count: int) -> Path:
    """A CVAT export of the scenes written by write_cvat, unpacked, with the scenes' images beside it."""
    masks = [(p.stem, np.asarray(Image.open(p).convert("RGB"))[:, :, 0])
             for p in sorted((scenes / MASK_DIR).iterdir())[:count]]
    folder = tmp_path / "cvat"
    with zipfile.ZipFile(write_cvat(tmp_path / "cvat.zip", masks, classes)) as archive:
        archive.extractall(folder)
    (folder / "JPEGImages").mkdir()
    for stem, _ in masks:
        (folder / "JPEGImages" / f"{stem}.png").symlink_to(scenes / IMAGE_DIR / f"{stem}.png")
    return folder


def test_a_cvat_archive_written_from_masks_reads_back_as_the_same_ids(scenes, tmp_path, capsys):
    folder = cvat_folder(scenes, tmp_path, CARLA, 10)
    assert read_labelmap(folder / "labelmap.txt") == CARLA
    dataset = read_cvat(folder)
    assert dataset.mask_format == "colors" and dataset.classes == CARLA
    assert (folder / "ImageSets/Segmentation/default.txt").read_text().split() == sorted(
        p.stem for p in dataset.masks.iterdir())
    assert main(["check", str(folder), "--layout", "cvat"]) == 0
    out = capsys.readouterr().out
    assert "10 valid pairs, 0 problem(s)" in out
    first = sorted((scenes / MASK_DIR).iterdir())[0]
    assert main(["train", str(folder), "--layout", "cvat", "--out", str(tmp_path / "run"), "--recipe", "scratch",
                 "--epochs", "1", "--batch-size", "4", "--size", "48x64", "--filters", "8", "--no-progress"]) == 0
    assert main(["evaluate", str(tmp_path / "run"), str(folder), "--layout", "cvat", "--no-progress"]) == 0
    assert first.name  # the scenes are untouched


def test_a_bad_cvat_label_map_names_its_line(tmp_path):
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:255,0::\n")
    with pytest.raises(DataError, match=r"labelmap.txt:3: expected name:r,g,b"):
        read_labelmap(tmp_path / "labelmap.txt")
    with pytest.raises(DataError, match="no such folder"):
        read_cvat(tmp_path / "nowhere")


def test_prelabels_are_brush_results_label_studio_decodes_and_pixelwise_reads_back(scenes, tmp_path):
    _, truth = carla_export(scenes, 2)
    tasks = []
    for name, ids in truth.items():
        prelabel = prelabel_task(UPLOAD.format(1, name), ids, CARLA, model_version="run", score=0.9)
        for result in prelabel["predictions"][0]["result"]:  # Label Studio's own decoder agrees
            flat = brush.decode_rle(result["value"]["rle"]).reshape(*ids.shape, 4)[:, :, 3]
            assert np.array_equal(flat > 0, ids == CARLA.index(result["value"]["brushlabels"][0]))
        # a user accepts the predictions: they become the annotation
        tasks.append({"data": prelabel["data"], "annotations": [{"result": prelabel["predictions"][0]["result"]}]})
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    dataset = read_labelstudio(export, scenes / IMAGE_DIR, tmp_path / "cache", CARLA)
    for name, ids in truth.items():
        assert np.array_equal(np.asarray(Image.open(dataset.masks / name)), ids)


def test_labels_with_spaces_reach_the_commands_as_they_are(tmp_path, capsys):
    """Label names such as "Traffic Light" cannot be written in a class file (name r g b): the export's
    classes go to check and train as they are."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(images / "frame.png")
    light = polygon_result([(10, 5), (20, 5), (20, 15), (10, 15)], (40, 50), "Traffic Light")
    export = tmp_path / "export.json"
    export.write_text(json.dumps([task("/data/upload/1/0a1b2c3d-frame.png", [light])]))
    assert main(["check", str(export), "--layout", "labelstudio", "--images", str(images), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "Traffic Light" in out and "1 valid pairs, 0 problem(s)" in out
