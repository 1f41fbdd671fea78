"""``suggest``: frames ranked by class-weighted uncertainty, picks spread over drives, and what it writes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_run
from PIL import Image

from pixelwise.classes import ClassSet
from pixelwise.cli.main import main
from pixelwise.data.official import read_list
from pixelwise.data.problems import DataError
from pixelwise.data.pairs import IMAGE_DIR
from pixelwise.evaluation.report import REPORT_FILE
from pixelwise.inference.suggest import report_weights, spread, suggest, uncertainty
from pixelwise.inference.suggest_outputs import suggestion_paths, write_suggestion
from pixelwise.rundir import EVALUATION_DIR

CLASSES = ClassSet(("Road", "Car", "Pole"), ((128, 64, 128), (0, 0, 142), (153, 153, 153)))


class Scripted:
    """A stand-in for a loaded run (what ``suggest`` calls on its predictor): each frame's class
    probabilities are set by its pixels' red value, so each test decides how sure the model is."""

    def __init__(self, run_dir: Path, probabilities: dict[int, tuple[float, float, float]]):
        self.run_dir, self.classes, self.table = run_dir, CLASSES, probabilities

    def seen_size(self, image: np.ndarray, size) -> tuple[int, int]:
        return image.shape[:2]

    def resized(self, image: np.ndarray, size) -> np.ndarray:
        return image

    def batch_logits(self, images: np.ndarray) -> torch.Tensor:
        rows = [torch.tensor(self.table[int(im[0, 0, 0])]).log()[:, None, None].expand(3, *im.shape[:2])
                for im in images]
        return torch.stack(rows)


def frames(folder: Path, reds: dict[str, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, red in reds.items():
        pixels = np.zeros((8, 12, 3), np.uint8)
        pixels[..., 0] = red
        Image.fromarray(pixels).save(folder / name)
        paths.append(folder / name)
    return paths


def test_uncertainty_is_one_minus_the_margin_of_the_two_likeliest_classes():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.1, 0.5]])[:, :, None, None]
    unsure, first, second = uncertainty(p)
    assert torch.allclose(unsure.flatten(), torch.tensor([0.5, 0.9]))
    assert first.flatten().tolist() == [0, 2] and second.flatten().tolist() == [1, 0]


def test_frames_rank_by_uncertainty_weighted_toward_the_weakest_classes(tmp_path):
    # Red 1: sure of Road. Red 2: Car, Road a close second. Red 3: Pole, Car a close second.
    model = Scripted(tmp_path / "run", {1: (0.98, 0.015, 0.005), 2: (0.49, 0.5, 0.01), 3: (0.0, 0.45, 0.55)})
    paths = frames(tmp_path / "pool", {"a_0001.png": 1, "b_0100.png": 2, "c_0200.png": 3})
    found = suggest(model, [tmp_path / "pool"], count=3)
    assert [f.path.name for f in found.ranked] == ["c_0200.png", "b_0100.png", "a_0001.png"]
    # no report: weights are 1 - mean confidence where each class is the top one (0.02, 0.5, 0.45), scaled
    assert "confidence" in found.weights_from
    assert found.weights == pytest.approx([0.04, 1.0, 0.9], rel=1e-4)  # float32 softmax
    # each frame's score is the mean of its pixels' uncertainty, half by each of its two likeliest classes
    w = found.weights
    expected = {"a_0001.png": 0.035 / 2 * (w[0] + w[1]), "b_0100.png": 0.99 / 2 * (w[0] + w[1]),
                "c_0200.png": 0.9 / 2 * (w[2] + w[1])}
    assert {f.path.name: f.score for f in found.ranked} == pytest.approx(expected, rel=1e-4)
    assert found.ranked[0].classes == ("Car", "Pole")  # Car weighs more than Pole, and Road plays no part
    assert len(found.picks) == 3 and len(paths) == 3


def test_an_evaluation_report_sets_the_weights(tmp_path):
    run = tmp_path / "run"
    (run / EVALUATION_DIR).mkdir(parents=True)
    rows = [{"id": 0, "iou": 0.9}, {"id": 1, "iou": 0.1}, {"id": 2, "iou": None}]
    (run / EVALUATION_DIR / REPORT_FILE).write_text(json.dumps({"per_class": rows}))
    assert report_weights(run, 3) == pytest.approx([0.1, 0.9, 0.9])  # an unscored class weighs most
    # x: Road and Car tie; y: Road and Pole tie. Car (IoU 0.1) and Pole (unscored) both weigh 0.9.
    model = Scripted(run, {1: (0.5, 0.5, 0.0), 2: (0.5, 0.0, 0.5)})
    frames(tmp_path / "pool", {"x_0001.png": 1, "y_0100.png": 2})
    found = suggest(model, [tmp_path / "pool"], count=1)
    assert REPORT_FILE in found.weights_from
    # scaled so the largest weight is 1: Road 0.1 / 0.9, Car and Pole 1
    assert found.ranked[0].score == pytest.approx(found.ranked[1].score) == pytest.approx((0.1 / 0.9 + 1) / 2)
    (run / EVALUATION_DIR / REPORT_FILE).write_text("{broken")
    with pytest.raises(DataError, match="cannot read the evaluation report"):
        report_weights(run, 3)


def test_picks_follow_each_drives_share_of_frames_and_skip_neighbours():
    # drive one: frames 10-15; drive two: frames 500-502 (a gap far beyond the median step)
    names = [f"{n:06d}" for n in (10, 11, 12, 13, 14, 15, 500, 501, 502)]
    scores = np.array([0.90, 0.95, 0.20, 0.80, 0.10, 0.15, 0.99, 0.30, 0.97])
    picks = [names[i] for i in spread(names, scores, 3)]
    # shares of 3 picks: 2 for drive one (6 of 9 frames), 1 for drive two, however much better drive two scores.
    # 11 first (drive one furthest below its share), which rules out 10 and 12; then both are 1 below:
    # drive two's best (500, 0.99) beats drive one's best open frame (13, 0.80); then drive one again.
    assert picks == ["000011", "000500", "000013"]
    # asked for more than there is: 11, 13, 15 from drive one (the rest neighbour them), 500 and 502
    assert sorted(names[i] for i in spread(names, scores, 20)) == ["000011", "000013", "000015", "000500", "000502"]



def test_drives_equally_short_of_their_shares_tie_exactly_and_the_scores_decide():
    # drives of 7, 4 and 19 frames; 4 picks: shares 28/30, 16/30 and 76/30. After two picks from the
    # third drive and one from the first, the second and third are both 16/30 short: the third's better
    # score decides (in floating point, 4 * 4 / 30 and 4 * 19 / 30 - 2 differ in the last bit).
    sizes, starts = (7, 4, 19), (0, 1000, 2000)
    names = [f"{start + k:06d}" for start, n in zip(starts, sizes) for k in range(n)]
    scores = np.repeat([0.1, 0.5, 0.9], sizes)
    assert [names[i] for i in spread(names, scores, 4)] == ["002000", "002002", "000000", "002004"]

def test_unreadable_frames_are_named_and_the_rest_still_ranked(tmp_path):
    model = Scripted(tmp_path / "run", {1: (0.6, 0.3, 0.1)})
    frames(tmp_path / "pool", {"a_0001.png": 1, "b_0002.png": 1})
    (tmp_path / "pool" / "broken.png").write_bytes(b"not a png")
    found = suggest(model, [tmp_path / "pool"], count=5)
    assert len(found.ranked) == 2 and [p.path.name for p in found.problems] == ["broken.png"]
    with pytest.raises(ValueError, match="count"):
        suggest(model, [tmp_path / "pool"], count=0)


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("suggest") / "run", epochs=1)


def test_suggest_command_writes_a_training_list_scores_and_a_contact_sheet(run, scenes, tmp_path, capsys):
    out = tmp_path / "next" / "picks.txt"
    assert main(["suggest", str(run), str(scenes / IMAGE_DIR), "--count", "5", "--out", str(out),
                 "--no-progress", "--batch-size", "3"]) == 0
    listed, table, sheet = suggestion_paths(out)
    names = [name for _, name in read_list(listed)]
    assert len(names) == 5 and all((scenes / IMAGE_DIR / f"{n}.png").is_file() for n in names)
    rows = table.read_text().splitlines()
    assert rows[0].startswith("rank,file,score,picked") and len(rows) == 1 + 32
    picked = sorted(int(r.split(",")[3]) for r in rows[1:] if r.split(",")[3])
    assert picked == [1, 2, 3, 4, 5]
    with Image.open(sheet) as picture:
        assert picture.width > 300 and picture.height > 3 * 100  # 5 picks, 2 a row: 3 rows
    printed = capsys.readouterr().out
    assert "ranked 32 frames" in printed and f"wrote {listed}" in printed


def test_suggest_command_words_its_errors_as_flags(run, scenes, tmp_path, capsys):
    assert main(["suggest", str(run), str(scenes / IMAGE_DIR), "--count", "0", "--out", str(tmp_path / "l.txt")]) == 1
    assert "--count" in capsys.readouterr().err
    assert main(["suggest", str(run), "--count", "2"]) == 1
    assert "nothing to rank" in capsys.readouterr().err
    assert main(["suggest", str(run), str(tmp_path / "missing"), "--count", "2", "--out", str(tmp_path / "l.txt")]) == 2
    assert "missing" in capsys.readouterr().err


def test_write_suggestion_returns_what_it_wrote(tmp_path):
    model = Scripted(tmp_path / "run", {1: (0.6, 0.3, 0.1), 2: (0.4, 0.4, 0.2)})
    frames(tmp_path / "pool", {"a_0001.png": 1, "b_0900.png": 2})
    written = write_suggestion(suggest(model, [tmp_path / "pool"], count=2), model, tmp_path / "s.txt")
    assert written == list(suggestion_paths(tmp_path / "s.txt")) and all(p.is_file() for p in written)
    assert (tmp_path / "s.txt").read_text() == "b_0900.png\na_0001.png\n"
