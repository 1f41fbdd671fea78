"""`pixelwise compare`: three small runs side by side, every number read back from the runs' own files,
only the settings in which they differ, and a one-line message for a folder that is not a run."""

import csv
import io
import json

import pytest
from conftest import small_config

from pixelwise.cli.main import main
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.evaluation.compare import compare
from pixelwise.evaluation.evaluate import evaluate
from pixelwise.evaluation.report import write_report
from pixelwise.rundir import read_history
from pixelwise.training.loop import train


@pytest.fixture(scope="module")
def runs(scenes, tmp_path_factory):
    """a: 1 epoch; b: 2 epochs; c: 1 epoch at another learning rate, not evaluated."""
    root = tmp_path_factory.mktemp("compare")
    configs = {"a": small_config(epochs=1), "b": small_config(epochs=2), "c": small_config(epochs=1, lr=2e-3)}
    for name, config in configs.items():
        train(scenes / IMAGE_DIR, scenes / MASK_DIR, root / name, config, cache_dir=root / "cache", progress=False,
              log=lambda _: None)
    for name in ("a", "b"):
        evaluation = evaluate(root / name, scenes / IMAGE_DIR, scenes / MASK_DIR, cache_dir=root / "cache",
                              progress=False, worst=0)
        write_report(evaluation, root / name / "evaluation")
    return [root / name for name in configs]


def test_compare_prints_the_runs_own_numbers_and_only_the_settings_that_differ(runs, tmp_path, capsys):
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    head = printed.splitlines()[0]
    assert [c.strip() for c in head.strip("|").split("|")] == [
        "run", "recipe", "train.epochs", "train.lr", "epochs", "train time", "best val mIoU (epoch)", "mIoU",
        "pixel acc."]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "cmp" / "compare.csv").read_text())))
    assert [r["run"] for r in rows] == ["a", "b", "c"]
    assert [r["train.epochs"] for r in rows] == ["1", "2", "1"] and [r["train.lr"] for r in rows] == [
        "0.001", "0.001", "0.002"]
    for run, row, changed in zip(runs, rows, (5, 5, 6)):
        history = read_history(run)
        best = max(history, key=lambda h: h["val_miou"])
        assert int(row["epochs"]) == history[-1]["epoch"] and int(row["best_epoch"]) == best["epoch"]
        assert float(row["best_val_miou"]) == best["val_miou"]
        assert float(row["train_seconds"]) == pytest.approx(sum(h["seconds"] for h in history), rel=1e-12)
        assert f"| {row['run']} | seed +{changed} |" in printed  # small_config: the seed recipe with 5 changes
        report = run / "evaluation" / "report.json"
        if not report.exists():
            assert row["miou"] == "" and all(row[k] == "" for k in row if k.startswith("iou."))
            continue
        scored = json.loads(report.read_text())
        assert float(row["miou"]) == scored["miou"] and float(row["pixel_accuracy"]) == scored["pixel_accuracy"]
        assert f"{scored['miou']:.3f} | {scored['pixel_accuracy']:.3f} |" in printed
        for entry in scored["per_class"]:
            key = f"iou.{entry['name']}"
            if entry["status"] == "present":
                assert float(row[key]) == entry["iou"]
            else:
                assert row.get(key, "") == ""
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"compare.csv", "compare.md", "compare_per_class.png"}
    assert (tmp_path / "cmp" / "compare.md").read_text() in printed


def test_compare_api_names_each_run_and_its_recipe(runs):
    comparison = compare(runs[:2])
    assert comparison.differing == ["train.epochs"]
    assert [r.recipe for r in comparison.runs] == ["seed +5", "seed +5"]
    assert comparison.classes and all(r.iou(c) is not None for r in comparison.runs for c in comparison.classes)


def test_one_run_has_nothing_that_differs(runs):
    assert compare(runs[:1]).differing == []


@pytest.mark.parametrize("damage", ["missing", "not a run", "bad config", "bad history", "bad report"])
def test_a_folder_that_cannot_be_read_is_one_line_naming_it(runs, tmp_path, capsys, damage):
    import shutil

    broken = tmp_path / "broken"
    if damage != "missing":
        broken.mkdir()
    if damage in ("bad config", "bad history", "bad report"):
        shutil.copytree(runs[0], broken, dirs_exist_ok=True)
    named = broken
    if damage == "bad config":
        named = broken / "config.json"
        named.write_text("{not json")
    elif damage == "bad history":
        named = broken / "history.csv"
        named.write_text("epoch,train_loss\nnot-a-number,1\n")
    elif damage == "bad report":
        named = broken / "evaluation" / "report.json"
        named.write_text("[1, 2]")
    assert main(["compare", str(runs[1]), str(broken)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pixelwise compare: error: {named}") and "Traceback" not in captured.err
