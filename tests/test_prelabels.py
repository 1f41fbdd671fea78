"""Predictions handed back to the labelling tools: per-pixel confidence, Label Studio tasks with brush
pre-labels and CVAT archives, each read back to the masks predict wrote."""

import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_run
from PIL import Image

import pixelwise as pw
from pixelwise.cli.main import main
from pixelwise.data.exports import read_cvat, read_labelstudio
from pixelwise.data.pairs import IMAGE_DIR
from pixelwise.inference.upsample import streamed_ids

brush = pytest.importorskip("label_studio_converter.brush")


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("prelabels") / "run", epochs=1)


def whole_confidence(logits: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    up = F.interpolate(logits[None], size=shape, mode="bilinear", align_corners=False)[0]
    return (up.softmax(0).max(0).values * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("max_bytes", [None, 23 * 301 * 4 * 5])  # whole, and bands of 5 rows
def test_confidence_is_the_softmax_probability_of_the_pixels_class(max_bytes):
    logits = torch.randn(23, 48, 64, generator=torch.Generator().manual_seed(3)) * 2
    shape = (211, 301)
    sure = np.empty(shape, np.uint8)
    ids = streamed_ids([(0, logits)], (48, 64), shape, **({"max_bytes": max_bytes} if max_bytes else {}),
                       confidence=sure)
    assert np.abs(sure.astype(int) - whole_confidence(logits, shape)).max() <= 1  # float rounding of the sums
    assert ids.shape == shape and sure.min() >= 255 // 23  # a top class of 23 has at least 1/23


def test_model_predict_returns_confidence_on_request(run, scenes):
    model = pw.load(run, precision="fp32")
    image = sorted((scenes / IMAGE_DIR).iterdir())[0]
    ids, sure = model.predict(image, confidence=True)
    assert np.array_equal(ids, model.predict(image)) and sure.dtype == np.uint8 and sure.shape == ids.shape
    pixels = pw.read_image(image)
    assert np.abs(sure.astype(int) - whole_confidence(model.logits(pixels), pixels.shape[:2])).max() <= 1


def test_predict_writes_label_studio_tasks_that_read_back_as_its_masks(run, scenes, tmp_path, capsys):
    images = sorted((scenes / IMAGE_DIR).iterdir())[:3]
    out = tmp_path / "out"
    assert main(["predict", str(run), *map(str, images), "--out", str(out), "--format", "labelstudio",
                 "--no-progress"]) == 0
    assert "pre-labels for Label Studio in" in capsys.readouterr().out
    tasks = json.loads((out / "labelstudio.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [str(p) for p in images]
    classes = pw.load(run).classes
    for task, image in zip(tasks, images):
        ids = np.asarray(Image.open(out / f"{image.stem}_mask.png"))
        prediction = task["predictions"][0]
        sure = np.asarray(Image.open(out / f"{image.stem}_confidence.png"))
        assert prediction["score"] == pytest.approx(sure.mean() / 255) and 0 < prediction["score"] <= 1
        for result in prediction["result"]:  # Label Studio's own decoder reads each class's stroke
            stroke = brush.decode_rle(result["value"]["rle"]).reshape(*ids.shape, 4)[:, :, 3] > 0
            assert np.array_equal(stroke, ids == classes.index(result["value"]["brushlabels"][0]))
    accepted = [{"data": t["data"], "annotations": [{"result": t["predictions"][0]["result"]}]} for t in tasks]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(accepted))
    dataset = read_labelstudio(export, scenes / IMAGE_DIR, tmp_path / "cache", classes)
    assert dataset.problems == []
    for image in images:
        assert np.array_equal(np.asarray(Image.open(dataset.masks / f"{image.stem}.png")),
                              np.asarray(Image.open(out / f"{image.stem}_mask.png")))


def test_predict_writes_a_cvat_archive_that_reads_back_as_its_masks(run, scenes, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(run), str(scenes / IMAGE_DIR), "--out", str(out), "--format", "cvat",
                 "--no-progress"]) == 0
    assert not list(out.glob("*_confidence.png"))  # only asked for, or for Label Studio's scores
    with zipfile.ZipFile(out / "cvat.zip") as archive:
        archive.extractall(tmp_path / "cvat")
    dataset = read_cvat(tmp_path / "cvat", scenes / IMAGE_DIR)
    assert dataset.classes == pw.load(run).classes
    assert main(["check", str(tmp_path / "cvat"), "--layout", "cvat", "--images", str(scenes / IMAGE_DIR),
                 "--no-progress"]) == 0
    assert f"{len(list((scenes / IMAGE_DIR).iterdir()))} valid pairs, 0 problem(s)" in capsys.readouterr().out
    palette = dataset.classes.palette()
    for mask in sorted(dataset.masks.iterdir())[:3]:
        colours = np.asarray(Image.open(mask).convert("RGB"))
        assert np.array_equal(colours, palette[np.asarray(Image.open(out / f"{mask.stem}_mask.png"))])
