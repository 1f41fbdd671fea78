"""The command line end to end in a temporary folder, and its error handling: one line per problem,
a non-zero exit, never a traceback."""

import json
import shutil
import subprocess
import sys

import pytest

from pixelwise.cli.main import main
from pixelwise.rundir import load_config


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_synth_train_evaluate_predict(tmp_path, capsys):
    data, run, cache = tmp_path / "data", tmp_path / "run", tmp_path / "cache"
    assert run_cli(capsys, "synth", data, "--count", 12, "--size", "96x128", "--no-progress")[0] == 0
    code, out, _ = run_cli(capsys, "check", data, "--cache-dir", cache, "--no-progress")
    assert code == 0 and "12 valid pairs" in out and "Road" in out
    code, out, _ = run_cli(capsys, "train", data, "--out", run, "--recipe", "scratch", "--epochs", 1, "--batch-size", 4,
                           "--size", "48x64", "--filters", 8, "--cache-dir", cache, "--no-progress")
    assert code == 0 and "best epoch 1" in out
    code, out, _ = run_cli(capsys, "evaluate", run, data, "--cache-dir", cache, "--no-progress")
    assert code == 0 and "mIoU" in out and "Pedestrian" in out
    report = json.loads((run / "evaluation" / "report.json").read_text())
    assert report["images"] == 12 and len(report["per_class"]) == 23
    assert {c["status"] for c in report["per_class"]} >= {"present", "absent"}
    assert (run / "evaluation" / "confusion.csv").exists() and (run / "evaluation" / "confusion.png").exists()
    code, out, _ = run_cli(capsys, "predict", run, data / "CameraRGB", "--masks", data / "CameraMask",
                           "--out", tmp_path / "pred", "--no-progress")
    assert code == 0 and "wrote 48 files" in out


def test_check_reports_every_problem_and_fails(tmp_path, capsys):
    from pixelwise.synth import write_dataset

    data = write_dataset(tmp_path / "data", 6, seed=3, height=64, width=64, progress=False)
    images = sorted((data / "CameraRGB").iterdir())
    images[0].write_bytes(b"")
    (data / "CameraMask" / images[1].name).unlink()
    code, out, err = run_cli(capsys, "check", data, "--cache-dir", tmp_path / "cache", "--no-progress")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert any(images[0].name in line and "empty" in line for line in lines)
    assert any(images[1].name in line for line in lines)


def test_train_refuses_bad_data_with_one_line_each(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", tmp_path / "nowhere", "--out", tmp_path / "run")
    assert code == 2 and "nowhere" in err and len(err.strip().splitlines()) <= 2


def test_evaluate_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "data" / "CameraRGB").mkdir(parents=True)
    (tmp_path / "data" / "CameraMask").mkdir()
    code, _, err = run_cli(capsys, "evaluate", tmp_path, tmp_path / "data")
    assert code == 1 and "not a pixelwise run directory" in err


def test_summary_prints_the_assignment_table(capsys):
    code, out, _ = run_cli(capsys, "summary")
    assert code == 0
    assert "['Conv2D', (None, 96, 128, 32), 896, 'same', 'relu', 'HeNormal']" in out
    assert "Total params: 8,640,471" in out
    code, out, _ = run_cli(capsys, "summary", "--preset", "original")
    assert code == 0 and "Total params: 31,030,658" in out and "(None, 388, 388, 2)" in out


def test_summary_bad_size_is_a_clear_error(capsys):
    code, _, err = run_cli(capsys, "summary", "--input", "100x128x3")
    assert code == 1 and "try 96 or 112" in err


def test_console_script_is_installed():
    exe = shutil.which("pixelwise") or str(__import__("pathlib").Path(sys.executable).parent / "pixelwise")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("demo", "train", "evaluate", "predict", "check", "synth", "summary"):
        assert command in out


def test_resume_via_cli_extends_and_refuses_changed_settings(scenes, tmp_path, capsys):
    run, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--recipe", "scratch", "--size", "48x64", "--filters", 8, "--batch-size", 8, "--cache-dir", cache, "--no-progress"]
    assert run_cli(capsys, "train", scenes, "--out", run, "--epochs", 1, *common)[0] == 0
    code, _, err = run_cli(capsys, "train", scenes, "--out", run, "--epochs", 2, "--resume", "--lr", "0.1")
    assert code == 1 and "--lr cannot change when resuming" in err
    code, _, err = run_cli(capsys, "train", scenes, "--out", run, "--epochs", 2, "--resume", "--no-batch-norm")
    assert code == 1 and "--batch-norm cannot change" in err
    code, _, err = run_cli(capsys, "train", scenes, "--out", run, "--epochs", 2, "--resume", "--recipe", "seed")
    assert code == 1 and "--filters, --batch-norm, --size" in err  # the recipe's settings that differ, by flag
    code, _, err = run_cli(capsys, "train", scenes, "--out", run, "--epochs", 2, "--resume", "--preset", "original")
    assert code == 1 and "model.padding" in err and "cannot change" in err  # no flag: named as the setting
    with pytest.raises(SystemExit) as usage:  # no abbreviations: --resume must see every flag by its full name
        run_cli(capsys, "train", scenes, "--out", run, "--epochs", 2, "--resume", "--sched", "constant")
    assert usage.value.code == 2
    code, out, err = run_cli(capsys, "train", scenes, "--out", run, "--epochs", 2, "--resume", "--cache-dir", cache,
                             "--no-progress", "--preset", "assignment", "--batch-norm", "--filters", 8)
    assert code == 0 and "epoch   2/2" in out, err
    code, out, err = run_cli(capsys, "train", scenes, "--out", run, "--epochs", 3, "--resume", "--time-limit", 5,
                             "--cache-dir", cache, "--no-progress")
    assert code == 0 and "epoch   3/3" in out and load_config(run).train.time_limit == 5, err
    code, _, err = run_cli(capsys, "train", scenes, "--out", run, "--epochs", 1, *common)
    assert code == 1 and "already holds a run" in err


def test_train_skip_invalid_lists_what_it_skipped(scenes, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(scenes, data)
    broken = sorted((data / "CameraMask").iterdir())[0]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    args = ["train", data, "--out", tmp_path / "run", "--recipe", "scratch", "--epochs", 1, "--size", "48x64", "--filters", 8,
            "--cache-dir", tmp_path / "cache", "--no-progress"]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and broken.name in err and "--skip-invalid" in err
    code, out, _ = run_cli(capsys, *args, "--skip-invalid")
    assert code == 0 and "skipping 1 invalid pair" in out and broken.name in out


@pytest.mark.parametrize("argv, message", [
    (["train", "x", "--out", "r", "--epochs", "0"], "--epochs must be ≥ 1, not 0"),
    (["train", "x", "--out", "r", "--recipe", "scratch", "--preset", "original"], "does not fit this U-Net"),
    (["train", "x", "--out", "r", "--filters", "8"], "--filters: only the assignment's U-Net has this setting"),
    (["train", "x", "--out", "r", "--no-batch-norm"], "the efficientnet-lite0 network has its own widths and BatchNorm"),
])
def test_bad_training_settings_are_one_line_errors(tmp_path, capsys, monkeypatch, argv, message):
    (tmp_path / "x" / "CameraRGB").mkdir(parents=True)
    (tmp_path / "x" / "CameraMask").mkdir()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and message in err
