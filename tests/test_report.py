"""The evaluation report: each frame scored alone, the worst frames kept as thumbnails in bounded memory,
and report.html, a self-contained page checked in a real headless browser."""

import base64
import io
import json
import math
import os
import re
import shutil
import time

import numpy as np
import pytest
import torch
from browser import CHROMIUM, DevTools
from conftest import small_run
from PIL import Image

from pixelwise.data.decode import read_image, read_mask
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.evaluation.frames import FrameScore, WorstFrames, frame_score
from pixelwise.evaluation.metrics import confusion_matrix, scores
from pixelwise.evaluation.report import write_report
from pixelwise.inference.model import load

WORST = 4


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("report") / "run", epochs=1)


@pytest.fixture(scope="module")
def evaluation(run, scenes, tmp_path_factory):
    return load(run).evaluate(scenes / IMAGE_DIR, scenes / MASK_DIR, progress=False, worst=WORST,
                              cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def report(evaluation, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    write_report(evaluation, out)
    return out


def _frame(value: int, shape=(300, 400)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.full((*shape, 3), value, np.uint8)
    truth = np.zeros(shape, np.int64)
    truth[:30, :40] = -100  # an unlabelled corner
    return image, truth, np.ones(shape, np.uint8)


def test_worst_frames_keeps_the_lowest_with_small_thumbnails():
    worst = WorstFrames(k=3, max_side=64)
    mious = [0.9, 0.2, 0.5, float("nan"), 0.2, 0.1, 0.7, 0.3]
    for i, miou in enumerate(mious):
        worst.offer(FrameScore(f"f{i}", miou, 0.5), *_frame(i))
    kept = worst.frames()
    assert [f.score.name for f in kept] == ["f5", "f1", "f4"]  # lowest first; of equal scores the first seen
    for frame in kept:
        assert frame.image.shape == (48, 64, 3) and frame.truth.shape == frame.prediction.shape == (48, 64)
        assert frame.truth[0, 0] == 255 and frame.truth.dtype == np.uint8  # unlabelled, painted black
    assert WorstFrames(k=0).frames() == []


def test_a_frame_is_scored_on_its_own_truth():
    truth = np.array([[1, 1], [2, 2]])
    pred = np.array([[1, 1], [1, 2]])
    score = frame_score("a", confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), 4).numpy())
    assert score.miou == pytest.approx((2 / 3 + 1 / 2) / 2) and score.pixel_accuracy == 0.75


def test_evaluate_scores_every_frame_and_keeps_the_worst(evaluation, scenes):
    names = sorted(p.stem for p in (scenes / IMAGE_DIR).iterdir())
    assert sorted(f.name for f in evaluation.frames) == names
    ranked = sorted((f for f in evaluation.frames if not math.isnan(f.miou)), key=lambda f: f.miou)
    assert [w.score for w in evaluation.worst] == ranked[:WORST]
    assert all(max(w.image.shape[:2]) <= 256 for w in evaluation.worst)
    # A frame's own mIoU is that of its prediction against its truth.
    model = load(evaluation.inputs["run"])
    worst = evaluation.worst[0].score
    pred = model.predict(read_image(scenes / IMAGE_DIR / f"{worst.name}.png"))
    truth = read_mask(scenes / MASK_DIR / f"{worst.name}.png")
    assert scores(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), len(model.classes))).miou == pytest.approx(worst.miou)


def test_report_json_lists_each_frame_and_what_was_evaluated(report, evaluation, run, scenes):
    written = json.loads((report / "report.json").read_text())
    assert [f["name"] for f in written["per_frame"]] == [f.name for f in evaluation.frames]
    assert written["evaluated"] == {"run": str(run), "weights": "best", "engine": load(run).engine,  # what ran
                                    "tta": False, "scales": [1.0],
                                    "images": str(scenes / IMAGE_DIR), "masks": str(scenes / MASK_DIR)}


def test_report_html_is_self_contained(report, evaluation):
    page = (report / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 1 + 4 * WORST  # the confusion matrix, then four panels per frame
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()
    assert "http:" not in page and "https:" not in page and "<script" not in page and "<link" not in page
    # The per-class table is sorted by IoU, highest first, and lists pixel counts.
    rows = re.findall(r'<tr><td class="name">.*?</td><td>([0-9.]+)</td>', page)
    iou = [float(v) for v in rows]
    assert iou == sorted(iou, reverse=True) and len(iou) == sum(evaluation.status(i) != "absent"
                                                                 for i in range(len(evaluation.classes)))
    s = evaluation.scores
    best = int(np.nanargmax(np.where(s.support > 0, s.iou, np.nan)))
    assert f"{int(s.support[best]):,}" in page
    for frame in evaluation.worst:
        assert f"<b>{frame.score.name}</b>: mIoU {frame.score.miou:.3f}" in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_a_headless_browser(report, tmp_path):
    browser = DevTools("about:blank", tmp_path / "profile")
    try:
        browser.attach()
        for domain in ("Runtime", "Log", "Page"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", url=(report / "report.html").resolve().as_uri())
        browser.wait_for("document.readyState === 'complete' && document.title.includes('evaluation')")
        images = browser.wait_for("[...document.images].every(i => i.complete) && "
                                  "[...document.images].map(i => [i.naturalWidth, i.naturalHeight])")
        assert len(images) == 1 + 4 * WORST and all(w > 0 and h > 0 for w, h in images)
        assert browser.evaluate("document.querySelectorAll('figure.frame').length") == WORST
        time.sleep(0.2)  # let late console messages arrive before they are read
        browser.evaluate("1")
        errors = [e for e in browser.events if e["method"] == "Runtime.exceptionThrown"
                  or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
                  or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        assert errors == []
        height = browser.evaluate("document.documentElement.scrollHeight")
        shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": 1280, "height": min(height, 2400), "scale": 1})["data"]
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot))
        if os.environ.get("PIXELWISE_REPORT_SCREENSHOT"):
            shutil.copy(tmp_path / "report.png", os.environ["PIXELWISE_REPORT_SCREENSHOT"])
    finally:
        browser.close()
