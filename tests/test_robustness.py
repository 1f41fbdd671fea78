"""Never lose a run, never show a traceback (issue 18): two writers racing for one run directory, a
full disk, a folder that is not a run, broken links, and the Python API's array inputs."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.torch import load_file

from pixelwise.cli.main import main
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.data.problems import DataError
from pixelwise.files import WriteError
from pixelwise.rundir import LAST, RunDirError
from pixelwise.rundir_lock import LOCK_FILE, hold_run
from pixelwise.training import checkpoint
from pixelwise.training.loop import train

from conftest import small_config

FIXTURES = Path(__file__).parent / "fixtures"
# A run of a few seconds: the seed recipe, a narrow network, 48x64.
TRAIN = ["--recipe", "seed", "--size", "48x64", "--filters", "8", "--batch-size", "4", "--precision", "fp32", "--no-progress"]


def _train_cli(*argv: object, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pixelwise", "train", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for_lock(run: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lock = run / LOCK_FILE
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first train never locked its run")


def _weights(run: Path) -> dict:
    return {k: v for k, v in load_file(str(run / LAST)).items() if not k.startswith("_rng")}


# ------------------------------------------------------------------------------------ one writer per run

def test_two_processes_racing_for_one_run_the_second_is_refused_naming_the_first(scenes, tmp_path):
    cache = ["--cache-dir", tmp_path / "cache"]
    solo = _train_cli(scenes, "--out", tmp_path / "solo", "--epochs", "1", *TRAIN, *cache)
    assert solo.wait(timeout=600) == 0, solo.communicate()

    run = tmp_path / "race"
    first = _train_cli(scenes, "--out", run, "--epochs", "1", *TRAIN, *cache)
    try:
        _wait_for_lock(run, first)
        os.kill(first.pid, signal.SIGSTOP)  # the first is certainly still training while the others start
        try:
            for extra in ([], ["--resume"]):
                second = _train_cli(scenes, "--out", run, "--epochs", "1", *TRAIN, *cache, *extra)
                out, err = second.communicate(timeout=600)
                assert second.returncode == 1, (out, err)
                lines = err.strip().splitlines()
                assert len(lines) == 1, err
                assert str(run) in lines[0] and f"process {first.pid} is training this run" in lines[0], err
        finally:
            os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert f"run saved in {run}" in out
    solo_w, race_w = _weights(tmp_path / "solo"), _weights(run)
    assert solo_w.keys() == race_w.keys()
    assert all(np.array_equal(solo_w[k].numpy(), race_w[k].numpy()) for k in solo_w)
    assert (run / "history.csv").read_text().count("\n") == 2  # the header and one epoch: one run, not two


def test_a_lock_left_by_a_killed_process_never_blocks(scenes, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pixelwise.rundir_lock import hold_run\n"
                               f"with hold_run({str(run)!r}):\n    print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirError, match=f"process {holder.pid} is training this run"):
        with hold_run(run):
            pass
    holder.kill()
    holder.wait()
    assert (run / LOCK_FILE).exists()  # stale: the file stays, the lock died with its process
    train(scenes / IMAGE_DIR, scenes / MASK_DIR, run, small_config(epochs=1), cache_dir=tmp_path / "cache",
          progress=False, log=lambda _: None)
    assert (run / LAST).exists()


def test_out_is_a_file_refused_in_a_sentence_before_any_decoding(scenes, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine\n")
    assert main(["train", str(scenes), "--out", str(out), *TRAIN, "--cache-dir", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"pixelwise train: error: {out}: a file has this name, so it cannot be the run folder"
    assert out.read_text() == "mine\n"
    assert not (tmp_path / "cache").exists()  # refused before decoding anything


def test_a_folder_that_is_not_a_run_is_not_trained_into(scenes, tmp_path, capsys):
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "000001_mask.png").write_bytes(b"someone's output")
    assert main(["train", str(scenes), "--out", str(out), *TRAIN, "--cache-dir", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"pixelwise train: error: {out}: is not a run folder and not empty (1 other file(s) such as "
                   "'000001_mask.png'); train into a new or empty folder (--out)")
    assert [p.name for p in out.iterdir()] == ["000001_mask.png"]  # left exactly as it was


def test_a_refused_start_leaves_no_folder_behind(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(DataError, match="cannot list the image folder"):
        train(tmp_path / "nothing", tmp_path / "nothing", run, small_config(epochs=1), cache_dir=tmp_path / "cache",
              progress=False, log=lambda _: None)
    assert not run.exists()


# ------------------------------------------------------------------------------------------- full disks

def _full_disk_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def _assert_one_line_with_resume(err: str, run: Path, argv: list[str]) -> None:
    lines = _full_disk_lines(err)
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"pixelwise train: error: cannot write {run}/"), line
    assert "No space left on device" in line and "free there" in line, line
    assert line.endswith("continue with: pixelwise " + " ".join([*argv, "--resume"])), line
    assert "Traceback" not in err


def test_disk_full_during_training_injected(scenes, tmp_path, capsys, monkeypatch):
    """ENOSPC as safetensors reports it, on the third checkpoint written (the first epoch's last).

    A disk that fills up in the middle of a run cannot be made without mounting a file system, which
    needs root (the tmpfs test below does it where it can); so this replaces the third-party writer,
    safetensors' save_file, as checkpoint.py calls it: the one honest way to make that write fail
    here with safetensors' own words, while everything around it (the atomic write, the loop, the
    CLI) runs as it does on a full disk."""
    run = tmp_path / "run"
    real, calls = checkpoint.save_file, []

    def full(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full)
    argv = ["train", str(scenes), "--out", str(run), "--epochs", "1", *TRAIN, "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 1
    _assert_one_line_with_resume(capsys.readouterr().err, run, argv)
    assert not [p for p in run.iterdir() if ".tmp" in p.name]  # no half-written file left
    monkeypatch.undo()
    assert main(argv + ["--resume"]) == 0  # the run continues once the disk has room
    assert (run / "history.csv").read_text().count("\n") == 2


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 8 MB file system (tmpfs), where this test may mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected ENOSPC test covers this")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_training_on_a_real_full_disk(scenes, tmp_path, tiny_disk, capsys):
    run = tiny_disk / "run"
    # last.safetensors (weights + Adam's two moments) is about 6.5 MB at 8 filters: the first fits, the
    # first best.safetensors beside it does not.
    argv = ["train", str(scenes), "--out", str(run), "--epochs", "2", *TRAIN, "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 1
    _assert_one_line_with_resume(capsys.readouterr().err, run, argv)
    assert load_file(str(run / LAST))  # the last checkpoint written is whole


def test_a_write_error_names_the_file_and_keeps_the_old_version(tmp_path, monkeypatch):
    from pixelwise.files import atomic_write_text

    path = tmp_path / "report.json"
    path.write_text("old\n")

    def fail(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    # The crash must come between writing the temporary file and moving it into place, which no real
    # condition a test can set up does (a read-only folder refuses the temporary file first, and root
    # writes anyway): the OS call os.replace is made to fail, as a file system turned read-only would.
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(WriteError) as caught:
        atomic_write_text(path, "new\n")
    assert str(caught.value) == f"cannot write {path} (Read-only file system)"
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


# --------------------------------------------------------------------------------- arrays into the API

@pytest.fixture(scope="module")
def predictor():
    from pixelwise import Predictor

    return Predictor(FIXTURES / "run-0.1.0")


def test_an_rgba_array_is_predicted_as_its_rgb(predictor):
    from PIL import Image

    rgb = np.asarray(Image.open(FIXTURES / "scene.png").convert("RGB"))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.array_equal(predictor.predict(rgba), predictor.predict(rgb))


@pytest.mark.parametrize("shape", [(64, 96), (64, 96, 1), (64, 96, 2)])
def test_grey_arrays_are_predicted_as_read_image_reads_grey_files(predictor, tmp_path, shape):
    from PIL import Image

    from pixelwise import read_image

    grey = np.random.default_rng(0).integers(0, 256, (64, 96), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    array = grey.reshape(64, 96, 1) if len(shape) == 3 else grey
    if len(shape) == 3 and shape[2] == 2:
        array = np.concatenate([array, np.full_like(array, 255)], axis=2)
    assert np.array_equal(predictor.predict(array), predictor.predict(read_image(tmp_path / "grey.png")))


def test_float_and_16_bit_arrays_follow_the_file_rule(predictor):
    rgb = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    expected = predictor.predict(rgb)
    assert np.array_equal(predictor.predict(rgb / 255.0), expected)
    assert np.array_equal(predictor.predict(rgb.astype(np.uint16) * 257), expected)


@pytest.mark.parametrize("array, message", [
    (np.zeros((3, 64, 96), np.uint8), r"shape \(3, 64, 96\): 96 channels \(channels first\? use array.transpose"),
    (np.zeros((0, 96, 3), np.uint8), r"image array is empty \(shape 0x96x3\); expected an \(H, W, 3\) RGB image"),
    (np.zeros((64, 0), np.uint8), r"image array is empty"),
    (np.zeros((1, 64, 96, 3), np.uint8), r"shape \(1, 64, 96, 3\); expected an \(H, W, 3\)"),
    (np.zeros(5, np.uint8), r"shape \(5,\); expected"),
    (np.full((8, 8), np.nan), "NaN or infinite"),
    (np.full((8, 8), -1, np.int16), "values run from -1 to -1"),
    (np.zeros((8, 8), complex), "dtype complex128"),
])
def test_arrays_that_cannot_be_images_are_one_line_value_errors(predictor, array, message):
    with pytest.raises(ValueError, match=message) as caught:
        predictor.predict(array)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------- symlinks

@pytest.fixture
def linked(scenes, tmp_path) -> Path:
    """A copy of four scene pairs plus a dangling image link (its mask is there) and an image link loop."""
    import shutil

    data = tmp_path / "data"
    for sub in (IMAGE_DIR, MASK_DIR):
        (data / sub).mkdir(parents=True)
        for path in sorted((scenes / sub).iterdir())[:4]:
            shutil.copy(path, data / sub / path.name)
    shutil.copy(sorted((scenes / MASK_DIR).iterdir())[0], data / MASK_DIR / "900001.png")
    os.symlink(tmp_path / "elsewhere" / "900001.png", data / IMAGE_DIR / "900001.png")
    os.symlink("loop.png", data / IMAGE_DIR / "loop.png")
    return data


def test_check_names_broken_links_and_loops_as_problems_of_those_files(linked, tmp_path, capsys):
    assert main(["check", str(linked), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pixelwise check: ")]
    assert problems == [
        f"pixelwise check: {linked / IMAGE_DIR / '900001.png'}: broken link to {tmp_path / 'elsewhere' / '900001.png'} "
        "(no such file)",
        f"pixelwise check: {linked / IMAGE_DIR / 'loop.png'}: symbolic link loop (loop.png -> loop.png); it never "
        "reaches a file",
    ]


def test_predict_names_broken_links(linked, run_copy, tmp_path, capsys):
    run = run_copy  # a copy: the default engine may write its ONNX export into the run
    dangling = linked / IMAGE_DIR / "900001.png"
    code = main(["predict", str(run), str(linked / IMAGE_DIR), str(dangling), "--out", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{dangling}: broken link to " in err and "file not found" not in err and "no such file or folder" not in err
    assert f"{linked / IMAGE_DIR / 'loop.png'}: symbolic link loop" in err


# ------------------------------------------------------------- one output rule: replace, and say what

@pytest.fixture
def run_copy(tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(FIXTURES / "run-0.1.0", tmp_path / "run"))


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> Path:
    from pixelwise.synth import write_dataset

    return write_dataset(tmp_path_factory.mktemp("few"), 3, seed=3, height=64, width=96, progress=False)


def test_evaluate_twice_says_it_replaced_the_earlier_report(run_copy, few, tmp_path, capsys):
    argv = ["evaluate", str(run_copy), str(few), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(argv) == 0
    assert "replaced" not in capsys.readouterr().out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (f"replaced 6 earlier file(s) in {run_copy / 'evaluation'}: report.json, per_class.csv, confusion.csv "
            "and 3 more") in out


def test_predict_twice_into_one_folder_says_what_it_replaced(run_copy, few, tmp_path, capsys):
    argv = ["predict", str(run_copy), str(few / IMAGE_DIR), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    assert "replaced" not in capsys.readouterr().out
    (tmp_path / "out" / "mine.txt").write_text("kept")
    assert main(argv + ["--overwrite"]) == 0  # without it, the images predicted by this model are skipped
    out = capsys.readouterr().out
    assert f"replaced 9 earlier file(s) in {tmp_path / 'out'}: " in out
    assert (tmp_path / "out" / "mine.txt").read_text() == "kept"  # only outputs of the same name are replaced


def test_export_checks_its_arguments_before_writing_and_finds_a_datasets_images(run_copy, few, capsys):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    assert main(["export", str(run_copy), "--int8", str(few), "--calibration-count", "0"]) == 1
    assert capsys.readouterr().err.strip() == "pixelwise export: error: the calibration count must be at least 1, not 0"
    assert main(["export", str(run_copy), "--int8", str(few / "nothing")]) == 2
    assert not (run_copy / "model.onnx").exists()  # nothing written before the arguments were checked
    capsys.readouterr()
    assert main(["export", str(run_copy), "--int8", str(few)]) == 0  # the dataset folder: its CameraRGB/
    assert (run_copy / "model.int8.onnx").exists()
    capsys.readouterr()

    image = str(sorted((few / IMAGE_DIR).iterdir())[0])
    assert main(["predict", str(run_copy), image, "--out", str(run_copy.parent / "p"), "--engine", "onnx",
                 "--no-progress"]) == 0
    assert f"onnx engine: running {run_copy / 'model.int8.onnx'} (int8; --onnx-model chooses)" in capsys.readouterr().out
    assert main(["predict", str(run_copy), image, "--out", str(run_copy.parent / "p"), "--engine", "onnx",
                 "--onnx-model", "fp32", "--no-progress"]) == 0
    assert f"onnx engine: running {run_copy / 'model.onnx'} (fp32; --onnx-model chooses)" in capsys.readouterr().out

    assert main(["export", str(run_copy)]) == 0  # a new fp32 model: the int8 one made from the old one goes
    out = capsys.readouterr().out
    assert f"replaced 1 earlier file(s) in {run_copy}: model.onnx" in out
    assert f"removed {run_copy / 'model.int8.onnx'}: it was quantised from the model.onnx just replaced" in out
    assert not (run_copy / "model.int8.onnx").exists()
    assert main(["evaluate", str(run_copy), str(few), "--engine", "onnx", "--onnx-model", "int8", "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"pixelwise evaluate: error: {run_copy}: no model.int8.onnx; run `pixelwise export {run_copy} --int8 IMAGES` "
        "first, or run the fp32 model (--onnx-model fp32)")


# ----------------------------------------------------------------- the --skip-invalid hint, where it helps

HINT = "--skip-invalid to use the valid pairs only"


def _with_a_bad_mask(few: Path, tmp_path: Path) -> Path:
    import shutil

    data = Path(shutil.copytree(few, tmp_path / "data"))
    sorted((data / MASK_DIR).iterdir())[0].write_bytes(b"not a png")
    return data


def test_skip_invalid_hint_only_where_skipping_would_help(run_copy, few, tmp_path, capsys):
    cache = ["--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    data = _with_a_bad_mask(few, tmp_path)
    assert main(["evaluate", str(run_copy), str(data), *cache]) == 2
    assert HINT in capsys.readouterr().err  # two valid pairs would be scored
    assert main(["evaluate", str(run_copy), str(tmp_path / "missing"), *cache]) == 2
    assert HINT not in capsys.readouterr().err  # nothing to skip to
    (tmp_path / "empty" / IMAGE_DIR).mkdir(parents=True)
    (tmp_path / "empty" / MASK_DIR).mkdir()
    assert main(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "r"), *TRAIN, *cache]) == 2
    assert HINT not in capsys.readouterr().err
    for path in sorted((data / MASK_DIR).iterdir()):
        path.write_bytes(b"not a png")
    assert main(["evaluate", str(run_copy), str(data), "--skip-invalid", *cache]) == 2
    assert HINT not in capsys.readouterr().err  # already given
